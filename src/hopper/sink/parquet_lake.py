"""The Parquet lake: one file per source and partition, in a folder or on S3.

:func:`write_outputs` writes a whole table; :class:`StreamingOutputs` writes a streamed
file's tables as they come, one ``ParquetWriter`` per partition, each on its staged file (a
multipart upload on S3), published only by :meth:`StreamingOutputs.commit`. Tables are
buffered per partition and written as row groups of about :data:`ROW_GROUP_ROWS` rows or
:data:`ROW_GROUP_BYTES` bytes, never one small row group per block.

A source's files (one per partition) are staged outside the readers' view and published
together (:mod:`hopper.staging`): a file that does not land leaves nothing in the lake, and a
failed replay leaves the earlier version's outputs as they were. A writer that was killed
is cleaned up after by :func:`~hopper.staging.discard_staged`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hopper.contracts.partitions import parse_partitions
from hopper.lineage import LINEAGE_COLUMNS
from hopper.sink.names import output_name, output_path, partition_dir, split_partitions
from hopper.staging import Stage, Written, discard_staged
from hopper.stores import Store, Writer, join

log = logging.getLogger(__name__)


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


def writer_options(compression: str, schema: pa.Schema) -> dict[str, Any]:
    """Parquet options of every file Hopper writes: whole, streamed, or staged for a table.

    Timestamps are stored in microseconds (what every reader, and Iceberg, takes). The
    lineage columns (:data:`~hopper.lineage.LINEAGE_COLUMNS`) repeat one value: Parquet's
    dictionary holds it once, so compressing them saves nothing and costs each file two
    codec contexts (about a third of a small file's write). They are left uncompressed
    where the columns are flat; per-column codecs are keyed by Parquet leaf paths, and only
    flat names without a dot are their own leaf paths, so any other schema gets the one
    codec throughout.

    Args:
        compression: the contract's codec, or ``none``.
        schema: the schema of the rows to be written.
    """
    codec = _codecs(compression, schema)
    return {
        "compression": dict(codec) if isinstance(codec, tuple) else codec,
        "coerce_timestamps": "us",
        "allow_truncated_timestamps": True,
    }


@functools.lru_cache(maxsize=64)  # a batch's files share a few schemas
def _codecs(compression: str, schema: pa.Schema) -> str | tuple[tuple[str, str], ...] | None:
    """The codec of every column (pairs of name and codec), or the one codec, or None."""
    if compression == "none":
        return None
    names = schema.names
    apart = (
        any(name in LINEAGE_COLUMNS for name in names)
        and len(set(names)) == len(names)
        and not any("." in f.name or pa.types.is_nested(f.type) for f in schema)
    )
    if not apart:
        return compression
    return tuple((name, "none" if name in LINEAGE_COLUMNS else compression) for name in names)


PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


def parquet(table: pa.Table, compression: str = "zstd") -> Writer:
    """What writes ``table`` as a whole Parquet file to a store's stream."""

    def write(out: pa.NativeFile) -> None:
        options = writer_options(compression, table.schema)
        pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS, **options)

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
) -> Written:
    """Write a source's rows to the lake (a folder or ``s3://``), replacing earlier outputs.

    Every partition's file is staged first and all are published together (see
    :mod:`hopper.staging`): if any step fails, nothing of this version is left in the lake
    and the source's earlier outputs are as they were.

    Args:
        table: the rows to write.
        lake: the lake, a folder or an ``s3://`` location.
        dataset: the dataset name (first folder under the lake).
        partition_by: the contract's ``partition_by`` entries (``region``, ``day(ts)``):
            each names one level of Hive folders (see :func:`split_partitions`).
        source_name: the source's file name (names the output).
        uri: the source's URI (its hash makes the output name unique).
        compression: the Parquet codec, or ``none``.
        s3: an S3 client, for an ``s3://`` lake.

    Returns:
        The files written, and their bytes. Earlier files of the same source that the new
        version no longer touches (other partitions) are removed as part of the publish.

    Raises:
        TerminalError: a partition value cannot name a folder, or a partition column is
            missing or of a type its transform does not apply to (nothing is written).
    """
    keys = parse_partitions(partition_by)
    stage = Stage(lake, dataset, uri, s3)
    try:
        for values, rows in split_partitions(table, keys):
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
        self.stream: pa.NativeFile | None = None
        self.nbytes = 0  # the staged file's size, once closed
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
        self.stream = self.output.__enter__()
        assert self.schema is not None  # set by the first add
        options = writer_options(compression, self.schema)
        return pq.ParquetWriter(self.stream, self.schema, **options)

    def take(self, compression: str) -> Callable[[], None] | None:
        """The buffered rows as one row group to write (the buffer is emptied), or None.

        The returned call opens the staged file if need be and writes the row group; it may
        run on another thread, one such call at a time.
        """
        if not self.buffer or self.schema is None:
            return None
        table = pa.concat_tables(self.buffer)
        self.buffer, self.buffered_rows, self.buffered_bytes = [], 0, 0

        def write() -> None:
            if self.writer is None:
                self.writer = self._open(compression)
            self.writer.write_table(table, row_group_size=max(table.num_rows, 1))

        return write

    def close(self, compression: str) -> None:
        """Write what is buffered and close the staged file (no write may be in flight)."""
        write = self.take(compression)
        if write is not None:
            write()
        if self.writer is None and self.schema is not None:  # no rows: an empty file
            self.writer = self._open(compression)
        if self.writer is not None:
            self.writer.close()
        if self.stream is not None:
            self.nbytes = self.stream.tell()
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
            partition_by: the contract's ``partition_by`` entries (``region``, ``day(ts)``),
                one level of Hive folders each.
            source_name: the source's file name (names the output).
            uri: the source's URI (its hash makes the output name unique).
            compression: the Parquet codec, or ``none``.
            s3: an S3 client, for an ``s3://`` lake.
        """
        self.lake = str(lake)
        self.dataset = dataset
        self.partition_by = partition_by
        self.keys = parse_partitions(partition_by)
        self.source_name = source_name
        self.uri = uri
        self.compression = compression
        self.files: dict[str, _PartitionFile] = {}
        self.stage = Stage(self.lake, dataset, uri, s3)
        self.committed = False
        self._writer: ThreadPoolExecutor | None = None  # writes row groups while rows are read
        self._writing: Future[None] | None = None

    def __enter__(self) -> StreamingOutputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.abort()

    def write(self, table: pa.Table) -> None:
        """Add rows (split by partition); full buffers become row groups in the staged files.

        Raises:
            TooManyPartitions: the rows open more than :data:`MAX_STREAM_PARTITIONS` files.
            TerminalError: a partition value cannot name a folder, or a partition column is
                missing or of a type its transform does not apply to.
        """
        for values, rows in split_partitions(table, self.keys):
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
                self._flush(part)
        while sum(p.buffered_bytes for p in self.files.values()) > STREAM_BUFFER_BYTES:
            self._flush(max(self.files.values(), key=lambda p: p.buffered_bytes))

    def _flush(self, part: _PartitionFile) -> None:
        """Write ``part``'s buffer as a row group, on the writer thread.

        Encoding and compressing a row group takes about as long as reading and checking
        it, and Arrow releases the GIL for both: the next rows are read while this group is
        written. One group is written at a time, and the next waits for it, so memory stays
        bounded by one group beyond the buffers. A failed write is raised here, at the next
        flush, or by :meth:`commit`.
        """
        write = part.take(self.compression)
        if write is None:
            return
        self._wait()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="hopper-parquet")
        self._writing = self._writer.submit(write)

    def _wait(self) -> None:
        """Wait for the row group being written (raising what its write raised)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _end_writes(self) -> None:
        """Wait for the last row group (raising what its write raised); stop the thread."""
        try:
            self._wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def commit(self) -> Written:
        """Close every file and publish them together, removing the source's stale outputs.

        Returns:
            The files written, and their bytes (as :func:`write_outputs` returns them).
        """
        self._end_writes()
        for part in self.files.values():
            part.close(self.compression)
            self.stage.wrote(part.tmp, part.nbytes)
        name = output_name(self.source_name, self.uri)
        existing = _existing_outputs(
            self.stage.store, self.lake, self.dataset, self.partition_by, name
        )
        written = self.stage.publish(existing)
        self.committed = True
        return written

    def abort(self) -> None:
        """Delete every staged file (undoing a publish in progress); the lake is as it was."""
        try:
            self._end_writes()
        except Exception as exc:  # the error that made us abort matters more
            log.debug("%s: a row group write failed while aborting: %s", self.uri, exc)
        for part in self.files.values():
            part.discard()
        self.files = {}
        self.stage.discard()


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
    ) -> Written:
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
