"""Hold a file to its contract: convert declared columns to their types and run the checks.

Everything here is column-at-a-time Arrow compute. When a column does not convert, only its
*distinct* values are examined (bisected with Arrow casts) to find the bad ones, and
``is_in``/``index_in`` map them back to rows, so a wide, large file with a few bad values
costs a few extra vectorised passes, never a Python loop per row.

:func:`read_and_conform` is the ingestion path (raises on violations, or quarantines bad
rows); :func:`validate_file` is the ``hopper validate`` path (reports, never raises for data
problems). Both share :func:`_inspect`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hopper.contracts.limits import check_file_limits, check_table_limits
from hopper.contracts.model import (
    ColumnSpec,
    Contract,
    ReaderOptions,
    to_arrow_scalar,
    type_to_string,
)
from hopper.contracts.read import read_for_contract
from hopper.contracts.transforms import apply_transforms, has_transforms
from hopper.errors import (
    ConfigError,
    ContractViolation,
    ResourceLimitError,
    TerminalError,
    UnreadableFileError,
)
from hopper.transform import RESERVED_COLUMNS, reserved_clashes, reserved_fix, reserved_name

logger = logging.getLogger(__name__)

MAX_ROWS = 20
MAX_SAMPLES = 5

Converter = Callable[[Any], Any]

# Necessary (not sufficient) shapes of numbers Arrow can parse: values that fail these are
# certainly bad, so only the rest need the slower bisection.
_INTEGER_SHAPE = r"(?i)^[+-]?(0x[0-9a-f]+|[0-9]+)$"
_FLOAT_SHAPE = r"(?i)^[+-]?(inf(inity)?|nan|[0-9]*\.?[0-9]*(e[+-]?[0-9]+)?)$"
_BISECT_LEAF = 16


@dataclass
class Violation:
    """One way a file breaks its contract.

    Attributes:
        column: the column (as named in the file), or None for whole-file problems.
        kind: missing_column, extra_column (undeclared, duplicated, or named like a column
            Hopper writes itself), type, null, min, max, allowed, pattern, unique,
            unreadable, limit (a resource limit of the dataset) or transform.
        message: what is wrong, in words.
        rows: 1-based data row numbers (header excluded), at most 20.
        samples: up to 5 distinct offending values, as text.
        count: total number of offending rows.
    """

    column: str | None
    kind: str
    message: str
    rows: list[int] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the violation."""
        return asdict(self)


@dataclass
class ConformResult:
    """A file converted to its contract.

    Attributes:
        table: typed valid rows, output names, contract column order then evolved extras.
        rejected: bad rows (quarantine only) as original text plus ``_row`` and ``_reason``.
        violations: what was wrong (empty unless rows were quarantined).
        rows_in: rows read from the file.
        extra_columns: undeclared columns found in the file (schema drift).
    """

    table: pa.Table
    rejected: pa.Table | None
    violations: list[Violation]
    rows_in: int
    extra_columns: list[str]

    @property
    def rows_out(self) -> int:
        """Rows kept in :attr:`table`."""
        return int(self.table.num_rows)


@dataclass
class _Issue:
    violation: Violation
    mask: pa.ChunkedArray  # True on offending rows, never null
    what: str = ""  # the message without its leading count


@dataclass
class _Inspection:
    raw: pa.Table
    typed: dict[str, pa.ChunkedArray]  # output name -> typed column
    extras: list[str]
    structural: list[Violation]
    issues: list[_Issue]

    @property
    def violations(self) -> list[Violation]:
        return self.structural + [issue.violation for issue in self.issues]


# --------------------------------------------------------------------------- public API


def read_and_conform(
    path: Path,
    contract: Contract,
    *,
    source_name: str | None = None,
    ingested_at: dt.datetime | None = None,
) -> ConformResult:
    """Read a file, convert it to its contract and apply the contract's transforms.

    Args:
        path: the file to read.
        contract: its dataset contract.
        source_name: how to name the file in messages (defaults to the path).
        ingested_at: ingestion time, whose UTC date fills the ``_ingest_date`` partition
            (defaults to now).

    Returns:
        The typed, transformed table, plus the rejected rows when ``bad_rows`` is
        ``quarantine``.

    Raises:
        UnreadableFileError: the file cannot be decoded.
        ContractViolation: a structural violation (missing column, frozen schema drift, or a
            column none of whose values convert: a type change), or any violation when
            ``bad_rows`` is ``reject``; ``violations`` holds the details and, for missing
            columns and type problems, the message ends with a column-by-column diff.
        TerminalError: a transform step failed (see :func:`~hopper.contracts.transforms.
            apply_transforms`).
    """
    source = source_name or str(path)
    found = _inspect(path, contract, source)
    violations = found.violations
    changed = _type_changes(found, contract)
    if found.structural or changed or (violations and contract.bad_rows == "reject"):
        raise ContractViolation(
            _failure_message(path, contract, found, source, changed),
            violations=[v.to_dict() for v in violations],
        )
    table, rejected = _conform_rows(found, contract)
    if rejected is not None:
        logger.warning("%s: %d row(s) quarantined", source, rejected.num_rows)
    if has_transforms(contract):
        when = ingested_at or dt.datetime.now(dt.UTC)
        table = apply_transforms(table, contract, source=source, ingested_at=when)
    logger.info("%s: %d row(s) in, %d out", source, found.raw.num_rows, table.num_rows)
    return ConformResult(table, rejected, violations, found.raw.num_rows, found.extras)


def validate_file(
    path: Path, contract: Contract, *, source_name: str | None = None
) -> list[Violation]:
    """Check a file against its contract without ingesting it.

    Args:
        path: the file to check.
        contract: its dataset contract.
        source_name: how to name the file in messages (defaults to the path).

    Returns:
        Every violation found (empty when the file conforms); an undecodable file gives one
        violation of kind ``unreadable``.
    """
    source = source_name or str(path)
    # The same limits as ingestion: size, decompression, line length, JSON depth, columns.
    try:
        over = _over_limit(lambda: check_file_limits(path, contract, source=source))
        if over:
            return over
        found = _inspect(path, contract, source)
    except UnreadableFileError as exc:
        return [Violation(column=None, kind="unreadable", message=str(exc))]
    except ResourceLimitError as exc:  # found while reading: memory (max_memory_mb)
        return [Violation(column=None, kind="limit", message=str(exc))]
    columns = found.raw.num_columns
    over = _over_limit(lambda: check_table_limits(columns, contract, source=source))
    if over:
        return over
    if found.violations or not has_transforms(contract):
        return found.violations
    # The data is valid: make sure the contract's transforms also go through on it.
    try:
        table = apply_transforms(
            _output_table(found, contract),
            contract,
            source=source,
            ingested_at=dt.datetime.now(dt.UTC),
        )
    except TerminalError as exc:
        column = exc.violations[0].get("column") if exc.violations else None
        return [Violation(column=column, kind="transform", message=str(exc))]
    return [
        Violation(
            column=name,
            kind="transform",
            message=f"the transform's output has a column named like Hopper's own column "
            f"{reserved_name(name)!r}; rename it in the transform",
        )
        for name in reserved_clashes(table.column_names)
    ]


def _over_limit(check: Callable[[], None]) -> list[Violation]:
    """Run a limit check; its refusal as a ``limit`` violation (unreadable files propagate)."""
    try:
        check()
    except UnreadableFileError:
        raise
    except TerminalError as exc:
        return [Violation(column=None, kind="limit", message=str(exc))]
    return []


def format_violations(
    violations: list[Violation], source: str, *, details: list[str] | None = None
) -> str:
    """Readable multi-line summary of violations, ending with how to fix them.

    Args:
        violations: what was found.
        source: the file's name or URI.
        details: extra lines (e.g. a column-by-column diff) put before the fix.

    Returns:
        Text naming the file and, per violation, the column, kind, count, rows and samples.
    """
    if not violations:
        return f"{source}: conforms to its contract"
    lines = [f"{source}: {len(violations)} contract violation(s):"]
    for v in violations:
        where = f"column {v.column!r}" if v.column is not None else "file"
        line = f"  - {where} [{v.kind}]: {v.message}"
        if v.rows:
            more = ", ..." if v.count > len(v.rows) else ""
            line += f"; rows {', '.join(map(str, v.rows))}{more}"
        if v.samples:
            line += f"; samples {', '.join(repr(s) for s in v.samples)}"
        lines.append(line)
    lines += details or []
    lines.append(
        "Fix: correct the file and send it again, or change the dataset contract "
        "(datasets/<name>.yaml) to accept this data; then replay the file."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- inspection


def _inspect(path: Path, contract: Contract, source: str) -> _Inspection:
    return _inspect_table(read_for_contract(path, contract, source=source), contract)


def _inspect_table(raw: pa.Table, contract: Contract) -> _Inspection:
    """Check the structure of ``raw`` (a whole file, or one batch of it) and convert it.

    Row numbers in the violations are relative to ``raw`` (1 = its first row).
    """
    found = _Inspection(raw, {}, [], [], [])
    names = raw.column_names
    declared = {spec.name for spec in contract.columns}
    found.structural += _missing_columns(contract, names)
    found.structural += _duplicate_columns(names)
    found.extras = [n for n in dict.fromkeys(names) if n not in declared]
    found.structural += _reserved_columns(found.extras)
    found.structural += _drift(contract, [n for n in found.extras if not reserved_name(n)])
    for spec in contract.columns:
        if spec.name in names and names.count(spec.name) == 1:
            found.typed[spec.output_name] = _check_column(
                raw.column(spec.name), spec, contract, found.issues
            )
    return found


def _type_changes(found: _Inspection, contract: Contract) -> list[Violation]:
    """Type violations where no value of the column converts: the column changed type.

    Such a column is a schema change rather than a few bad rows, so even with ``bad_rows:
    quarantine`` the whole file is quarantined instead of every row being set aside.
    """
    changed = []
    for issue in found.issues:
        violation = issue.violation
        if violation.kind != "type" or violation.column is None:
            continue
        typed = found.typed[contract.column(violation.column).output_name]
        if typed.null_count == len(typed):
            changed.append(violation)
    return changed


def _failure_message(
    path: Path,
    contract: Contract,
    found: _Inspection,
    source: str,
    changed: list[Violation],
    *,
    rows: int | None = None,
    sample_rows: int | None = None,
) -> str:
    """The violations, plus a column-by-column diff when columns are missing or mistyped.

    ``rows`` overrides the row count of ``found.raw`` and ``sample_rows`` bounds the re-read
    that infers the file's own types (both for streamed files, whose inspection is a batch).
    """
    violations = found.violations
    if not any(v.kind in ("missing_column", "extra_column", "type") for v in violations):
        return format_violations(violations, source)
    # diff builds on this module's inspection, so it imports this module: import it late.
    from hopper.contracts.diff import diff_inspection, format_diff

    details = [
        f"Column {v.column!r} changed type: none of its values converts, so the whole file is "
        "quarantined (not just its rows)."
        for v in changed
    ]
    diff = diff_inspection(path, contract, found, source, rows=rows, sample_rows=sample_rows)
    details += format_diff(diff).splitlines()
    return format_violations(violations, source, details=details)


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


def _duplicate_columns(names: list[str]) -> list[Violation]:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    return [
        Violation(
            column=name,
            kind="extra_column",
            message=f"column appears {names.count(name)} times in the header; names must be unique",
        )
        for name in duplicates
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
    values: pa.ChunkedArray, spec: ColumnSpec, contract: Contract, issues: list[_Issue]
) -> pa.ChunkedArray:
    """Convert one declared column, record its violations in ``issues``, return typed values."""
    typed, bad_type = _convert(values, spec, contract.reader)
    target = type_to_string(spec.arrow_type())
    detail = f" with format {' or '.join(map(repr, spec.formats))}" if spec.formats else ""
    _add(issues, spec, "type", bad_type, values, f"value(s) are not valid {target}{detail}")
    if spec.default is not None:
        # Fill true nulls only: values that failed to convert stay null and stay reported.
        fill = pc.and_(pc.is_null(typed), pc.invert(bad_type))
        default = to_arrow_scalar(spec.default, typed.type)
        typed = _chunked(pc.if_else(fill, default, typed))
    if not spec.nullable:
        nulls = pc.and_(pc.is_null(typed), pc.invert(bad_type))
        _add(issues, spec, "null", nulls, values, "null value(s) but the column is not nullable")
    for kind, mask, what in _check_masks(typed, spec):
        _add(issues, spec, kind, mask, typed, what)
    return typed


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
    issues: list[_Issue],
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
        _Issue(violation, pa.chunked_array([mask]) if isinstance(mask, pa.Array) else mask, what)
    )


# --------------------------------------------------------------------------- conversion


def _convert(
    values: pa.ChunkedArray, spec: ColumnSpec, reader: ReaderOptions
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Convert a column to its declared type; return (typed values, mask of bad rows)."""
    target = spec.arrow_type()
    if values.type == target:
        return values, _no_rows(values)
    text_input = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    if text_input and not (pa.types.is_string(target) or pa.types.is_large_string(target)):
        # JSON strings are not run through the CSV null markers by the reader.
        markers = pa.array(reader.null_values, values.type)
        values = pc.if_else(pc.is_in(values, value_set=markers), None, values)
        numeric = pa.types.is_floating(target) or pa.types.is_decimal(target)
        if numeric and reader.decimal_point != ".":
            values = pc.replace_substring(values, reader.decimal_point, ".", max_replacements=1)
        return _convert_distinct(values, _text_converter(spec, target), _shape_of(target))
    return _convert_distinct(values, lambda a: pc.cast(a, target), None)


def _text_converter(spec: ColumnSpec, target: pa.DataType) -> Converter:
    if spec.formats:
        return lambda a: _strptime_any(a, spec.formats, target)
    if pa.types.is_timestamp(target) and target.tz:
        return lambda a: _to_zoned(a, target)
    if pa.types.is_time(target):
        return lambda a: pc.cast(
            pc.cast(pc.binary_join_element_wise("1970-01-01T", a, ""), pa.timestamp("ns")),
            target,
        )
    return lambda a: pc.cast(a, target)


def _strptime_any(values: Any, formats: list[str], target: pa.DataType) -> Any:
    """Parse with each format in turn; a value takes the first format that parses it."""
    parsed = [_strptime(values, fmt, target) for fmt in formats]
    return parsed[0] if len(parsed) == 1 else pc.coalesce(*parsed)


def _strptime(values: Any, fmt: str, target: pa.DataType) -> Any:
    unit = target.unit if pa.types.is_timestamp(target) else "us"
    parsed = pc.strptime(values, format=fmt, unit=unit, error_is_null=True)
    if pa.types.is_timestamp(target) and target.tz and parsed.type.tz is None:
        return pc.assume_timezone(parsed, target.tz)
    return pc.cast(parsed, target, safe=False)


def _to_zoned(values: Any, target: pa.DataType) -> Any:
    """ISO text to a tz-aware timestamp: text with an offset is exact, naive text is local."""
    try:
        return pc.cast(values, target)
    except pa.ArrowInvalid:
        naive = pc.cast(values, pa.timestamp(target.unit))
        return pc.assume_timezone(naive, target.tz)


def _shape_of(target: pa.DataType) -> str | None:
    if pa.types.is_integer(target):
        return _INTEGER_SHAPE
    if pa.types.is_floating(target) or pa.types.is_decimal(target):
        return _FLOAT_SHAPE
    return None


def _convert_distinct(
    values: pa.ChunkedArray, convert: Converter, shape: str | None
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Convert ``values``; if some do not convert, find them among the distinct values."""
    try:
        typed = _chunked(convert(values))
        return typed, _lost(values, typed)
    except pa.ArrowInvalid:
        pass
    try:
        distinct = pc.unique(values).drop_null()
    except pa.ArrowNotImplementedError:
        return pa.nulls(len(values), _target_of(convert)), pc.is_valid(values)
    good = distinct.filter(pc.invert(_bad_distinct(distinct, convert, shape)))
    converted = _convert_each_if_needed(good, convert)
    typed = _chunked(pc.take(converted, pc.index_in(values, value_set=good)))
    return typed, _lost(values, typed)


def _bad_distinct(distinct: pa.Array, convert: Converter, shape: str | None) -> pa.Array:
    bad = np.zeros(len(distinct), dtype=bool)
    candidates = np.arange(len(distinct))
    if shape is not None:
        fits = pc.match_substring_regex(distinct, shape).to_numpy(zero_copy_only=False)
        bad[~fits] = True
        candidates = candidates[fits]
    subset = distinct.take(pa.array(candidates, pa.int64()))
    bad[candidates[_bisect(subset, convert)]] = True
    return pa.array(bad)


def _bisect(values: pa.Array, convert: Converter) -> list[int]:
    """Positions of the values that fail ``convert``, by halving failing slices."""
    bad: list[int] = []
    pending = [(0, len(values))]
    while pending:
        start, stop = pending.pop()
        if stop <= start or _converts(values.slice(start, stop - start), convert):
            continue
        if stop - start <= _BISECT_LEAF:
            bad += [i for i in range(start, stop) if not _converts(values.slice(i, 1), convert)]
        else:
            middle = (start + stop) // 2
            pending += [(start, middle), (middle, stop)]
    return sorted(bad)


def _converts(values: pa.Array, convert: Converter) -> bool:
    try:
        converted = convert(values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return int(converted.null_count) == int(values.null_count)


def _convert_each_if_needed(good: pa.Array, convert: Converter) -> pa.Array:
    try:
        return _as_array(convert(good))
    except pa.ArrowInvalid:
        # Values that convert one at a time but not together (e.g. zoned and naive
        # timestamps mixed): convert them separately; only distinct values get here.
        return pa.concat_arrays([_as_array(convert(good.slice(i, 1))) for i in range(len(good))])


def _target_of(convert: Converter) -> pa.DataType:
    return _as_array(convert(pa.array([], pa.string()))).type


def _lost(values: pa.ChunkedArray, typed: pa.ChunkedArray) -> pa.ChunkedArray:
    """Rows that had a value before conversion and none after."""
    return _chunked(pc.and_(pc.is_valid(values), pc.is_null(typed)))


def _no_rows(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return _false(len(values))


def _false(num_rows: int) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(np.zeros(num_rows, dtype=bool))], pa.bool_())


def _chunked(values: Any) -> pa.ChunkedArray:
    if isinstance(values, pa.ChunkedArray):
        return values
    return pa.chunked_array([values])


def _as_array(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values


# --------------------------------------------------------------------------- output


def _conform_rows(
    found: _Inspection, contract: Contract, first_row: int = 1
) -> tuple[pa.Table, pa.Table | None]:
    """Split an inspection into its valid output rows and its rejected rows (or None).

    Args:
        found: the inspection of a whole file or of one batch.
        contract: the contract it was inspected against.
        first_row: the file-relative number of ``found.raw``'s first row (for ``_row``).
    """
    table = _output_table(found, contract)
    if not found.issues:
        return table, None
    bad = _any(found.issues, found.raw.num_rows)
    return table.filter(pc.invert(bad)), _rejected_rows(found.raw, found.issues, bad, first_row)


def _output_table(found: _Inspection, contract: Contract) -> pa.Table:
    columns = dict(found.typed)
    if contract.extra_columns == "evolve":
        columns.update({name: found.raw.column(name) for name in found.extras})
    return pa.table(columns)


def _any(issues: list[_Issue], num_rows: int) -> pa.ChunkedArray:
    bad = _false(num_rows)
    for issue in issues:
        bad = _chunked(pc.or_(bad, issue.mask))
    return bad


def _rejected_rows(
    raw: pa.Table, issues: list[_Issue], bad: pa.ChunkedArray, first_row: int = 1
) -> pa.Table:
    """The bad rows of ``raw`` as text, with ``_row`` (``first_row`` = raw's first) and why."""
    labels = [
        pc.if_else(issue.mask, f"{issue.violation.column}: {issue.violation.kind}; ", "")
        for issue in issues
    ]
    reasons = pc.utf8_rtrim(pc.binary_join_element_wise(*labels, ""), characters="; ")
    columns = {name: _as_text(raw.column(name)) for name in dict.fromkeys(raw.column_names)}
    rows = np.arange(first_row, first_row + raw.num_rows, dtype=np.int64)
    columns["_row"] = pa.chunked_array([pa.array(rows, pa.int64())])
    columns["_reason"] = reasons
    return pa.table(columns).filter(bad)


def _as_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return pc.cast(values, pa.string())
    except pa.ArrowNotImplementedError:
        return values


__all__ = [
    "ConformResult",
    "Violation",
    "format_violations",
    "read_and_conform",
    "validate_file",
]
