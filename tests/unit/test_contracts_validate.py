"""Reading and conforming files to contracts: formats, types, checks, reject vs quarantine."""

from __future__ import annotations

import bz2
import datetime as dt
import decimal
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hopper.contracts import (
    Contract,
    ReaderOptions,
    detect_format,
    format_violations,
    read_and_conform,
    validate_file,
)
from hopper.contracts.read import csv_delimiter, sniff_delimiter
from hopper.errors import ContractViolation, UnreadableFileError


def make_contract(columns: list[dict[str, Any]], **options: Any) -> Contract:
    return Contract.model_validate({"name": "orders", "columns": columns, **options})


def write(tmp_path: Path, name: str, data: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


ORDERS = [
    {"name": "id", "type": "int64", "nullable": False},
    {"name": "amount", "type": "float64"},
    {"name": "country", "type": "string"},
]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", "csv"),
        ("a.CSV.gz", "csv"),
        ("a.tsv", "tsv"),
        ("a.tsv.zst", "tsv"),
        ("a.txt", "csv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson.bz2", "jsonl"),
        ("a.json", "jsonl"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_detect_format_by_extension(tmp_path: Path, name: str, expected: str) -> None:
    assert detect_format(write(tmp_path, name, b"x"), "auto") == expected


def test_detect_format_by_content(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1]}), tmp_path / "data.bin")
    assert detect_format(tmp_path / "data.bin", "auto") == "parquet"
    assert detect_format(write(tmp_path, "x.dat", ' \n{"a": 1}\n'), "auto") == "jsonl"
    assert detect_format(write(tmp_path, "y.dat", '[{"a": 1}]'), "auto") == "jsonl"
    assert detect_format(write(tmp_path, "z.dat", "a;b\n1;2\n"), "auto") == "csv"
    assert detect_format(write(tmp_path, "z.dat", "a;b\n"), "tsv") == "tsv"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b,c\n1,2,3\n", ","),
        ("a;b;c\n1;2,5;3\n4;5;6\n", ";"),
        ("a\tb\n1\t2\n", "\t"),
        ("a|b\n1|2\n", "|"),
        ('name;note\n"x";"a,b,c"\n', ";"),
        ('a,b\n"1;2;3",4\n5,6\n', ","),  # a quoted field's delimiters do not count
        ("single\n1\n", ","),
        ("a;b\n1;2\n3;4;5", ";"),  # a last line without its end is not held against it
    ],
)
def test_sniff_delimiter(text: str, expected: str) -> None:
    assert sniff_delimiter(text) == expected


def test_the_delimiter_is_sniffed_after_the_rows_skipped() -> None:
    head = b"exported 2026-12-05, by a tool; with a title line\nid|name\n1|x\n2|y\n"
    assert csv_delimiter(head, ReaderOptions(skip_rows=1)) == "|"
    assert csv_delimiter(head, ReaderOptions(delimiter=";")) == ";"
    assert csv_delimiter(b"id\tname\n", ReaderOptions(), "tsv") == "\t"


# --------------------------------------------------------------------------- happy paths


def test_typed_happy_path_with_null_markers(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country\n1,9.5,FR\n2,NA,\n3,,N/A\n4,1e3,DE\n")
    result = read_and_conform(path, make_contract(ORDERS))
    table = result.table
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("amount", pa.float64()), ("country", pa.string())]
    )
    assert table.column("id").to_pylist() == [1, 2, 3, 4]
    assert table.column("amount").to_pylist() == [9.5, None, None, 1000.0]
    assert table.column("country").null_count == 2
    assert (result.rows_in, result.rows_out, result.rejected, result.violations) == (4, 4, None, [])
    assert validate_file(path, make_contract(ORDERS)) == []


def test_large_csv_with_na_nulls(tmp_path: Path) -> None:
    lines = ["id,amount,country"] + [
        f"{i},{'NA' if i % 3 == 0 else i / 2},{'FR' if i % 2 else 'DE'}" for i in range(300_000)
    ]
    path = write(tmp_path, "big.csv", "\n".join(lines) + "\n")
    result = read_and_conform(path, make_contract(ORDERS))
    assert result.rows_out == 300_000
    assert result.table.column("amount").null_count == 100_000
    assert result.table.column("id").type == pa.int64()


def test_large_csv_with_one_bad_value_locates_it(tmp_path: Path) -> None:
    lines = ["id,amount,country"] + [f"{i},{i},FR" for i in range(200_000)]
    lines[150_001] = "150000,12x,FR"
    path = write(tmp_path, "big.csv", "\n".join(lines) + "\n")
    [violation] = validate_file(path, make_contract(ORDERS))
    assert (violation.column, violation.kind, violation.count) == ("amount", "type", 1)
    assert violation.rows == [150_001]
    assert violation.samples == ["12x"]


def test_renames_and_column_order(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "Country Code,Order #\nFR,1\n")
    contract = make_contract(
        [
            {"name": "Order #", "type": "int32", "rename": "order_id"},
            {"name": "Country Code", "type": "string", "rename": "country"},
        ]
    )
    table = read_and_conform(path, contract).table
    assert table.column_names == ["order_id", "country"]
    assert table.to_pylist() == [{"order_id": 1, "country": "FR"}]
    assert table.schema.field("order_id").type == pa.int32()


# --------------------------------------------------------------------------- violations


def test_bad_int_values_reject_names_column_rows_and_samples(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country\n1,1,FR\nx,2,FR\n3,3,FR\n4.5,4,FR\nx,5,FR\n")
    with pytest.raises(ContractViolation) as info:
        read_and_conform(path, make_contract(ORDERS), source_name="s3://in/o.csv")
    message = str(info.value)
    assert "s3://in/o.csv" in message
    assert "column 'id' [type]: 3 value(s) are not valid int64" in message
    assert "rows 2, 4, 5" in message
    assert "'x'" in message and "'4.5'" in message
    assert "replay" in message
    [details] = info.value.violations
    assert details == {
        "column": "id",
        "kind": "type",
        "message": "3 value(s) are not valid int64",
        "rows": [2, 4, 5],
        "samples": ["x", "4.5"],
        "count": 3,
    }


def test_quarantine_splits_good_and_bad_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "o.csv",
        "id,amount,country,note\n1,1.5,FR,a\n2,oops,FR,b\n,3,FR,c\n4,4,XX,d\n5,5,DE,e\n",
    )
    columns = [*ORDERS[:2], {"name": "country", "type": "string", "allowed": ["FR", "DE"]}]
    result = read_and_conform(path, make_contract(columns, bad_rows="quarantine"))
    assert result.table.column("id").to_pylist() == [1, 5]
    assert result.table.column("amount").to_pylist() == [1.5, 5.0]
    assert result.table.column_names == ["id", "amount", "country", "note"]
    assert result.rows_in == 5 and result.rows_out == 2
    assert result.extra_columns == ["note"]
    rejected = result.rejected
    assert rejected is not None
    assert rejected.column("_row").to_pylist() == [2, 3, 4]
    assert rejected.column("_reason").to_pylist() == [
        "amount: type",
        "id: null",
        "country: allowed",
    ]
    assert rejected.column("amount").to_pylist() == ["oops", "3", "4"]
    assert rejected.schema.field("_row").type == pa.int64()
    assert {v.kind for v in result.violations} == {"type", "null", "allowed"}


def test_quarantine_still_raises_on_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amt\n1,2\n")
    with pytest.raises(ContractViolation) as info:
        read_and_conform(path, make_contract(ORDERS, bad_rows="quarantine"))
    message = str(info.value)
    assert "column 'amount' [missing_column]" in message
    assert "did you mean 'amt'" in message
    assert "found ['id', 'amt']" in message
    kinds = {(v["column"], v["kind"]) for v in info.value.violations}
    assert kinds == {("amount", "missing_column"), ("country", "missing_column")}


def test_extra_columns_evolve_vs_freeze(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country,added\n1,2,FR,2024-01-01\n")
    evolved = read_and_conform(path, make_contract(ORDERS))
    assert evolved.extra_columns == ["added"]
    assert evolved.table.column_names[-1] == "added"
    assert evolved.table.schema.field("added").type == pa.date32()  # inferred by Arrow
    with pytest.raises(ContractViolation, match=r"column 'added' \[extra_column\].*freeze"):
        read_and_conform(path, make_contract(ORDERS, extra_columns="freeze"))


def test_non_nullable_with_nulls(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country\n1,1,FR\nNA,2,FR\n,3,FR\n")
    [violation] = validate_file(path, make_contract(ORDERS))
    assert violation.samples == []
    assert (violation.kind, violation.column, violation.rows, violation.count) == (
        "null",
        "id",
        [2, 3],
        2,
    )


def test_checks_allowed_pattern_min_max_unique(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "o.csv",
        "id,amount,country,sku\n1,5,FR,AB-1\n2,-1,FR,AB-2\n2,500,BE,ab-3\n4,10,DE,AB-44x\n",
    )
    contract = make_contract(
        [
            {"name": "id", "type": "int64", "unique": True},
            {"name": "amount", "type": "float64", "min": 0, "max": 100},
            {"name": "country", "type": "string", "allowed": ["FR", "DE"]},
            {"name": "sku", "type": "string", "pattern": r"AB-\d+"},
        ]
    )
    found = {(v.column, v.kind): (v.rows, v.samples) for v in validate_file(path, contract)}
    assert found == {
        ("id", "unique"): ([2, 3], ["2"]),
        ("amount", "min"): ([2], ["-1.0"]),
        ("amount", "max"): ([3], ["500.0"]),
        ("country", "allowed"): ([3], ["BE"]),
        ("sku", "pattern"): ([3, 4], ["ab-3", "AB-44x"]),
    }


def test_format_violations_text() -> None:
    from hopper.contracts import Violation

    text = format_violations(
        [Violation("a", "type", "2 value(s) are not valid int64", [1, 2], ["x"], 25)], "f.csv"
    )
    assert text.splitlines()[0] == "f.csv: 1 contract violation(s):"
    assert "column 'a' [type]: 2 value(s) are not valid int64; rows 1, 2, ...; samples 'x'" in text
    assert text.splitlines()[-1].startswith("Fix:")


# --------------------------------------------------------------------------- types


def test_dates_with_format(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "day,at\n31/01/2024,31/01/2024 10:30\n01/02/2024,\n")
    contract = make_contract(
        [
            {"name": "day", "type": "date", "format": "%d/%m/%Y", "min": "2024-01-01"},
            {"name": "at", "type": "timestamp[us]", "format": "%d/%m/%Y %H:%M"},
        ]
    )
    table = read_and_conform(path, contract).table
    assert table.column("day").to_pylist() == [dt.date(2024, 1, 31), dt.date(2024, 2, 1)]
    assert table.column("at").to_pylist() == [dt.datetime(2024, 1, 31, 10, 30), None]
    bad = write(tmp_path, "bad.csv", "day,at\n2024-01-31,\n")
    [violation] = validate_file(bad, contract)
    assert (violation.kind, violation.samples) == ("type", ["2024-01-31"])
    assert "with format '%d/%m/%Y'" in violation.message


def test_timestamp_with_timezone(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.csv",
        "at,local\n2024-01-01T10:00:00Z,2024-07-01 12:00:00\n2024-01-01 12:00:00+02:00,\n",
    )
    contract = make_contract(
        [
            {"name": "at", "type": "timestamp[us, tz=UTC]"},
            {"name": "local", "type": "timestamp[ms, tz=Europe/Paris]"},
        ]
    )
    table = read_and_conform(path, contract).table
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    utc = dt.UTC
    assert table.column("at").to_pylist() == [
        dt.datetime(2024, 1, 1, 10, tzinfo=utc),
        dt.datetime(2024, 1, 1, 10, tzinfo=utc),
    ]
    local = table.column("local").to_pylist()[0]
    assert local.astimezone(utc) == dt.datetime(2024, 7, 1, 10, tzinfo=utc)  # CEST is UTC+2


def test_decimal_and_time_and_bool(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "price,at,ok\n12.34,08:30:00,true\n0.5,23:59:59.5,false\n")
    contract = make_contract(
        [
            {"name": "price", "type": "decimal128(10, 2)", "max": 100},
            {"name": "at", "type": "time64[us]"},
            {"name": "ok", "type": "bool"},
        ]
    )
    table = read_and_conform(path, contract).table
    assert table.column("price").to_pylist() == [decimal.Decimal("12.34"), decimal.Decimal("0.50")]
    assert table.column("at").to_pylist() == [dt.time(8, 30), dt.time(23, 59, 59, 500_000)]
    assert table.column("ok").to_pylist() == [True, False]
    bad = write(tmp_path, "bad.csv", "price,at,ok\n1.234,25:00:00,maybe\n")
    kinds = {(v.column, v.kind) for v in validate_file(bad, contract)}
    assert kinds == {("price", "type"), ("at", "type"), ("ok", "type")}


# --------------------------------------------------------------------------- encodings and layouts


def test_utf8_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "\ufeffid,amount,country\n1,2,FR\n")
    assert read_and_conform(path, make_contract(ORDERS)).table.column("id").to_pylist() == [1]


def test_latin1(tmp_path: Path) -> None:
    path = write(tmp_path, "l.csv", "id,amount,country\n1,2,Mérignac\n", encoding="latin-1")
    contract = make_contract(ORDERS, reader={"encoding": "latin-1"})
    assert read_and_conform(path, contract).table.column("country").to_pylist() == ["Mérignac"]
    with pytest.raises(UnreadableFileError, match="latin-1"):
        read_and_conform(path, make_contract(ORDERS))
    [violation] = validate_file(path, make_contract(ORDERS))
    assert violation.kind == "unreadable"


def test_tsv_semicolon_and_headerless(tmp_path: Path) -> None:
    tsv = write(tmp_path, "o.tsv", "id\tamount\tcountry\n1\t2.5\tFR\n")
    assert read_and_conform(tsv, make_contract(ORDERS)).table.column("amount").to_pylist() == [2.5]
    semi = write(tmp_path, "o.csv", "id;amount;country\n1;2,5;FR\n")
    as_text = make_contract([*ORDERS[:1], {"name": "amount", "type": "str"}])
    result = read_and_conform(semi, as_text)
    assert result.table.column("amount").to_pylist() == ["2,5"]
    bare = write(tmp_path, "bare.csv", "1,2.5,FR,x\n2,3,DE,y\n")
    headerless = make_contract(ORDERS, reader={"header": False})
    table = read_and_conform(bare, headerless).table
    assert table.column_names == ["id", "amount", "country", "f3"]
    assert table.column("id").to_pylist() == [1, 2]


def test_skip_rows_and_quoted_newlines(tmp_path: Path) -> None:
    path = write(tmp_path, "q.csv", 'exported by X\nid,amount,country\n1,2,"Line 1\nLine 2"\n')
    table = read_and_conform(path, make_contract(ORDERS, reader={"skip_rows": 1})).table
    assert table.column("country").to_pylist() == ["Line 1\nLine 2"]
    assert table.num_rows == 1


def test_header_only_gives_zero_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "id,amount,country\n")
    result = read_and_conform(path, make_contract(ORDERS))
    assert result.rows_out == 0
    assert result.table.schema.field("id").type == pa.int64()


def test_empty_file_is_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", b"")
    with pytest.raises(UnreadableFileError, match=r"e\.csv: the file is empty"):
        read_and_conform(path, make_contract(ORDERS))


def test_ragged_rows_are_unreadable_with_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "id,amount,country\n1,2\n")
    with pytest.raises(UnreadableFileError, match=r"reader\.delimiter"):
        read_and_conform(path, make_contract(ORDERS))


# --------------------------------------------------------------------------- other formats


def test_json_lines(tmp_path: Path) -> None:
    rows = [{"id": 1, "amount": 2.5, "country": "FR"}, {"id": 2, "amount": None, "country": None}]
    path = write(tmp_path, "o.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    table = read_and_conform(path, make_contract(ORDERS)).table
    assert table.to_pylist() == rows


def test_json_lines_mixed_types_are_diagnosed(tmp_path: Path) -> None:
    path = write(tmp_path, "o.jsonl", '{"id": 1}\n{"id": "two"}\n{"id": "3"}\n')
    [violation] = validate_file(path, make_contract(ORDERS[:1]))
    assert (violation.kind, violation.rows, violation.samples) == ("type", [2], ["two"])


def test_json_array_with_missing_keys(tmp_path: Path) -> None:
    data = [{"id": 1, "country": "FR"}, {"id": 2, "amount": 3, "extra": {"a": 1}}]
    path = write(tmp_path, "o.json", json.dumps(data))
    result = read_and_conform(path, make_contract(ORDERS))
    assert result.table.column("amount").to_pylist() == [None, 3.0]
    assert result.table.column("country").to_pylist() == ["FR", None]
    assert result.table.column("extra").to_pylist() == [None, '{"a": 1}']


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "o.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int32()), "amount": [1.0, None]}), path)
    contract = make_contract(ORDERS[:2])
    table = read_and_conform(path, contract).table
    assert table.schema.field("id").type == pa.int64()  # widened to the contract's type
    assert table.column("amount").to_pylist() == [1.0, None]


def test_compressed_inputs(tmp_path: Path) -> None:
    text = "id,amount,country\n1,2,FR\n2,3,DE\n"
    gz = write(tmp_path, "o.csv.gz", gzip.compress(text.encode()))
    bz = write(tmp_path, "o.csv.bz2", bz2.compress(text.encode()))
    for path in (gz, bz):
        assert read_and_conform(path, make_contract(ORDERS)).table.column("id").to_pylist() == [
            1,
            2,
        ]


def test_truncated_gzip_is_unreadable(tmp_path: Path) -> None:
    text = "id,amount,country\n" + "1,2,FR\n" * 50_000
    path = write(tmp_path, "o.csv.gz", gzip.compress(text.encode())[:-200])
    with pytest.raises(UnreadableFileError, match=r"o\.csv\.gz: cannot read"):
        read_and_conform(path, make_contract(ORDERS))


def test_corrupt_parquet_is_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "o.parquet", b"PAR1 this is not parquet at all")
    with pytest.raises(UnreadableFileError, match="cannot read as parquet"):
        read_and_conform(path, make_contract(ORDERS))


def test_corrupt_json_lines_are_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "o.jsonl", '{"id": 1}\n{"id": \n')
    with pytest.raises(UnreadableFileError, match="cannot read as jsonl"):
        read_and_conform(path, make_contract(ORDERS[:1]))


def test_nested_parquet_values_become_json_text(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": [1, 2], "tags": [["a", "b"], None]}), path)
    table = read_and_conform(path, make_contract(ORDERS[:1])).table
    assert table.column("tags").to_pylist() == ['["a", "b"]', None]
