"""Resource limits: oversized files, decompression bombs and absurd column counts end in
quarantine with a reason — nothing is inflated, nothing reaches the lake."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hopper.config import HopperConfig
from hopper.contracts import load_contract, validate_file
from hopper.contracts.limits import JsonDepthScan, LineScan, check_file_limits
from hopper.errors import TerminalError
from hopper.ingest import ingest
from hopper.models import FileRef, FileState, IngestRequest


def _ingest(home: HopperConfig, path: Path, limits: str) -> tuple[FileState, str]:
    contract = Path(home.datasets_dir) / "people.yaml"
    contract.write_text(contract.read_text() + limits)
    st = path.stat()
    ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset="people")
    outcome = ingest(IngestRequest(ref=ref, dispatch_id="d"), home)
    assert not list(Path(home.lake.path).rglob("*.parquet"))
    return outcome.state, outcome.reason or ""


def _file(home: HopperConfig, name: str) -> Path:
    path = home.sources[0].path / "people" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_file_over_max_file_mb(home: HopperConfig) -> None:
    path = _file(home, "big.csv")
    path.write_text("id,full name,score\n" + "1,abcdefghij,1.5\n" * 80_000)  # ≈ 1.3 MB
    state, reason = _ingest(home, path, "max_file_mb: 1\n")
    assert state == FileState.QUARANTINED and "max_file_mb" in reason


def test_gzip_bomb_is_refused_without_inflating_it(home: HopperConfig) -> None:
    path = _file(home, "bomb.csv.gz")
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b"id,full name,score\n")
        row = b"1,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,1.5\n"
        for _ in range(200):
            out.write(row * 10_000)  # ≈ 100 MB decompressed, ~100 KB compressed
    state, reason = _ingest(home, path, "max_decompression_ratio: 50\n")
    assert state == FileState.QUARANTINED and "decompression bomb" in reason


def test_too_many_columns(home: HopperConfig) -> None:
    path = _file(home, "wide.csv")
    extra = [f"c{i}" for i in range(50)]
    path.write_text(
        "id,full name,score," + ",".join(extra) + "\n1,a,1.5," + ",".join("1" * 50) + "\n"
    )
    state, reason = _ingest(home, path, "max_columns: 20\n")
    assert state == FileState.QUARANTINED and "max_columns" in reason


# --------------------------------------------------------------------------- long lines


def test_line_over_max_line_bytes_names_limit_and_line(home: HopperConfig) -> None:
    path = _file(home, "long.csv")
    path.write_text("id,full name,score\n1,a,1.5\n2," + "x" * 5_000 + ",2.5\n3,c,3.5\n")
    state, reason = _ingest(home, path, "max_line_bytes: 4096\n")
    assert state == FileState.QUARANTINED
    assert "max_line_bytes" in reason and "line 3" in reason and "4096" in reason


@pytest.mark.parametrize("end", ["\r", "\r\n"], ids=["old-mac-cr", "windows-crlf"])
def test_long_line_is_numbered_whatever_the_line_endings(home: HopperConfig, end: str) -> None:
    contract = Path(home.datasets_dir) / "people.yaml"
    contract.write_text(contract.read_text() + "max_line_bytes: 4096\n")
    path = _file(home, "long.csv")
    lines = ["id,full name,score", "1,a,1.5", "2,b,2.5", "3," + "x" * 5_000 + ",3.5", "4,d,4.5"]
    path.write_bytes(end.join(lines).encode() + end.encode())
    with pytest.raises(TerminalError, match="line 4 "):
        check_file_limits(path, load_contract(contract))


def test_a_file_no_longer_than_max_line_bytes_passes_and_one_byte_more_is_checked(
    home: HopperConfig,
) -> None:
    # A file that fits in max_line_bytes cannot hold a longer line, so it is not scanned;
    # one byte over, the scan runs and finds its only (unbroken) line too long.
    path = _file(home, "one.csv")
    path.write_text("id,full name,score")  # one line, no line break
    contract = load_contract(Path(home.datasets_dir) / "people.yaml")
    size = path.stat().st_size
    check_file_limits(path, contract.model_copy(update={"max_line_bytes": size}))
    with pytest.raises(TerminalError, match="max_line_bytes"):
        check_file_limits(path, contract.model_copy(update={"max_line_bytes": size - 1}))


def test_line_at_max_line_bytes_is_accepted(home: HopperConfig) -> None:
    path = _file(home, "edge.csv")
    line = "2," + "x" * 50 + ",2.5"
    path.write_text(f"id,full name,score\n{line}\n")
    contract = Path(home.datasets_dir) / "people.yaml"
    contract.write_text(contract.read_text() + f"max_line_bytes: {len(line)}\n")
    check_file_limits(path, load_contract(contract))  # exactly at the limit: fine
    with pytest.raises(TerminalError, match="max_line_bytes"):
        check_file_limits(
            path, load_contract(contract).model_copy(update={"max_line_bytes": len(line) - 1})
        )


def test_long_line_in_a_gzip_file_is_found_while_streaming(home: HopperConfig) -> None:
    path = _file(home, "long.csv.gz")
    with gzip.open(path, "wb") as out:
        out.write(b"id,full name,score\n")
        out.write(b"1,a,1.5\n" * 1000)
        out.write(b"2," + b"y" * (3 << 20) + b",2.5\n")  # 3 MiB line, spans several chunks
    state, reason = _ingest(home, path, "max_decompression_ratio: 100000\n")
    assert state == FileState.QUARANTINED
    assert "max_line_bytes" in reason and "line 1002" in reason


def test_file_without_any_line_break_is_one_long_line(home: HopperConfig) -> None:
    path = _file(home, "flat.csv")
    path.write_bytes(b"id,full name,score" + b",z" * 600_000)  # 1.2 MB, no newline at all
    state, reason = _ingest(home, path, "")
    assert state == FileState.QUARANTINED and "line 1 " in reason and "1048576" in reason


def test_default_line_limit_leaves_ordinary_files_alone(home: HopperConfig) -> None:
    path = _file(home, "fine.csv")
    path.write_text("id,full name,score\r\n" + "1,abc,1.5\r\n" * 200_000)  # CRLF, 2 MB
    contract = load_contract(Path(home.datasets_dir) / "people.yaml")
    assert contract.max_line_bytes == 1 << 20 and contract.max_json_depth == 64
    check_file_limits(path, contract)


def test_json_array_document_is_not_held_to_the_line_limit(home: HopperConfig) -> None:
    path = _file(home, "array.json")
    rows = [{"id": i, "full name": "n" * 20, "score": 1.5} for i in range(2000)]
    path.write_text(json.dumps(rows))  # one line of ≈ 100 KB
    contract = load_contract(Path(home.datasets_dir) / "people.yaml")
    auto = contract.model_copy(update={"format": "auto", "max_line_bytes": 1000})
    check_file_limits(path, auto)
    check_file_limits(path, auto.model_copy(update={"format": "jsonl"}))  # jsonl reads arrays
    with pytest.raises(TerminalError, match="max_line_bytes"):  # the same line as CSV
        check_file_limits(path, auto.model_copy(update={"format": "csv"}))


def test_parquet_is_not_scanned_for_lines(home: HopperConfig) -> None:
    path = _file(home, "p.parquet")
    pq.write_table(pa.table({"id": [1], "full name": ["x" * 5000], "score": [1.0]}), path)
    contract = load_contract(Path(home.datasets_dir) / "people.yaml")
    check_file_limits(path, contract.model_copy(update={"format": "auto", "max_line_bytes": 10}))


# --------------------------------------------------------------------------- JSON nesting


def _auto_format(home: HopperConfig) -> None:
    contract = Path(home.datasets_dir) / "people.yaml"
    contract.write_text(contract.read_text().replace("format: csv", "format: auto"))


def test_deeply_nested_json_line_is_quarantined_before_arrow_sees_it(home: HopperConfig) -> None:
    # 20,000 levels crash pyarrow's JSON reader (a segfault that would kill the worker).
    path = _file(home, "deep.jsonl")
    deep = '{"id": 2, "x": ' + '{"a": ' * 20_000 + "1" + "}" * 20_000 + "}"
    path.write_text('{"id": 1, "full name": "a", "score": 1}\n' + deep + "\n")
    _auto_format(home)
    state, reason = _ingest(home, path, "")
    assert state == FileState.QUARANTINED
    assert "max_json_depth" in reason and "line 2" in reason


def test_deeply_nested_json_array_is_unreadable_not_a_crash(home: HopperConfig) -> None:
    path = _file(home, "deep.json")
    path.write_text("[" * 200_000 + "]" * 200_000)  # RecursionError in Python's json module
    _auto_format(home)
    state, reason = _ingest(home, path, "")
    assert state == FileState.QUARANTINED and "cannot read as jsonl" in reason


def test_brackets_inside_strings_do_not_add_up_across_lines(home: HopperConfig) -> None:
    path = _file(home, "logs.jsonl")
    path.write_text('{"id": 1, "full name": "[[[[[[[[ WARN", "score": 1}\n' * 5000)
    contract = load_contract(Path(home.datasets_dir) / "people.yaml")
    check_file_limits(path, contract.model_copy(update={"format": "jsonl", "max_json_depth": 9}))


# --------------------------------------------------------------------------- the scanners


def _naive(data: bytes, max_line: int) -> bool:
    """The reference: split into lines, measure each one."""
    return any(len(line) > max_line for line in data.replace(b"\r", b"\n").split(b"\n"))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    data=st.binary(max_size=400).map(lambda b: bytes(b"x\n\r"[c % 3] if c % 4 else c for c in b)),
    max_line=st.integers(1, 60),
    chunk=st.integers(1, 97),
)
def test_line_scan_agrees_with_splitting_lines(data: bytes, max_line: int, chunk: int) -> None:
    scan = LineScan(max_line)
    for at in range(0, len(data), chunk):
        scan.feed(data[at : at + chunk])
    scan.finish()
    assert (scan.problem is not None) == _naive(data, max_line)


def _reference_depth(data: bytes) -> tuple[int, int, list[int]]:
    """Byte by byte, what :class:`JsonDepthScan` computes: (deepest, records, their starts).

    Depth is carried over line breaks and never goes below 0; a line break ends a string; a
    quote after an odd run of backslashes does not end one.
    """
    depth = worst = run = 0
    in_string = False
    starts: list[int] = []
    for at, byte in enumerate(data):
        if byte == ord("\\"):
            run += 1
            continue
        escaped, run = run % 2 == 1, 0
        if byte in b"\r\n":
            in_string = False
        elif byte == ord('"'):
            in_string = in_string if escaped else not in_string
        elif not in_string and byte in b"{[":
            depth += 1
            starts += [at] if depth == 1 else []
            worst = max(worst, depth)
        elif not in_string and byte in b"}]":
            depth = max(depth - 1, 0)
    return worst, len(starts), starts


def _depth_scan(data: bytes, max_depth: int, chunk: int) -> JsonDepthScan:
    scan = JsonDepthScan(max_depth)
    for at in range(0, len(data), chunk):
        scan.feed(data[at : at + chunk])
    return scan


@settings(max_examples=500, derandomize=True, deadline=None)
@given(
    data=st.binary(max_size=300).map(lambda b: bytes(b'x\n\r{[]}"\\ '[c % 10] for c in b)),
    max_depth=st.integers(1, 6),
    chunk=st.integers(1, 97),
)
def test_json_depth_scan_agrees_with_a_byte_by_byte_reading(
    data: bytes, max_depth: int, chunk: int
) -> None:
    worst, records, _ = _reference_depth(data)
    scan = _depth_scan(data, max_depth, chunk)
    assert scan.problem == (worst > max_depth)
    if scan.problem:
        prefix = _reference_depth(data[: scan.problem_offset + 1])
        assert scan.problem_offset == prefix[2][-1]  # where the too-deep value opened
    else:
        assert scan.records == records


def _nest(leaf: list[str], shape: list[bool]) -> object:
    value: object = leaf
    for is_object in shape:
        value = {"v": value} if is_object else [value]
    return value


_TEXT = st.text(alphabet=st.sampled_from('ab[]{}"\\\n\r\t é'), max_size=6)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.lists(_TEXT, max_size=3), st.lists(st.booleans(), max_size=6)),
        min_size=1,
        max_size=8,
    ),
    between=st.lists(st.sampled_from(["\n", "\r", "\r\n", " ", "", "\n\n", "\r\r\n"])),
    indent=st.one_of(st.none(), st.integers(0, 2)),
    ending=st.sampled_from(["\n", "\r", "\r\n"]),
    chunk=st.integers(1, 64),
)
def test_json_depth_scan_splits_records_as_arrow_does(
    records: list[tuple[list[str], list[bool]]],
    between: list[str],
    indent: int | None,
    ending: str,
    chunk: int,
) -> None:
    """Valid JSON, laid out any way Arrow accepts: the records Arrow reads are the ones the
    scan counts, and the depth the scan finds is each record's own."""
    values = [{f"k{i}": _nest(leaf, shape)} for i, (leaf, shape) in enumerate(records)]
    texts = [json.dumps(v, indent=indent, ensure_ascii=False).replace("\n", ending) for v in values]
    gaps = [between[i % len(between)] if between else "\n" for i in range(len(texts))]
    data = "".join(text + gap for text, gap in zip(texts, gaps, strict=True)).encode()
    deepest = max(_depth(v) for v in values)

    table = pajson.read_json(io.BytesIO(data))  # shallow by construction: safe in-process
    fine = _depth_scan(data, deepest, chunk)
    assert not fine.problem and fine.records == table.num_rows == len(values)
    assert _depth_scan(data, deepest - 1, chunk).problem


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# --------------------------------------------------------------------------- hostile headers


@pytest.mark.parametrize(
    ("prefix", "said"),
    [
        (b"\xff\xfe", "starts with a UTF-16 byte-order mark"),  # said before Arrow reads it
        (b"\xc3", "not valid UTF-8"),
        (b"\x80\x81", "not valid UTF-8"),
    ],
)
def test_header_that_is_not_utf8_is_quarantined_not_a_crash(
    home: HopperConfig, prefix: bytes, said: str
) -> None:
    # Arrow reads such a header without complaint and fails only when a name is decoded.
    path = _file(home, "utf16ish.csv")
    path.write_bytes(prefix + b"id,full name,score\n1,Ada,1.5\n")
    state, reason = _ingest(home, path, "")
    assert state == FileState.QUARANTINED and said in reason


def test_validate_applies_the_limits_ingestion_applies(home: HopperConfig) -> None:
    from hopper.contracts import validate_file

    contract = Path(home.datasets_dir) / "people.yaml"
    contract.write_text(contract.read_text() + "max_line_bytes: 64\nmax_columns: 4\n")
    people = load_contract(contract)
    long_line = _file(home, "long.csv")
    long_line.write_text("id,full name,score\n1," + "a" * 100 + ",1.5\n")
    wide = _file(home, "wide.csv")
    wide.write_text("id,full name,score,x,y\n1,a,1.5,2,3\n")
    fine = _file(home, "fine.csv")
    fine.write_text("id,full name,score\n1,a,1.5\n")

    (line,) = validate_file(long_line, people)
    assert line.kind == "limit" and "max_line_bytes" in line.message and "line 2" in line.message
    (columns,) = validate_file(wide, people)
    assert columns.kind == "limit" and "max_columns" in columns.message
    assert validate_file(fine, people) == []


# --------------------------------------------------------------------------- JSON records


@pytest.mark.parametrize("end", ["\r", "\n", "\r\n", " "], ids=["cr", "lf", "crlf", "space"])
def test_nesting_split_over_many_lines_is_one_deep_record(home: HopperConfig, end: str) -> None:
    # Arrow's JSON reader ends a record where its value ends, not at a line break: 2,000
    # slices of 50 '[' are one record 100,000 levels deep (a segfault), whatever separates them.
    # Never handed to Arrow here.
    path = _file(home, "sliced.jsonl")
    body = end.join(["[" * 50] * 2000) + end.join(["]" * 50] * 2000)
    path.write_text('{"id": 1, "full name": "a", "score": 1}\n{"id": 2, "x": ' + body + "}\n")
    contract = load_contract(Path(home.datasets_dir) / "people.yaml")
    with pytest.raises(TerminalError, match=r"max_json_depth") as caught:
        check_file_limits(path, contract.model_copy(update={"format": "jsonl"}))
    assert "line 2 " in str(caught.value)
    (refused,) = validate_file(path, contract.model_copy(update={"format": "jsonl"}))
    assert refused.kind == "limit" and "max_json_depth" in refused.message


def test_json_depth_is_counted_in_the_text_arrow_sees(home: HopperConfig) -> None:
    # In Shift-JIS, '\u30bd' is 0x83 0x5C: read as raw bytes, its 0x5C is a backslash escaping
    # the closing quote, and the brackets after it would look like the inside of a string.
    # Arrow reads the text transcoded to UTF-8, and so does the count.
    path = _file(home, "deep-sjis.jsonl")
    text = '{"id": 1}\r\n{"id": 2, "name": "\u30bd", "x": ' + "[" * 100 + "]" * 100 + "}\r\n"
    path.write_bytes(text.encode("shift_jis"))
    contract = load_contract(Path(home.datasets_dir) / "people.yaml")
    reader = contract.reader.model_copy(update={"encoding": "shift_jis"})
    sjis = contract.model_copy(update={"format": "jsonl", "reader": reader})
    with pytest.raises(TerminalError, match=r"record starting on line 2 .*max_json_depth"):
        check_file_limits(path, sjis)
    check_file_limits(path, sjis.model_copy(update={"max_json_depth": 101}))


def test_a_header_of_many_columns_is_refused_by_its_count_before_any_column_work(
    tmp_path: Path,
) -> None:
    from hopper.contracts.checks import inspect_file
    from hopper.contracts.model import Contract
    from hopper.errors import ResourceLimitError

    wide = tmp_path / "wide.csv"
    names = [f"c{i}" for i in range(20_000)] + ["c1"] * 20_000  # and duplicated, too
    wide.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    contract = Contract.model_validate(
        {"name": "wide", "format": "csv", "columns": [{"name": "c0", "type": "int64"}]}
    )
    with pytest.raises(ResourceLimitError, match="max_columns"):
        inspect_file(wide, contract, str(wide))
