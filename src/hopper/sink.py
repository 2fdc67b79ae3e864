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

from hopper.config import is_s3

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


def _join(first: str, *parts: str) -> str:
    """Join path parts with '/', keeping the first part's leading '/' (absolute paths)."""
    return "/".join([first.rstrip("/"), *(p.strip("/") for p in parts if p)])


def write_outputs(
    table: pa.Table,
    *,
    lake: str,
    dataset: str,
    partition_by: list[str],
    source_name: str,
    uri: str,
    compression: str = "zstd",
    s3: Any = None,
) -> list[str]:
    """Write a source's rows to the lake (a folder or ``s3://``), replacing earlier outputs.

    Returns:
        The files written. Earlier files of the same source that the new version no longer
        touches (other partitions) are removed after the new ones are in place.
    """
    from hopper.storage import delete_s3, list_outputs_s3, write_parquet_s3

    name = output_name(source_name, uri)
    written: list[str] = []
    for values, rows in split_partitions(table, partition_by):
        if is_s3(lake):
            target = "s3://" + _join(
                lake.removeprefix("s3://"), dataset, partition_dir(values), name
            )
            written.append(write_parquet_s3(rows, target, s3, compression))
        else:
            path = output_path(Path(lake), dataset, partition_dir(values), source_name, uri)
            write_parquet_atomic(rows, path, compression)
            written.append(str(path))
    if is_s3(lake):
        existing = list_outputs_s3(f"{lake}/{dataset}/", name, s3) if partition_by else []
    else:
        # Only this source's file in each partition folder of the current depth: a glob with
        # a fixed file name, not a walk of the whole dataset (which grows with the lake).
        pattern = "*/" * len(partition_by) + name
        existing = [str(p) for p in (Path(lake) / dataset).glob(pattern)]
    for stale in existing:
        if stale not in written:
            log.info("removing stale output %s of %s", stale, uri)
            delete_s3(stale, s3) if is_s3(stale) else Path(stale).unlink(missing_ok=True)
    return written


def quarantine_folder(quarantine: str, dataset: str | None, when: datetime) -> str:
    """``<quarantine>/<dataset>/<YYYY-MM-DD>`` (pure)."""
    return _join(quarantine, dataset or "_unrouted", when.strftime("%Y-%m-%d"))


def safe_name(name: str) -> str:
    """A file name reduced to safe characters (never empty, never dot-leading)."""
    return _UNSAFE.sub("_", name).lstrip(".") or "file"


def quarantine_file(
    *,
    source_uri: str,
    local_copy: Path | None,
    quarantine: str,
    dataset: str | None,
    when: datetime,
    reason: dict[str, Any],
    s3: Any = None,
) -> str:
    """Copy a rejected file to ``quarantine/<dataset>/<date>/<file>`` with ``<file>.error.json``.

    Args:
        source_uri: the rejected file's URI.
        local_copy: a readable local copy of it (the file itself, or a fetched temp copy),
            or None if it is gone — the reason file is written all the same.
        quarantine: a folder or ``s3://`` location.
        dataset: the file's dataset, if known.
        when: time of the decision (names the date folder).
        reason: the reason file's content.
        s3: an S3 client, needed when the quarantine or the source is on S3.

    Returns:
        Where the quarantined copy is.
    """
    from hopper.storage import copy_to_quarantine_s3, parse_s3_uri

    name = safe_name(
        parse_s3_uri(source_uri)[1].rsplit("/", 1)[-1]
        if is_s3(source_uri)
        else (local_copy.name if local_copy else source_uri.rsplit("/", 1)[-1])
    )
    if is_s3(quarantine):
        target = "s3://" + _join(
            quarantine_folder(quarantine.removeprefix("s3://"), dataset, when), name
        )
        src = source_uri if is_s3(source_uri) or local_copy is None else local_copy.as_uri()
        return copy_to_quarantine_s3(src, target, reason, s3)
    folder = Path(quarantine_folder(quarantine, dataset, when))
    folder.mkdir(parents=True, exist_ok=True)
    target_path = folder / name
    if local_copy is not None and local_copy.exists():
        tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        shutil.copyfile(local_copy, tmp)
        os.replace(tmp, target_path)
    reason_file = folder / f"{name}.error.json"
    tmp_reason = folder / f".{reason_file.name}.tmp"
    tmp_reason.write_text(json.dumps(reason, indent=2, default=str), encoding="utf-8")
    os.replace(tmp_reason, reason_file)
    return str(target_path)


def write_rejected_rows(
    rejected: pa.Table,
    *,
    quarantine: str,
    dataset: str | None,
    source_name: str,
    uri: str,
    when: datetime,
    s3: Any = None,
) -> str:
    """Write a file's bad rows (with their reasons) beside its quarantine date folder."""
    from hopper.storage import write_parquet_s3

    name = output_name(source_name, uri).replace(".parquet", ".rejected.parquet")
    if is_s3(quarantine):
        folder = quarantine_folder(quarantine.removeprefix("s3://"), dataset, when)
        return write_parquet_s3(rejected, "s3://" + _join(folder, name), s3)
    target = Path(quarantine_folder(quarantine, dataset, when)) / name
    write_parquet_atomic(rejected, target)
    return str(target)
