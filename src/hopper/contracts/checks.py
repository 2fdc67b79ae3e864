"""Inspect a file against its contract: its columns' shape, their conversion, their checks.

An :class:`Inspection` is everything later steps need to know about one table (a whole file,
or one block of a streamed one): the structural problems (missing, duplicated, reserved or
frozen extra columns), each declared column converted to its type, and per row-level problem
(type, null, min, max, allowed, pattern, unique) a :class:`~hopper.contracts.results.
Violation` together with the mask of the rows it concerns. It decides nothing: whether the
file goes in is :mod:`~hopper.contracts.verdict`'s question, which rows are kept
:mod:`~hopper.contracts.split`'s. Every check is column-at-a-time Arrow compute.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hopper.contracts.arrow_types import to_arrow_scalar, type_to_string
from hopper.contracts.convert import as_chunked, convert_column
from hopper.contracts.limits import check_table_limits
from hopper.contracts.model import ColumnSpec, Contract
from hopper.contracts.read import read_for_contract
from hopper.contracts.results import MAX_ROWS, MAX_SAMPLES, Violation
from hopper.errors import ConfigError
from hopper.lineage import RESERVED_COLUMNS, reserved_fix, reserved_name


@dataclass
class Issue:
    """One row-level violation and the rows it concerns."""

    violation: Violation
    mask: pa.ChunkedArray  # True on offending rows, never null
    what: str = ""  # the message without its leading count


@dataclass
class Inspection:
    """A table held to its contract: its problems and its converted columns.

    Attributes:
        raw: the table as read.
        typed: output name -> the declared column converted to its type (null where a
            value does not convert); columns missing or duplicated in ``raw`` are absent.
        extras: undeclared columns of ``raw``, in order, without repeats.
        structural: problems of the whole table (missing, duplicate, reserved or frozen
            extra columns).
        issues: row-level problems, per declared column in contract order.
    """

    raw: pa.Table
    typed: dict[str, pa.ChunkedArray]  # output name -> typed column
    extras: list[str]
    structural: list[Violation]
    issues: list[Issue]

    @property
    def violations(self) -> list[Violation]:
        """Every violation: the structural ones, then the row-level ones."""
        return self.structural + [issue.violation for issue in self.issues]

    def valid_values(self) -> dict[str, int]:
        """Output name -> how many rows hold a converted (non-null) value of the column."""
        return {name: len(typed) - typed.null_count for name, typed in self.typed.items()}


def inspect_file(path: Path, contract: Contract, source: str) -> Inspection:
    """Read a whole file for its contract and inspect it (see :func:`inspect_table`).

    Raises:
        UnreadableFileError: the file cannot be decoded.
        ResourceLimitError: reading it passed a limit of the contract (memory, columns).
    """
    raw = read_for_contract(path, contract, source=source)
    # Before any per-column work: a header of 100,000 names is refused by its count alone.
    check_table_limits(raw.num_columns, contract, source=source)
    return inspect_table(raw, contract)


def inspect_table(raw: pa.Table, contract: Contract) -> Inspection:
    """Check the structure of ``raw`` (a whole file, or one batch of it) and convert it.

    Row numbers in the violations are relative to ``raw`` (1 = its first row).
    """
    found = Inspection(raw, {}, [], [], [])
    names = raw.column_names
    counts = Counter(names)
    declared = {spec.name for spec in contract.columns}
    found.structural += _missing_columns(contract, names)
    found.structural += _duplicate_columns(counts)
    found.extras = [n for n in dict.fromkeys(names) if n not in declared]
    found.structural += _reserved_columns(found.extras)
    found.structural += _drift(contract, [n for n in found.extras if not reserved_name(n)])
    for spec in contract.columns:
        if counts.get(spec.name) == 1:
            found.typed[spec.output_name] = _check_column(
                raw.column(spec.name), spec, contract, found.issues
            )
    return found


def _missing_columns(contract: Contract, names: list[str]) -> list[Violation]:
    missing = [spec.name for spec in contract.columns if spec.name not in names]
    violations = []
    for name in missing:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        violations.append(
            Violation(
                column=name,
                kind="missing_column",
                message=f"declared column is missing{hint}; missing {missing}, found {names}",
            )
        )
    return violations


def _duplicate_columns(counts: Counter[str]) -> list[Violation]:
    return [
        Violation(
            column=name,
            kind="extra_column",
            message=f"column appears {counts[name]} times in the header; names must be unique",
        )
        for name in sorted(n for n, count in counts.items() if count > 1)
    ]


def _reserved_columns(extras: list[str]) -> list[Violation]:
    """Undeclared columns named like Hopper's own (lineage) columns: never kept, never doubled.

    A declared one is fine: the contract must rename it (see ``ColumnSpec``).
    """
    return [
        Violation(
            column=name,
            kind="extra_column",
            message=f"the name is reserved for Hopper's own column {reserved_name(name)!r} "
            f"(reserved: {list(RESERVED_COLUMNS)}, compared ignoring case), so it cannot be "
            f"kept as it is; {reserved_fix(name)}",
        )
        for name in extras
        if reserved_name(name)
    ]


def _drift(contract: Contract, extras: list[str]) -> list[Violation]:
    outputs = {spec.output_name for spec in contract.columns}
    violations = []
    for name in extras:
        if contract.extra_columns == "freeze":
            message = "undeclared column and extra_columns is freeze; declare it in the contract"
        elif name in outputs:
            message = "undeclared column clashes with a renamed output column; declare it"
        else:
            continue
        violations.append(Violation(column=name, kind="extra_column", message=message))
    return violations


def _check_column(
    values: pa.ChunkedArray, spec: ColumnSpec, contract: Contract, issues: list[Issue]
) -> pa.ChunkedArray:
    """Convert one declared column, record its violations in ``issues``, return typed values.

    A column the reader already typed, or without nulls, skips the masks it cannot fail
    (most columns of most files): a small file's checks would otherwise cost more than
    reading it.
    """
    bad_type: pa.ChunkedArray | None = None  # None: every value converted
    typed = values
    declared = spec.arrow_type()
    if values.type != declared:
        typed, bad_type = convert_column(values, spec, contract.reader)
        target = type_to_string(declared)
        detail = f" with format {' or '.join(map(repr, spec.formats))}" if spec.formats else ""
        _add(issues, spec, "type", bad_type, values, f"value(s) are not valid {target}{detail}")
    if spec.default is not None and typed.null_count:
        # Fill true nulls only: values that failed to convert stay null and stay reported.
        default = to_arrow_scalar(spec.default, typed.type)
        typed = as_chunked(pc.if_else(_true_nulls(typed, bad_type), default, typed))
    if not spec.nullable and typed.null_count:
        nulls = _true_nulls(typed, bad_type)
        _add(issues, spec, "null", nulls, values, "null value(s) but the column is not nullable")
    for kind, mask, what in _check_masks(typed, spec):
        _add(issues, spec, kind, mask, typed, what)
    return typed


def _true_nulls(typed: pa.ChunkedArray, bad_type: pa.ChunkedArray | None) -> Any:
    """The rows null in ``typed`` that were not values failing to convert (``bad_type``)."""
    if bad_type is None:
        return pc.is_null(typed)
    return pc.and_(pc.is_null(typed), pc.invert(bad_type))


def _check_masks(typed: pa.ChunkedArray, spec: ColumnSpec) -> list[tuple[str, Any, str]]:
    data_type = typed.type
    checks: list[tuple[str, Any, str]] = []
    if spec.min is not None:
        bound = to_arrow_scalar(spec.min, data_type)
        checks.append(("min", pc.less(typed, bound), f"value(s) below min {spec.min}"))
    if spec.max is not None:
        bound = to_arrow_scalar(spec.max, data_type)
        checks.append(("max", pc.greater(typed, bound), f"value(s) above max {spec.max}"))
    if spec.allowed is not None:
        allowed = pa.array([to_arrow_scalar(v, data_type).as_py() for v in spec.allowed], data_type)
        outside = pc.invert(pc.is_in(typed, value_set=allowed))
        checks.append(("allowed", outside, f"value(s) not in allowed {spec.allowed}"))
    if spec.pattern is not None:
        mismatch = f"value(s) do not fully match pattern {spec.pattern!r}"
        checks.append(("pattern", _pattern_mask(typed, spec), mismatch))
    if spec.unique:
        checks.append(
            ("unique", _duplicate_mask(typed), "row(s) share a value that must be unique")
        )
    return [(k, pc.and_(pc.fill_null(m, False), pc.is_valid(typed)), w) for k, m, w in checks]


def _pattern_mask(typed: pa.ChunkedArray, spec: ColumnSpec) -> Any:
    text = typed if pa.types.is_string(typed.type) else pc.cast(typed, pa.string())
    try:
        return pc.invert(pc.match_substring_regex(text, f"^(?:{spec.pattern})$"))
    except pa.ArrowInvalid as exc:
        raise ConfigError(
            f"column {spec.name!r}: pattern {spec.pattern!r} is not supported by Arrow's RE2 "
            f"engine ({exc}); rewrite it without look-arounds or back-references"
        ) from exc


def _duplicate_mask(typed: pa.ChunkedArray) -> Any:
    counts = pa.table({"v": typed}).group_by("v").aggregate([("v", "count")])
    repeated = counts.filter(pc.greater(counts["v_count"], 1))["v"]
    return pc.is_in(typed, value_set=repeated.combine_chunks())


def _add(
    issues: list[Issue],
    spec: ColumnSpec,
    kind: str,
    mask: Any,
    values: pa.ChunkedArray,
    what: str,
) -> None:
    count = int(pc.sum(mask).as_py() or 0)
    if count == 0:
        return
    rows = pc.indices_nonzero(mask)[:MAX_ROWS].to_pylist()
    offending = pc.unique(pc.filter(values, mask)).drop_null()[:MAX_SAMPLES].to_pylist()
    violation = Violation(
        column=spec.name,
        kind=kind,
        message=f"{count} {what}",
        rows=[r + 1 for r in rows],
        samples=[str(v) for v in offending],
        count=count,
    )
    issues.append(
        Issue(violation, pa.chunked_array([mask]) if isinstance(mask, pa.Array) else mask, what)
    )


__all__ = ["Inspection", "Issue", "inspect_file", "inspect_table"]
