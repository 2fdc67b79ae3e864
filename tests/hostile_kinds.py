"""Hostile file kinds for the containment corpus (issue 14): what each is and how it is made.

Every kind writes its files under a staging folder laid out like an inbox
(``<dataset>/<name>``); the test moves them into a running Hopper's inbox all at once. A kind
also says what must become of it (``expect``) and, for the kinds that attack a file *after*
the watcher has seen it, what to do then (``after_detection``).

Nothing here parses a hostile file: several of them crash or exhaust the memory of whatever
process reads them (a JSON depth bomb segfaults Arrow; a forged Parquet footer asks for
terabytes). Parquet footers are forged with the small Thrift compact-protocol codec below
(:func:`thrift_decode`, :func:`thrift_encode`), which reads and writes a footer as nested
``{field id: (type, value)}`` dictionaries without knowing Parquet's schema.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# --------------------------------------------------------------------------- outcomes

INGESTED = "ingested"
"""Every version lands in the lake."""
QUARANTINED = "quarantined"
"""The latest version is quarantined with a reason file."""
SETTLED = "settled"
"""The latest version is ingested, or quarantined with a reason file: either is containment."""
UNSEEN_OR_SETTLED = "unseen-or-settled"
"""A path no process can open by name (deeper than PATH_MAX, unreadable): skipped, or settled."""
NEVER_READ = "never-read"
"""Never recorded at all (symbolic links are not followed)."""

# --------------------------------------------------------------------------- contracts

MEMORY_MB = 1024
"""``max_memory_mb`` of every corpus dataset: the cap the worker's readers must respect."""
MAX_SECONDS = 30
"""``max_seconds`` of every corpus dataset: a reader still busy after this is stopped."""

_PEOPLE_COLUMNS = """\
columns:
  - name: id
    type: int64
    nullable: false
  - name: name
    type: string
  - name: score
    type: float64
"""
_EVENT_COLUMNS = """\
columns:
  - name: id
    type: int64
    nullable: false
  - name: kind
    type: string
  - name: value
    type: float64
"""
_REGION_COLUMNS = """\
columns:
  - name: id
    type: int64
    nullable: false
  - name: region
    type: string
  - name: score
    type: float64
"""


def contracts(limits: bool) -> dict[str, str]:
    """The corpus datasets' contracts (name → YAML).

    Args:
        limits: whether to write ``max_memory_mb`` and ``max_seconds`` (only once the
            contract model knows them: it refuses unknown keys).
    """
    extra = f"max_memory_mb: {MEMORY_MB}\nmax_seconds: {MAX_SECONDS}\n" if limits else ""
    return {
        "hc-csv": f"name: hc-csv\nformat: csv\n{_PEOPLE_COLUMNS}{extra}",
        "hc-json": f"name: hc-json\nformat: jsonl\n{_EVENT_COLUMNS}{extra}",
        "hc-parquet": f"name: hc-parquet\nformat: parquet\n{_PEOPLE_COLUMNS}{extra}",
        "hc-part": f"name: hc-part\nformat: csv\n{_REGION_COLUMNS}partition_by: [region]\n{extra}",
        "hc-daily": f"name: hc-daily\nformat: csv\n{_PEOPLE_COLUMNS}"
        f"partition_by: [_ingest_date]\n{extra}",
        # A user who trusts their producer raised the bomb guard: only max_memory_mb is left.
        "hc-lax": f"name: hc-lax\nformat: csv\n{_PEOPLE_COLUMNS}"
        f"max_decompression_ratio: 1000000\n{extra}",
    }


HEADER = b"id,name,score\n"
GOOD = HEADER + b"1,Ada,1.5\n2,Bob,2\n"
EVENT = b'{"id": 1, "kind": "view", "value": 2.5}\n'
OUTSIDE_MARK = "OUTSIDE-THE-INBOX-c0ffee"
"""Content of ``outside.csv`` in the folder outside the home that links point at."""


def make_outside(folder: Path) -> Path:
    """The folder outside the home that hostile links point at, with ``outside.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "outside.csv").write_bytes(b"id,name,score\n1," + OUTSIDE_MARK.encode() + b",1\n")
    return folder


# --------------------------------------------------------------------------- Thrift compact

STOP, TRUE, FALSE, I8, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
Struct = dict[int, tuple[int, Any]]
"""A decoded Thrift struct: field id → (compact type, value); lists are (element type, items)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(buf: bytes, pos: int, kind: int) -> tuple[Any, int]:
    if kind in (TRUE, FALSE):  # inside a list a bool is one byte: 1 true, 2 false
        return buf[pos] == 1, pos + 1
    if kind == I8:
        return struct.unpack_from("b", buf, pos)[0], pos + 1
    if kind in (I16, I32, I64):
        raw, pos = _varint(buf, pos)
        return _zigzag(raw), pos
    if kind == DOUBLE:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if kind == BINARY:
        size, pos = _varint(buf, pos)
        return bytes(buf[pos : pos + size]), pos + size
    if kind in (LIST, SET):
        head = buf[pos]
        pos += 1
        size, elem = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            item, pos = _value(buf, pos, elem)
            items.append(item)
        return (elem, items), pos
    if kind == STRUCT:
        return thrift_decode(buf, pos)
    raise ValueError(f"unsupported Thrift compact type {kind} at {pos}")


def thrift_decode(buf: bytes, pos: int = 0) -> tuple[Struct, int]:
    """Decode one compact-protocol struct at ``pos``; return it and the offset after it."""
    fields: Struct = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == STOP:
            return fields, pos
        kind, delta = head & 0x0F, head >> 4
        if delta:
            fid = last + delta
        else:
            raw, pos = _varint(buf, pos)
            fid = _zigzag(raw)
        if kind in (TRUE, FALSE):  # a bool field's value is its type
            fields[fid] = (kind, kind == TRUE)
        else:
            value, pos = _value(buf, pos, kind)
            fields[fid] = (kind, value)
        last = fid


def _put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _put_value(kind: int, value: Any) -> bytes:
    if kind in (TRUE, FALSE):
        return b"\x01" if value else b"\x02"
    if kind == I8:
        return struct.pack("b", value)
    if kind in (I16, I32, I64):
        return _put_varint((value << 1) ^ (value >> 63))
    if kind == DOUBLE:
        return struct.pack("<d", value)
    if kind == BINARY:
        return _put_varint(len(value)) + value
    if kind in (LIST, SET):
        elem, items = value
        head = bytes([(len(items) << 4) | elem]) if len(items) < 15 else bytes([0xF0 | elem])
        size = _put_varint(len(items)) if len(items) >= 15 else b""
        return head + size + b"".join(_put_value(elem, item) for item in items)
    if kind == STRUCT:
        return thrift_encode(value)
    raise ValueError(f"unsupported Thrift compact type {kind}")


def thrift_encode(fields: Struct) -> bytes:
    """Encode a struct from :func:`thrift_decode` (fields in ascending id order)."""
    out = bytearray()
    last = 0
    for fid in sorted(fields):
        kind, value = fields[fid]
        if kind in (TRUE, FALSE):
            kind = TRUE if value else FALSE
        if 0 < fid - last <= 15:
            out.append(((fid - last) << 4) | kind)
        else:
            out.append(kind)
            out += _put_varint((fid << 1) ^ (fid >> 63))
        if kind not in (TRUE, FALSE):
            out += _put_value(kind, value)
        last = fid
    out.append(STOP)
    return bytes(out)


# --------------------------------------------------------------------------- Parquet forgery


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    """``table`` as Parquet bytes (pyarrow's writer, any of its options)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def split_footer(data: bytes) -> tuple[bytes, Struct]:
    """``(everything before the footer, decoded FileMetaData)`` of a Parquet file."""
    length = struct.unpack("<I", data[-8:-4])[0]
    start = len(data) - 8 - length
    meta, _ = thrift_decode(data, start)
    return data[:start], meta


def join_footer(body: bytes, meta: Struct) -> bytes:
    """A Parquet file from its body and a (forged) FileMetaData."""
    footer = thrift_encode(meta)
    return body + footer + struct.pack("<I", len(footer)) + b"PAR1"


def _small_people() -> bytes:
    return parquet_bytes(
        pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"], "score": [1.0, 2.0, 3.0]}),
        compression="snappy",
    )


def forged_row_count(rows: int) -> bytes:
    """A small Parquet file whose footer claims ``rows`` rows (file, row group and columns)."""
    body, meta = split_footer(_small_people())
    meta[3] = (I64, rows)
    for group in meta[4][1][1]:
        group[3] = (I64, rows)
        for chunk in group[1][1][1]:
            chunk[3][1][5] = (I64, rows)  # ColumnMetaData.num_values
    return join_footer(body, meta)


def forged_page_size(claimed: int = (1 << 31) - 1) -> bytes:
    """A Parquet file whose first data page header claims ``claimed`` uncompressed bytes."""
    data = _small_people()
    body, meta = split_footer(data)
    group = meta[4][1][1][0]  # row group 0
    chunks = group[1][1][1]
    chunk = chunks[0][3][1]  # column 0's ColumnMetaData
    offset = chunk[11][1] if 11 in chunk else chunk[9][1]  # dictionary page first, if any
    header, end = thrift_decode(body, offset)
    header[2] = (I32, claimed)
    new = thrift_encode(header)
    shift = len(new) - (end - offset)
    body = body[:offset] + new + body[end:]
    chunk[7] = (I64, chunk[7][1] + shift)  # total_compressed_size counts the header
    if 6 in group:
        group[6] = (I64, group[6][1] + shift)
    for later in chunks[1:]:  # the column chunks after this one moved
        cmeta = later[3][1]
        for fid in (9, 11):
            if fid in cmeta:
                cmeta[fid] = (I64, cmeta[fid][1] + shift)
        later[2] = (I64, later[2][1] + shift)
    return join_footer(body, meta)


def nested_schema(depth: int) -> bytes:
    """A Parquet file of no rows whose schema nests ``depth`` groups (recursive readers)."""
    body, meta = split_footer(parquet_bytes(pa.table({"x": pa.array([], pa.int32())})))
    root = {4: (BINARY, b"schema"), 5: (I32, 1)}
    groups = [{3: (I32, 1), 4: (BINARY, b"g"), 5: (I32, 1)} for _ in range(depth)]
    leaf = {1: (I32, 1), 3: (I32, 1), 4: (BINARY, b"x")}
    meta[2] = (LIST, (STRUCT, [root, *groups, leaf]))
    meta[3] = (I64, 0)
    meta[4] = (LIST, (STRUCT, []))
    meta.pop(5, None)  # key-value metadata (the Arrow schema) would contradict it
    meta.pop(7, None)  # column orders, one per leaf
    return join_footer(body[:4], meta)


def dictionary_bomb(rows: int = 2_500, value_bytes: int = 1 << 20) -> bytes:
    """A few KB of dictionary-encoded Parquet that decodes to ``rows`` × ``value_bytes``.

    One long string is stored once in the dictionary page and referenced by every row; the
    Arrow schema is not stored, so readers decode the column as plain strings.
    """
    names = pa.DictionaryArray.from_arrays(
        pa.array([0] * rows, pa.int32()), pa.array(["x" * value_bytes])
    )
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "name": names})
    table = table.append_column("score", pa.array([1.0] * rows))
    return parquet_bytes(table, compression="zstd", store_schema=False)


# --------------------------------------------------------------------------- streamed bombs


def compressed_stream(path: Path, codec: str, head: bytes, row: bytes, total: int) -> None:
    """Write ``head`` then ``row`` repeated to ``total`` bytes, compressed as it goes."""
    block = row * max(1, (4 << 20) // len(row))
    with pa.output_stream(str(path), compression=codec) as out:
        out.write(head)
        written = len(head)
        while written < total:
            out.write(block)
            written += len(block)


def gzip_members(members: int, member: bytes) -> bytes:
    """``members`` concatenated gzip members (a valid gzip file, RFC 1952 §2.2)."""
    one = gzip.compress(member, compresslevel=9)
    return gzip.compress(HEADER) + one * members


def bz2_bomb(total: int) -> bytes:
    """A bzip2 stream of ``HEADER`` then ``total`` bytes of identical rows."""
    comp = bz2.BZ2Compressor(9)
    parts = [comp.compress(HEADER)]
    block = (b"1," + b"a" * 10_000 + b",1\n") * 100  # long runs: quick to compress
    for _ in range(total // len(block)):
        parts.append(comp.compress(block))
    parts.append(comp.flush())
    return b"".join(parts)


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Kind:
    """One kind of hostility: its files, what must become of them, and its issue class."""

    name: str
    issue: str
    """Which breakage of issue 14 it belongs to (1–8), or ``"n:<what>"`` for a neighbour."""
    expect: str
    build: Callable[[Path], list[bytes]]
    """Writes the kind's files under a staging inbox; returns their paths relative to it."""
    after_detection: Callable[[Path], None] | None = None
    """Run on the file's path (in the live inbox) once the ledger has recorded it."""
    reason: str | None = None
    """Words the quarantine reason must contain, where the issue names the check."""
    after_drop: Callable[[Path], None] | None = None
    """Run on the live inbox right after the drop (what cannot be moved, e.g. a locked folder)."""


def _write(root: Path, rel: bytes, data: bytes) -> list[bytes]:
    path = Path(os.fsdecode(root)) / os.fsdecode(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return [rel]


def _file(rel: bytes, data: bytes | Callable[[], bytes]) -> Callable[[Path], list[bytes]]:
    def build(root: Path) -> list[bytes]:
        return _write(root, rel, data() if callable(data) else data)

    return build


def _deep_tree(root: Path) -> list[bytes]:
    """50 folders of 100-byte names (≈ 5 KB of path, past PATH_MAX), a good CSV at the bottom.

    Made with ``dir_fd`` so that no call ever needs the whole path.
    """
    (root / "hc-csv").mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "hc-csv", os.O_RDONLY | os.O_DIRECTORY)
    rel = b"hc-csv"
    try:
        for level in range(50):
            name = (b"%02d" % level) + b"d" * 98
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
            rel += b"/" + name
        out = os.open("deep.csv", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, GOOD)
        os.close(out)
    finally:
        os.close(fd)
    return [rel + b"/deep.csv"]


def _symlink_loop(root: Path) -> list[bytes]:
    folder = root / "hc-csv"
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink("loop-b.csv", folder / "loop-a.csv")
    os.symlink("loop-a.csv", folder / "loop-b.csv")
    return [b"hc-csv/loop-a.csv", b"hc-csv/loop-b.csv"]


def _dir_loop(root: Path) -> list[bytes]:
    """A folder holding a link to its own parent: a walk that follows links never ends."""
    folder = root / "hc-csv" / "dir-loop"
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink("..", folder / "up")
    os.symlink(".", folder / "self")
    return [b"hc-csv/dir-loop/up", b"hc-csv/dir-loop/self"]


def _locked_folder(root: Path) -> list[bytes]:
    return _write(root, b"hc-csv/locked-folder/inside.csv", GOOD)


def _lock_folder(inbox: Path) -> None:
    """Mode 000 once in the inbox (a folder one cannot write cannot be moved in)."""
    (inbox / "hc-csv" / "locked-folder").chmod(0o000)


def unlock(inbox: Path) -> None:
    """Undo :func:`_lock_folder` and the unreadable file, so the folder can be removed."""
    for path in (inbox / "hc-csv" / "locked-folder", inbox / "hc-csv" / "unreadable.csv"):
        if path.exists():
            path.chmod(0o755 if path.is_dir() else 0o644)


def _unreadable_file(root: Path) -> list[bytes]:
    rel = b"hc-csv/unreadable.csv"
    _write(root, rel, GOOD)
    (root / "hc-csv" / "unreadable.csv").chmod(0o000)
    return [rel]


def _mtime(rel: bytes, when: float) -> Callable[[Path], list[bytes]]:
    def build(root: Path) -> list[bytes]:
        _write(root, rel, GOOD)
        os.utime(Path(os.fsdecode(root)) / os.fsdecode(rel), (when, when))
        return [rel]

    return build


def _json_depth_cr(opener: bytes, slices: int = 2_000, per: int = 50) -> bytes:
    """A record whose value nests ``slices`` × ``per`` deep, cut into slices by lone ``\\r``.

    A depth check that restarts at every ``\\r`` sees ``per`` levels; Arrow's tokenizer sees
    ``\\r`` as whitespace inside one record, recurses ``slices × per`` times and crashes.
    """
    closer = {b"[": b"]", b'{"a":': b"}"}[opener]
    deep = (opener * per + b"\r") * slices + b"1" + closer * (slices * per)
    return b'{"id": 2, "kind": "view", "value": ' + deep + b"}\n"


def _partition_rows() -> bytes:
    """30 rows: 18 in short regions (written first), 12 whose region cannot name a folder."""
    rows = [HEADER.replace(b"name", b"region")]
    for i in range(18):
        rows.append(b"%d,r%d,1.0\n" % (i, i % 3))
    for i in range(18, 30):
        rows.append(b"%d,%s,1.0\n" % (i, b"z" * 300))
    return b"".join(rows)


def _columns_header(columns: int) -> bytes:
    names = b",".join(b"c%d" % i for i in range(columns))
    return b"id,name,score," + names + b"\n1,a,1," + b"1," * (columns - 1) + b"1\n"


def _lax_bomb(root: Path) -> list[bytes]:
    """≈ 1.2 GiB of CSV in ≈ 40 KB of zstd, in a dataset whose ratio guard is off."""
    rel = b"hc-lax/ratio-guard-off.csv.zst"
    path = root / "hc-lax" / "ratio-guard-off.csv.zst"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = b"7," + b"a" * 200 + b",1.5\n"
    compressed_stream(path, "zstd", HEADER, row, 1_200 << 20)
    return [rel]


def _zstd_bomb(rel: bytes) -> Callable[[Path], list[bytes]]:
    def build(root: Path) -> list[bytes]:
        path = Path(os.fsdecode(root)) / os.fsdecode(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        compressed_stream(path, "zstd", HEADER, b"1,aaaaaaaaaaaaaaaa,1\n", 1 << 30)
        return [rel]

    return build


def _json_array_doc(records: int = 2_000_000) -> bytes:
    """One JSON array document of small objects: each costs far more as a Python dict."""
    one = b'{"id": 1, "kind": "view", "value": 2.5}'
    return b"[" + b",".join([one] * records) + b"]"


def _huge_line(root: Path) -> list[bytes]:
    rel = b"hc-csv/one-50MB-line.csv"
    path = root / "hc-csv" / "one-50MB-line.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(b"id,name,score,")
        chunk = b"x" * (1 << 20)
        for _ in range(50):
            out.write(chunk)
    return [rel]


# Swaps done once the watcher has seen the file (the test waits for its ledger record).


def _to_outside_link(outside: Path) -> Callable[[Path], None]:
    def swap(path: Path) -> None:
        tmp = path.with_name(".swap-link.tmp")
        os.symlink(outside / "outside.csv", tmp)
        os.replace(tmp, path)

    return swap


def _folder_with_link_out(outside: Path) -> Callable[[Path], list[bytes]]:
    """A folder moved in with a link to a folder outside the home: nothing there is read."""

    def build(root: Path) -> list[bytes]:
        folder = root / "hc-csv" / "with-link-out"
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(outside, folder / "out", target_is_directory=True)
        return [b"hc-csv/with-link-out/out/outside.csv"]

    return build


def _to_inside_link(path: Path) -> None:
    tmp = path.with_name(".swap-inside.tmp")
    os.symlink("swap-inside-target.csv", tmp)
    os.replace(tmp, path)


def _to_fifo(path: Path) -> None:
    tmp = path.with_name(".swap-fifo.tmp")
    os.mkfifo(tmp)
    os.replace(tmp, path)


def _truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2 + 3)


def _delete(path: Path) -> None:
    path.unlink()


def _to_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inner.csv").write_bytes(GOOD)


def _grow(path: Path) -> None:
    """Append valid rows for a few seconds while the first version is being read."""
    import time

    row = b"9,grown," + b"1" * 90 + b"\n"
    with path.open("ab") as out:
        for _ in range(15):
            out.write(row * 20_000)  # ≈ 2 MB
            out.flush()
            time.sleep(0.2)


def _big_good(rows: int = 100_000) -> bytes:
    return HEADER + b"".join(b"%d,name%d,%d.5\n" % (i, i, i % 97) for i in range(rows))


def _with_swap_target(rel: bytes, data: bytes) -> Callable[[Path], list[bytes]]:
    def build(root: Path) -> list[bytes]:
        _write(root, b"hc-csv/swap-inside-target.csv", GOOD)
        return _write(root, rel, data)

    return build


SWAPPED = b"4,swapped,4\n"


def kinds(outside: Path) -> list[Kind]:
    """The corpus: at least one kind per breakage of issue 14, and their neighbours.

    Args:
        outside: a folder outside the Hopper home (:func:`make_outside`), for links.
    """
    latin1 = "café".encode("latin-1")
    big = _big_good()
    return [
        # 1 and 6: the watcher survives any path; names in any bytes land faithfully.
        Kind("deeper-than-PATH_MAX", "1", UNSEEN_OR_SETTLED, _deep_tree),
        Kind("symlink-loop", "n:1", NEVER_READ, _symlink_loop),
        Kind("folder-linking-to-itself", "n:1", NEVER_READ, _dir_loop),
        Kind("folder-with-link-out", "n:8", NEVER_READ, _folder_with_link_out(outside)),
        Kind("folder-mode-000", "n:1", UNSEEN_OR_SETTLED, _locked_folder, after_drop=_lock_folder),
        Kind("file-mode-000", "n:1", UNSEEN_OR_SETTLED, _unreadable_file),
        Kind("latin-1-name", "7", INGESTED, _file(b"hc-csv/" + latin1 + b".csv", GOOD)),
        Kind("invalid-utf8-name", "7", INGESTED, _file(b"hc-csv/bad\xff\xfe\xc3(.csv", GOOD)),
        Kind("surrogate-utf8-name", "7", INGESTED, _file(b"hc-csv/sur\xed\xa0\x80.csv", GOOD)),
        Kind("literal-%E9-name", "n:7", INGESTED, _file(b"hc-csv/caf%E9.csv", GOOD)),
        Kind("literal-%2F-name", "n:7", INGESTED, _file(b"hc-csv/a%2Fb%.csv", GOOD)),
        Kind("url-syntax-name", "n:7", INGESTED, _file(b"hc-csv/q?x=1#frag;p.csv", GOOD)),
        Kind("carriage-return-name", "n:7", INGESTED, _file(b"hc-csv/cr\rname.csv", GOOD)),
        Kind("non-utf8-folder", "n:7", INGESTED, _file(b"hc-csv/\xff\xfedir/in.csv", GOOD)),
        Kind(
            "255-byte-name-quarantined",
            "n:7",
            QUARANTINED,
            _file(b"hc-csv/" + "é".encode() * 125 + b".csv", b"\x00\x01garbage"),
        ),
        Kind("mtime-in-2100", "n:1", INGESTED, _mtime(b"hc-csv/future.csv", 4_102_444_800)),
        Kind("mtime-before-1970", "n:1", INGESTED, _mtime(b"hc-csv/past.csv", -631_152_000)),
        # 2: JSON depth as Arrow counts it.
        Kind(
            "json-depth-behind-lone-CR",
            "2",
            QUARANTINED,
            _file(b"hc-json/cr-depth.jsonl", lambda: _json_depth_cr(b"[")),
            reason="max_json_depth",
        ),
        Kind(
            "json-object-depth-behind-lone-CR",
            "2",
            QUARANTINED,
            _file(b"hc-json/cr-depth-objects.jsonl", lambda: _json_depth_cr(b'{"a":')),
            reason="max_json_depth",
        ),
        Kind(
            "json-deep-CRLF",
            "n:2",
            QUARANTINED,
            _file(
                b"hc-json/deep-crlf.jsonl",
                EVENT.replace(b"\n", b"\r\n") + b"[" * 100_000 + b"]" * 100_000 + b"\r\n",
            ),
            reason="max_json_depth",
        ),
        Kind(
            "json-huge-numbers",
            "n:2",
            SETTLED,
            _file(
                b"hc-json/huge-numbers.jsonl",
                b'{"id": 123456789012345678901234567890, '
                b'"kind": "view", "value": 1e999999}\n{"id": 2, "kind": "view", "value": '
                + b"9" * 100_000
                + b"}\n",
            ),
        ),
        Kind(
            "json-nan-infinity",
            "n:2",
            SETTLED,
            _file(
                b"hc-json/nan.jsonl",
                b'{"id": 1, "kind": "view", "value": NaN}\n'
                b'{"id": 2, "kind": "view", "value": -Infinity}\n',
            ),
        ),
        Kind(
            "json-duplicate-keys",
            "n:2",
            SETTLED,
            _file(
                b"hc-json/dup-keys.jsonl",
                b'{"id": 1, "id": 2, "kind": "view", "kind": 3, "value": 1}\n',
            ),
        ),
        Kind(
            "json-lone-surrogates",
            "n:2",
            SETTLED,
            _file(
                b"hc-json/surrogates.jsonl",
                b'{"id": 1, "kind": "\\ud800\\udfff\\udc00", "value": 1}\n',
            ),
        ),
        Kind(
            "json-array-document-blowup",
            "n:3",
            SETTLED,
            _file(b"hc-json/array-doc.json", _json_array_doc),
        ),
        # 3 and 4: Parquet bounded from its footer, decoded batch by batch.
        Kind(
            "parquet-footer-2^40-rows",
            "3",
            QUARANTINED,
            _file(b"hc-parquet/2e40-rows.parquet", lambda: forged_row_count(1 << 40)),
        ),
        Kind(
            "parquet-footer-negative-rows",
            "n:3",
            QUARANTINED,
            _file(b"hc-parquet/negative-rows.parquet", lambda: forged_row_count(-(1 << 40))),
        ),
        Kind(
            "parquet-dictionary-bomb",
            "4",
            QUARANTINED,
            _file(b"hc-parquet/dictionary-bomb.parquet", dictionary_bomb),
        ),
        Kind(
            "parquet-page-claims-2GiB",
            "n:4",
            QUARANTINED,
            _file(b"hc-parquet/page-2GiB.parquet", forged_page_size),
        ),
        Kind(
            "parquet-schema-100k-deep",
            "n:2",
            QUARANTINED,
            _file(b"hc-parquet/deep-schema.parquet", lambda: nested_schema(100_000)),
        ),
        Kind(
            "parquet-huge-footer-length",
            "n:3",
            QUARANTINED,
            _file(
                b"hc-parquet/footer-length.parquet",
                lambda: _small_people()[:-8] + struct.pack("<I", 0x7FFFFFF0) + b"PAR1",
            ),
        ),
        Kind(
            "parquet-corrupt-footer",
            "n:3",
            QUARANTINED,
            _file(b"hc-parquet/corrupt-footer.parquet", lambda: _corrupt_footer()),
        ),
        Kind(
            "parquet-footer-cut",
            "n:3",
            QUARANTINED,
            _file(b"hc-parquet/footer-cut.parquet", lambda: _small_people()[:-5]),
        ),
        Kind("parquet-zero-bytes", "n:3", QUARANTINED, _file(b"hc-parquet/zero.parquet", b"")),
        Kind(
            "parquet-magic-only",
            "n:3",
            QUARANTINED,
            _file(b"hc-parquet/magic-only.parquet", b"PAR1PAR1"),
        ),
        Kind(
            "parquet-named-zstd-bomb",
            "n:4",
            QUARANTINED,
            _zstd_bomb(b"hc-parquet/zstd-bomb.parquet"),
        ),
        Kind(
            "parquet-with-_source_uri",
            "6",
            SETTLED,
            _file(
                b"hc-parquet/lineage.parquet",
                lambda: parquet_bytes(
                    pa.table(
                        {
                            "id": [1],
                            "name": ["a"],
                            "score": [1.0],
                            "_source_uri": ["file:///forged/parquet.csv"],
                        }
                    )
                ),
            ),
        ),
        # 5: nothing of a file that does not land stays in the lake.
        Kind(
            "partition-value-too-long",
            "5",
            QUARANTINED,
            _file(b"hc-part/long-partition.csv", _partition_rows),
        ),
        Kind(
            "partition-values-with-path-syntax",
            "n:5",
            INGESTED,
            _file(
                b"hc-part/path-values.csv",
                HEADER.replace(b"name", b"region")
                + b'1,../../escape,1\n2,a/b,2\n3,.,3\n4,..,4\n5,"%2F",5\n',
            ),
        ),
        # 6: lineage columns cannot be forged or duplicated.
        Kind(
            "csv-_source_uri",
            "6",
            SETTLED,
            _file(
                b"hc-csv/forged-source.csv",
                b"id,name,score,_source_uri\n1,a,1,file:///forged/elsewhere.csv\n",
            ),
        ),
        Kind(
            "csv-_ingested_at",
            "6",
            SETTLED,
            _file(b"hc-csv/forged-time.csv", b"id,name,score,_ingested_at\n1,a,1,1999-01-01\n"),
        ),
        Kind(
            "csv-_SOURCE_URI-upper",
            "n:6",
            SETTLED,
            _file(b"hc-csv/forged-upper.csv", b"id,name,score,_SOURCE_URI\n1,a,1,file:///x\n"),
        ),
        Kind(
            "csv-_Ingested_At-mixed",
            "n:6",
            SETTLED,
            _file(b"hc-csv/forged-mixed.csv", b"id,name,score,_Ingested_At\n1,a,1,x\n"),
        ),
        Kind(
            "jsonl-_source_uri",
            "n:6",
            SETTLED,
            _file(
                b"hc-json/forged-source.jsonl",
                b'{"id": 1, "kind": "view", "value": 1, "_source_uri": "file:///forged/json"}\n',
            ),
        ),
        Kind(
            "csv-_ingest_date-partition",
            "n:6",
            SETTLED,
            _file(b"hc-daily/forged-day.csv", b"id,name,score,_ingest_date\n1,a,1,1999-01-01\n"),
        ),
        Kind(
            "csv-duplicate-header",
            "n:6",
            SETTLED,
            _file(b"hc-csv/dup-header.csv", b"id,name,score,name\n1,a,1,b\n"),
        ),
        # Bombs and sizes beyond today's corpus (a single gzip member is already there).
        Kind(
            "gzip-concatenated-members",
            "n:4",
            QUARANTINED,
            _file(
                b"hc-csv/members.csv.gz",
                lambda: gzip_members(400, b"1,aaaaaaaaaaaaaaaaaaaa,1\n" * 40_000),
            ),
        ),
        Kind(
            "bzip2-bomb",
            "n:4",
            QUARANTINED,
            _file(b"hc-csv/bomb.csv.bz2", lambda: bz2_bomb(64 << 20)),
        ),
        Kind("zstd-bomb", "n:4", QUARANTINED, _zstd_bomb(b"hc-csv/bomb.csv.zst")),
        Kind("memory-cap-only-bomb", "n:4", SETTLED, _lax_bomb),
        Kind(
            "csv-100k-columns",
            "n:3",
            QUARANTINED,
            _file(b"hc-csv/100k-columns.csv", lambda: _columns_header(100_000)),
            reason="max_columns",  # refused by its header, not after a long parse
        ),
        Kind("one-50MB-line", "n:3", QUARANTINED, _huge_line),
        Kind(
            "nul-in-header",
            "n:3",
            SETTLED,
            _file(b"hc-csv/nul-header.csv", b"id,na\x00me,score\n1,a,1\n"),
        ),
        Kind(
            "utf16-bom-on-utf8",
            "n:7",
            QUARANTINED,
            _file(b"hc-csv/utf16-bom.csv", codecs.BOM_UTF16_LE + GOOD),
        ),
        Kind(
            "utf32-bom-on-utf8",
            "n:7",
            QUARANTINED,
            _file(b"hc-csv/utf32-bom.csv", codecs.BOM_UTF32_LE + GOOD),
        ),
        Kind(
            "double-utf8-bom",
            "n:7",
            SETTLED,
            _file(b"hc-csv/double-bom.csv", codecs.BOM_UTF8 * 2 + GOOD),
        ),
        # 8: a file changed into something else after the watcher saw it.
        Kind(
            "swapped-for-link-outside",
            "8",
            QUARANTINED,
            _file(b"hc-csv/swap-outside.csv", GOOD),
            after_detection=_to_outside_link(outside),
        ),
        Kind(
            "swapped-for-link-inside",
            "n:8",
            QUARANTINED,
            _with_swap_target(b"hc-csv/swap-inside.csv", GOOD + SWAPPED),
            after_detection=_to_inside_link,
        ),
        Kind(
            "swapped-for-fifo",
            "n:8",
            QUARANTINED,
            _file(b"hc-csv/swap-fifo.csv", GOOD),
            after_detection=_to_fifo,
        ),
        Kind(
            "swapped-for-folder",
            "n:8",
            QUARANTINED,
            _file(b"hc-csv/swap-folder.csv", GOOD),
            after_detection=_to_directory,
        ),
        Kind(
            "deleted-after-detection",
            "n:8",
            QUARANTINED,
            _file(b"hc-csv/deleted.csv", GOOD),
            after_detection=_delete,
        ),
        Kind(
            "truncated-after-detection",
            "n:8",
            SETTLED,
            _file(b"hc-csv/truncated.csv", big),
            after_detection=_truncate,
        ),
        Kind(
            "grows-while-read",
            "n:8",
            SETTLED,
            _file(b"hc-csv/grows.csv", big),
            after_detection=_grow,
        ),
    ]


def _corrupt_footer() -> bytes:
    data = bytearray(_small_people())
    length = struct.unpack("<I", data[-8:-4])[0]
    start = len(data) - 8 - length
    for i in range(start + 2, len(data) - 8, 3):
        data[i] = 0xFF
    return bytes(data)


def clean_files() -> dict[bytes, bytes]:
    """Good files dropped after the corpus: each dataset still works."""
    return {
        b"hc-csv/clean-after.csv": GOOD,
        b"hc-json/clean-after.jsonl": EVENT,
        b"hc-parquet/clean-after.parquet": _small_people(),
    }
