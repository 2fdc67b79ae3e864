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
  per level and crashes the whole worker process on a few thousand levels.

The limits are per dataset (contract keys), with defaults safe for a 2-core worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from hopper.contracts.model import Contract
from hopper.contracts.read import compression_of, detect_format, read_head
from hopper.errors import TerminalError, UnreadableFileError

_CHUNK = 4 << 20
_DEPTH_SLICE = 1 << 20  # numpy works on slices of this size (a few int32 arrays each)
_BREAKS = (b"\n", b"\r")  # Arrow's CSV reader ends a row on either
# Byte classes for the JSON nesting check: 1 opens, 2 closes, 3 ends a line, 0 is anything else.
_BREAK = 3
_KIND = np.zeros(256, np.uint8)
_KIND[[ord("{"), ord("[")]] = 1
_KIND[[ord("}"), ord("]")]] = 2
_KIND[[ord("\n"), ord("\r")]] = _BREAK
_STEP = np.array([0, 1, -1, 0], np.int8)


def check_file_limits(path: Path, contract: Contract, *, source: str | None = None) -> None:
    """Reject a file that is too large, decompresses to too much, or is not line-shaped.

    One pass over the (decompressed) content, in chunks of a few MiB, checks every limit that
    applies to the file: ``max_decompression_ratio`` for compressed files, ``max_line_bytes``
    for CSV/TSV/JSON lines (a JSON array document is one value, not lines), and
    ``max_json_depth`` for JSON lines. Parquet files that are not compressed are not read.

    Raises:
        TerminalError: naming the limit broken (and the line, for a long or deep line).
        UnreadableFileError: a compressed file that cannot be decompressed.
    """
    name = source or str(path)
    size = path.stat().st_size
    limit = int(contract.max_file_mb * (1 << 20))
    if size > limit:
        raise TerminalError(
            f"{name}: the file is {size / (1 << 20):.0f} MB, over the dataset's limit of "
            f"{contract.max_file_mb:g} MB (max_file_mb). Split it, or raise max_file_mb in "
            "the contract, then replay it."
        )
    codec = compression_of(path)
    lines, json_lines = _text_shape(path, contract)
    if codec is None and not lines:
        return
    allowed = min(limit, max(size, 1) * contract.max_decompression_ratio)
    scan = LineScan(contract.max_line_bytes, contract.max_json_depth if json_lines else None)
    seen = 0
    try:
        with pa.input_stream(str(path), compression=codec) as stream:
            while chunk := stream.read(_CHUNK):
                seen += len(chunk)
                if codec is not None and seen > allowed:
                    raise TerminalError(
                        f"{name}: the {codec} file decompresses to more than "
                        f"{allowed / (1 << 20):.0f} MB ({contract.max_decompression_ratio:g}× "
                        "its size or max_file_mb): refused as a possible decompression bomb. "
                        "Raise max_decompression_ratio in the contract if the data is genuine."
                    )
                if lines:
                    scan.feed(chunk)
                    if scan.problem is not None:
                        break
    except (OSError, pa.ArrowInvalid) as exc:
        what = f"decompress ({codec})" if codec else "read the file"
        raise UnreadableFileError(f"{name}: cannot {what}: {exc}") from exc
    if lines:
        scan.finish()
    if scan.problem is not None:
        raise TerminalError(_problem_message(name, path, codec, scan, contract))


def _text_shape(path: Path, contract: Contract) -> tuple[bool, bool]:
    """``(line-oriented text?, JSON lines?)`` for a file and its contract's format."""
    try:
        kind = detect_format(path, contract.format)
        head = read_head(path, 4096) if kind == "jsonl" else b""
    except UnreadableFileError:
        return False, False  # a corrupt compressed file: the decompression check says why
    if kind == "parquet":
        return False, False
    if kind == "jsonl" and head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return False, False  # one JSON array document, parsed whole (bounded by max_file_mb)
    return True, kind == "jsonl"


class LineScan:
    """Streaming check of line lengths (and JSON nesting) over consecutive chunks.

    Lines end at ``\\n`` or ``\\r``; the terminator is not counted. Memory is one chunk. The
    line-length check does not look at every line: from the current line's start it needs
    only the *last* line break within the next ``max_line`` + 1 bytes (a reverse search that
    stops at once on ordinary data), so it costs a few searches per MiB.

    Attributes:
        problem: None while the data is within the limits, else ``"line"`` or ``"depth"``.
        problem_offset: the byte offset where the offending line starts.
        depth_seen: for a ``"depth"`` problem, the depth reached.
    """

    def __init__(self, max_line: int, max_depth: int | None = None) -> None:
        """Start a scan.

        Args:
            max_line: the longest allowed line, in bytes.
            max_depth: the deepest allowed ``{``/``[`` nesting of a line, or None not to
                check it (brackets inside JSON strings count too: a conservative bound).
        """
        self.max_line = max_line
        self.max_depth = max_depth
        self.offset = 0  # bytes fed so far
        self.line_start = 0  # offset of the current line's first byte
        self.depth = 0  # JSON nesting at the end of the data fed so far, on its last line
        self.depth_line_start = 0  # where that line starts
        self.problem: str | None = None
        self.problem_offset = 0
        self.depth_seen = 0

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk of the content."""
        if self.problem is not None:
            return
        if self.max_depth is not None:
            for at in range(0, len(chunk), _DEPTH_SLICE):
                part = chunk[at : at + _DEPTH_SLICE]
                self._check_depth(part, self.offset + at, self.max_depth)
                if self.problem is not None:
                    return
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

    def _check_depth(self, part: bytes, base: int, max_depth: int) -> None:
        """Nesting check of one slice of the content, starting at offset ``base``."""
        kinds = _KIND[np.frombuffer(part, np.uint8)]
        where = np.flatnonzero(kinds)  # only brackets and line breaks matter
        if not where.size:
            return
        kinds = kinds[where]
        depth = np.cumsum(_STEP[kinds], dtype=np.int32) + np.int32(self.depth)
        # Each line starts again from 0: subtract the depth reached at the line's break.
        positions = np.arange(where.size, dtype=np.int32)
        last = np.maximum.accumulate(np.where(kinds == _BREAK, positions, np.int32(-1)))
        relative = depth - np.where(last >= 0, depth[np.maximum(last, 0)], 0)
        worst = int(relative.max())
        if worst > max_depth:
            at = int(last[int(np.argmax(relative > max_depth))])
            self.problem, self.depth_seen = "depth", worst
            self.problem_offset = base + int(where[at]) + 1 if at >= 0 else self.depth_line_start
            return
        self.depth = int(relative[-1])
        if last[-1] >= 0:
            self.depth_line_start = base + int(where[last[-1]]) + 1


def _line_number(path: Path, codec: str | None, offset: int) -> int:
    """The 1-based number of the line starting at ``offset`` (error path only).

    Lines end as :class:`LineScan` ends them: ``\\n``, ``\\r\\n`` or a lone ``\\r``.
    """
    count, seen, last = 0, 0, b""
    with pa.input_stream(str(path), compression=codec) as stream:
        while seen < offset and (chunk := stream.read(min(_CHUNK, offset - seen))):
            count += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            if last == b"\r" and chunk.startswith(b"\n"):
                count -= 1  # a \r\n split across two reads
            last = chunk[-1:]
            seen += len(chunk)
    return count + 1


def _problem_message(
    name: str, path: Path, codec: str | None, scan: LineScan, contract: Contract
) -> str:
    try:
        where = f"line {_line_number(path, codec, scan.problem_offset)}"
    except (OSError, pa.ArrowInvalid):
        where = "a line"
    where += f" (starting at byte {scan.problem_offset})"
    if scan.problem == "depth":
        return (
            f"{name}: {where} nests JSON {scan.depth_seen} levels deep, over the dataset's "
            f"limit of {contract.max_json_depth} (max_json_depth). Flatten the records, or "
            "raise max_json_depth in the contract, then replay it."
        )
    return (
        f"{name}: {where} is longer than the dataset's limit of {contract.max_line_bytes} "
        "bytes (max_line_bytes). Check the line endings, the delimiter and unterminated "
        "quotes, or raise max_line_bytes in the contract, then replay it."
    )


def check_table_limits(num_columns: int, contract: Contract, *, source: str) -> None:
    """Reject a file with more columns than ``max_columns``.

    Raises:
        TerminalError: naming the count and the limit.
    """
    if num_columns > contract.max_columns:
        raise TerminalError(
            f"{source}: {num_columns} columns, over the dataset's limit of "
            f"{contract.max_columns} (max_columns). Check the delimiter, or raise the limit."
        )
