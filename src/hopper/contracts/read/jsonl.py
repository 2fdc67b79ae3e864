"""Read JSON lines, or a JSON array of objects, into a table of flat columns.

Arrow's JSON reader handles JSON lines; a JSON array, or a column that mixes JSON types (which
Arrow refuses), is read with Python's json module instead, keeping the values as text so the
contract can judge each one. Contracts type flat columns only, so nested values (objects,
lists) become JSON text, here and in Parquet files alike (:func:`nested_as_text`).
"""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from hopper.contracts.model import ReaderOptions
from hopper.contracts.read.detect import open_stream
from hopper.contracts.read.encoding import arrow_encoding


def read_json(path: Path, reader: ReaderOptions, head: bytes) -> pa.Table:
    """Read JSON lines, or a JSON array of objects when ``head`` starts with ``[``.

    Raises:
        ValueError, UnicodeError, pyarrow.ArrowException: the file is not such JSON (the
            caller words the error).
    """
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return _table_from_rows(_load_json_array(path, reader))
    data = _utf8_bytes(path, reader)
    try:
        table = pajson.read_json(io.BytesIO(data), pajson.ReadOptions(block_size=16 << 20))
        return nested_as_text(table)
    except pa.ArrowInvalid as exc:
        if "changed from" not in str(exc):
            raise
        # A column mixes JSON types: fall back to Python so the values can be diagnosed.
        text = data.decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return _table_from_rows(rows)


def _utf8_bytes(path: Path, reader: ReaderOptions) -> bytes:
    with open_stream(path) as stream:
        data = bytes(stream.read())
    if arrow_encoding(reader.encoding) == "utf8":
        return data.removeprefix(codecs.BOM_UTF8)
    return data.decode(reader.encoding).encode("utf-8")


def _load_json_array(path: Path, reader: ReaderOptions) -> list[Any]:
    rows = json.loads(_utf8_bytes(path, reader))
    if not isinstance(rows, list):
        raise ValueError("expected a JSON array of objects")
    return rows


def _table_from_rows(rows: list[Any]) -> pa.Table:
    """Build a table from JSON objects; keys missing from a row become nulls."""
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError("every JSON record must be an object ({...})")
    names = list(dict.fromkeys(key for row in rows for key in row))
    return pa.table({name: _json_column([row.get(name) for row in rows]) for name in names})


def nested_as_text(table: pa.Table) -> pa.Table:
    """Contracts type flat columns only: nested values (objects, lists) become JSON text."""
    for i, column in enumerate(table.schema):
        if pa.types.is_nested(column.type):
            text = pa.array([_json_text(v) for v in table.column(i).to_pylist()], pa.string())
            table = table.set_column(i, column.name, text)
    return table


def _json_column(values: list[Any]) -> pa.Array:
    if any(isinstance(v, dict | list) for v in values):
        return pa.array([_json_text(v) for v in values], pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        # Mixed JSON types in one column: keep the text so the contract can judge each value.
        return pa.array([_json_text(v) for v in values], pa.string())


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
