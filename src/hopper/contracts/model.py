"""Dataset contracts: the typed promise a ``datasets/<name>.yaml`` file makes about its data.

A contract says how to read a dataset's files (format, delimiter, encoding, null markers),
which columns must be there with which Arrow types, which row-level checks apply, and what to
do with rows or columns that do not fit. The models here validate it — each error says what
was expected — and :mod:`~hopper.contracts.yaml_io` reads and writes the YAML files, naming
the key and line of every problem.

One room past 450 lines: the validators that check one field against the others (renames,
derived columns, drops, partitions and their sources' types) read the whole contract, and
apart from the models they check they would be a second copy of its shape.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hopper.config import DATASET_NAME
from hopper.contracts.arrow_types import SUPPORTED_TYPES_HINT, parse_arrow_type, to_arrow_scalar
from hopper.contracts.expr import parse_expression
from hopper.contracts.freshness import Freshness
from hopper.contracts.partitions import (
    PARTITION_FORMS,
    PartitionKey,
    parse_partition,
    parse_partitions,
    transform_type_error,
)
from hopper.lineage import INGEST_DATE as INGEST_DATE  # its home is the lineage stage
from hopper.lineage import reserved_name

DEFAULT_NULL_VALUES = ["", "NA", "N/A", "NULL", "null", "NaN", "nan", "None"]
TRANSFORM_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class ReaderOptions(BaseModel):
    """How to decode a dataset's files."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str | None = Field(
        default=None,
        min_length=1,
        max_length=1,
        description='Field separator; None sniffs it (CSV) or uses the format default ("\\t" '
        "for TSV).",
    )
    quote_char: str = Field(default='"', min_length=1, max_length=1, description="Quote char.")
    header: bool = Field(
        default=True,
        description="Whether the first row holds column names. Without one, declared columns "
        "are matched by position and undeclared ones are named f<index>.",
    )
    skip_rows: int = Field(default=0, ge=0, description="Lines to skip before the header.")
    encoding: str = Field(
        default="utf-8", description='Text encoding, e.g. "utf-8" (a BOM is fine) or "latin-1".'
    )
    null_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NULL_VALUES),
        description="Cell values read as null.",
    )
    decimal_point: Literal[".", ","] = Field(
        default=".",
        description='CSV/TSV: the decimal separator of numbers; "," reads 2,5 as 2.5 (pair it '
        'with delimiter ";").',
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}: use e.g. utf-8 or latin-1") from exc
        return value


class ColumnSpec(BaseModel):
    """One declared column: its name in the file, its Arrow type and its checks."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Exact column name in the file.")
    type: str = Field(description=f"Column type: {SUPPORTED_TYPES_HINT}.")
    format: str | list[str] | None = Field(
        default=None,
        description='strptime format for dates/timestamps, e.g. "%d/%m/%Y"; a list tries each '
        "format in order, for columns that mix spellings.",
    )
    nullable: bool = Field(default=True, description="Whether nulls are allowed.")
    rename: str | None = Field(default=None, min_length=1, description="Output column name.")
    description: str | None = Field(default=None, description="What the column means.")
    min: float | int | dt.datetime | dt.date | str | None = Field(
        default=None, description="Smallest allowed value (number or ISO date/timestamp)."
    )
    max: float | int | dt.datetime | dt.date | str | None = Field(
        default=None, description="Largest allowed value (number or ISO date/timestamp)."
    )
    allowed: list[Any] | None = Field(default=None, description="The only values allowed.")
    pattern: str | None = Field(default=None, description="Regex every value must fully match.")
    unique: bool = Field(default=False, description="Whether values must be unique.")
    default: Any = Field(
        default=None,
        description="Value written instead of null (checks then apply to it); with nullable: "
        "false, nulls are filled rather than rejected.",
    )

    @field_validator("type")
    @classmethod
    def _type_parses(cls, value: str) -> str:
        parse_arrow_type(value)
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value

    @field_validator("format")
    @classmethod
    def _format_needs_temporal(
        cls, value: str | list[str] | None, info: ValidationInfo
    ) -> str | list[str] | None:
        data_type = _declared_type(info)
        if value is not None and data_type is not None and not pa.types.is_temporal(data_type):
            raise ValueError(
                f"format only applies to date, timestamp and time types, not {data_type}"
            )
        if isinstance(value, list) and not value:
            raise ValueError("format list is empty: give at least one strptime format")
        return value

    @field_validator("min", "max")
    @classmethod
    def _bound_fits_type(cls, value: Any, info: ValidationInfo) -> Any:
        data_type = _declared_type(info)
        if value is not None and data_type is not None:
            to_arrow_scalar(value, data_type)
        return value

    @field_validator("allowed")
    @classmethod
    def _allowed_fit_type(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        data_type = _declared_type(info)
        for item in value or []:
            if data_type is not None:
                to_arrow_scalar(item, data_type)
        return value

    @model_validator(mode="after")
    def _output_name_not_reserved(self) -> ColumnSpec:
        reserved = reserved_name(self.output_name)
        if reserved is not None:
            if self.rename:
                what, fix = "rename", "rename it to another name"
            else:
                what, fix = "name", f"add rename: {self.name.strip().strip('_') or 'column'!r}"
            raise ValueError(
                f"{what} {self.output_name!r} is the name of a column Hopper writes itself "
                f"({reserved!r}; names compare ignoring case), so the lake would hold it twice: "
                f"{fix}"
            )
        return self

    @model_validator(mode="after")
    def _default_fits(self) -> ColumnSpec:
        if self.default is None:
            return self
        try:
            parse_arrow_type(self.type)
        except ValueError:
            return self  # the type error is reported on its own
        try:
            scalar = to_arrow_scalar(self.default, self.arrow_type())
        except ValueError as exc:
            raise ValueError(f"default: {exc}") from exc
        if self.allowed is not None:
            allowed = [to_arrow_scalar(v, self.arrow_type()) for v in self.allowed]
            if scalar not in allowed:
                raise ValueError(f"default {self.default!r} is not in allowed {self.allowed}")
        return self

    @property
    def formats(self) -> list[str]:
        """The strptime formats to try, in order (empty when none is set)."""
        if self.format is None:
            return []
        return [self.format] if isinstance(self.format, str) else list(self.format)

    @property
    def output_name(self) -> str:
        """The column's name in the output (``rename`` if set, else ``name``)."""
        return self.rename or self.name

    def arrow_type(self) -> pa.DataType:
        """The column's ``pyarrow.DataType``."""
        return parse_arrow_type(self.type)


class DerivedColumn(BaseModel):
    """A column computed from other output columns with a small expression language."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Output name of the new column.")
    expr: str = Field(
        min_length=1,
        description='Expression over output columns: names (or col("a b")), numbers, quoted '
        "text, + - * / and upper, lower, strip, length, concat, year, month, day, abs, round, "
        "coalesce.",
    )
    type: str | None = Field(
        default=None, description="Arrow type to cast the result to; None keeps Arrow's."
    )
    description: str | None = Field(default=None, description="What the column means.")

    @field_validator("name")
    @classmethod
    def _name_not_reserved(cls, value: str) -> str:
        reserved = reserved_name(value)
        if reserved is not None:
            raise ValueError(
                f"{value!r} is the name of a column Hopper writes itself ({reserved!r}; names "
                "compare ignoring case); pick another name"
            )
        return value

    @field_validator("expr")
    @classmethod
    def _expr_parses(cls, value: str) -> str:
        parse_expression(value)
        return value

    @field_validator("type")
    @classmethod
    def _type_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_arrow_type(value)
        return value

    def arrow_type(self) -> pa.DataType | None:
        """The declared result type, if any."""
        return parse_arrow_type(self.type) if self.type else None


def _declared_type(info: ValidationInfo) -> pa.DataType | None:
    """The column's type, when it validated (checks are then judged against it)."""
    text = info.data.get("type")
    return parse_arrow_type(text) if text else None


class Contract(BaseModel):
    """A dataset contract, as written in ``datasets/<name>.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=DATASET_NAME.pattern, description="Dataset name (lowercase, -, _).")
    version: int = Field(default=1, ge=1, description="Contract version; bump on changes.")
    description: str | None = Field(default=None, description="What the dataset holds.")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        default="auto", description="File format; auto detects it from extension and content."
    )
    reader: ReaderOptions = Field(default_factory=ReaderOptions, description="Decoding options.")
    columns: list[ColumnSpec] = Field(min_length=1, description="Declared columns, in order.")
    extra_columns: Literal["evolve", "freeze"] = Field(
        default="evolve",
        description="evolve keeps undeclared columns with inferred types; freeze rejects them.",
    )
    bad_rows: Literal["reject", "quarantine", "rescue"] = Field(
        default="reject",
        description="reject fails the whole file; quarantine keeps good rows, sets bad aside; "
        "rescue keeps every row, bad values nulled (or defaulted) and kept as read in "
        "_rescued_data.",
    )
    derived: list[DerivedColumn] = Field(
        default_factory=list,
        description="Columns computed from output columns, in order (each may use the previous).",
    )
    transform: str | None = Field(
        default=None,
        pattern=TRANSFORM_PATTERN,
        description='A Python callable "package.module:function" applied to the table after '
        "derived columns; it returns a pyarrow Table or a pandas DataFrame.",
    )
    transform_input: Literal["arrow", "pandas"] = Field(
        default="arrow",
        description="What the transform receives: a pyarrow Table or a pandas DataFrame.",
    )
    drop: list[str] = Field(
        default_factory=list,
        description="Output columns not written (after derived columns and the transform).",
    )
    partition_by: list[str] = Field(
        default_factory=list,
        description=f"Partitions, in order: {PARTITION_FORMS}; {INGEST_DATE} is the ingestion "
        "date (UTC). Each is a Hive folder level (column=value, day(ts) gives ts_day=…).",
    )
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field(
        default="zstd",
        description="Parquet compression codec of the data columns (the lineage columns are "
        "stored uncompressed: Parquet's dictionary holds their one value per file).",
    )
    stream_threshold_mb: float | None = Field(
        default=None,
        ge=0,
        description="CSV/TSV files at least this large (MiB, on disk) are read, checked and "
        "written in blocks with bounded memory; unset: 64. 0 streams every CSV/TSV file.",
    )
    max_file_mb: float = Field(
        default=20_480, gt=0, description="Files larger than this (MB) are quarantined."
    )
    max_decompression_ratio: float = Field(
        default=200,
        gt=1,
        description="A compressed file may decompress to at most this many times its size.",
    )
    max_columns: int = Field(
        default=5_000, ge=1, description="Files with more columns than this are quarantined."
    )
    max_line_bytes: int = Field(
        default=1 << 20,
        ge=1,
        description="CSV/TSV/JSON-lines files with a longer line (bytes, decompressed, without "
        "its line break) are quarantined; checked while streaming, before parsing.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=1,
        description="JSON-lines records nested deeper than this ({ and [ levels, line breaks "
        "inside a record included) and Parquet schemas nested deeper are quarantined before "
        "parsing.",
    )
    max_memory_mb: float = Field(
        default=2_048,
        gt=0,
        description="Memory (MiB) the reader of one file may use: Parquet footers claiming "
        "more decoded data are refused, reads stop once decoded data passes it, and the "
        "isolated reader process is capped near it.",
    )
    max_seconds: float = Field(
        default=600,
        gt=0,
        description="CPU seconds the isolated reader of one file may use before the file is "
        "quarantined.",
    )
    retries: int = Field(
        default=4, ge=0, le=20, description="Retries of transient faults (network, throttling)."
    )
    retry_backoff_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="First retry delay; each retry doubles it (with jitter).",
    )
    expect: Freshness | None = Field(
        default=None,
        description="Freshness: e.g. {every: 24h} alerts once when no file lands for 24 hours.",
    )

    @field_validator("columns")
    @classmethod
    def _unique_names(cls, columns: list[ColumnSpec]) -> list[ColumnSpec]:
        _require_unique([c.name for c in columns], "column name")
        _require_unique([c.output_name for c in columns], "output column name (after rename)")
        return columns

    @field_validator("bad_rows")
    @classmethod
    def _rescue_defaults_pass(cls, bad_rows: str, info: ValidationInfo) -> str:
        """With ``rescue`` a default replaces values that fail their checks: it must pass them."""
        if bad_rows != "rescue":
            return bad_rows
        for spec in info.data.get("columns", []):
            failed = _default_fails(spec)
            if failed:
                raise ValueError(
                    f"column {spec.name!r}: rescue writes its default {spec.default!r} in place "
                    f"of values that fail its checks, but the default is {failed}: change the "
                    "default or the check"
                )
        return bad_rows

    @field_validator("derived")
    @classmethod
    def _derived_from_known(
        cls, derived: list[DerivedColumn], info: ValidationInfo
    ) -> list[DerivedColumn]:
        known = [c.output_name for c in info.data.get("columns", [])]
        if not known:
            return derived  # the columns' own error is reported instead
        for index, column in enumerate(derived):
            if column.name in known or column.name == INGEST_DATE:
                raise ValueError(
                    f"[{index}] {column.name!r} is already an output column; pick another name"
                )
            unknown = [n for n in parse_expression(column.expr).columns if n not in known]
            if unknown:
                raise ValueError(
                    f"[{index}] {column.name!r}: expr uses unknown column(s) {unknown}; it can "
                    f"use the output columns (after rename) and earlier derived ones: {known}"
                )
            known.append(column.name)
        return derived

    @field_validator("drop")
    @classmethod
    def _known_drops(cls, drop: list[str], info: ValidationInfo) -> list[str]:
        _require_unique(drop, "drop entry")
        return _known_names(drop, info, "drop")

    @field_validator("partition_by")
    @classmethod
    def _known_partitions(cls, partition_by: list[str], info: ValidationInfo) -> list[str]:
        keys = []
        for index, text in enumerate(partition_by):
            try:
                keys.append(parse_partition(text))
            except ValueError as exc:
                raise ValueError(f"[{index}] {exc}") from exc
        names = Counter(key.name for key in keys)
        same = [key.text for key in keys if names[key.name] > 1]
        if same:
            raise ValueError(
                f"entries {same} make the same partition (folder name): keep one of them"
            )
        sources = list(dict.fromkeys(key.source for key in keys))
        _known_names(sources, info, "partition_by", extra=[INGEST_DATE])
        dropped = [key.text for key in keys if key.source in info.data.get("drop", [])]
        if dropped:
            raise ValueError(f"{dropped} are also in drop: a partition column must be kept")
        if not info.data.get("transform"):  # else the callable decides the columns' types
            _check_transformed(keys, info)
        return partition_by

    @property
    def partition_keys(self) -> list[PartitionKey]:
        """``partition_by`` read: one key (source column and transform) per entry."""
        return parse_partitions(self.partition_by)

    def column(self, name: str) -> ColumnSpec:
        """The declared column with this file name.

        Raises:
            KeyError: no such column.
        """
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _known_names(
    names: list[str], info: ValidationInfo, key: str, extra: list[str] | None = None
) -> list[str]:
    """Check that ``names`` are output columns (declared after rename, or derived).

    With a ``transform`` the callable may add or rename columns, so names are only checked
    when the file is ingested.
    """
    outputs = [c.output_name for c in info.data.get("columns", [])]
    outputs += [d.name for d in info.data.get("derived", [])]
    unknown = [n for n in names if n not in outputs + (extra or [])]
    if unknown and outputs and not info.data.get("transform"):
        choices = outputs + (extra or [])
        raise ValueError(f"unknown output columns {unknown}: choose from {choices}")
    return names


def _check_transformed(keys: list[PartitionKey], info: ValidationInfo) -> None:
    """Check that time transforms apply to the declared types and name no existing column."""
    types: dict[str, pa.DataType | None] = {INGEST_DATE: pa.date32()}
    for spec in info.data.get("columns", []):
        types[spec.output_name] = spec.arrow_type()
    for derived in info.data.get("derived", []):
        types[derived.name] = derived.arrow_type()  # None: Arrow's type, known at ingestion
    dropped = set(info.data.get("drop", []))
    outputs = {name.casefold(): name for name in types if name not in dropped}
    for key in keys:
        if key.transform == "identity":
            continue
        data_type = types.get(key.source)
        error = transform_type_error(key, data_type) if data_type is not None else None
        if error is not None:
            raise ValueError(error)
        clash = outputs.get(key.name.casefold())
        if clash is not None:
            raise ValueError(
                f"{key.text!r} makes folders named {key.name!r}, but {clash!r} is an output "
                "column too (names compare ignoring case), so readers would see it twice: "
                "rename that column, or drop it"
            )


def _default_fails(spec: ColumnSpec) -> str | None:
    """Which of its column's ``min``, ``max`` or ``pattern`` checks the default fails, or None."""
    if spec.default is None:
        return None
    data_type = spec.arrow_type()
    value = pa.array([to_arrow_scalar(spec.default, data_type)], data_type)
    if spec.min is not None and pc.less(value, to_arrow_scalar(spec.min, data_type))[0].as_py():
        return f"below min {spec.min!r}"
    if spec.max is not None and pc.greater(value, to_arrow_scalar(spec.max, data_type))[0].as_py():
        return f"above max {spec.max!r}"
    if spec.pattern is not None:
        text = pc.cast(value, pa.string())
        try:
            matches = pc.match_substring_regex(text, f"^(?:{spec.pattern})$")[0].as_py()
        except pa.ArrowInvalid:
            return None  # a pattern RE2 cannot run is reported when a file is checked
        if not matches:
            return f"not a full match of pattern {spec.pattern!r}"
    return None


def _require_unique(names: list[str], what: str) -> None:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate {what}s {duplicates}: each must appear once")
