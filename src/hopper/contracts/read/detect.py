"""Decide how to read a file before reading it: compression, format and CSV delimiter.

Detection looks at the extension first and the content second (the first decompressed bytes,
:func:`read_head`): compressed files are opened through a decompressing stream whatever their
name says, and a CSV file's delimiter is the contract's or sniffed from its first lines.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import pyarrow as pa

from hopper.contracts.model import ReaderOptions
from hopper.contracts.read.failures import READ_ERRORS, failure_reason
from hopper.errors import UnreadableFileError

Format = Literal["csv", "tsv", "jsonl", "parquet"]
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
HEAD_BYTES = 64 * 1024
"""How much of a file :func:`read_head` returns: the whole of a shorter one."""


def compression_of(path: Path) -> str | None:
    """The compression codec of a file (by suffix, else by magic bytes), or None."""
    codec = _codec_by_name(path)
    if codec:
        return codec
    return _codec_of(_first_bytes(path, 4))


def _first_bytes(path: Path, size: int) -> bytes:
    """Up to ``size`` bytes from the start of a file (fewer only at its end).

    Plain ``os`` calls: no buffered file object for a read done once per file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        got = 0
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _codec_by_name(path: Path) -> str | None:
    """The compression codec a file's suffix names, or None."""
    return _COMPRESSIONS.get(os.path.splitext(path)[1].lower())


def _codec_of(start: bytes) -> str | None:
    """The compression codec whose magic bytes ``start`` begins with, or None."""
    return next((codec for sig, codec in _MAGIC.items() if start.startswith(sig)), None)


def open_stream(path: Path) -> pa.NativeFile:
    """Open a file for reading, decompressing it on the fly when needed."""
    return pa.input_stream(str(path), compression=compression_of(path))


def read_head(path: Path, size: int = HEAD_BYTES, *, source: str | None = None) -> bytes:
    """The first ``size`` decompressed bytes of a file.

    Args:
        path: the file.
        size: how many decompressed bytes to return at most.
        source: the name used in error messages (defaults to the path).

    Raises:
        UnreadableFileError: the file cannot be opened or decompressed.
    """
    try:
        codec = _codec_by_name(path)
        if codec is None:  # one open for a plain file: its first bytes say it is plain
            head = _first_bytes(path, size)
            codec = _codec_of(head)
            if codec is None:
                return head
        with pa.input_stream(str(path), compression=codec) as stream:
            return bytes(stream.read(size))
    except READ_ERRORS as exc:
        raise UnreadableFileError(
            f"{source or path}: cannot read the file: {failure_reason(exc)}. Fix: the file looks "
            "truncated or corrupt, or is not compressed the way its name says: re-send it"
        ) from exc


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
    lines = [_QUOTED.sub("", line) if '"' in line else line for line in text.splitlines()[:21]]
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


def csv_delimiter(head: bytes, reader: ReaderOptions, kind: str = "csv") -> str:
    """The delimiter to use: the contract's, else a tab for TSV, else sniffed from ``head``."""
    if reader.delimiter:
        return reader.delimiter
    if kind == "tsv":
        return "\t"
    text = head.decode(reader.encoding, errors="replace")
    if reader.skip_rows:
        text = "".join(text.splitlines(keepends=True)[reader.skip_rows :])
    return sniff_delimiter(text)
