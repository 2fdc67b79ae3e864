"""Read one file into one Arrow table, whatever its format: the entry point of every read.

:func:`read_table` checks what all formats share (an empty file, a byte-order mark that
contradicts the contract's encoding, the memory the table holds) and hands the file to the
reader of its format; :func:`read_for_contract` reads it with a contract's column types,
falling back to declared columns as text when a value does not parse.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from hopper.contracts.model import Contract, ReaderOptions
from hopper.contracts.read.budget import MIB, ReadLimits
from hopper.contracts.read.csv import fast_type, file_names, read_csv, with_declared_names
from hopper.contracts.read.detect import HEAD_BYTES, csv_delimiter, detect_format, read_head
from hopper.contracts.read.encoding import encoding_mismatch
from hopper.contracts.read.failures import unreadable_on_error
from hopper.contracts.read.jsonl import read_json
from hopper.contracts.read.parquet import read_parquet
from hopper.errors import UnreadableFileError

logger = logging.getLogger(__name__)


def read_table(
    path: Path,
    reader: ReaderOptions | None = None,
    fmt: str = "auto",
    *,
    column_types: dict[str, pa.DataType] | None = None,
    source: str | None = None,
    max_rows: int | None = None,
    limits: ReadLimits | None = None,
) -> pa.Table:
    """Read a file into an Arrow table.

    Args:
        path: the file, possibly compressed.
        reader: decoding options; defaults apply when None.
        fmt: a contract format (``auto`` detects it).
        column_types: CSV only: Arrow types for some columns, parsed directly.
        source: the name used in error messages (defaults to the path).
        max_rows: stop after about this many rows (CSV and Parquet read only what they need).
        limits: the memory the read may use; a contract's defaults when None.

    Returns:
        The table; columns the reader was not told about have Arrow-inferred types.

    Raises:
        UnreadableFileError: the file is empty, corrupt, truncated or not decodable.
        ResourceLimitError: the file needs more memory than ``limits`` allow.
        pyarrow.ArrowInvalid: CSV only, a value does not parse as its ``column_types`` type.
    """
    reader = reader or ReaderOptions()
    source = source or str(path)
    limits = limits or ReadLimits.of(None)
    try:
        table = _read_table(path, reader, fmt, column_types, source, max_rows, limits)
    except MemoryError as exc:  # pyarrow's ArrowMemoryError too
        raise limits.exceeded(source, exc) from exc
    if table.nbytes > limits.max_memory_bytes:
        raise limits.exceeded(source, f"the table read holds {table.nbytes / MIB:.0f} MiB")
    return table


def _read_table(
    path: Path,
    reader: ReaderOptions,
    fmt: str,
    column_types: dict[str, pa.DataType] | None,
    source: str,
    max_rows: int | None,
    limits: ReadLimits,
) -> pa.Table:
    head = read_head(path, source=source)
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise UnreadableFileError(f"{source}: the file is empty; re-send it with data")
    kind = detect_format(path, fmt)
    mismatch = encoding_mismatch(head, reader) if kind != "parquet" else None
    if mismatch is not None:
        raise UnreadableFileError(f"{source}: {mismatch}")
    logger.debug("reading %s as %s", source, kind)
    if kind in ("csv", "tsv"):
        delimiter = csv_delimiter(head, reader, kind)
        # A file shorter than the head is all in it: parsed from memory, not opened again.
        whole = head if len(head) < HEAD_BYTES else None
        return read_csv(
            path, reader, delimiter, column_types or {}, source, max_rows, content=whole
        )
    if kind == "jsonl":
        table = unreadable_on_error(source, kind, lambda: read_json(path, reader, head))
    else:
        table = unreadable_on_error(
            source, kind, lambda: read_parquet(path, limits, source, max_rows)
        )
    return table if max_rows is None else table.slice(0, max_rows)


def read_for_contract(path: Path, contract: Contract, *, source: str | None = None) -> pa.Table:
    """Read a file for a contract, parsing declared CSV columns into their types if possible.

    Declared columns come back either already typed or as strings (when some value does not
    parse, or when the type needs a strptime ``format`` or a time zone); the caller converts
    and diagnoses the string ones. Without a header, declared columns are taken by position.

    Raises:
        UnreadableFileError, ResourceLimitError: see :func:`read_table`.
    """
    source = source or str(path)
    reader = contract.reader
    limits = ReadLimits.of(contract)
    names = file_names(contract)
    fast_types = {name: fast_type(spec) for name, spec in zip(names, contract.columns, strict=True)}
    try:
        table = read_table(
            path, reader, contract.format, column_types=fast_types, source=source, limits=limits
        )
    except pa.ArrowInvalid as exc:
        logger.info("%s: typed read failed (%s); re-reading declared columns as text", source, exc)
        text_types = dict.fromkeys(names, pa.string())
        table = read_table(
            path, reader, contract.format, column_types=text_types, source=source, limits=limits
        )
    return with_declared_names(table, contract)
