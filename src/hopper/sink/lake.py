"""The lake seam: where validated rows go, whatever the lake's format.

:class:`Lake` is what ingestion writes through; :func:`open_lake` picks the implementation
for a location. :class:`~hopper.sink.parquet_lake.ParquetLake` is one file per source and
partition; a table lake (Iceberg) is another implementation of the same interface.
"""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa

from hopper.config import LakeOptions
from hopper.sink.parquet_lake import ParquetLake
from hopper.sink.table_stage import TableStagingLake
from hopper.staging import Written


class LakeStream(Protocol):
    """One source's rows going into the lake a table at a time (see :meth:`Lake.stream`).

    Leaving its block without :meth:`commit` leaves the lake as it was.
    """

    def __enter__(self) -> LakeStream: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def write(self, table: pa.Table) -> None:
        """Add rows."""

    def commit(self) -> Written:
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
    ) -> Written:
        """Write a whole source's rows; return where they are, and their bytes."""

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


def open_lake(options: LakeOptions, s3: Any = None) -> Lake:
    """The lake ``hopper.yaml`` describes, as a reader process writes to it.

    Parquet files are published by the reader itself; a table lake's rows are staged there
    and committed by the flow run, one snapshot per batch (:mod:`hopper.tables`).
    """
    if options.is_table:
        return TableStagingLake(options.path, s3)
    return ParquetLake(options.path, s3)
