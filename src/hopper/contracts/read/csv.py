"""Read CSV and TSV files, whole or block by block, with a contract's types where they parse.

A file is read with the contract's types whenever possible so Arrow parses typed values
directly (the fast path); only when a value does not parse is it re-read with the declared
columns as strings, so :mod:`hopper.contracts.checks` can say which rows and values are wrong.
The whole-file read (:func:`read_csv`) and the stream (:func:`iter_csv_for_contract`) share
their Arrow options (:func:`csv_options`) and their errors: a ragged row is reported with its
line number, and bytes that are not text in the contract's encoding as such.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from hopper.contracts.model import ColumnSpec, Contract, ReaderOptions
from hopper.contracts.read.budget import ReadLimits
from hopper.contracts.read.detect import csv_delimiter, detect_format, open_stream, read_head
from hopper.contracts.read.encoding import arrow_encoding
from hopper.contracts.read.failures import READ_ERRORS, failure_reason
from hopper.errors import UndecodableTextError, UnreadableFileError

logger = logging.getLogger(__name__)

_BLOCK_BYTES = 16 << 20


class StreamFallback(Exception):
    """A file cannot be streamed as it is; read it whole instead (not a data problem).

    Raised when a column the contract does not declare changes its Arrow-inferred type after
    the first block (a stream fixes the types from the first block, a whole read does not),
    or when a row is longer than the stream's block size.
    """


class _ConversionFailed(Exception):
    """A block's value does not parse as its column's type (declared or inferred)."""


def iter_csv_for_contract(
    path: Path, contract: Contract, *, source: str | None = None, block_size: int = _BLOCK_BYTES
) -> Iterator[pa.Table]:
    """Read a CSV/TSV file for a contract block by block, as
    :func:`~hopper.contracts.read.table.read_for_contract` would.

    The options are those of the whole-file read. Declared columns are parsed into their
    types while they parse; from the first block where one does not, the rest of the file is
    read again from a new stream (skipping the rows already yielded) with the declared
    columns as text, which the caller converts and diagnoses, exactly like the whole-file
    path does. At least one table is yielded (an empty one for a header-only file).

    Args:
        path: a CSV or TSV file, possibly compressed.
        contract: its dataset contract.
        source: the name used in error messages (defaults to the path).
        block_size: bytes read at a time; each table holds about one block's rows.

    Yields:
        Consecutive tables of rows, in file order, with the same columns.

    Raises:
        UnreadableFileError: the file is empty, corrupt, truncated or not decodable.
        ResourceLimitError: a block could not be allocated (``max_memory_mb``).
        StreamFallback: an undeclared column's inferred type changes after the first block,
            or a row is longer than ``block_size``.
    """
    source = source or str(path)
    reader = contract.reader
    head = read_head(path, source=source)
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise UnreadableFileError(f"{source}: the file is empty; re-send it with data")
    delimiter = csv_delimiter(head, reader, detect_format(path, contract.format))
    names = file_names(contract)
    fast_types = {name: fast_type(spec) for name, spec in zip(names, contract.columns, strict=True)}
    limits = ReadLimits.of(contract)
    yielded = 0
    try:
        for table in _csv_blocks(
            path, reader, delimiter, fast_types, source, block_size, 0, limits
        ):
            yielded += table.num_rows
            yield with_declared_names(table, contract)
        return
    except _ConversionFailed as exc:
        logger.info(
            "%s: typed read failed after %d row(s) (%s); reading the rest with declared "
            "columns as text",
            source,
            yielded,
            exc,
        )
    text_types = dict.fromkeys(names, pa.string())
    try:
        for table in _csv_blocks(
            path, reader, delimiter, text_types, source, block_size, yielded, limits
        ):
            yield with_declared_names(table, contract)
    except _ConversionFailed as exc:
        raise StreamFallback(f"{source}: an undeclared column changes type: {exc}") from exc


def _csv_blocks(
    path: Path,
    reader: ReaderOptions,
    delimiter: str,
    column_types: dict[str, pa.DataType],
    source: str,
    block_size: int,
    skip: int,
    limits: ReadLimits,
) -> Iterator[pa.Table]:
    """Yield a CSV file's blocks as tables, leaving out the first ``skip`` rows."""
    options = csv_options(reader, delimiter, column_types, block_size)
    yielded = False
    with open_stream(path) as stream:
        try:
            batches = pacsv.open_csv(stream, *options)
            schema = batches.schema
            for batch in batches:
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                table = pa.Table.from_batches([batch.slice(skip)], schema=schema)
                skip = 0
                _reject_binary_columns(table, source)
                yielded = True
                yield table
        except MemoryError as exc:  # pyarrow's ArrowMemoryError too
            raise limits.exceeded(source, exc) from exc
        except pa.ArrowInvalid as exc:
            if str(exc).startswith("In CSV column") and "UTF8" not in str(exc):
                raise _ConversionFailed(failure_reason(exc)) from exc
            if "straddl" in str(exc):  # a row longer than a block: the whole read has larger
                raise StreamFallback(f"{source}: a row is longer than {block_size} bytes") from exc
            raise _csv_error(source, exc, delimiter, path, reader) from exc
        except READ_ERRORS as exc:
            raise _csv_error(source, exc, delimiter, path, reader) from exc
        if not yielded:
            _reject_binary_columns(schema.empty_table(), source)
            yield schema.empty_table()


def with_declared_names(table: pa.Table, contract: Contract) -> pa.Table:
    """Without a header, name the first columns as declared (the others stay ``f<index>``)."""
    if contract.reader.header:
        return table
    declared = [spec.name for spec in contract.columns]
    return table.rename_columns(
        [declared[i] if i < len(declared) else n for i, n in enumerate(table.column_names)]
    )


def file_names(contract: Contract) -> list[str]:
    """The declared columns' names in the file: theirs, or ``f0``, ``f1``... without a header."""
    if contract.reader.header:
        return [spec.name for spec in contract.columns]
    return [f"f{i}" for i in range(len(contract.columns))]


def fast_type(spec: ColumnSpec) -> pa.DataType:
    """The type Arrow parses a declared column into: its own, or text when that needs more.

    A strptime ``format`` or a time zone is applied later, by the conversion that diagnoses it.
    """
    data_type = spec.arrow_type()
    needs_text = spec.format is not None or (
        pa.types.is_timestamp(data_type) and data_type.tz is not None
    )
    return pa.string() if needs_text else data_type


def csv_options(
    reader: ReaderOptions,
    delimiter: str,
    column_types: dict[str, pa.DataType],
    block_size: int = _BLOCK_BYTES,
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    """Arrow's CSV options for a contract's reader: the same for whole reads and streams.

    Args:
        reader: the contract's decoding options.
        delimiter: the delimiter to use (see :func:`~hopper.contracts.read.detect.csv_delimiter`).
        column_types: Arrow types for some columns, parsed directly.
        block_size: bytes Arrow reads (and a stream yields) at a time.
    """
    read_options = pacsv.ReadOptions(
        encoding=arrow_encoding(reader.encoding),
        skip_rows=reader.skip_rows,
        autogenerate_column_names=not reader.header,
        block_size=block_size,
    )
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter, quote_char=reader.quote_char, newlines_in_values=True
    )
    convert_options = pacsv.ConvertOptions(
        column_types=column_types,
        null_values=reader.null_values,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        decimal_point=reader.decimal_point,
    )
    return read_options, parse_options, convert_options


def read_csv(
    path: Path,
    reader: ReaderOptions,
    delimiter: str,
    column_types: dict[str, pa.DataType],
    source: str,
    max_rows: int | None,
    *,
    content: bytes | None = None,
) -> pa.Table:
    """Read a whole CSV/TSV file, or its first ``max_rows`` rows.

    Args:
        content: the file's whole (decompressed) content when the caller has it already:
            parsed instead of ``path``, which then only names the file in error messages.

    Raises:
        UnreadableFileError: the file is corrupt, truncated, ragged or not decodable.
        pyarrow.ArrowInvalid: a value does not parse as its ``column_types`` type (the caller
            re-reads the declared columns as text and diagnoses them).
    """
    options = csv_options(reader, delimiter, column_types)
    try:
        table = _csv_sample(path, options, max_rows, content) if max_rows else None
        if table is None:
            with _open(path, content) as stream:
                table = pacsv.read_csv(stream, *options)
    except MemoryError:
        raise  # read_table names the memory limit
    except pa.ArrowInvalid as exc:
        if str(exc).startswith("In CSV column") and "UTF8" not in str(exc):
            raise  # a value that does not parse as its declared type: the caller diagnoses
        raise _csv_error(source, exc, delimiter, path, reader) from exc
    except READ_ERRORS as exc:
        raise _csv_error(source, exc, delimiter, path, reader) from exc
    _reject_binary_columns(table, source)
    return table


def _open(path: Path, content: bytes | None) -> pa.NativeFile:
    """A stream of the file's content: ``content`` if given, else the file, decompressed."""
    return pa.BufferReader(content) if content is not None else open_stream(path)


def _csv_sample(
    path: Path, options: tuple[Any, Any, Any], max_rows: int, content: bytes | None = None
) -> pa.Table | None:
    """Stream the first ``max_rows`` rows.

    Returns None when a later block contradicts the types Arrow inferred from the first one;
    the caller then reads the whole file so inference sees every value.
    """
    kept: list[pa.RecordBatch] = []
    rows = 0
    with _open(path, content) as stream:
        batches = pacsv.open_csv(stream, *options)
        try:
            for batch in batches:
                kept.append(batch)
                rows += batch.num_rows
                if rows >= max_rows:
                    break
        except pa.ArrowInvalid as exc:
            if not str(exc).startswith("In CSV column"):
                raise
            return None
        return pa.Table.from_batches(kept, schema=batches.schema).slice(0, max_rows)


def _csv_error(
    source: str, exc: BaseException, delimiter: str, path: Path, reader: ReaderOptions
) -> UnreadableFileError:
    reason = failure_reason(exc)
    if "UTF8" in reason or isinstance(exc, UnicodeError):
        return UndecodableTextError(
            f"{source}: cannot read as CSV: {reason}. Fix: set reader.encoding in the "
            "contract (e.g. latin-1) or re-send the file as UTF-8"
        )
    if "Expected" in reason and "columns" in reason:
        where = _ragged_line(path, reader, delimiter)
        if where is not None:
            line, expected, got = where
            reason = f"line {line} has {got} field(s) but the header has {expected}"
        hint = (
            f"rows have different field counts with delimiter {delimiter!r}: check "
            "reader.delimiter and reader.quote_char, or fix the file"
        )
    else:
        hint = "the file looks truncated or corrupt: re-send it"
    return UnreadableFileError(f"{source}: cannot read as CSV: {reason}. Fix: {hint}")


def _ragged_line(path: Path, reader: ReaderOptions, delimiter: str) -> tuple[int, int, int] | None:
    """Find the first row whose field count differs from the header's.

    Arrow reports the offending row's text but not its line number, so on this error path
    only the file is scanned again with the standard csv module, which tracks physical lines
    (quoted newlines included). Returns ``(1-based line, expected fields, actual fields)``.
    """
    try:
        with open_stream(path) as stream:
            text = io.TextIOWrapper(stream, encoding=reader.encoding, errors="replace", newline="")
            for _ in range(reader.skip_rows):
                text.readline()
            rows = csv.reader(text, delimiter=delimiter, quotechar=reader.quote_char)
            expected: int | None = None
            last_line = 0
            for fields in rows:
                start, last_line = last_line + 1, rows.line_num
                if not fields:
                    continue  # Arrow skips empty lines too
                if expected is None:
                    expected = len(fields)
                elif len(fields) != expected:
                    return reader.skip_rows + start, expected, len(fields)
    except (csv.Error, *READ_ERRORS) as exc:
        logger.debug("%s: could not locate the ragged row: %s", path, exc)
    return None


def _reject_binary_columns(table: pa.Table, source: str) -> None:
    """Arrow infers ``binary`` for undeclared CSV columns whose bytes are not valid text.

    Arrow does not check the header's bytes either: a column name that is not UTF-8 fails
    only when it is read, so it is read here, once.
    """
    try:
        table.schema.names  # noqa: B018 - decodes every column name
    except UnicodeDecodeError as exc:
        raise UndecodableTextError(
            f"{source}: the header is not valid UTF-8 text ({exc.reason} at byte "
            f"{exc.start}). Fix: set reader.encoding in the contract (e.g. latin-1), or "
            "re-send the file as UTF-8"
        ) from exc
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    if binary:
        raise UndecodableTextError(
            f"{source}: column(s) {binary} are not valid UTF-8 text. Fix: set reader.encoding "
            "in the contract (e.g. latin-1) or re-send the file as UTF-8"
        )
