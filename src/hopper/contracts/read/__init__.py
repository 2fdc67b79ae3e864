"""Turn a dropped file's bytes into an Arrow table, whatever its format and compression.

One module per idea, the public entry points re-exported here:

- ``detect``: compression, format (extension first, content second) and CSV delimiter;
- ``encoding``: byte-order marks, and the UTF-8 Arrow's readers are given;
- ``budget``: :class:`ReadLimits`, the memory, columns and nesting a read may spend;
- ``failures``: which exceptions mean "cannot read", and how that is worded;
- ``csv``: CSV/TSV read whole or in blocks (:func:`iter_csv_for_contract`), typed where
  values parse, declared columns as text where not;
- ``jsonl``: JSON lines or a JSON array, nested values as JSON text;
- ``parquet``: Parquet bounded before (:func:`check_parquet_footer`) and while it is decoded;
- ``table``: :func:`read_table` and :func:`read_for_contract`, which pick the reader.

Anything that cannot be decoded becomes an :class:`~hopper.errors.UnreadableFileError` with a
reason and a hint; anything that needs more than the contract allows, a
:class:`~hopper.errors.ResourceLimitError` naming that limit.
"""

from hopper.contracts.read.budget import ReadLimits
from hopper.contracts.read.csv import StreamFallback, csv_options, iter_csv_for_contract
from hopper.contracts.read.detect import (
    DELIMITERS,
    Format,
    compression_of,
    csv_delimiter,
    detect_format,
    open_stream,
    read_head,
    sniff_delimiter,
)
from hopper.contracts.read.encoding import bom_encoding, encoding_mismatch, utf8_transcoder
from hopper.contracts.read.parquet import check_parquet_footer, open_parquet
from hopper.contracts.read.table import read_for_contract, read_table

__all__ = [
    "DELIMITERS",
    "Format",
    "ReadLimits",
    "StreamFallback",
    "bom_encoding",
    "check_parquet_footer",
    "compression_of",
    "csv_delimiter",
    "csv_options",
    "detect_format",
    "encoding_mismatch",
    "iter_csv_for_contract",
    "open_parquet",
    "open_stream",
    "read_for_contract",
    "read_head",
    "read_table",
    "sniff_delimiter",
    "utf8_transcoder",
]
