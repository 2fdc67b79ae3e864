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
    """Hive-style folders, e.g. ``region=EU/year=2024`` (values URL-quoted, nulls marked).

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
    table: pa.Table, partition_by: list[str]
) -> Iterator[tuple[list[tuple[str, Any]], pa.Table]]:
    """Yield ``(partition values, rows without the partition columns)`` per distinct value."""
    if not partition_by:
        yield [], table
        return
    keys = table.select(partition_by).group_by(partition_by).aggregate([]).to_pylist()
    rest = table.drop_columns(partition_by)
    for key in keys:
        mask = None
        for col in partition_by:
            value = key[col]
            cond = pc.is_null(table[col]) if value is None else pc.equal(table[col], value)
            cond = pc.fill_null(cond, False)
            mask = cond if mask is None else pc.and_(mask, cond)
        yield [(c, key[c]) for c in partition_by], rest.filter(mask)
