"""Turn a dropped file's bytes into an Arrow table, whatever its format and compression.

Detection looks at the extension first and the content second. CSV is read with the
contract's types whenever possible so Arrow parses typed values directly (the fast path);
only when a value does not parse is the file re-read with the declared columns as strings so
:mod:`hopper.contracts.checks` can say which rows and values are wrong. Anything that cannot
be decoded becomes an :class:`~hopper.errors.UnreadableFileError` with a reason and a hint.

Parquet is bounded before and while it is decoded (:class:`ReadLimits`): the footer's claims
are judged before Arrow allocates what they say, and the file is read batch by batch,
counting the bytes it really decodes against ``max_memory_mb``; an allocation that fails
anyway becomes a :class:`~hopper.errors.ResourceLimitError` naming that limit.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from hopper.contracts.model import ColumnSpec, Contract, ReaderOptions
from hopper.contracts.read.budget import MIB, ReadLimits, plain_number
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
from hopper.contracts.read.encoding import (
    arrow_encoding,
    bom_encoding,
    encoding_mismatch,
    utf8_transcoder,
)
from hopper.contracts.read.failures import READ_ERRORS, failure_reason, unreadable_on_error
from hopper.errors import ResourceLimitError, UndecodableTextError, UnreadableFileError

logger = logging.getLogger(__name__)
T = TypeVar("T")
_BLOCK_BYTES = 16 << 20


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
        return read_csv(path, reader, delimiter, column_types or {}, source, max_rows)
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
    """Read a CSV/TSV file for a contract block by block, as :func:`read_for_contract` would.

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
    if contract.reader.header:
        return [spec.name for spec in contract.columns]
    return [f"f{i}" for i in range(len(contract.columns))]


def fast_type(spec: ColumnSpec) -> pa.DataType:
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
        delimiter: the delimiter to use (see :func:`csv_delimiter`).
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
) -> pa.Table:
    options = csv_options(reader, delimiter, column_types)
    try:
        table = _csv_sample(path, options, max_rows) if max_rows else None
        if table is None:
            with open_stream(path) as stream:
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


def _csv_sample(path: Path, options: tuple[Any, Any, Any], max_rows: int) -> pa.Table | None:
    """Stream the first ``max_rows`` rows.

    Returns None when a later block contradicts the types Arrow inferred from the first one;
    the caller then reads the whole file so inference sees every value.
    """
    kept: list[pa.RecordBatch] = []
    rows = 0
    with open_stream(path) as stream:
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


def read_json(path: Path, reader: ReaderOptions, head: bytes) -> pa.Table:
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return _table_from_rows(_load_json_array(path, reader))
    data = _utf8_bytes(path, reader)
    try:
        table = pajson.read_json(io.BytesIO(data), pajson.ReadOptions(block_size=16 << 20))
        return nested_as_text(table)
    except pa.ArrowInvalid as exc:
        if "changed from" not in str(exc):
            raise
        # A column mixes JSON types: fall back to Python so the values can be diagnosed.
        text = data.decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return _table_from_rows(rows)


def _utf8_bytes(path: Path, reader: ReaderOptions) -> bytes:
    with open_stream(path) as stream:
        data = bytes(stream.read())
    if arrow_encoding(reader.encoding) == "utf8":
        return data.removeprefix(codecs.BOM_UTF8)
    return data.decode(reader.encoding).encode("utf-8")


def _load_json_array(path: Path, reader: ReaderOptions) -> list[Any]:
    rows = json.loads(_utf8_bytes(path, reader))
    if not isinstance(rows, list):
        raise ValueError("expected a JSON array of objects")
    return rows


def _table_from_rows(rows: list[Any]) -> pa.Table:
    """Build a table from JSON objects; keys missing from a row become nulls."""
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError("every JSON record must be an object ({...})")
    names = list(dict.fromkeys(key for row in rows for key in row))
    return pa.table({name: _json_column([row.get(name) for row in rows]) for name in names})


def nested_as_text(table: pa.Table) -> pa.Table:
    """Contracts type flat columns only: nested values (objects, lists) become JSON text."""
    for i, column in enumerate(table.schema):
        if pa.types.is_nested(column.type):
            text = pa.array([_json_text(v) for v in table.column(i).to_pylist()], pa.string())
            table = table.set_column(i, column.name, text)
    return table


def _json_column(values: list[Any]) -> pa.Array:
    if any(isinstance(v, dict | list) for v in values):
        return pa.array([_json_text(v) for v in values], pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        # Mixed JSON types in one column: keep the text so the contract can judge each value.
        return pa.array([_json_text(v) for v in values], pa.string())


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# Decoded bytes per value at least, by Parquet physical type (Arrow's value buffers).
_MIN_WIDTH = {"BOOLEAN": 0.125, "INT32": 4, "INT64": 8, "INT96": 8, "FLOAT": 4, "DOUBLE": 8}
_BATCH_SHARE = 16  # one Parquet batch decodes to about this fraction of max_memory_mb
_MAX_BATCH_ROWS = 1 << 18
_DICTIONARY_BYTES_PER_ROW = 2  # text columns below this are read as dictionaries (see below)
_FOOTER_SHARE = 64  # a footer may take this fraction of it (parsed, it grows many times)


def check_parquet_footer(
    source_file: str | pa.NativeFile, size: int, limits: ReadLimits, *, source: str
) -> None:
    """Refuse a Parquet file whose footer claims more than its limits allow, without reading it.

    See :func:`open_parquet`; this opens the file, judges its footer and closes it.

    Raises:
        ResourceLimitError: a claim over ``max_memory_mb``, ``max_decompression_ratio``,
            ``max_columns`` or ``max_json_depth``.
        UnreadableFileError: no Parquet footer, or one that contradicts the file.
    """
    open_parquet(source_file, size, limits, source=source, whole=True).close()


def open_parquet(
    source_file: str | pa.NativeFile,
    size: int,
    limits: ReadLimits,
    *,
    source: str,
    whole: bool,
    read_dictionary: list[str] | None = None,
) -> pq.ParquetFile:
    """Open a Parquet file once its footer has been judged against the limits.

    Arrow trusts a footer: a 3 KB file claiming a row group of 2^40 rows makes it allocate
    terabytes. So, before Arrow parses anything, the footer's length (the file's last 8 bytes)
    must fit in the file and in ``max_memory_mb`` / 64; then its claims are judged: leaf
    columns against ``max_columns``, schema nesting against ``max_json_depth``, each row
    group's rows (times the narrowest value of each column) and uncompressed bytes against
    ``max_memory_mb``, the file's uncompressed bytes against ``max_decompression_ratio`` ×
    its size, and every column chunk's pages against the file's bounds. For a ``whole`` read
    the file's totals must fit in ``max_memory_mb`` too. A footer can also under-claim: the
    read itself counts what it decodes (:func:`read_table`).

    Args:
        source_file: a path or an open file.
        size: the file's size in bytes.
        limits: the dataset's limits.
        source: the name used in messages.
        whole: whether the whole file is to be read (else only a sample of rows).
        read_dictionary: columns to read as dictionary arrays.

    Raises:
        ResourceLimitError: a claim over a limit.
        UnreadableFileError: no Parquet footer, or one that contradicts the file.
    """
    footer = _footer_length(source_file, size, source)
    if footer * _FOOTER_SHARE > limits.max_memory_bytes:
        raise _over(source, f"a {footer / MIB:.1f} MiB footer", "max_memory_mb", limits)
    try:
        handle = pq.ParquetFile(
            source_file,
            read_dictionary=read_dictionary,
            thrift_container_size_limit=max(limits.max_columns * 4, 100_000),
            schema_depth_limit=limits.max_depth,
        )
    except READ_ERRORS as exc:
        if "too deeply nested" in str(exc):
            raise _over(source, "a schema nested too deeply", "max_json_depth", limits) from exc
        raise UnreadableFileError(
            f"{source}: cannot read as parquet: {failure_reason(exc)}. Fix: check that it is valid "
            "parquet and complete, then re-send it"
        ) from exc
    try:
        _judge_footer(handle.metadata, size - footer - 8, limits, source, whole)
    except BaseException:
        handle.close()
        raise
    return handle


def _footer_length(source_file: str | pa.NativeFile, size: int, source: str) -> int:
    """The footer length a Parquet file's last 8 bytes claim, checked against its size."""
    if isinstance(source_file, str):
        with open(source_file, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(size - 8, 0))
            tail = handle.read(8)
    else:
        head = source_file.read_at(4, 0) if size >= 4 else b""
        tail = source_file.read_at(8, max(size - 8, 0)) if size >= 8 else b""
    if size < 12 or head != b"PAR1" or tail[4:] != b"PAR1":
        raise UnreadableFileError(
            f"{source}: cannot read as parquet: it does not start and end with PAR1 (an "
            "encrypted footer, or not a complete Parquet file). Fix: re-send it unencrypted "
            "and complete"
        )
    footer = int.from_bytes(tail[:4], "little")
    if footer > size - 12:
        raise UnreadableFileError(
            f"{source}: cannot read as parquet: its footer claims {footer} bytes, more than "
            f"the {size}-byte file holds. Fix: the file is truncated or corrupt: re-send it"
        )
    return footer


def _judge_footer(
    meta: pq.FileMetaData, data_end: int, limits: ReadLimits, source: str, whole: bool
) -> None:
    """Judge a parsed footer's claims (see :func:`open_parquet`)."""
    if meta.num_columns > limits.max_columns:
        raise ResourceLimitError(
            f"{source}: {meta.num_columns} columns, over the dataset's limit of "
            f"{limits.max_columns} (max_columns). Check the file, or raise the limit."
        )
    schema = meta.schema
    widths = [_min_width(schema.column(i)) for i in range(meta.num_columns)]
    row_bytes = sum(widths)
    memory = limits.max_memory_bytes
    rows = uncompressed = 0
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        if group.num_rows < 0 or group.num_columns != meta.num_columns:
            raise _contradicts(source, f"row group {index} is malformed")
        group_bytes = 0
        for column in range(group.num_columns):
            chunk = group.column(column)
            _check_chunk(chunk, data_end, source, index)
            group_bytes += chunk.total_uncompressed_size
        claim = max(group_bytes, group.total_byte_size, int(group.num_rows * row_bytes))
        if claim > memory:
            what = f"row group {index} of {group.num_rows:,} rows decoding to {_mib(claim)}"
            raise _over(source, what, "max_memory_mb", limits)
        rows += group.num_rows
        uncompressed += group_bytes
    if rows != meta.num_rows:
        raise _contradicts(source, f"{meta.num_rows:,} rows claimed, {rows:,} in its row groups")
    allowed = max(data_end, 1) * limits.max_decompression_ratio
    if uncompressed > allowed:
        raise ResourceLimitError(
            f"{source}: its pages decompress to {_mib(uncompressed)}, more than "
            f"{limits.max_decompression_ratio:g}× its size (max_decompression_ratio): refused as "
            "a possible decompression bomb. Raise max_decompression_ratio in the contract if "
            "the data is genuine."
        )
    claim = max(uncompressed, int(rows * row_bytes))
    if whole and claim > memory:
        what = f"{rows:,} rows decoding to at least {_mib(claim)}"
        raise _over(source, what, "max_memory_mb", limits)


def _check_chunk(chunk: pq.ColumnChunkMetaData, data_end: int, source: str, group: int) -> None:
    """A column chunk's pages must lie inside the file's data, before the footer."""
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
        if not 0 < chunk.dictionary_page_offset <= start:
            raise _contradicts(source, f"row group {group}: a dictionary page is misplaced")
        start = chunk.dictionary_page_offset
    compressed, uncompressed = chunk.total_compressed_size, chunk.total_uncompressed_size
    if start < 4 or compressed < 0 or uncompressed < 0 or start + compressed > data_end:
        raise _contradicts(
            source, f"row group {group}: column {chunk.path_in_schema!r} lies outside the file"
        )


def _min_width(column: pq.ColumnSchema) -> float:
    """The fewest bytes Arrow spends per row on a leaf column (its value buffer, or offsets)."""
    if column.physical_type == "FIXED_LEN_BYTE_ARRAY":
        return float(max(column.length or 0, 1))
    return float(_MIN_WIDTH.get(column.physical_type, 4))


def _mib(count: float) -> str:
    return f"{count / MIB:,.1f} MiB"


def _over(source: str, what: str, key: str, limits: ReadLimits) -> ResourceLimitError:
    limit = {
        "max_memory_mb": f"{plain_number(limits.max_memory_mb)} MiB",
        "max_json_depth": f"{limits.max_depth} levels",
    }[key]
    return ResourceLimitError(
        f"{source}: its Parquet footer claims {what}, over the dataset's limit of {limit} "
        f"({key}). Split the file, or raise {key} in the contract if the data is genuine, "
        "then replay it."
    )


def _contradicts(source: str, what: str) -> UnreadableFileError:
    return UnreadableFileError(
        f"{source}: cannot read as parquet: its footer contradicts the file ({what}). Fix: "
        "the file is corrupt or forged: re-send it"
    )


def read_parquet(
    path: Path, limits: ReadLimits, source: str, max_rows: int | None = None
) -> pa.Table:
    """Read a Parquet file batch by batch, holding what it decodes to ``max_memory_mb``.

    Columns of text stored with a dictionary are read as dictionary arrays first: their
    decoded size is then known from the dictionary's lengths before a single string is
    copied (an 8 KB file can expand to gigabytes of repeated strings), and they are decoded
    only once the running total allows it.
    """
    if compression_of(path) is None:
        size = path.stat().st_size
        source_file: str | pa.NativeFile = str(path)
    else:
        with open_stream(path) as stream:
            data = stream.read(limits.max_memory_bytes + 1)
        if len(data) > limits.max_memory_bytes:
            raise limits.exceeded(source, "the file decompresses to more than the limit")
        size, source_file = len(data), pa.BufferReader(data)
    whole = max_rows is None
    with open_parquet(source_file, size, limits, source=source, whole=whole) as probe:
        meta = probe.metadata
        schema = probe.schema_arrow
    text = [f.name for f in schema if _is_text(f.type) and _has_dictionary(meta, f.name)]
    budget, used, kept_rows = limits.max_memory_bytes, 0, 0
    kept: list[pa.RecordBatch] = []
    rows_per_batch = _batch_rows(meta, budget)
    with pq.ParquetFile(source_file, metadata=meta, read_dictionary=text or None) as handle:
        for batch in handle.iter_batches(batch_size=rows_per_batch):
            used += _decoded_bytes(batch)
            if used > budget:
                raise limits.exceeded(source, f"more than {_mib(budget)} decoded")
            kept.append(_decode_text(batch, text))
            kept_rows += batch.num_rows
            if max_rows is not None and kept_rows >= max_rows:
                break
    if not kept:
        return nested_as_text(_decode_text(schema.empty_table(), text))
    return nested_as_text(pa.Table.from_batches(kept))


def _is_text(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
    )


def _has_dictionary(meta: pq.FileMetaData, name: str) -> bool:
    """Whether a top-level text column may expand far beyond its pages when decoded.

    That takes a dictionary and values that repeat it in runs: under
    ``_DICTIONARY_BYTES_PER_ROW`` bytes a row (the pages hold little more than run lengths).
    Such columns are cheap to read as dictionaries; a column of mostly distinct values (whose
    pages hold the text itself) is read as text, as reading it as a dictionary would hash
    every value.
    """
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        for column in range(group.num_columns):
            chunk = group.column(column)
            if chunk.path_in_schema != name or not chunk.has_dictionary_page:
                continue
            if chunk.total_uncompressed_size < _DICTIONARY_BYTES_PER_ROW * max(group.num_rows, 1):
                return True
    return False


def _batch_rows(meta: pq.FileMetaData, budget: int) -> int:
    """Rows per batch so that one batch decodes to about ``budget`` / 16 (by the footer)."""
    rows = max(meta.num_rows, 1)
    total = sum(
        meta.row_group(i).column(c).total_uncompressed_size
        for i in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    )
    per_row = max(total / rows, 1.0)
    return int(min(max(budget / _BATCH_SHARE / per_row, 1), _MAX_BATCH_ROWS))


def _decoded_bytes(batch: pa.RecordBatch) -> int:
    """The bytes a batch holds once its dictionary columns are decoded (without decoding)."""
    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type) and _is_text(column.type.value_type):
            lengths = pc.binary_length(column.dictionary)
            used = pc.sum(pc.take(lengths, column.indices)).as_py() or 0
            total += int(used) + 8 * len(column)  # offsets and validity, generously
        else:
            total += column.nbytes
    return total


def _decode_text(batch: T, names: list[str]) -> T:
    """Decode the dictionary columns read as such (``names``) back to plain text."""
    if not names:
        return batch
    table = batch
    for name in names:
        index = table.schema.get_field_index(name)  # type: ignore[attr-defined]
        column = table.column(index)  # type: ignore[attr-defined]
        if pa.types.is_dictionary(column.type):
            value_type = column.type.value_type
            table = table.set_column(  # type: ignore[attr-defined]
                index, pa.field(name, value_type), pc.cast(column, value_type)
            )
    return table


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
