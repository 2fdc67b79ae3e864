"""Dataset contracts: the typed promise a ``datasets/<name>.yaml`` file makes about its data.

A contract says how to read a dataset's files (format, delimiter, encoding, null markers),
which columns must be there with which Arrow types, which row-level checks apply, and what to
do with rows or columns that do not fit. It is loaded from YAML written by people, so every
error names the file, the key path and its line, and says what was expected.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hopper.contracts.arrow_types import SUPPORTED_TYPES_HINT, parse_arrow_type, to_arrow_scalar
from hopper.contracts.expr import parse_expression
from hopper.errors import ConfigError
from hopper.transform import INGEST_DATE as INGEST_DATE  # its home is the transform stage
from hopper.transform import reserved_name

DEFAULT_NULL_VALUES = ["", "NA", "N/A", "NULL", "null", "NaN", "nan", "None"]
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
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

    name: str = Field(pattern=NAME_PATTERN, description="Dataset name (lowercase, -, _).")
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
    bad_rows: Literal["reject", "quarantine"] = Field(
        default="reject",
        description="reject fails the whole file; quarantine keeps good rows, sets bad aside.",
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
        description=f"Output columns → Hive folders; {INGEST_DATE} is the ingestion date (UTC).",
    )
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field(
        default="zstd", description="Parquet compression codec."
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

    @field_validator("columns")
    @classmethod
    def _unique_names(cls, columns: list[ColumnSpec]) -> list[ColumnSpec]:
        _require_unique([c.name for c in columns], "column name")
        _require_unique([c.output_name for c in columns], "output column name (after rename)")
        return columns

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
        return _known_names(drop, info, "drop")

    @field_validator("partition_by")
    @classmethod
    def _known_partitions(cls, partition_by: list[str], info: ValidationInfo) -> list[str]:
        partition_by = _known_names(partition_by, info, "partition_by", extra=[INGEST_DATE])
        dropped = [p for p in partition_by if p in info.data.get("drop", [])]
        if dropped:
            raise ValueError(f"{dropped} are also in drop: a partition column must be kept")
        return partition_by

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
    _require_unique(names, f"{key} entry")
    outputs = [c.output_name for c in info.data.get("columns", [])]
    outputs += [d.name for d in info.data.get("derived", [])]
    unknown = [n for n in names if n not in outputs + (extra or [])]
    if unknown and outputs and not info.data.get("transform"):
        choices = outputs + (extra or [])
        raise ValueError(f"unknown output columns {unknown}: choose from {choices}")
    return names


def _require_unique(names: list[str], what: str) -> None:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate {what}s {duplicates}: each must appear once")


# --------------------------------------------------------------------------- YAML I/O


def load_contract(path: Path) -> Contract:
    """Load and validate a contract file.

    Args:
        path: a ``datasets/<name>.yaml`` file.

    Returns:
        The validated contract.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or does not validate; the message
            names the file, the key path (e.g. ``columns[2].type``), its line and what is
            expected.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read contract file: {exc}") from exc
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a contract must be a YAML mapping with name and columns")
    try:
        return Contract.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(path, exc, data, root)) from exc


def _describe_errors(path: Path, exc: ValidationError, data: Any, root: Any) -> str:
    lines = [f"{path}: invalid contract ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        loc = _clean_loc(error["loc"], data)
        key_path = _format_loc(loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{key_path} (line {line})" if line else key_path
        column = _column_name(data, loc)
        about = f" [column {column!r}]" if column else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (typo?); remove it or check the spelling"
        lines.append(f"  - {where}{about}: {message}")
    return "\n".join(lines)


def _clean_loc(loc: tuple[Any, ...], data: Any) -> list[str | int]:
    """Keep the leading part of a pydantic error location that exists in the YAML data.

    pydantic appends union-member tags (e.g. ``int``, ``function-after[...]``) that are not
    YAML keys; a missing key is kept as the last element so the message names it.
    """
    clean: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            clean.append(part)
            if part not in node:
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            clean.append(part)
            node = node[part]
        else:
            break
    return clean


def _format_loc(loc: list[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _line_of(root: Any, loc: list[str | int]) -> int | None:
    """1-based line of the deepest YAML node on ``loc`` (the key itself for mappings)."""
    if root is None:
        return None
    line = int(root.start_mark.line) + 1
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line, node = int(match[0].start_mark.line) + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part]
            line = int(node.start_mark.line) + 1
        else:
            break
    return line


def _column_name(data: Any, loc: list[str | int]) -> str | None:
    if len(loc) >= 2 and loc[0] == "columns" and isinstance(loc[1], int):
        column = data["columns"][loc[1]]
        if isinstance(column, dict) and isinstance(column.get("name"), str):
            return str(column["name"])
    return None


_KEY_ORDER = [
    "name",
    "version",
    "description",
    "format",
    "reader",
    "columns",
    "extra_columns",
    "bad_rows",
    "derived",
    "transform",
    "transform_input",
    "drop",
    "partition_by",
    "compression",
    "stream_threshold_mb",
    "max_file_mb",
    "max_decompression_ratio",
    "max_columns",
    "max_line_bytes",
    "max_json_depth",
    "max_memory_mb",
    "max_seconds",
    "retries",
    "retry_backoff_seconds",
]


def dump_contract(contract: Contract) -> str:
    """Render a contract as readable YAML that :func:`load_contract` reads back identically.

    Defaults and unset options are left out, except ``name``, ``version``, ``format`` and each
    column's ``name`` and ``type``.

    Args:
        contract: the contract to render.

    Returns:
        YAML text.
    """
    data = contract.model_dump(mode="python", exclude_defaults=True, exclude_none=True)
    data["name"] = contract.name
    data["version"] = contract.version
    data["format"] = contract.format
    data["columns"] = [_dump_column(c) for c in contract.columns]
    if not data.get("reader"):
        data.pop("reader", None)
    ordered = {key: data[key] for key in _KEY_ORDER if key in data}
    return str(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100))


def _dump_column(column: ColumnSpec) -> dict[str, Any]:
    data = column.model_dump(mode="python", exclude_defaults=True, exclude_none=True)
    return {"name": column.name, "type": column.type, **data}
