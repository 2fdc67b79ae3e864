"""The Arrow type vocabulary of contracts: how a ``type:`` string names an Arrow type.

Contracts are written by people, so types have friendly aliases (``integer``, ``text``,
``datetime``, ``decimal``) besides Arrow's own spellings, and bounds, allowed values and
defaults are written as YAML numbers, dates or text that must become Arrow scalars of the
column's type. The same vocabulary serves the contract model (to validate a contract), the
checks (to compare values), the diff and inference (to spell a type back).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pyarrow as pa

_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "bool": pa.bool_(),
    "date32": pa.date32(),
    "date64": pa.date64(),
}
_ALIASES = {
    "int": "int64",
    "integer": "int64",
    "long": "int64",
    "float": "float64",
    "double": "float64",
    "halffloat": "float16",
    "str": "string",
    "text": "string",
    "utf8": "string",
    "large_utf8": "large_string",
    "boolean": "bool",
    "date": "date32",
    "date32[day]": "date32",
    "date64[ms]": "date64",
    "timestamp": "timestamp[us]",
    "datetime": "timestamp[us]",
    "time": "time64[us]",
    "decimal": "decimal128(38, 9)",
}
# str(pa.float32()) is "float", which contracts read as float64: spell types unambiguously.
_ARROW_SPELLINGS = {
    "halffloat": "float16",
    "float": "float32",
    "double": "float64",
    "date32[day]": "date32",
    "date64[ms]": "date64",
}
_TIMESTAMP_RE = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=([^\]]+))?\]$")
_TIME_RE = re.compile(r"^time(32|64)\[(s|ms|us|ns)\]$")
_DECIMAL_RE = re.compile(r"^decimal(128|256)?\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
SUPPORTED_TYPES_HINT = (
    "an Arrow type such as int64, float64, string, bool, date32, timestamp[us], "
    "timestamp[us, tz=UTC], decimal128(12, 2) or time64[us]"
)


def parse_arrow_type(text: str) -> pa.DataType:
    """Parse a contract type string into an Arrow data type.

    Args:
        text: e.g. ``"int64"``, ``"integer"``, ``"timestamp[us, tz=Europe/Paris]"``,
            ``"decimal128(12, 2)"``.

    Returns:
        The corresponding ``pyarrow.DataType``.

    Raises:
        ValueError: the string names no supported type.
    """
    key = text.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[key]
    if match := _TIMESTAMP_RE.match(text.strip()):
        unit, tz = match.group(1), match.group(2)
        return pa.timestamp(unit, tz=tz.strip() if tz else None)  # type: ignore[arg-type]
    if match := _TIME_RE.match(key):
        bits, unit = match.groups()
        return pa.time32(unit) if bits == "32" else pa.time64(unit)  # type: ignore[arg-type]
    if match := _DECIMAL_RE.match(key):
        bits, precision, scale = match.group(1), int(match.group(2)), int(match.group(3))
        if bits == "256":
            return pa.decimal256(precision, scale)
        return pa.decimal128(precision, scale)
    raise ValueError(f"unknown type {text!r}: expected {SUPPORTED_TYPES_HINT}")


def type_to_string(data_type: pa.DataType) -> str:
    """The contract spelling of an Arrow type (the inverse of :func:`parse_arrow_type`)."""
    text = str(data_type)
    return _ARROW_SPELLINGS.get(text, text)


def to_arrow_scalar(value: Any, data_type: pa.DataType) -> pa.Scalar:
    """Convert a YAML value (number, date, string) to an Arrow scalar of a column's type.

    Raises:
        ValueError: the value cannot be represented in ``data_type``.
    """
    for candidate in (value, str(value), _as_utc_datetime(value)):
        if candidate is None:
            continue
        try:
            return pa.array([candidate]).cast(data_type)[0]
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            continue
    raise ValueError(f"{value!r} is not a valid {type_to_string(data_type)}")


def _as_utc_datetime(value: Any) -> dt.datetime | None:
    """A naive date/timestamp bound read as UTC, so it compares with tz-aware columns."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return None


__all__ = ["SUPPORTED_TYPES_HINT", "parse_arrow_type", "to_arrow_scalar", "type_to_string"]
