"""Where outputs go and how they are written: the lake, its names, partitions and quarantine.

This is the policy above :mod:`hopper.stores` (which only knows how to write, list, copy,
delete and claim files in one kind of place). None of it asks whether it is writing to a
folder or to S3. One module per idea:

- :mod:`~hopper.sink.lake`: the :class:`Lake` interface and :func:`open_lake`, the seam a
  lake format plugs into;
- :mod:`~hopper.sink.names`: output names and Hive partition folders;
- :mod:`~hopper.sink.parquet_lake`: the Parquet lake (one file per source and partition), whole
  and streamed;
- :mod:`~hopper.sink.quarantine`: rejected files, their reasons and rejected rows.
"""

from hopper.sink.lake import Lake, LakeStream, open_lake
from hopper.sink.names import output_name, output_path, partition_dir, safe_stem, source_id
from hopper.sink.parquet_lake import (
    PARQUET_CONTENT_TYPE,
    ParquetLake,
    StreamingOutputs,
    TooManyPartitions,
    parquet,
    write_outputs,
)
from hopper.sink.quarantine import one_line_reason, quarantine, quarantine_file, write_rejected_rows
from hopper.staging import discard_staged

__all__ = [
    "PARQUET_CONTENT_TYPE",
    "Lake",
    "LakeStream",
    "ParquetLake",
    "StreamingOutputs",
    "TooManyPartitions",
    "discard_staged",
    "one_line_reason",
    "open_lake",
    "output_name",
    "output_path",
    "parquet",
    "partition_dir",
    "quarantine",
    "quarantine_file",
    "safe_stem",
    "source_id",
    "write_outputs",
    "write_rejected_rows",
]
