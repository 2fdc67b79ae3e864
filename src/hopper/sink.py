"""Where outputs go and how they are written: deterministic paths, atomic writes.

A source's output path depends only on its dataset, partition values and URI, so a new
version or a replay of the same source replaces its earlier output rather than adding rows.
Files are written to a hidden temporary name in the target folder, then renamed into place:
readers (pyarrow, DuckDB, Spark) skip dot-files and never see a partial Parquet file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def source_id(uri: str) -> str:
    """A short, stable id of a source URI (10 hex digits)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:10]


def safe_stem(name: str, limit: int = 80) -> str:
    """A file-name stem reduced to safe characters (never empty, never dot-leading)."""
    stem = name.split(".", 1)[0] if not name.startswith(".") else name.lstrip(".")
    stem = _UNSAFE.sub("_", stem).strip("_.")[:limit]
    return stem or "file"


def output_name(source_name: str, uri: str) -> str:
    """``<source-stem>-<source id>.parquet``: unique per source, stable across versions."""
    return f"{safe_stem(source_name)}-{source_id(uri)}.parquet"


def partition_dir(values: list[tuple[str, Any]]) -> str:
    """Hive-style folders, e.g. ``region=EU/year=2024`` (values URL-quoted, nulls marked)."""
    parts = []
    for name, value in values:
        text = "__HIVE_DEFAULT_PARTITION__" if value is None else quote(str(value), safe="")
        parts.append(f"{quote(name, safe='')}={text}")
    return "/".join(parts)


def output_path(lake: Path, dataset: str, partition: str, source_name: str, uri: str) -> Path:
    """The lake file for one source and one partition (pure)."""
    folder = lake / dataset / partition if partition else lake / dataset
    return folder / output_name(source_name, uri)


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


def write_parquet_atomic(table: pa.Table, target: Path, compression: str = "zstd") -> None:
    """Write ``table`` to ``target`` via a hidden temp file and an atomic rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(
            table,
            tmp,
            compression=None if compression == "none" else compression,
            coerce_timestamps="us",
            allow_truncated_timestamps=True,
            row_group_size=1_000_000,
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_outputs(
    table: pa.Table,
    *,
    lake: Path,
    dataset: str,
    partition_by: list[str],
    source_name: str,
    uri: str,
    compression: str = "zstd",
) -> list[Path]:
    """Write a source's rows to the lake, replacing that source's earlier outputs.

    Returns:
        The files written. Earlier files of the same source that the new version no longer
        touches (other partitions) are removed after the new ones are in place.
    """
    written: list[Path] = []
    for values, rows in split_partitions(table, partition_by):
        target = output_path(lake, dataset, partition_dir(values), source_name, uri)
        write_parquet_atomic(rows, target, compression)
        written.append(target)
    name = output_name(source_name, uri)
    for stale in (lake / dataset).rglob(name):
        if stale not in written:
            log.info("removing stale output %s of %s", stale, uri)
            stale.unlink(missing_ok=True)
    return written


def quarantine_copy(
    source: Path,
    *,
    quarantine: Path,
    dataset: str | None,
    when: datetime,
    reason: dict[str, Any],
) -> Path:
    """Copy a rejected file to ``quarantine/<dataset>/<date>/<file>`` with ``<file>.error.json``.

    Returns:
        The path of the quarantined copy.
    """
    folder = quarantine / (dataset or "_unrouted") / when.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    name = _UNSAFE.sub("_", source.name).lstrip(".") or "file"
    target = folder / name
    if source.exists():
        tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    reason_file = folder / f"{name}.error.json"
    tmp_reason = folder / f".{reason_file.name}.tmp"
    tmp_reason.write_text(json.dumps(reason, indent=2, default=str), encoding="utf-8")
    os.replace(tmp_reason, reason_file)
    return target
