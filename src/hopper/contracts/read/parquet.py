"""Read Parquet files within a contract's limits: the footer judged first, then batch by batch.

Arrow trusts a footer, so Parquet is bounded before and while it is decoded
(:class:`~hopper.contracts.read.budget.ReadLimits`): the footer's claims are judged before
Arrow allocates what they say (:func:`open_parquet`), and the file is read batch by batch,
counting the bytes it really decodes against ``max_memory_mb`` (:func:`read_parquet`); an
allocation that fails anyway becomes a :class:`~hopper.errors.ResourceLimitError` naming that
limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hopper.contracts.read.budget import MIB, ReadLimits, plain_number
from hopper.contracts.read.detect import compression_of, open_stream
from hopper.contracts.read.failures import READ_ERRORS, failure_reason
from hopper.contracts.read.jsonl import nested_as_text
from hopper.errors import ResourceLimitError, UnreadableFileError

T = TypeVar("T")

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
    read itself counts what it decodes (:func:`read_parquet`).

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
