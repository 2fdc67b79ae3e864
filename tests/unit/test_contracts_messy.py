"""Real-world messy files: each ends in a valid table or a TerminalError naming column or line.

``test_contracts_validate`` covers the basic cases one by one; this module adds what it does
not (line numbers of ragged rows, numbers beyond int64, dates in two formats, zstd, decimal
commas, mixed types in a CSV column) and sweeps every case through both entry points to make
sure nothing escapes as another exception type.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from hopper.contracts import Contract, diff_file, read_and_conform, validate_file
from hopper.contracts.read.detect import HEAD_BYTES
from hopper.errors import ContractViolation, TerminalError, UnreadableFileError

ORDERS: list[dict[str, Any]] = [
    {"name": "id", "type": "int64", "nullable": False},
    {"name": "amount", "type": "float64"},
    {"name": "country", "type": "string"},
]


def make_contract(columns: list[dict[str, Any]] | None = None, **options: Any) -> Contract:
    return Contract.model_validate({"name": "orders", "columns": columns or ORDERS, **options})


def write(tmp_path: Path, name: str, data: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return bytes(sink.getvalue())


# --------------------------------------------------------------------------- ragged rows


@pytest.mark.parametrize(
    ("text", "line", "got"),
    [
        ("id,amount,country\n1,2,FR\n3,4\n5,6,DE\n", 3, 2),
        ("id,amount,country\n1,2,FR\n3,4,DE,surplus\n", 3, 4),
        ('id,amount,country\n1,2,"multi\nline"\n3,4\n', 4, 2),
        ("\ufeffid,amount,country\n\n1,2,FR\n3\n", 4, 1),
    ],
)
def test_ragged_rows_name_the_line(tmp_path: Path, text: str, line: int, got: int) -> None:
    path = write(tmp_path, "r.csv", text)
    with pytest.raises(UnreadableFileError) as caught:
        read_and_conform(path, make_contract())
    message = str(caught.value)
    assert f"r.csv: cannot read as CSV: line {line} has {got} field(s)" in message
    assert "the header has 3" in message and "reader.delimiter" in message
    [violation] = validate_file(path, make_contract())
    assert violation.kind == "unreadable" and f"line {line}" in violation.message


def test_ragged_row_line_counts_skipped_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "exported 2024\nid,amount,country\n1,2,FR\n3,4\n")
    with pytest.raises(UnreadableFileError, match="line 4 has 2 field"):
        read_and_conform(path, make_contract(reader={"skip_rows": 1}))


def test_ragged_row_in_compressed_file(tmp_path: Path) -> None:
    body = "id,amount,country\n" + "1,2,FR\n" * 1000 + "9,9\n"
    path = write(tmp_path, "r.csv.gz", gzip.compress(body.encode()))
    with pytest.raises(UnreadableFileError, match="line 1002 has 2 field"):
        read_and_conform(path, make_contract())


# --------------------------------------------------------------------------- numbers and types


def test_numbers_beyond_int64_are_violations_naming_the_column(tmp_path: Path) -> None:
    huge = "99999999999999999999999"
    cases = {
        "h.csv": f"id,amount,country\n1,2,FR\n{huge},3,DE\n",
        "h.jsonl": f'{{"id": 1}}\n{{"id": {huge}}}\n',
        "h.json": f'[{{"id": 1}}, {{"id": {huge}}}]',
    }
    for name, text in cases.items():
        path = write(tmp_path, name, text)
        with pytest.raises(ContractViolation) as caught:
            read_and_conform(path, make_contract(ORDERS[:1]))
        [violation] = caught.value.violations
        assert (violation["column"], violation["kind"], violation["rows"]) == ("id", "type", [2])
        assert "not valid int64" in str(caught.value), name


def test_huge_numbers_fit_a_wide_decimal(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "id,big\n1,99999999999999999999999\n")
    columns = [ORDERS[0], {"name": "big", "type": "decimal128(38, 0)"}]
    table = read_and_conform(path, make_contract(columns)).table
    assert str(table.column("big")[0].as_py()) == "99999999999999999999999"


def test_mixed_types_in_a_csv_column(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "id,amount,country\n1,2.5,FR\n2,two,DE\n3,true,IT\n")
    [violation] = validate_file(path, make_contract())
    assert (violation.column, violation.kind, violation.rows) == ("amount", "type", [2, 3])
    assert sorted(violation.samples) == ["true", "two"]
    as_text = make_contract([ORDERS[0], {"name": "amount", "type": "string"}])
    assert read_and_conform(path, as_text).table.column("amount").to_pylist() == [
        "2.5",
        "two",
        "true",
    ]


# --------------------------------------------------------------------------- dates


DATES = "id,day\n1,2024-01-05\n2,05/01/2024\n"


def test_dates_in_two_formats_without_format_name_the_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", DATES)
    [violation] = validate_file(path, make_contract([ORDERS[0], {"name": "day", "type": "date"}]))
    assert (violation.column, violation.kind, violation.rows) == ("day", "type", [2])
    assert violation.samples == ["05/01/2024"]


def test_dates_in_two_formats_with_a_list_of_formats(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", DATES + "3,31.12.2024\n")
    column = {"name": "day", "type": "date32", "format": ["%Y-%m-%d", "%d/%m/%Y"]}
    contract = make_contract([ORDERS[0], column])
    [violation] = validate_file(path, contract)
    assert (violation.kind, violation.rows, violation.samples) == ("type", [3], ["31.12.2024"])
    assert "'%Y-%m-%d' or '%d/%m/%Y'" in violation.message
    path = write(tmp_path, "d.csv", DATES)
    assert read_and_conform(path, contract).table.column("day").to_pylist() == [
        dt.date(2024, 1, 5),
        dt.date(2024, 1, 5),
    ]


def test_format_list_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="format list is empty"):
        make_contract([{"name": "day", "type": "date32", "format": []}])


# --------------------------------------------------------------------------- encodings, layouts


def test_zstd_compressed_csv(tmp_path: Path) -> None:
    text = b"id,amount,country\n1,2.5,FR\n2,3,DE\n"
    for name in ("o.csv.zst", "o.csv.zstd", "no-extension"):
        path = write(tmp_path, name, zstd(text))
        table = read_and_conform(path, make_contract()).table
        assert table.column("amount").to_pylist() == [2.5, 3.0], name


def test_semicolons_and_decimal_commas(tmp_path: Path) -> None:
    text = "id;amount;country\n1;2,5;FR\n2;1234,75;DE\n3;;IT\n"
    path = write(tmp_path, "eu.csv", text)
    contract = make_contract(reader={"decimal_point": ","})
    assert read_and_conform(path, contract).table.column("amount").to_pylist() == [
        2.5,
        1234.75,
        None,
    ]
    with pytest.raises(ContractViolation, match=r"column 'amount' \[type\]"):
        read_and_conform(path, make_contract())


def test_decimal_commas_on_the_slow_path_and_for_decimals(tmp_path: Path) -> None:
    # A bad id forces the re-read as text: amounts are then converted by validate.
    path = write(tmp_path, "eu.csv", "id;amount;country\n1;2,5;FR\nx;3,25;DE\n")
    columns = [ORDERS[0], {"name": "amount", "type": "decimal128(10, 2)"}, ORDERS[2]]
    contract = make_contract(columns, reader={"decimal_point": ","}, bad_rows="quarantine")
    result = read_and_conform(path, contract)
    assert [str(v) for v in result.table.column("amount").to_pylist()] == ["2.50"]
    assert result.rejected is not None and result.rejected.column("_row").to_pylist() == [2]


def test_tsv_with_latin1_and_bom_free_header(tmp_path: Path) -> None:
    text = "id\tamount\tcountry\n1\t2\tCôte d'Ivoire\n"
    path = write(tmp_path, "o.tsv", text, encoding="latin-1")
    table = read_and_conform(path, make_contract(reader={"encoding": "latin-1"})).table
    assert table.column("country").to_pylist() == ["Côte d'Ivoire"]


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_a_csv_around_the_head_size_reads_every_row(tmp_path: Path, extra: int) -> None:
    # Shorter than the head read to detect it: parsed from those bytes; else read again.
    header, row = "id,amount,country\n", "1,2.5,FR\n"
    rows = (HEAD_BYTES - len(header)) // len(row) - 1
    last = "2,3,"
    pad = HEAD_BYTES + extra - len(header) - rows * len(row) - len(last) - 1
    path = write(tmp_path, "o.csv", header + row * rows + last + "X" * pad + "\n")
    assert path.stat().st_size == HEAD_BYTES + extra
    table = read_and_conform(path, make_contract()).table
    assert table.num_rows == rows + 1
    assert table.column("country")[-1].as_py() == "X" * pad


def test_a_small_csv_is_opened_once_for_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: Path) -> None:
        raise AssertionError(f"{path} opened again")

    monkeypatch.setattr("hopper.contracts.read.csv.open_stream", refuse)
    path = write(tmp_path, "o.csv", "id,amount,country\n1,2.5,FR\n2,,DE\n")
    assert read_and_conform(path, make_contract()).table.column("amount").to_pylist() == [2.5, None]


# --------------------------------------------------------------------------- the sweep


def _messy_files(tmp_path: Path) -> dict[str, Path]:
    plain = "id,amount,country\n1,2,FR\n2,3,DE\n"
    files: dict[str, str | bytes] = {
        "bom.csv": "\ufeff" + plain,
        "latin1.csv": "id,amount,country\n1,2,Mérignac\n".encode("latin-1"),
        "quoted-newline.csv": 'id,amount,country\n1,2,"Saint-\nÉtienne"\n',
        "fewer-fields.csv": "id,amount,country\n1,2\n",
        "more-fields.csv": "id,amount,country\n1,2,FR,x\n",
        "mixed.csv": "id,amount,country\n1,x,FR\n",
        "empty.csv": b"",
        "blank-lines.csv": "\n\n\n",
        "header-only.csv": "id,amount,country\n",
        "huge.csv": "id,amount,country\n99999999999999999999999,1,FR\n",
        "two-date-formats.csv": "id,amount,country,day\n1,2,FR,2024-01-01\n2,3,DE,01/02/2024\n",
        "missing-keys.json": json.dumps([{"id": 1}, {"amount": 2, "country": "FR"}]),
        "not-objects.json": "[1, 2, 3]",
        "truncated.csv.gz": gzip.compress(plain.encode() * 2000)[:-100],
        "zstd.csv.zst": zstd(plain.encode()),
        "garbage.csv.zst": b"\x28\xb5\x2f\xfd" + b"\x00" * 40,
        "tab.tsv": plain.replace(",", "\t"),
        "semicolon.csv": "id;amount;country\n1;2,5;FR\n",
        "binary.csv": b"id,amount,country\n1,2,\xff\xfe\x00\n",
        "jsonl-mixed.jsonl": '{"id": 1, "amount": "2"}\n{"id": "x", "amount": 3}\n',
        "jsonl-broken.jsonl": '{"id": 1}\n{"id"\n',
        "parquet-fake.parquet": b"PAR1 nope",
    }
    return {name: write(tmp_path, name, data) for name, data in files.items()}


@pytest.mark.parametrize("entry", ["read_and_conform", "diff_file"])
def test_every_messy_file_ends_in_a_table_or_a_terminal_error(tmp_path: Path, entry: str) -> None:
    contract = make_contract()
    run: Callable[[Path], Any] = {
        "read_and_conform": lambda p: read_and_conform(p, contract),
        "diff_file": lambda p: diff_file(p, contract),
    }[entry]
    outcomes: dict[str, str] = {}
    for name, path in _messy_files(tmp_path).items():
        try:
            run(path)
            outcomes[name] = "ok"
        except TerminalError as exc:
            message = str(exc)
            assert message.startswith(str(path)), (name, message)
            assert "Fix" in message or "re-send" in message, (name, message)
            outcomes[name] = type(exc).__name__
    if entry == "read_and_conform":
        assert outcomes == {
            "bom.csv": "ok",
            "latin1.csv": "UndecodableTextError",  # an UnreadableFileError
            "quoted-newline.csv": "ok",
            "fewer-fields.csv": "UnreadableFileError",
            "more-fields.csv": "UnreadableFileError",
            "mixed.csv": "ContractViolation",
            "empty.csv": "UnreadableFileError",
            "blank-lines.csv": "UnreadableFileError",
            "header-only.csv": "ok",
            "huge.csv": "ContractViolation",
            "two-date-formats.csv": "ok",  # undeclared: kept as text by evolve
            "missing-keys.json": "ContractViolation",
            "not-objects.json": "UnreadableFileError",
            "truncated.csv.gz": "UnreadableFileError",
            "zstd.csv.zst": "ok",
            "garbage.csv.zst": "UnreadableFileError",
            "tab.tsv": "ok",
            "semicolon.csv": "ContractViolation",
            "binary.csv": "UndecodableTextError",
            "jsonl-mixed.jsonl": "ContractViolation",
            "jsonl-broken.jsonl": "UnreadableFileError",
            "parquet-fake.parquet": "UnreadableFileError",
        }
