"""The transform stage after validation: lineage columns, reserved names, portable types.

The lineage columns repeat one value on every row. They are built without a Python list per
row: one *template* chunk of the value (a few MiB at most) is made once per source and the
column is that chunk repeated, zero-copy, as many times as the rows need. The columns stay
plain ``string`` and ``timestamp[us, tz=UTC]`` (not dictionary-encoded), so the lake's
schema does not change and every reader sees the same types as before; Parquet's own
dictionary encoding still stores each column chunk's single value once.

The names of the columns Hopper adds itself are reserved (:data:`RESERVED_COLUMNS`, the one
list of them): a file, a contract or a transform that brings a column of such a name — or of
one that case-insensitive engines (Hive, Athena, Spark) would take for it — is refused rather
than written with the name twice, which no reader can read back. Two of them come with the
conformed rows rather than from here: ``_ingest_date`` (a partition) and ``_rescued_data``
(the values ``bad_rows: rescue`` replaced, see :mod:`hopper.contracts.rescue`).
"""

from __future__ import annotations

import functools
import unicodedata
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hopper.errors import ContractViolation

SOURCE_URI = "_source_uri"
INGESTED_AT = "_ingested_at"
LINEAGE_COLUMNS = (SOURCE_URI, INGESTED_AT)
INGEST_DATE = "_ingest_date"
"""Pseudo-column for ``partition_by``: the UTC date the file was ingested (date32)."""
RESCUED_DATA = "_rescued_data"
"""With ``bad_rows: rescue``: a row's rescued values as read, a JSON object text (or null)."""
RESERVED_COLUMNS = (*LINEAGE_COLUMNS, INGEST_DATE, RESCUED_DATA)
"""Every column name Hopper writes itself: no file, contract or transform may bring one."""
_OWN_ONCE = (INGEST_DATE, RESCUED_DATA)
"""Reserved names the conformed rows themselves may hold, once and spelled exactly."""
_RESERVED_KEYS = {name.casefold(): name for name in RESERVED_COLUMNS}


def reserved_name(name: str) -> str | None:
    """The reserved column ``name`` would be taken for, or None.

    Names are compared as loosely as the lake's readers might: Unicode-compatibility
    normalised (NFKC), case-folded and stripped of surrounding white space, so ``_Source_URI``
    and ``\uff3fsource_uri`` count as ``_source_uri``.
    """
    return _RESERVED_KEYS.get(unicodedata.normalize("NFKC", name).strip().casefold())


def reserved_clashes(names: list[str]) -> list[str]:
    """The names among ``names`` that are, or would be taken for, reserved column names.

    A single exact ``_ingest_date`` (added for ``partition_by``) or ``_rescued_data`` (added
    by ``bad_rows: rescue``) is Hopper's own and allowed; the contract step that adds them
    refuses them from anywhere else.
    """
    own = {name for name in _OWN_ONCE if names.count(name) == 1}
    return [n for n in names if reserved_name(n) and n not in own]


def reserved_fix(name: str) -> str:
    """How to fix a column named like a reserved one: the rename rule to put in the contract."""
    new = name.strip().strip("_") or "column"
    return (
        f"declare it in the contract's columns with a rename, e.g. "
        f"{{name: {name!r}, type: string, rename: {new!r}}}"
    )


_TEMPLATE_BYTES = 4 << 20
"""Largest template chunk of ``_source_uri`` values, in bytes of string data."""
_TEMPLATE_MAX_ROWS = 1 << 18
_TEMPLATE_MIN_ROWS = 16
_SMALL_ROWS = 4096
"""Up to this many rows, the columns are made directly (a small file's: the template's
machinery costs more than the values, which take no more memory than a template would)."""


_STAMP = pa.timestamp("us", tz="UTC")


def _portable(field: pa.Field) -> pa.DataType:
    """Types every Parquet reader understands: microsecond timestamps, no large/odd units."""
    t = field.type
    if pa.types.is_timestamp(t) and t.unit == "ns":
        return pa.timestamp("us", tz=t.tz)
    if pa.types.is_null(t):
        return pa.string()
    return t


def _template_rows(source_uri: str, num_rows: int) -> int:
    """Rows of the template for ``num_rows``: no more than needed (a power of two, so blocks
    of a streamed file share one), no more than ``_TEMPLATE_BYTES`` of string data."""
    width = max(len(source_uri.encode()), 1)
    cap = max(_TEMPLATE_MIN_ROWS, min(_TEMPLATE_MAX_ROWS, _TEMPLATE_BYTES // width))
    return min(cap, max(_TEMPLATE_MIN_ROWS, 1 << max(num_rows - 1, 0).bit_length()))


@functools.lru_cache(maxsize=4)
def _templates(source_uri: str, micros: int, rows: int) -> tuple[pa.Array, pa.Array]:
    """One chunk of ``_source_uri`` and one of ``_ingested_at`` values, built from buffers."""
    data = source_uri.encode()
    offsets = (np.arange(rows + 1, dtype=np.int64) * len(data)).astype(np.int32)
    uris = pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data * rows))
    stamps = pa.array(np.full(rows, micros, dtype=np.int64)).cast(_STAMP)
    return uris, stamps


def _repeated(template: pa.Array, num_rows: int) -> pa.ChunkedArray:
    """``template``'s (identical) values repeated to ``num_rows`` rows, sharing its buffers."""
    size = len(template)
    whole, rest = divmod(num_rows, size)
    chunks = [template] * whole + ([template.slice(0, rest)] if rest or not whole else [])
    return pa.chunked_array(chunks, template.type)


def lineage_columns(
    num_rows: int, source_uri: str, ingested_at: datetime
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """The ``_source_uri`` and ``_ingested_at`` columns for ``num_rows`` rows.

    Args:
        num_rows: how many rows.
        source_uri: URI of the source file version.
        ingested_at: timezone-aware ingestion time (stored as timestamp[us, UTC]).

    Returns:
        Two chunked arrays (``string`` and ``timestamp[us, tz=UTC]``) whose chunks share one
        template's buffers: memory does not grow with ``num_rows``.
    """
    micros = int(ingested_at.timestamp() * 1_000_000)
    if num_rows <= _SMALL_ROWS and len(source_uri.encode()) <= _TEMPLATE_BYTES // _SMALL_ROWS:
        return (
            pa.chunked_array([pa.repeat(pa.scalar(source_uri, pa.string()), num_rows)]),
            pa.chunked_array([pa.repeat(pa.scalar(micros, _STAMP), num_rows)]),
        )
    uris, stamps = _templates(source_uri, micros, _template_rows(source_uri, num_rows))
    return _repeated(uris, num_rows), _repeated(stamps, num_rows)


@functools.lru_cache(maxsize=64)  # a batch's files share a few schemas
def _clashes(names: tuple[str, ...]) -> list[str]:
    return reserved_clashes(list(names))


@functools.lru_cache(maxsize=64)
def _portable_types(schema: pa.Schema) -> tuple[pa.DataType, ...] | None:
    """Each column's portable type (see :func:`_portable`), or None if none changes.

    Cached by names and types: equal schemas may differ in metadata, which callers keep.
    """
    types = tuple(_portable(f) for f in schema)
    return None if types == tuple(schema.types) else types


def _made_portable(table: pa.Table, types: tuple[pa.DataType, ...]) -> pa.Table:
    """``table`` with each column whose portable type differs cast to it.

    Nanoseconds are cut to microseconds, as the lake's Parquet writer stores them anyway (a
    strict cast would refuse any value with sub-microsecond digits); all-null columns become
    strings. Field and schema metadata are kept.
    """
    schema = table.schema
    for index, (field, portable) in enumerate(zip(schema, types, strict=True)):
        if field.type != portable:
            options = pc.CastOptions(target_type=portable, allow_time_truncate=True)
            column = pc.cast(table.column(index), options=options)
            table = table.set_column(index, field.with_type(portable), column)
    return table.replace_schema_metadata(schema.metadata)


def add_lineage(table: pa.Table, source_uri: str, ingested_at: datetime) -> pa.Table:
    """Append ``_source_uri`` and ``_ingested_at`` and normalise column types for Parquet.

    The table is cast only when a column needs it (nanosecond timestamps, all-null columns):
    otherwise no column is copied.

    Args:
        table: validated rows (a whole file, or one batch of a streamed file).
        source_uri: URI of the source file version.
        ingested_at: timezone-aware ingestion time (stored as timestamp[us, UTC]).

    Raises:
        ContractViolation: ``table`` already has a column named like a reserved one (see
            :func:`reserved_name`): lineage is never forged nor written twice.
    """
    clashes = _clashes(tuple(table.column_names))
    if clashes:
        raise ContractViolation(
            f"{source_uri}: column(s) {clashes} are named like Hopper's own columns "
            f"{list(RESERVED_COLUMNS)} (names compared ignoring case), which the lake would "
            f"then hold twice. Fix: {reserved_fix(clashes[0])}, or rename it in the contract's "
            "transform; then replay the file.",
            violations=[
                {"column": name, "kind": "extra_column", "message": "reserved name", "count": 0}
                for name in clashes
            ],
        )
    types = _portable_types(table.schema)
    if types is not None:
        table = _made_portable(table, types)
    uris, stamps = lineage_columns(table.num_rows, source_uri, ingested_at)
    table = table.append_column(SOURCE_URI, uris)
    return table.append_column(INGESTED_AT, stamps)
