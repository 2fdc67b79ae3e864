"""Compare a file's columns with its contract, column by column, for people and for scripts.

``hopper validate`` answers "may this file go in?"; a diff answers "how has this file drifted
from what the contract expects?": which declared columns are missing, which columns are new
(with the type Arrow infers for them), which columns have another type than declared (and
whether their values still convert), and where nulls appear in columns declared
``nullable: false``. The same diff ends the quarantine reason of a file rejected for a
missing column or a type change, so whoever fixes it sees the whole picture at once.

Value checks (min, max, allowed, pattern, unique) are not part of a diff: they concern rows,
not the shape of the file.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, computed_field

from hopper.contracts.arrow_types import type_to_string
from hopper.contracts.checks import Inspection, inspect_file
from hopper.contracts.model import Contract
from hopper.contracts.read import detect_format, read_table
from hopper.contracts.results import Violation
from hopper.errors import TerminalError
from hopper.lineage import reserved_name

logger = logging.getLogger(__name__)

DiffStatus = Literal["ok", "compatible", "missing", "extra", "duplicate", "type", "nulls"]
MATCHING: frozenset[str] = frozenset({"ok", "compatible"})


class ColumnDiff(BaseModel):
    """How one column of the file compares with the contract."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(description="Column name as in the file (as in the contract if missing).")
    status: DiffStatus = Field(
        description="ok: as declared; compatible: another inferred type whose values all "
        "convert; missing: declared, not in the file; extra: in the file, not declared; "
        "duplicate: the header repeats the name; type: some values do not convert; nulls: "
        "nulls in a column declared nullable: false."
    )
    contract_type: str | None = Field(description="Declared type; None for extra columns.")
    file_type: str | None = Field(
        description="Type Arrow infers for the file's column; None for missing columns."
    )
    nullable: bool | None = Field(description="Declared nullability; None for extra columns.")
    converts: bool | None = Field(
        description="Whether every value converts to the declared type; None when not "
        "applicable (missing, extra or duplicate column)."
    )
    bad_values: int = Field(default=0, description="Rows whose value does not convert.")
    nulls: int = Field(default=0, description="Null rows in a column declared nullable: false.")
    rows: list[int] = Field(
        default_factory=list, description="First offending rows, 1 = first data row."
    )
    samples: list[str] = Field(default_factory=list, description="Some offending values.")
    message: str = Field(description="The difference in words, with how to resolve it.")

    @property
    def differs(self) -> bool:
        """Whether this column makes the file differ from its contract."""
        return self.status not in MATCHING


class ContractDiff(BaseModel):
    """A file compared with its contract, column by column."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="The file's name or URI.")
    dataset: str = Field(description="The contract's dataset name.")
    contract_version: int = Field(description="The contract's version.")
    format: str = Field(description="The format the file was read as.")
    rows: int = Field(description="Data rows in the file.")
    extra_columns: Literal["evolve", "freeze"] = Field(
        description="The contract's policy for extra columns."
    )
    columns: list[ColumnDiff] = Field(
        description="Declared columns in contract order, then extra columns in file order."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def matches(self) -> bool:
        """True when no column is missing, extra, duplicated, unconvertible or wrongly null."""
        return not self.differences

    @property
    def differences(self) -> list[ColumnDiff]:
        """The columns that make the file differ."""
        return [column for column in self.columns if column.differs]


def diff_file(path: Path, contract: Contract, *, source_name: str | None = None) -> ContractDiff:
    """Compare a file with its contract.

    Args:
        path: the file (any supported format, possibly compressed).
        contract: the dataset contract to compare with.
        source_name: how to name the file (defaults to the path).

    Returns:
        One entry per declared column and per extra column.

    Raises:
        UnreadableFileError: the file cannot be decoded with the contract's reader options.
    """
    source = source_name or str(path)
    return diff_inspection(path, contract, inspect_file(path, contract, source), source)


def diff_inspection(
    path: Path,
    contract: Contract,
    found: Inspection,
    source: str,
    *,
    rows: int | None = None,
    sample_rows: int | None = None,
) -> ContractDiff:
    """Build the diff from an inspection :mod:`hopper.contracts.checks` already made.

    Args:
        path: the inspected file (re-read once, for CSV/TSV, so Arrow infers every type).
        contract: the contract it was inspected against.
        found: the inspection.
        source: the file's name or URI.
        rows: the file's row count, when ``found`` holds only part of it (a streamed batch).
        sample_rows: infer the file's types from about this many first rows only (bounded
            memory for large files); None reads the whole file.

    Returns:
        The diff.
    """
    kind, inferred = _inferred_types(path, contract, found, source, sample_rows)
    names = Counter(found.raw.column_names)  # name -> times in the header
    problems: dict[tuple[str | None, str], Violation] = {
        (v.column, v.kind): v for v in found.violations
    }
    columns: list[ColumnDiff] = []
    for spec in contract.columns:
        declared = type_to_string(spec.arrow_type())
        if spec.name not in names:
            missing = problems.get((spec.name, "missing_column"))
            hint = missing.message.split(";")[0] if missing else "declared column is missing"
            columns.append(
                ColumnDiff(
                    column=spec.name,
                    status="missing",
                    contract_type=declared,
                    file_type=None,
                    nullable=spec.nullable,
                    converts=None,
                    message=f"{hint}; add it to the file, or remove it from the contract",
                )
            )
        elif names[spec.name] > 1:
            columns.append(_duplicate(spec.name, names, inferred, declared, spec.nullable))
        else:
            columns.append(
                _compare(
                    spec.name,
                    declared,
                    spec.nullable,
                    inferred.get(spec.name),
                    problems.get((spec.name, "type")),
                    problems.get((spec.name, "null")),
                )
            )
    for name in found.extras:
        if names[name] > 1:
            columns.append(_duplicate(name, names, inferred, None, None))
        else:
            columns.append(_extra(name, inferred.get(name), contract, problems))
    return ContractDiff(
        file=source,
        dataset=contract.name,
        contract_version=contract.version,
        format=kind,
        rows=found.raw.num_rows if rows is None else rows,
        extra_columns=contract.extra_columns,
        columns=columns,
    )


def format_diff(diff: ContractDiff, *, all_columns: bool = False) -> str:
    """The diff as plain text, one line per differing column.

    Args:
        diff: the diff.
        all_columns: also list matching columns.

    Returns:
        Lines naming each column, its status, both types and what to do.
    """
    shown = diff.columns if all_columns else [c for c in diff.columns if c.status != "ok"]
    header = (
        f"Diff of {diff.file} against contract {diff.dataset!r} v{diff.contract_version} "
        f"({diff.rows} row(s), {len(diff.differences)} difference(s)):"
    )
    lines = [header]
    for column in shown:
        types = f"contract {column.contract_type or '-'}, file {column.file_type or '-'}"
        line = f"  {column.status:<10} {column.column!r} ({types}): {column.message}"
        if column.rows:
            line += f"; rows {', '.join(map(str, column.rows))}"
        if column.samples:
            line += f"; samples {', '.join(repr(s) for s in column.samples)}"
        lines.append(line)
    hidden = len(diff.columns) - len(shown)
    if hidden:
        lines.append(f"  ({hidden} other column(s) match the contract)")
    return "\n".join(lines)


def _compare(
    name: str,
    declared: str,
    nullable: bool,
    file_type: pa.DataType | None,
    bad_type: Violation | None,
    nulls: Violation | None,
) -> ColumnDiff:
    inferred = type_to_string(file_type) if file_type is not None else None
    parts: list[str] = []
    status: DiffStatus = "ok"
    if bad_type is not None:
        status = "type"
        parts.append(
            f"{bad_type.count} value(s) do not convert to {declared}; fix them, or change the "
            f"column's type (or format) in the contract"
        )
    if nulls is not None:
        status = "type" if status == "type" else "nulls"
        parts.append(
            f"{nulls.count} null value(s) but nullable is false; fill them, or set nullable: "
            "true or a default"
        )
    if not parts:
        if inferred is not None and inferred != declared and file_type != pa.null():
            status = "compatible"
            parts.append(f"Arrow infers {inferred}; every value converts to {declared}")
        else:
            parts.append("as declared")
    offending = bad_type or nulls
    return ColumnDiff(
        column=name,
        status=status,
        contract_type=declared,
        file_type=inferred,
        nullable=nullable,
        converts=bad_type is None,
        bad_values=bad_type.count if bad_type else 0,
        nulls=nulls.count if nulls else 0,
        rows=offending.rows if offending else [],
        samples=bad_type.samples if bad_type else [],
        message="; ".join(parts),
    )


def _extra(
    name: str,
    file_type: pa.DataType | None,
    contract: Contract,
    problems: dict[tuple[str | None, str], Violation],
) -> ColumnDiff:
    inferred = type_to_string(file_type) if file_type is not None else None
    clash = problems.get((name, "extra_column"))
    if clash is not None and reserved_name(name):  # whatever extra_columns says
        message = f"{clash.message}; the file is quarantined"
    elif contract.extra_columns == "freeze":
        message = "not in the contract and extra_columns is freeze: the file is quarantined; "
        message += "declare the column, or remove it from the file"
    elif clash is not None:
        message = f"{clash.message}; the file is quarantined"
    else:
        message = f"not in the contract; kept as {inferred} (extra_columns: evolve); declare it "
        message += "to fix its type"
    return ColumnDiff(
        column=name,
        status="extra",
        contract_type=None,
        file_type=inferred,
        nullable=None,
        converts=None,
        message=message,
    )


def _duplicate(
    name: str,
    names: Counter[str],
    inferred: dict[str, pa.DataType],
    declared: str | None,
    nullable: bool | None,
) -> ColumnDiff:
    file_type = inferred.get(name)
    return ColumnDiff(
        column=name,
        status="duplicate",
        contract_type=declared,
        file_type=type_to_string(file_type) if file_type is not None else None,
        nullable=nullable,
        converts=None,
        message=f"the header has this name {names[name]} times; rename the copies",
    )


def _inferred_types(
    path: Path, contract: Contract, found: Inspection, source: str, sample_rows: int | None
) -> tuple[str, dict[str, pa.DataType]]:
    """The format and the type Arrow infers for each column, free of the contract's types.

    JSON and Parquet readers never take the contract's types, so the inspection already
    holds them; CSV is read again without column types.
    """
    raw = {field.name: field.type for field in found.raw.schema}
    try:
        kind = detect_format(path, contract.format)
        if kind not in ("csv", "tsv"):
            return kind, raw
        table = read_table(path, contract.reader, kind, source=source, max_rows=sample_rows)
    except TerminalError as exc:
        logger.info("%s: cannot infer column types (%s); using the contract's reading", path, exc)
        return contract.format, raw
    names = table.column_names
    if not contract.reader.header:
        declared = [spec.name for spec in contract.columns]
        names = [declared[i] if i < len(declared) else n for i, n in enumerate(names)]
    return kind, dict(zip(names, table.schema.types, strict=True))


__all__ = ["ColumnDiff", "ContractDiff", "diff_file", "diff_inspection", "format_diff"]
