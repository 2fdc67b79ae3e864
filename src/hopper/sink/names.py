"""How lake outputs are named: a source's file name, its id, and its Hive partition folders.

A source's output path depends only on its dataset, partition values and URI, so a new
version or a replay of the same source replaces its earlier output rather than adding rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from hopper.contracts.partitions import PartitionKey, partition_values
from hopper.errors import TerminalError
from hopper.stores import join

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def source_id(uri: str) -> str:
    """A short, stable id of a source URI (10 hex digits)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:10]


def safe_stem(name: str, limit: int = 80) -> str:
    """A file-name stem reduced to safe characters (never empty, never dot-leading)."""
    stem = name.split(".", 1)[0] if not name.startswith(".") else name.lstrip(".")
    stem = UNSAFE.sub("_", stem).strip("_.")[:limit]
    return stem or "file"


def output_name(source_name: str, uri: str) -> str:
    """``<source-stem>-<source id>.parquet``: unique per source, stable across versions."""
    return f"{safe_stem(source_name)}-{source_id(uri)}.parquet"


MAX_PARTITION_SEGMENT = 200


def partition_dir(values: list[tuple[str, Any]]) -> str:
    """Hive-style folders, e.g. ``region=EU/ts_day=2024-05-01`` (values quoted, nulls marked).

    Raises:
        TerminalError: a value too long to name a folder (the file is quarantined).
    """
    parts = []
    for name, value in values:
        text = "__HIVE_DEFAULT_PARTITION__" if value is None else quote(str(value), safe="")
        segment = f"{quote(name, safe='')}={text}"
        if len(segment.encode()) > MAX_PARTITION_SEGMENT:
            raise TerminalError(
                f"partition column {name!r} has a value of {len(str(value))} characters "
                f"({str(value)[:40]!r}…): too long to name a folder (at most "
                f"{MAX_PARTITION_SEGMENT} bytes once URL-quoted). Partition by a shorter "
                "column, or derive one."
            )
        parts.append(segment)
    return "/".join(parts)


def output_path(lake: str | Path, dataset: str, partition: str, source_name: str, uri: str) -> str:
    """The lake file for one source and one partition: a path or an ``s3://`` URI (pure)."""
    return join(str(lake), dataset, partition, output_name(source_name, uri))


def split_partitions(
    table: pa.Table, keys: list[PartitionKey]
) -> Iterator[tuple[list[tuple[str, Any]], pa.Table]]:
    """Yield ``(partition values, rows)`` per distinct combination of the keys' values.

    The values are ``(key name, value)`` pairs for :func:`partition_dir`. An identity key's
    column is dropped from the rows (its folder holds it); a transform's source column is
    kept, since only the value derived from it names the folder.

    Raises:
        ContractViolation: a key's column is missing, or a time transform's is not a date or
            timestamp (see :func:`~hopper.contracts.partitions.partition_values`).
    """
    if not keys:
        yield [], table
        return
    values = partition_values(table, keys)
    names = values.column_names
    distinct = values.group_by(names).aggregate([]).to_pylist()
    rest = table.drop_columns([key.source for key in keys if key.transform == "identity"])
    for row in distinct:
        mask = None
        for name in names:
            value, column = row[name], values[name]
            cond = pc.is_null(column) if value is None else pc.equal(column, value)
            cond = pc.fill_null(cond, False)
            mask = cond if mask is None else pc.and_(mask, cond)
        yield [(name, row[name]) for name in names], rest.filter(mask)
