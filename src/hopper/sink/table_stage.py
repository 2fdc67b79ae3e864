"""The reader's half of a table lake: a source's rows staged, for the batch's commit.

With ``lake.format: iceberg`` a reader process does not touch the table. It writes each
passed source's rows (lineage and partition columns included) to one staged Parquet file
under ``<lake>/_staging/<dataset>/`` and returns where; the flow run then commits every
staged file of its batch to the dataset's table in one snapshot (:mod:`hopper.tables`). A
source that fails leaves only its staged file, which :func:`~hopper.staging.discard_staged`
removes, as for the Parquet lake.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hopper.sink.parquet_lake import PARQUET_CONTENT_TYPE, ROW_GROUP_ROWS, writer_options
from hopper.staging import Stage, Written, discard_staged
from hopper.stores import join


class StagedTable:
    """One source's rows written to one staged Parquet file, a table at a time.

    Use it as a context manager; leaving the block without :meth:`commit` deletes the file.
    """

    def __init__(self, stage: Stage, compression: str) -> None:
        self.stage = stage
        self.compression = compression
        self.path = stage.add(join(stage.lake, stage.dataset, "table"))
        self.output: AbstractContextManager[pa.NativeFile] | None = None
        self.stream: pa.NativeFile | None = None
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.committed = False

    def __enter__(self) -> StagedTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.abort()

    def write(self, table: pa.Table) -> None:
        """Add rows (cast to the first table's schema, as the streamed Parquet lake does)."""
        if self.writer is None:
            self.schema = table.schema
            self.output = self.stage.store.open_output(self.path, PARQUET_CONTENT_TYPE)
            self.stream = self.output.__enter__()
            options = writer_options(self.compression, self.schema)
            self.writer = pq.ParquetWriter(self.stream, self.schema, **options)
        elif self.schema is not None and not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def commit(self) -> Written:
        """Close the staged file; return it and its bytes (the batch's commit publishes it)."""
        if self.writer is None:  # no rows at all: nothing to stage
            self.committed = True
            self.stage.discard()
            return Written()
        self.writer.close()
        if self.stream is not None:
            self.stage.wrote(self.path, self.stream.tell())
        if self.output is not None:
            output, self.output = self.output, None
            output.__exit__(None, None, None)
        self.committed = True
        return Written([self.path], self.stage.nbytes)

    def abort(self) -> None:
        """Delete the staged file."""
        try:
            if self.writer is not None:
                self.writer.close()
            if self.output is not None:
                output, self.output = self.output, None
                output.__exit__(None, None, None)
        finally:
            self.stage.discard()


class TableStagingLake:
    """:class:`~hopper.sink.lake.Lake` for a table lake, as a reader process sees it.

    Every method stages; nothing is visible in the table until the batch's commit.
    """

    def __init__(self, location: str, s3: Any = None) -> None:
        """A table lake at ``location`` (a folder or ``s3://``; ``s3`` is the client for it)."""
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
        """Stage a whole source's rows; return the staged file (none for no rows)."""
        with self.stream(
            dataset=dataset,
            partition_by=partition_by,
            source_name=source_name,
            uri=uri,
            compression=compression,
        ) as out:
            out.write(table)
            return out.commit()

    def stream(
        self,
        *,
        dataset: str,
        partition_by: list[str],
        source_name: str,
        uri: str,
        compression: str,
    ) -> StagedTable:
        """Stage a source's rows as they come (partitions are the table's business)."""
        return StagedTable(Stage(self.location, dataset, uri, self.s3), compression)

    def discard(self, dataset: str, uri: str) -> None:
        """Remove what a dead writer of ``uri`` staged (idempotent)."""
        discard_staged(self.location, dataset, uri, self.s3)
