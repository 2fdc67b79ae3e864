"""Memory limits for readers: Parquet footers are judged before Arrow allocates anything, and
Parquet is decoded batch by batch against ``max_memory_mb``.

Hostile files are built here, small on disk; anything that could allocate a lot runs in a
child process under ``RLIMIT_AS`` so that a regression fails the test, not the test run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hopper.contracts import load_contract
from hopper.contracts.limits import check_file_limits
from hopper.contracts.model import Contract
from hopper.contracts.read import ReadLimits, check_parquet_footer, read_table
from hopper.contracts.yaml_io import dump_contract
from hopper.errors import ConfigError, ResourceLimitError, UnreadableFileError
from tests.conftest import CONTRACT


def _contract(tmp_path: Path, extra: str = "") -> Contract:
    path = tmp_path / "people.yaml"
    path.write_text(CONTRACT + extra)
    return load_contract(path)


# --------------------------------------------------------------------------- contract keys


def test_memory_and_time_limits_have_safe_defaults(tmp_path: Path) -> None:
    contract = _contract(tmp_path)
    assert contract.max_memory_mb == 2048 and contract.max_seconds == 600
    assert "max_memory_mb" not in dump_contract(contract)  # defaults stay out of the YAML


def test_memory_and_time_limits_round_trip(tmp_path: Path) -> None:
    contract = _contract(tmp_path, "max_memory_mb: 512\nmax_seconds: 30\n")
    assert (contract.max_memory_mb, contract.max_seconds) == (512, 30)
    text = dump_contract(contract)
    assert "max_memory_mb: 512" in text and "max_seconds: 30" in text
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert load_contract(again) == contract


@pytest.mark.parametrize("line", ["max_memory_mb: 0\n", "max_seconds: -1\n"])
def test_memory_and_time_limits_must_be_positive(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError, match=line.split(":")[0]):
        _contract(tmp_path, line)


# --------------------------------------------------------------------------- hostile files


def _people(tmp_path: Path, extra: str = "") -> Contract:
    return _contract(tmp_path, extra).model_copy(update={"format": "parquet"})


def _zigzag_varint(value: int) -> bytes:
    number, out = value << 1, bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _with_footer(path: Path, edit: Callable[[bytes], bytes]) -> None:
    """Rewrite a Parquet file's footer (its thrift bytes) and the length that names it."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    body, footer = data[: -8 - length], data[-8 - length : -8]
    footer = edit(footer)
    path.write_bytes(body + footer + len(footer).to_bytes(4, "little") + b"PAR1")


def _row_claim(path: Path, rows: int, claim: int) -> None:
    """Make every i64 field 3/5 that says ``rows`` (file, row group, values) say ``claim``."""
    old, new = b"\x16" + _zigzag_varint(rows), b"\x16" + _zigzag_varint(claim)

    def edit(footer: bytes) -> bytes:
        assert footer.count(old) >= 2  # the file's and the row group's num_rows at least
        return footer.replace(old, new)

    _with_footer(path, edit)


def _small_file(tmp_path: Path, rows: int = 777) -> Path:
    path = tmp_path / "small.parquet"
    ids = list(range(rows))
    pq.write_table(
        pa.table({"id": ids, "full name": [f"n{i}" for i in ids], "score": [1.5] * rows}), path
    )
    return path


def _in_child(code: str, memory_mb: int = 1536) -> str:
    """Run ``code`` (it prints its verdict) in a Python child capped at ``memory_mb``."""
    prelude = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory_mb << 20}, {memory_mb << 20}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_footer_claiming_2_40_rows_is_refused_before_reading(tmp_path: Path) -> None:
    path = _small_file(tmp_path)
    _row_claim(path, 777, 1 << 40)
    assert path.stat().st_size < 16 << 10
    with pytest.raises(ResourceLimitError, match=r"row group 0 of 1,099,511,627,776 rows"):
        check_file_limits(path, _people(tmp_path))
    # The reader judges the footer too (``hopper contract infer`` has no contract).
    verdict = _in_child(
        f"""
        from pathlib import Path
        from hopper.contracts.read import read_table
        from hopper.errors import ResourceLimitError
        try:
            read_table(Path({str(path)!r}))
        except ResourceLimitError as exc:
            print("refused", exc)
        """
    )
    assert verdict.startswith("refused") and "max_memory_mb" in verdict


def test_footer_within_the_limits_is_accepted(tmp_path: Path) -> None:
    path = _small_file(tmp_path)
    check_file_limits(path, _people(tmp_path))
    assert read_table(path).num_rows == 777
    # The same file, held to a memory limit smaller than its 777 rows need.
    with pytest.raises(ResourceLimitError, match="max_memory_mb"):
        check_file_limits(path, _people(tmp_path, "max_memory_mb: 0.005\n"))


def test_footer_length_beyond_the_file_is_unreadable(tmp_path: Path) -> None:
    path = _small_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-8] + (1 << 31).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(UnreadableFileError, match="footer claims 2147483648 bytes"):
        check_file_limits(path, _people(tmp_path))


def test_footer_larger_than_the_memory_allows_is_refused_unparsed(tmp_path: Path) -> None:
    path = _small_file(tmp_path)
    _with_footer(path, lambda footer: footer)  # unchanged: about 1 KB
    with pytest.raises(ResourceLimitError, match=r"footer .*max_memory_mb"):
        check_file_limits(path, _people(tmp_path, "max_memory_mb: 0.01\n"))  # 10 KiB / 64


def test_pages_that_decompress_beyond_the_ratio_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "zeros.parquet"
    zeros = pa.table({"id": pa.array(np.zeros(1_000_000, np.int64))})
    pq.write_table(zeros, path, compression="zstd", use_dictionary=False, column_encoding="PLAIN")
    assert path.stat().st_size < 64 << 10  # 8 MB of pages
    with pytest.raises(ResourceLimitError, match="max_decompression_ratio"):
        check_file_limits(path, _people(tmp_path, "max_decompression_ratio: 50\n"))
    check_file_limits(path, _people(tmp_path, "max_decompression_ratio: 100000\n"))


def test_too_many_columns_are_refused_from_the_footer(tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({f"c{i}": [1] for i in range(30)}), path)
    with pytest.raises(ResourceLimitError, match="max_columns"):
        check_file_limits(path, _people(tmp_path, "max_columns: 20\n"))


def _dictionary_bomb(path: Path, rows: int, width: int) -> None:
    """``rows`` copies of one ``width``-byte string, stored once: about ``width`` on disk.

    The string does not compress, so the footer's sizes are honest and modest: only the
    reading tells how much the file decodes to.
    """
    text = np.random.default_rng(7).integers(ord("a"), ord("z"), width, np.uint8).tobytes()
    column = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(rows, np.int32)), pa.array([text.decode()])
    )
    table = pa.table({"id": pa.array(np.zeros(rows, np.int64)), "full name": column})
    pq.write_table(table, path, compression="zstd", store_schema=False)


def test_dictionary_bomb_is_refused_batch_by_batch(tmp_path: Path) -> None:
    path = tmp_path / "bomb.parquet"
    _dictionary_bomb(path, rows=250_000, width=10_000)  # 2.5 GB of strings
    assert path.stat().st_size < 32 << 10
    contract = _people(tmp_path)
    check_file_limits(path, contract)  # the footer's claims are modest: only reading tells
    verdict = _in_child(
        f"""
        from pathlib import Path
        from hopper.contracts import load_contract
        from hopper.contracts.read import read_for_contract
        from hopper.errors import ResourceLimitError
        contract = load_contract(Path({str(tmp_path / "people.yaml")!r}))
        try:
            parquet = contract.model_copy(update={{"format": "parquet"}})
            read_for_contract(Path({str(path)!r}), parquet)
        except ResourceLimitError as exc:
            print("refused", exc)
        """
    )
    assert verdict.startswith("refused") and "exceeded the 2048 MiB memory limit" in verdict


def test_dictionary_columns_within_the_limit_read_as_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "small-dict.parquet"
    _dictionary_bomb(path, rows=1000, width=1000)  # 1 MB decoded
    table = read_table(path)
    assert table.schema.field("full name").type == pa.string()
    assert table.column("full name").to_pylist() == [table.column("full name")[0].as_py()] * 1000
    assert len(table.column("full name")[0].as_py()) == 1000
    assert read_table(path, max_rows=10).num_rows == 10
    tight = ReadLimits(0.25, 200, 100, 64)
    check_parquet_footer(str(path), path.stat().st_size, tight, source="f")  # claims fit
    with pytest.raises(ResourceLimitError, match=r"exceeded the 0\.25 MiB memory limit"):
        read_table(path, limits=tight)


def test_allocation_failure_while_reading_is_a_memory_limit_refusal(tmp_path: Path) -> None:
    # A limit the footer check and the running count believe in, and a process that cannot
    # hold it: Arrow's allocation fails, and the file is refused naming the limit.
    path = tmp_path / "bomb.parquet"
    _dictionary_bomb(path, rows=250_000, width=10_000)
    verdict = _in_child(
        f"""
        from pathlib import Path
        from hopper.contracts.read import ReadLimits, read_table
        from hopper.errors import ResourceLimitError
        try:
            read_table(Path({str(path)!r}), limits=ReadLimits(1_000_000, 200, 100, 64))
        except ResourceLimitError as exc:
            print("refused", exc)
        """,
        memory_mb=1024,
    )
    assert verdict.startswith("refused") and "1000000 MiB memory limit" in verdict


def test_validate_reports_parquet_limits_as_limit_violations(tmp_path: Path) -> None:
    from hopper.contracts import validate_file

    footer = _small_file(tmp_path)
    _row_claim(footer, 777, 1 << 40)
    bomb = tmp_path / "bomb.parquet"
    _dictionary_bomb(bomb, rows=20_000, width=10_000)  # 200 MB of strings, never decoded
    contract = _people(tmp_path, "max_memory_mb: 64\n")
    (claim,) = validate_file(footer, contract)
    assert claim.kind == "limit" and "max_memory_mb" in claim.message
    (read,) = validate_file(bomb, contract)
    assert read.kind == "limit" and "exceeded the 64 MiB memory limit" in read.message


@pytest.mark.parametrize("reader", ["read_csv", "open_csv"])
def test_allocation_failure_in_the_csv_readers_names_the_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    import hopper.contracts.read.csv as csv_reader
    from hopper.contracts.read import iter_csv_for_contract, read_for_contract

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise pa.ArrowMemoryError("malloc of size 4294967296 failed")

    monkeypatch.setattr(csv_reader.pacsv, reader, out_of_memory)
    path = tmp_path / "p.csv"
    path.write_text("id,full name,score\n1,a,1.5\n")
    contract = _contract(tmp_path, "max_memory_mb: 300\n")
    with pytest.raises(ResourceLimitError, match="exceeded the 300 MiB memory limit"):
        if reader == "read_csv":
            read_for_contract(path, contract)
        else:
            list(iter_csv_for_contract(path, contract))
