"""Convert a file's column to its declared Arrow type, and find exactly the values that fail.

A plain Arrow cast either converts a whole column or fails on its first bad value without
saying which rows are bad. Here, when a column does not convert, only its *distinct* values
are examined (numbers first screened by their shape, the rest bisected with Arrow casts) and
``index_in`` maps them back to rows, so a wide, large file with a few bad values costs a few
extra vectorised passes, never a Python loop per row. Text is read with the contract's null
markers, decimal point and date formats; time zones and mixed spellings are handled here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hopper.contracts.model import ColumnSpec, ReaderOptions

Converter = Callable[[Any], Any]

# Necessary (not sufficient) shapes of numbers Arrow can parse: values that fail these are
# certainly bad, so only the rest need the slower bisection.
_INTEGER_SHAPE = r"(?i)^[+-]?(0x[0-9a-f]+|[0-9]+)$"
_FLOAT_SHAPE = r"(?i)^[+-]?(inf(inity)?|nan|[0-9]*\.?[0-9]*(e[+-]?[0-9]+)?)$"
_BISECT_LEAF = 16


def convert_column(
    values: pa.ChunkedArray, spec: ColumnSpec, reader: ReaderOptions
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Convert a column to its declared type.

    Args:
        values: the column as read (text, or the reader's own type for JSON and Parquet).
        spec: its declaration (type, formats).
        reader: the contract's reader options (null markers, decimal point).

    Returns:
        The typed values (null where a value does not convert) and a mask that is True on
        the rows whose value did not convert, never null.
    """
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
        typed = as_chunked(convert(values))
        return typed, _lost(values, typed)
    except pa.ArrowInvalid:
        pass
    try:
        distinct = pc.unique(values).drop_null()
    except pa.ArrowNotImplementedError:
        return pa.nulls(len(values), _target_of(convert)), pc.is_valid(values)
    good = distinct.filter(pc.invert(_bad_distinct(distinct, convert, shape)))
    converted = _convert_each_if_needed(good, convert)
    typed = as_chunked(pc.take(converted, pc.index_in(values, value_set=good)))
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
    return as_chunked(pc.and_(pc.is_valid(values), pc.is_null(typed)))


def _no_rows(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return false_mask(len(values))


def false_mask(num_rows: int) -> pa.ChunkedArray:
    """A mask of ``num_rows`` rows, all False."""
    return pa.chunked_array([pa.array(np.zeros(num_rows, dtype=bool))], pa.bool_())


def as_chunked(values: Any) -> pa.ChunkedArray:
    """``values`` (an Arrow array or chunked array) as a chunked array."""
    if isinstance(values, pa.ChunkedArray):
        return values
    return pa.chunked_array([values])


def _as_array(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values


__all__ = ["Converter", "as_chunked", "convert_column", "false_mask"]
