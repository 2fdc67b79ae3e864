"""Transformations applied after validation: lineage columns and Parquet-friendly types."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa

SOURCE_URI = "_source_uri"
INGESTED_AT = "_ingested_at"
LINEAGE_COLUMNS = (SOURCE_URI, INGESTED_AT)


def _portable(field: pa.Field) -> pa.DataType:
    """Types every Parquet reader understands: microsecond timestamps, no large/odd units."""
    t = field.type
    if pa.types.is_timestamp(t) and t.unit == "ns":
        return pa.timestamp("us", tz=t.tz)
    if pa.types.is_null(t):
        return pa.string()
    return t


def add_lineage(table: pa.Table, source_uri: str, ingested_at: datetime) -> pa.Table:
    """Append ``_source_uri`` and ``_ingested_at`` and normalise column types for Parquet.

    Args:
        table: validated rows.
        source_uri: URI of the source file version.
        ingested_at: timezone-aware ingestion time (stored as timestamp[us, UTC]).
    """
    schema = pa.schema([f.with_type(_portable(f)) for f in table.schema])
    if schema != table.schema:
        table = table.cast(schema)
    n = table.num_rows
    table = table.append_column(SOURCE_URI, pa.array([source_uri] * n, pa.string()))
    micros = int(ingested_at.timestamp() * 1_000_000)
    stamps = pa.array(np.full(n, micros, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC"))
    return table.append_column(INGESTED_AT, stamps)
