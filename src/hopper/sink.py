"""Where outputs go and how they are written: the lake, its names, partitions and quarantine.

This is the policy above :mod:`hopper.stores` (which only knows how to write, list, copy,
delete and claim files in one kind of place): what a source's output is called, how rows are
split into Hive partitions, how a rejected file is named in the quarantine. None of it asks
whether it is writing to a folder or to S3.

A source's output path depends only on its dataset, partition values and URI, so a new
version or a replay of the same source replaces its earlier output rather than adding rows.
A source's files (one per partition) are staged outside the readers' view and published
together (:mod:`hopper.staging`): a file that does not land leaves nothing in the lake, and a
failed replay leaves the earlier version's outputs as they were. A writer that was killed
is cleaned up after by :func:`discard_staged` (re-exported here from :mod:`hopper.staging`).

The lake is reached through the :class:`Lake` interface (:func:`open_lake`):
:class:`ParquetLake` is today's one file per source and partition; a table lake (Iceberg)
is another implementation of it. :func:`write_outputs` writes a whole table;
:class:`StreamingOutputs` writes a streamed file's tables as they come, one ``ParquetWriter``
per partition, each on its staged file (a multipart upload on S3), published only by
:meth:`StreamingOutputs.commit`. Tables are buffered per partition and written as row groups
of about :data:`ROW_GROUP_ROWS` rows or :data:`ROW_GROUP_BYTES` bytes, never one small row
group per block.

One room past 450 lines: the lake's naming, its two writers and the quarantine's naming are
one policy (the quarantine's rejected-rows file is named like a lake output) and change
together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hopper.config import DATASET_NAME
from hopper.errors import SourceGoneError, TerminalError
from hopper.models import FILE_SCHEME
from hopper.staging import Stage
from hopper.staging import discard_staged as discard_staged  # for whoever ran a writer
from hopper.stores import Store, Writer, join, store_for

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


ROW_GROUP_ROWS = 1_000_000
"""Rows per Parquet row group (the most; streamed files also cut at :data:`ROW_GROUP_BYTES`)."""
ROW_GROUP_BYTES = 128 << 20
"""Arrow bytes buffered per partition of a streamed file before they become a row group."""
STREAM_BUFFER_BYTES = 256 << 20
"""Arrow bytes buffered over all partitions of a streamed file; beyond, the largest is written."""
MAX_STREAM_PARTITIONS = 256
"""Partitions one streamed file may write at once (each holds an open file and a buffer)."""


class TooManyPartitions(Exception):
    """A streamed file has more partitions than :data:`MAX_STREAM_PARTITIONS`."""


def _writer_options(compression: str) -> dict[str, Any]:
    """Parquet options shared by whole and streamed writes."""
    return {
        "compression": None if compression == "none" else compression,
        "coerce_timestamps": "us",
        "allow_truncated_timestamps": True,
    }


PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


def parquet(table: pa.Table, compression: str = "zstd") -> Writer:
    """What writes ``table`` as a whole Parquet file to a store's stream."""

    def write(out: pa.NativeFile) -> None:
        pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS, **_writer_options(compression))

    return write


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

    Every partition's file is staged first and all are published together (see
    :mod:`hopper.staging`): if any step fails, nothing of this version is left in the lake
    and the source's earlier outputs are as they were.

    Returns:
        The files written. Earlier files of the same source that the new version no longer
        touches (other partitions) are removed as part of the publish.

    Raises:
        TerminalError: a partition value cannot name a folder (nothing is written).
    """
    stage = Stage(lake, dataset, uri, s3)
    try:
        for values, rows in split_partitions(table, partition_by):
            target = output_path(lake, dataset, partition_dir(values), source_name, uri)
            stage.write(target, parquet(rows, compression), PARQUET_CONTENT_TYPE)
        name = output_name(source_name, uri)
        return stage.publish(_existing_outputs(stage.store, lake, dataset, partition_by, name))
    except BaseException:
        stage.discard()
        raise


def _existing_outputs(
    store: Store, lake: str, dataset: str, partition_by: list[str], name: str
) -> list[str]:
    """This source's outputs in the lake now (all partitions of the current depth).

    Unpartitioned, none is looked for: the one output replaces its predecessor in one atomic
    step (see :meth:`hopper.staging.Stage.publish`), which needs no backup. Partitioned, only
    this source's file in each partition folder of the current depth is looked for.
    """
    if not partition_by:
        return []
    return store.find(join(lake, dataset), name, len(partition_by))


class _Discarded(Exception):
    """Passed to a staged stream's context when its file is given up (it is then deleted)."""


class _PartitionFile:
    """One partition's output of a streamed file: target, staged file, writer and buffer."""

    def __init__(self, store: Store, target: str, staged: str) -> None:
        self.store = store
        self.target = target
        self.tmp = staged
        self.output: AbstractContextManager[pa.NativeFile] | None = None
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.buffer: list[pa.Table] = []
        self.buffered_rows = 0
        self.buffered_bytes = 0

    def add(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = table.schema
        elif not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        self.buffer.append(table)
        self.buffered_rows += table.num_rows
        self.buffered_bytes += table.nbytes

    def _open(self, compression: str) -> pq.ParquetWriter:
        self.output = self.store.open_output(self.tmp, PARQUET_CONTENT_TYPE)
        stream = self.output.__enter__()
        return pq.ParquetWriter(stream, self.schema, **_writer_options(compression))

    def flush(self, compression: str) -> None:
        if not self.buffer or self.schema is None:
            return
        table = pa.concat_tables(self.buffer)
        self.buffer, self.buffered_rows, self.buffered_bytes = [], 0, 0
        if self.writer is None:
            self.writer = self._open(compression)
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self, compression: str) -> None:
        self.flush(compression)
        if self.writer is None and self.schema is not None:  # no rows: an empty file
            self.writer = self._open(compression)
        if self.writer is not None:
            self.writer.close()
        if self.output is not None:
            output, self.output = self.output, None
            output.__exit__(None, None, None)  # the staged file is complete

    def discard(self) -> None:
        self.buffer = []
        try:
            if self.writer is not None:
                self.writer.close()
        except (OSError, pa.ArrowException) as exc:
            log.debug("closing %s: %s", self.tmp, exc)
        if self.output is not None:
            output, self.output = self.output, None
            try:
                output.__exit__(_Discarded, _Discarded(), None)  # the staged file is deleted
            except _Discarded:
                pass
            except Exception as exc:  # the stage's discard deletes what is left
                log.debug("discarding %s: %s", self.tmp, exc)


class StreamingOutputs:
    """Write a streamed source's rows to the lake, table by table, atomically at the end.

    Use it as a context manager: leaving the block without :meth:`commit` (an exception, a
    rejected file) deletes every staged file, so nothing of the source reaches the lake
    and its earlier outputs stay in place. The files are staged and published as
    :func:`write_outputs` does (see :mod:`hopper.staging`), so a writer killed mid-stream
    leaves only staged files, which :func:`discard_staged` removes. Partitioned outputs keep
    one writer per partition value (at most :data:`MAX_STREAM_PARTITIONS`, else
    :class:`TooManyPartitions`).
    """

    def __init__(
        self,
        *,
        lake: str | Path,
        dataset: str,
        partition_by: list[str],
        source_name: str,
        uri: str,
        compression: str = "zstd",
        s3: Any = None,
    ) -> None:
        """Prepare the outputs of one source (nothing is created until rows arrive).

        Args:
            lake: the lake, a folder or an ``s3://`` location.
            dataset: the dataset name (first folder under the lake).
            partition_by: output columns that become Hive folders.
            source_name: the source's file name (names the output).
            uri: the source's URI (its hash makes the output name unique).
            compression: the Parquet codec, or ``none``.
            s3: an S3 client, for an ``s3://`` lake.
        """
        self.lake = str(lake)
        self.dataset = dataset
        self.partition_by = partition_by
        self.source_name = source_name
        self.uri = uri
        self.compression = compression
        self.files: dict[str, _PartitionFile] = {}
        self.stage = Stage(self.lake, dataset, uri, s3)
        self.committed = False

    def __enter__(self) -> StreamingOutputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.abort()

    def write(self, table: pa.Table) -> None:
        """Add rows (split by partition); full buffers become row groups in the staged files.

        Raises:
            TooManyPartitions: the rows open more than :data:`MAX_STREAM_PARTITIONS` files.
            TerminalError: a partition value cannot name a folder.
        """
        for values, rows in split_partitions(table, self.partition_by):
            partition = partition_dir(values)
            part = self.files.get(partition)
            if part is None:
                if len(self.files) >= MAX_STREAM_PARTITIONS:
                    raise TooManyPartitions(
                        f"{self.uri}: more than {MAX_STREAM_PARTITIONS} partitions"
                    )
                target = output_path(self.lake, self.dataset, partition, self.source_name, self.uri)
                staged = self.stage.add(target)
                part = self.files[partition] = _PartitionFile(self.stage.store, target, staged)
            part.add(rows)
            if part.buffered_rows >= ROW_GROUP_ROWS or part.buffered_bytes >= ROW_GROUP_BYTES:
                part.flush(self.compression)
        while sum(p.buffered_bytes for p in self.files.values()) > STREAM_BUFFER_BYTES:
            max(self.files.values(), key=lambda p: p.buffered_bytes).flush(self.compression)

    def commit(self) -> list[str]:
        """Close every file and publish them together, removing the source's stale outputs.

        Returns:
            The files written (as :func:`write_outputs` returns them).
        """
        for part in self.files.values():
            part.close(self.compression)
        name = output_name(self.source_name, self.uri)
        existing = _existing_outputs(
            self.stage.store, self.lake, self.dataset, self.partition_by, name
        )
        written = self.stage.publish(existing)
        self.committed = True
        return written

    def abort(self) -> None:
        """Delete every staged file (undoing a publish in progress); the lake is as it was."""
        for part in self.files.values():
            part.discard()
        self.files = {}
        self.stage.discard()


class LakeStream(Protocol):
    """One source's rows going into the lake a table at a time (see :meth:`Lake.stream`).

    Leaving its block without :meth:`commit` leaves the lake as it was.
    """

    def __enter__(self) -> LakeStream: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def write(self, table: pa.Table) -> None:
        """Add rows."""

    def commit(self) -> list[str]:
        """Publish every row written, replacing the source's earlier version; what was written."""


class Lake(Protocol):
    """Where validated rows go, one implementation per lake format.

    Every method replaces the source's earlier version (a replay or a new version never adds
    rows beside it) and lands all of a source or none of it.
    """

    def write(
        self,
        table: pa.Table,
        *,
        dataset: str,
        partition_by: list[str],
        source_name: str,
        uri: str,
        compression: str,
    ) -> list[str]:
        """Write a whole source's rows; return where they are."""

    def stream(
        self,
        *,
        dataset: str,
        partition_by: list[str],
        source_name: str,
        uri: str,
        compression: str,
    ) -> LakeStream:
        """Write a source's rows as they come, in bounded memory.

        Raises:
            TooManyPartitions: (from :meth:`LakeStream.write`) the source is to be written
                whole instead.
        """

    def discard(self, dataset: str, uri: str) -> None:
        """Remove what a writer of ``uri`` that died left behind (idempotent)."""


class ParquetLake:
    """:class:`Lake` of Parquet files, one per source and partition, in a folder or on S3."""

    def __init__(self, location: str, s3: Any = None) -> None:
        """A lake at ``location`` (a folder or ``s3://``; ``s3`` is the client for it)."""
        self.location = location
        self.s3 = s3

    def write(
        self,
        table: pa.Table,
        *,
        dataset: str,
        partition_by: list[str],
        source_name: str,
        uri: str,
        compression: str,
    ) -> list[str]:
        """See :class:`Lake` (:func:`write_outputs`)."""
        return write_outputs(
            table,
            lake=self.location,
            dataset=dataset,
            partition_by=partition_by,
            source_name=source_name,
            uri=uri,
            compression=compression,
            s3=self.s3,
        )

    def stream(
        self,
        *,
        dataset: str,
        partition_by: list[str],
        source_name: str,
        uri: str,
        compression: str,
    ) -> StreamingOutputs:
        """See :class:`Lake` (:class:`StreamingOutputs`)."""
        return StreamingOutputs(
            lake=self.location,
            dataset=dataset,
            partition_by=partition_by,
            source_name=source_name,
            uri=uri,
            compression=compression,
            s3=self.s3,
        )

    def discard(self, dataset: str, uri: str) -> None:
        """See :class:`Lake` (:func:`discard_staged`)."""
        discard_staged(self.location, dataset, uri, self.s3)


def open_lake(location: str, s3: Any = None) -> Lake:
    """The lake at ``location`` (today always Parquet files; a table format plugs in here)."""
    return ParquetLake(location, s3)


def quarantine_folder(quarantine: str, dataset: str | None, when: datetime) -> str:
    """``<quarantine>/<dataset>/<YYYY-MM-DD>`` (pure); anything but a dataset name is unrouted."""
    folder = dataset if dataset and DATASET_NAME.fullmatch(dataset) else "_unrouted"
    return join(quarantine, folder, when.strftime("%Y-%m-%d"))


SAFE_NAME_LIMIT = 150
"""Longest quarantine file name: with ``.error.json`` and a temp suffix, far below 255 bytes."""


def safe_name(name: str, limit: int = SAFE_NAME_LIMIT) -> str:
    """A file name reduced to safe characters (never empty, never dot-leading, never long).

    Only ``[A-Za-z0-9._-]`` survive (so no separator, control character or odd Unicode); a
    name longer than ``limit`` keeps its suffixes (``.csv.gz``) and gets a hash of the whole
    name, so that long names differing only at the end stay apart.
    """
    safe = _UNSAFE.sub("_", name).lstrip(".") or "file"
    if len(safe) <= limit:
        return safe
    digest = hashlib.sha256(name.encode(errors="surrogateescape")).hexdigest()[:10]
    return _with_id(safe, digest, limit)


def _with_id(name: str, tag: str, limit: int | None = None) -> str:
    """``<stem>-<tag><suffixes>``: ``tag`` before the last two suffixes (``.csv.gz``).

    With ``limit``, the stem is cut so that the whole name fits in ``limit`` characters.
    """
    suffix = "".join(PurePosixPath(name).suffixes[-2:])[:40]
    stem = name[: len(name) - len(suffix)] or "file"
    if limit is not None:
        stem = stem[: limit - len(suffix) - len(tag) - 1]
    return f"{stem}-{tag}{suffix}"


def quarantine_file(
    *,
    source_uri: str,
    local_copy: Path | None,
    quarantine: str,
    dataset: str | None,
    when: datetime,
    reason: dict[str, Any],
    fingerprint: str = "",
    s3: Any = None,
) -> str:
    """Copy a rejected file to ``quarantine/<dataset>/<date>/<file>`` with ``<file>.error.json``.

    ``<file>`` is the source's name, unless another source (``a/data.csv`` and ``b/data.csv``)
    or another version of it already has that name in the folder that day: then the copy is
    ``<file stem>-<version id><suffixes>`` (:func:`versioned_name`), so that no rejected file
    replaces another's copy. The name is claimed atomically (:meth:`Store.claim
    <hopper.stores.Store.claim>`), so concurrent runs cannot both take it. The copy is made
    where the source is when the store reaches it (S3 to S3, server side), else from
    ``local_copy``; a source that cannot be copied is noted as ``source_missing``.

    Args:
        source_uri: the rejected file's URI.
        local_copy: a readable local copy of it (the file itself, or a fetched temp copy),
            or None if it is gone — the reason file is written all the same.
        quarantine: a folder or ``s3://`` location.
        dataset: the file's dataset, if known.
        when: time of the decision (names the date folder).
        reason: the reason file's content (``uri`` and ``fingerprint`` are added).
        fingerprint: the rejected version's fingerprint.
        s3: an S3 client, needed when the quarantine or the source is on S3.

    Returns:
        Where the quarantined copy is.
    """
    reason = {"uri": source_uri, "fingerprint": fingerprint, **reason}
    if local_copy is not None and local_copy.is_symlink():
        # Copying would follow the link and put whatever it points at into the quarantine.
        reason = {**reason, "source_not_copied": "the source is a symbolic link"}
        local_copy = None
    local_source = source_uri.startswith(FILE_SCHEME)
    name = safe_name(
        local_copy.name if local_source and local_copy else source_uri.rsplit("/", 1)[-1]
    )
    store = store_for(quarantine, s3)
    folder = quarantine_folder(quarantine, dataset, when)
    held = store.claim(join(folder, f"{name}.error.json"), version_claim(reason))
    if held is not None and not same_version(held, reason):
        name = versioned_name(name, source_uri, fingerprint)
    target = join(folder, name)
    try:
        if store.reaches(source_uri):  # a server-side copy: no upload of the local copy
            store.copy(source_uri, target)
        elif local_copy is not None and local_copy.is_file():
            store.upload(local_copy, target)
        else:
            reason = {**reason, "source_missing": True}
    except SourceGoneError:
        log.warning("%s is gone; quarantining its reason only", source_uri)
        reason = {**reason, "source_missing": True}
    store.put_text(join(folder, f"{name}.error.json"), json.dumps(reason, indent=2, default=str))
    log.info("quarantined %s to %s", source_uri, target)
    return target


def versioned_name(name: str, uri: str, fingerprint: str) -> str:
    """``name`` with a short id of one version of one source before its suffixes."""
    return _with_id(name, hashlib.sha256(f"{uri}\n{fingerprint}".encode()).hexdigest()[:8])


def version_claim(reason: dict[str, Any]) -> bytes:
    """What claims a quarantine name for a version until its full reason replaces it."""
    return json.dumps({"uri": reason["uri"], "fingerprint": reason["fingerprint"]}).encode()


def same_version(reason_text: str | bytes, reason: dict[str, Any]) -> bool:
    """Whether a reason file (its text, or a claim) is about the same version as ``reason``."""
    try:
        other = json.loads(reason_text)
    except ValueError:
        return False
    return (
        isinstance(other, dict)
        and other.get("uri") == reason["uri"]
        and other.get("fingerprint") == reason["fingerprint"]
    )


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
    name = output_name(source_name, uri).replace(".parquet", ".rejected.parquet")
    target = join(quarantine_folder(quarantine, dataset, when), name)
    store_for(quarantine, s3).write_atomic(target, parquet(rejected), PARQUET_CONTENT_TYPE)
    return target
