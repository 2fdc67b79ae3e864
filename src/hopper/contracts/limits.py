"""Resource limits: a hostile or broken file is rejected with a reason, never let loose.

Anyone who can write to a watched folder or bucket can drop a file, so before a file is
parsed its size is checked, and its content is read once, in bounded memory, stopping at
the first limit it breaks:

- a compressed file's decompressed size is counted, so that a "zip bomb" is refused rather
  than inflated;
- text files (CSV, TSV, JSON lines) may not hold a line longer than ``max_line_bytes``:
  Arrow's readers hold a whole row in memory, and a single endless line is how a file with
  a wrong line ending, an unterminated quote or plain garbage usually looks;
- JSON lines may not nest deeper than ``max_json_depth``: Arrow's JSON reader recurses once
  per level and crashes the whole worker process on a few thousand levels. Arrow does not
  end a record at a line break (a record is a JSON value, and ``\n``, ``\r`` and spaces
  between its tokens are whitespace), so the depth is counted per value, never per line;
- Parquet footers may not claim more decoded data than ``max_memory_mb`` (nor uncompressed
  pages beyond ``max_decompression_ratio`` × the file's size): Arrow allocates what a
  footer claims before it finds out the claim was a lie.

The limits are per dataset (contract keys), with defaults safe for a 2-core worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from hopper.contracts.model import Contract
from hopper.contracts.read import (
    ReadLimits,
    check_parquet_footer,
    compression_of,
    detect_format,
    read_head,
    utf8_transcoder,
)
from hopper.errors import ResourceLimitError, UnreadableFileError

_CHUNK = 4 << 20
_DEPTH_SLICE = 1 << 20  # numpy works on slices of this size (a few int32 arrays each)
_BREAKS = (b"\n", b"\r")  # Arrow's CSV reader ends a row on either
# Byte classes for the JSON nesting check (the JSON tokens that matter, and line breaks).
_OPEN, _CLOSE, _QUOTE, _BREAK = 1, 2, 3, 4
_JSON_KIND = np.zeros(256, np.uint8)
_JSON_KIND[[ord("{"), ord("[")]] = _OPEN
_JSON_KIND[[ord("}"), ord("]")]] = _CLOSE
_JSON_KIND[ord('"')] = _QUOTE
_JSON_KIND[[ord("\n"), ord("\r")]] = _BREAK


def check_file_limits(path: Path, contract: Contract, *, source: str | None = None) -> None:
    """Reject a file that is too large, decompresses to too much, or is not line-shaped.

    One pass over the (decompressed) content, in chunks of a few MiB, checks every limit that
    applies to the file: ``max_decompression_ratio`` for compressed files, ``max_line_bytes``
    for CSV/TSV/JSON lines (a JSON array document is one value, not lines), and
    ``max_json_depth`` for JSON lines. A Parquet file is not read: its footer's claims are
    judged against ``max_memory_mb``, ``max_decompression_ratio`` and ``max_columns`` (for a
    compressed Parquet file, when it is read).

    Raises:
        ResourceLimitError: naming the limit broken (and the line, for a long or deep line).
        UnreadableFileError: a compressed file that cannot be decompressed, or a Parquet file
            whose footer is not there or contradicts the file.
    """
    name = source or str(path)
    size = path.stat().st_size
    limit = int(contract.max_file_mb * (1 << 20))
    if size > limit:
        raise ResourceLimitError(
            f"{name}: the file is {size / (1 << 20):.0f} MB, over the dataset's limit of "
            f"{contract.max_file_mb:g} MB (max_file_mb). Split it, or raise max_file_mb in "
            "the contract, then replay it."
        )
    codec = compression_of(path)
    kind, lines, json_lines = _text_shape(path, contract)
    if kind == "parquet" and codec is None:
        check_parquet_footer(str(path), size, ReadLimits.of(contract), source=name)
        return
    if codec is None and not lines:
        return
    if codec is None and not json_lines and size <= contract.max_line_bytes:
        return  # no line of it can be longer than the whole file: nothing left to check
    allowed = min(limit, max(size, 1) * contract.max_decompression_ratio)
    scan = LineScan(contract.max_line_bytes)
    depth = JsonDepthScan(contract.max_json_depth) if json_lines else None
    transcode = utf8_transcoder(contract.reader.encoding) if json_lines else None
    seen = 0
    try:
        with pa.input_stream(str(path), compression=codec) as stream:
            while chunk := stream.read(_CHUNK):
                seen += len(chunk)
                if codec is not None and seen > allowed:
                    raise ResourceLimitError(
                        f"{name}: the {codec} file decompresses to more than "
                        f"{allowed / (1 << 20):.0f} MB ({contract.max_decompression_ratio:g}× "
                        "its size or max_file_mb): refused as a possible decompression bomb. "
                        "Raise max_decompression_ratio in the contract if the data is genuine."
                    )
                if lines:
                    scan.feed(chunk)
                if depth is not None:
                    depth.feed(transcode(chunk, False) if transcode else chunk)
                if scan.problem is not None or (depth is not None and depth.problem):
                    break
            else:
                if depth is not None and transcode is not None:
                    depth.feed(transcode(b"", True))
    except (OSError, pa.ArrowInvalid) as exc:
        what = f"decompress ({codec})" if codec else "read the file"
        raise UnreadableFileError(f"{name}: cannot {what}: {exc}") from exc
    if depth is not None and depth.problem:
        where = _where(path, codec, depth.problem_offset, contract.reader.encoding)
        raise ResourceLimitError(
            f"{name}: the JSON record starting on {where} nests more than "
            f"{contract.max_json_depth} levels deep (max_json_depth); line breaks inside a "
            "record do not end it. Flatten the records, or raise max_json_depth in the "
            "contract, then replay it."
        )
    if lines:
        scan.finish()
    if scan.problem is not None:
        raise ResourceLimitError(
            f"{name}: {_where(path, codec, scan.problem_offset)} is longer than the dataset's "
            f"limit of {contract.max_line_bytes} bytes (max_line_bytes). Check the line "
            "endings, the delimiter and unterminated quotes, or raise max_line_bytes in the "
            "contract, then replay it."
        )


def _text_shape(path: Path, contract: Contract) -> tuple[str | None, bool, bool]:
    """``(format, line-oriented text?, JSON lines?)`` for a file and its contract's format."""
    try:
        kind = detect_format(path, contract.format)
        head = read_head(path, 4096) if kind == "jsonl" else b""
    except UnreadableFileError:
        return None, False, False  # a corrupt compressed file: the decompression check says why
    if kind == "parquet":
        return kind, False, False
    if kind == "jsonl" and head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return kind, False, False  # one JSON array document, parsed whole (by Python's json)
    return kind, True, kind == "jsonl"


class LineScan:
    """Streaming check of line lengths over consecutive chunks.

    Lines end at ``\n`` or ``\r``; the terminator is not counted. Memory is one chunk. The
    check does not look at every line: from the current line's start it needs only the
    *last* line break within the next ``max_line`` + 1 bytes (a reverse search that stops at
    once on ordinary data), so it costs a few searches per MiB.

    Attributes:
        problem: None while the data is within the limit, else ``"line"``.
        problem_offset: the byte offset where the offending line starts.
    """

    def __init__(self, max_line: int) -> None:
        """Start a scan.

        Args:
            max_line: the longest allowed line, in bytes.
        """
        self.max_line = max_line
        self.offset = 0  # bytes fed so far
        self.line_start = 0  # offset of the current line's first byte
        self.problem: str | None = None
        self.problem_offset = 0

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk of the content."""
        if self.problem is None:
            self._check_lines(chunk)
        self.offset += len(chunk)

    def finish(self) -> None:
        """Check the last line (a file need not end with a line break)."""
        if self.problem is None and self.offset - self.line_start > self.max_line:
            self.problem, self.problem_offset = "line", self.line_start

    def _check_lines(self, chunk: bytes) -> None:
        n = len(chunk)
        while True:
            start = self.line_start - self.offset  # negative: began in an earlier chunk
            end = start + self.max_line + 1  # a break at index < end keeps the line short
            lo, hi = max(start, 0), min(n, end)
            brk = max(chunk.rfind(b, lo, hi) for b in _BREAKS) if lo < hi else -1
            if brk >= 0:
                self.line_start = self.offset + brk + 1
                continue
            if end <= n:
                self.problem, self.problem_offset = "line", self.line_start
            return


class JsonDepthScan:
    """Streaming bound on the nesting of JSON values, as Arrow's JSON-lines reader sees them.

    Arrow's reader cuts its input into blocks at line breaks (``\n`` or ``\r``), then parses
    each block as a sequence of JSON values separated by whitespace, line breaks included: a
    record ends where its value ends, and ``[`` on 2,000 lines is one value 2,000 levels deep.
    So the depth is never reset at a line break. What a line break does end is a string: a
    raw control character inside a JSON string is a parse error, and a block may start after
    any line break, outside any string. Brackets inside strings do not count (a quote after an
    odd run of backslashes does not end a string).

    The count is an upper bound of what any parse of the bytes can reach: it never goes
    below 0 (a stray closing bracket cannot hide the opening ones after it), so it is at
    least the depth of a parse starting at any point, and for valid JSON lines it is exactly
    each record's depth. The work is vectorised with numpy, a few passes per MiB.

    Attributes:
        problem: True once some value nests deeper than ``max_depth``.
        problem_offset: where that value starts (the offset of its first bracket).
        records: how many top-level ``{…}``/``[…]`` values have started so far.
    """

    def __init__(self, max_depth: int) -> None:
        """Start a scan.

        Args:
            max_depth: the deepest allowed ``{``/``[`` nesting of one value.
        """
        self.max_depth = max_depth
        self.offset = 0  # bytes fed so far
        self.depth = 0  # nesting at the end of the data fed so far
        self.in_string = False  # ... inside a string there?
        self.escaping = False  # ... right after an odd run of backslashes?
        self.record_start = 0  # offset of the current top-level value's first bracket
        self.records = 0
        self.problem = False
        self.problem_offset = 0

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk of the content."""
        for at in range(0, len(chunk), _DEPTH_SLICE):
            if self.problem:
                break
            self._scan(chunk[at : at + _DEPTH_SLICE], self.offset + at)
        self.offset += len(chunk)

    def _scan(self, part: bytes, base: int) -> None:
        """Scan one slice of the content, starting at offset ``base``."""
        # Escapes, as byte replacements of the same length: pairs of backslashes first (left
        # to right, as a run of them is read), then an escaped quote, so that every quote
        # left ends or starts a string. A slice may start inside a run of backslashes.
        if self.escaping and part[:1] in (b'"', b"\\"):
            part = b"_" + part[1:]
        if b"\\" in part:
            part = part.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        self.escaping = part.endswith(b"\\")
        codes = _JSON_KIND[np.frombuffer(part, np.uint8)]
        where = np.flatnonzero(codes)  # only brackets, quotes and line breaks matter
        if not where.size:
            return
        kinds = codes[where]
        quote = kinds == _QUOTE
        breaks = kinds == _BREAK
        # Quotes before each token, counted from the last line break (or from the slice's
        # start, carrying the string state in): odd means inside a string.
        before = np.cumsum(quote, dtype=np.int32) - quote
        origin: np.ndarray | int = -int(self.in_string)
        if breaks.any():
            at_break = np.concatenate((np.array([origin], np.int32), before[breaks]))
            origin = at_break[np.cumsum(breaks, dtype=np.int32)]
        outside = ((before - origin) & 1) == 0
        step = np.where(outside, (kinds == _OPEN).astype(np.int8) - (kinds == _CLOSE), 0)
        depth = np.cumsum(step, dtype=np.int64) + self.depth
        if depth.min() < 0:  # never below 0: subtract the running minimum (Lindley)
            depth -= np.minimum(np.minimum.accumulate(depth), 0)
        starts = np.flatnonzero((depth == 1) & (step == 1))  # a value opens at depth 0
        self.records += int(starts.size)
        if int(depth.max()) > self.max_depth:
            at = int(np.argmax(depth > self.max_depth))
            opened = starts[starts <= at]
            self.problem = True
            self.problem_offset = (
                base + int(where[opened[-1]]) if opened.size else self.record_start
            )
            return
        if starts.size:
            self.record_start = base + int(where[starts[-1]])
        self.depth = int(depth[-1])
        last = origin if isinstance(origin, int) else int(origin[-1])
        self.in_string = (int(before[-1] + quote[-1]) - last) % 2 == 1 and not breaks[-1]


def _where(path: Path, codec: str | None, offset: int, encoding: str | None = None) -> str:
    """``line N (starting at byte B)`` for a message, or ``a line`` if it cannot be counted."""
    try:
        line = _line_number(path, codec, offset, encoding)
    except (OSError, pa.ArrowInvalid, UnicodeError):
        return "a line"
    return f"line {line} (byte {offset})"


def _line_number(path: Path, codec: str | None, offset: int, encoding: str | None = None) -> int:
    """The 1-based number of the line holding the byte at ``offset`` (error path only).

    Lines end as :class:`LineScan` ends them: ``\n``, ``\r\n`` or a lone ``\r``. With an
    ``encoding``, ``offset`` counts the bytes of the content transcoded to UTF-8, as
    :class:`JsonDepthScan` saw them.
    """
    transcode = utf8_transcoder(encoding) if encoding else None
    count, seen, last = 0, 0, b""
    with pa.input_stream(str(path), compression=codec) as stream:
        while seen < offset and (raw := stream.read(_CHUNK)):
            chunk = transcode(raw, False) if transcode else raw
            chunk = chunk[: offset - seen]
            count += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            if last == b"\r" and chunk.startswith(b"\n"):
                count -= 1  # a \r\n split across two reads
            last = chunk[-1:] or last
            seen += len(chunk)
    return count + 1


def check_table_limits(num_columns: int, contract: Contract, *, source: str) -> None:
    """Reject a file with more columns than ``max_columns``.

    Raises:
        TerminalError: naming the count and the limit.
    """
    if num_columns > contract.max_columns:
        raise ResourceLimitError(
            f"{source}: {num_columns} columns, over the dataset's limit of "
            f"{contract.max_columns} (max_columns). Check the delimiter, or raise the limit."
        )
