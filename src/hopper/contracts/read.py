"""Turn a dropped file's bytes into an Arrow table, whatever its format and compression.

Detection looks at the extension first and the content second. CSV is read with the
contract's types whenever possible so Arrow parses typed values directly (the fast path);
only when a value does not parse is the file re-read with the declared columns as strings so
:mod:`hopper.contracts.validate` can say which rows and values are wrong. Anything that cannot
be decoded becomes an :class:`~hopper.errors.UnreadableFileError` with a reason and a hint.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from hopper.contracts.model import ColumnSpec, Contract, ReaderOptions
from hopper.errors import UndecodableTextError, UnreadableFileError

logger = logging.getLogger(__name__)

Format = Literal["csv", "tsv", "jsonl", "parquet"]
T = TypeVar("T")

_COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\x28\xb5\x2f\xfd": "zstd"}
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
DELIMITERS = [",", ";", "\t", "|"]
"""The delimiters :func:`sniff_delimiter` chooses from."""
_QUOTED = re.compile(r'"[^"]*"')
_HEAD_BYTES = 64 * 1024
# RecursionError: Python's json module on absurdly nested JSON arrays.
_READ_ERRORS = (pa.ArrowException, OSError, EOFError, ValueError, UnicodeError, RecursionError)
_BLOCK_BYTES = 16 << 20


# --------------------------------------------------------------------------- detection


def compression_of(path: Path) -> str | None:
    """The compression codec of a file (by suffix, else by magic bytes), or None."""
    codec = _COMPRESSIONS.get(Path(path).suffix.lower())
    if codec:
        return codec
    with open(path, "rb") as handle:
        magic = handle.read(4)
    return next((codec for sig, codec in _MAGIC.items() if magic.startswith(sig)), None)


def open_stream(path: Path) -> pa.NativeFile:
    """Open a file for reading, decompressing it on the fly when needed."""
    return pa.input_stream(str(path), compression=compression_of(path))


def read_head(path: Path, size: int = _HEAD_BYTES, *, source: str | None = None) -> bytes:
    """The first ``size`` decompressed bytes of a file.

    Args:
        path: the file.
        size: how many decompressed bytes to return at most.
        source: the name used in error messages (defaults to the path).

    Raises:
        UnreadableFileError: the file cannot be opened or decompressed.
    """
    try:
        with open_stream(path) as stream:
            return bytes(stream.read(size))
    except _READ_ERRORS as exc:
        raise UnreadableFileError(
            f"{source or path}: cannot read the file: {_reason(exc)}. Fix: the file looks "
            "truncated or corrupt, or is not compressed the way its name says: re-send it"
        ) from exc


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def bom_encoding(head: bytes) -> str | None:
    """``utf-16`` or ``utf-32`` when ``head`` starts with that byte-order mark, else None.

    Spreadsheets save "Unicode text" as UTF-16 with a BOM; UTF-8's own BOM needs nothing.
    """
    return next((name for bom, name in _BOMS if head.startswith(bom)), None)


def encoding_mismatch(head: bytes, reader: ReaderOptions) -> str | None:
    """Why a file cannot be decoded with the reader's encoding, when its BOM says so."""
    found = bom_encoding(head)
    if found is None or codecs.lookup(reader.encoding).name.startswith(found):
        return None
    return (
        f"the file is {found.upper()} text (it starts with a {found.upper()} byte-order mark) "
        f"but the contract reads it as {reader.encoding}. Fix: set reader.encoding: {found} "
        "in the contract, or re-send the file as UTF-8"
    )


def detect_format(path: Path, contract_format: str = "auto") -> Format:
    """Decide how to read a file.

    Args:
        path: the file; a ``.gz``/``.zst``/``.zstd``/``.bz2`` suffix after the real
            extension is ignored.
        contract_format: the contract's ``format``; anything but ``auto`` wins.

    Returns:
        ``"csv"``, ``"tsv"``, ``"jsonl"`` (JSON lines, or a JSON array) or ``"parquet"``.
    """
    if contract_format != "auto":
        return contract_format  # type: ignore[return-value]
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    return _format_from_content(read_head(path))


def _format_from_content(head: bytes) -> Format:
    if head.startswith(b"PAR1"):
        return "parquet"
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "jsonl" if first in (b"{", b"[") else "csv"


def sniff_delimiter(text: str) -> str:
    """Pick the delimiter among ``,`` ``;`` tab ``|`` that splits the first lines evenly.

    A candidate that gives the same non-zero count on every complete line wins, the highest
    count first; otherwise the one most frequent in the header line; otherwise a comma.
    """
    lines = [_QUOTED.sub("", line) for line in text.splitlines()[:21]]
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line of a head sample is usually cut short
    lines = [line for line in lines if line.strip()]
    if not lines:
        return ","
    counts = {d: [line.count(d) for line in lines] for d in DELIMITERS}
    steady = [d for d, c in counts.items() if c[0] > 0 and len(set(c)) == 1]
    if steady:
        return max(steady, key=lambda d: counts[d][0])
    best = max(DELIMITERS, key=lambda d: counts[d][0])
    return best if counts[best][0] > 0 else ","


# --------------------------------------------------------------------------- reading


def read_table(
    path: Path,
    reader: ReaderOptions | None = None,
    fmt: str = "auto",
    *,
    column_types: dict[str, pa.DataType] | None = None,
    source: str | None = None,
    max_rows: int | None = None,
) -> pa.Table:
    """Read a file into an Arrow table.

    Args:
        path: the file, possibly compressed.
        reader: decoding options; defaults apply when None.
        fmt: a contract format (``auto`` detects it).
        column_types: CSV only: Arrow types for some columns, parsed directly.
        source: the name used in error messages (defaults to the path).
        max_rows: stop after about this many rows (CSV streams only what it needs).

    Returns:
        The table; columns the reader was not told about have Arrow-inferred types.

    Raises:
        UnreadableFileError: the file is empty, corrupt, truncated or not decodable.
        pyarrow.ArrowInvalid: CSV only, a value does not parse as its ``column_types`` type.
    """
    reader = reader or ReaderOptions()
    source = source or str(path)
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
        return _read_csv(path, reader, delimiter, column_types or {}, source, max_rows)
    if kind == "jsonl":
        table = _unreadable_on_error(source, kind, lambda: _read_json(path, reader, head))
    else:
        table = _unreadable_on_error(source, kind, lambda: _read_parquet(path))
    return table if max_rows is None else table.slice(0, max_rows)


def csv_delimiter(head: bytes, reader: ReaderOptions, kind: str = "csv") -> str:
    """The delimiter to use: the contract's, else a tab for TSV, else sniffed from ``head``."""
    if reader.delimiter:
        return reader.delimiter
    if kind == "tsv":
        return "\t"
    text = head.decode(reader.encoding, errors="replace")
    lines = text.splitlines(keepends=True)[reader.skip_rows :]
    return sniff_delimiter("".join(lines))


def read_for_contract(path: Path, contract: Contract, *, source: str | None = None) -> pa.Table:
    """Read a file for a contract, parsing declared CSV columns into their types if possible.

    Declared columns come back either already typed or as strings (when some value does not
    parse, or when the type needs a strptime ``format`` or a time zone); the caller converts
    and diagnoses the string ones. Without a header, declared columns are taken by position.

    Raises:
        UnreadableFileError: see :func:`read_table`.
    """
    source = source or str(path)
    reader = contract.reader
    names = _file_names(contract)
    fast_types = {
        name: _fast_type(spec) for name, spec in zip(names, contract.columns, strict=True)
    }
    try:
        table = read_table(path, reader, contract.format, column_types=fast_types, source=source)
    except pa.ArrowInvalid as exc:
        logger.info("%s: typed read failed (%s); re-reading declared columns as text", source, exc)
        text_types = dict.fromkeys(names, pa.string())
        table = read_table(path, reader, contract.format, column_types=text_types, source=source)
    return _with_declared_names(table, contract)


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
        StreamFallback: an undeclared column's inferred type changes after the first block,
            or a row is longer than ``block_size``.
    """
    source = source or str(path)
    reader = contract.reader
    head = read_head(path, source=source)
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise UnreadableFileError(f"{source}: the file is empty; re-send it with data")
    delimiter = csv_delimiter(head, reader, detect_format(path, contract.format))
    names = _file_names(contract)
    fast_types = {
        name: _fast_type(spec) for name, spec in zip(names, contract.columns, strict=True)
    }
    yielded = 0
    try:
        for table in _csv_blocks(path, reader, delimiter, fast_types, source, block_size, 0):
            yielded += table.num_rows
            yield _with_declared_names(table, contract)
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
        for table in _csv_blocks(path, reader, delimiter, text_types, source, block_size, yielded):
            yield _with_declared_names(table, contract)
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
        except pa.ArrowInvalid as exc:
            if str(exc).startswith("In CSV column") and "UTF8" not in str(exc):
                raise _ConversionFailed(_reason(exc)) from exc
            if "straddl" in str(exc):  # a row longer than a block: the whole read has larger
                raise StreamFallback(f"{source}: a row is longer than {block_size} bytes") from exc
            raise _csv_error(source, exc, delimiter, path, reader) from exc
        except _READ_ERRORS as exc:
            raise _csv_error(source, exc, delimiter, path, reader) from exc
        if not yielded:
            _reject_binary_columns(schema.empty_table(), source)
            yield schema.empty_table()


def _with_declared_names(table: pa.Table, contract: Contract) -> pa.Table:
    """Without a header, name the first columns as declared (the others stay ``f<index>``)."""
    if contract.reader.header:
        return table
    declared = [spec.name for spec in contract.columns]
    return table.rename_columns(
        [declared[i] if i < len(declared) else n for i, n in enumerate(table.column_names)]
    )


def _file_names(contract: Contract) -> list[str]:
    if contract.reader.header:
        return [spec.name for spec in contract.columns]
    return [f"f{i}" for i in range(len(contract.columns))]


def _fast_type(spec: ColumnSpec) -> pa.DataType:
    data_type = spec.arrow_type()
    needs_text = spec.format is not None or (
        pa.types.is_timestamp(data_type) and data_type.tz is not None
    )
    return pa.string() if needs_text else data_type


def _arrow_encoding(encoding: str) -> str:
    # Arrow decodes UTF-8 natively (and skips a BOM); Python codecs would keep the BOM.
    name = codecs.lookup(encoding).name
    return "utf8" if name in ("utf-8", "utf-8-sig") else name


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
        encoding=_arrow_encoding(reader.encoding),
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


def _read_csv(
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
    except pa.ArrowInvalid as exc:
        if str(exc).startswith("In CSV column") and "UTF8" not in str(exc):
            raise  # a value that does not parse as its declared type: the caller diagnoses
        raise _csv_error(source, exc, delimiter, path, reader) from exc
    except _READ_ERRORS as exc:
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
    reason = _reason(exc)
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
    except (csv.Error, *_READ_ERRORS) as exc:
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


def _read_json(path: Path, reader: ReaderOptions, head: bytes) -> pa.Table:
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return _table_from_rows(_load_json_array(path, reader))
    data = _utf8_bytes(path, reader)
    try:
        table = pajson.read_json(io.BytesIO(data), pajson.ReadOptions(block_size=16 << 20))
        return _nested_as_text(table)
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
    if _arrow_encoding(reader.encoding) == "utf8":
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


def _nested_as_text(table: pa.Table) -> pa.Table:
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


def _read_parquet(path: Path) -> pa.Table:
    if compression_of(path) is None:
        return _nested_as_text(pq.read_table(str(path)))
    with open_stream(path) as stream:
        return _nested_as_text(pq.read_table(pa.BufferReader(stream.read())))


def _unreadable_on_error(source: str, kind: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except _READ_ERRORS as exc:
        if isinstance(exc, UnicodeError):
            raise UndecodableTextError(
                f"{source}: cannot read as {kind}: {_reason(exc)}. Fix: set reader.encoding "
                "in the contract or re-send the file as UTF-8"
            ) from exc
        raise UnreadableFileError(
            f"{source}: cannot read as {kind}: {_reason(exc)}. Fix: check that it is valid "
            f"{kind} and complete, then re-send it"
        ) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
