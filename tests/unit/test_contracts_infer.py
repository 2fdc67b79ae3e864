"""Contract inference: names kept verbatim, Arrow types, nullability, cautious checks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hopper.contracts import Contract, dump_contract, infer_contract, load_contract, validate_file
from hopper.contracts.infer import preamble_lines, text_encoding
from hopper.contracts.model import ReaderOptions
from hopper.errors import ConfigError, UnreadableFileError


def messy_csv(rows: int = 60) -> str:
    lines = ["Order ID,Customer Name,amount (€),status,placed on,flag"]
    for i in range(rows):
        amount = "NA" if i % 7 == 0 else f"{i * 1.5}"
        status = ["open", "paid", "shipped"][i % 3]
        lines.append(f"{i},Customer {i},{amount},{status},2024-01-{i % 28 + 1:02d},{i % 2 == 0}")
    return "\n".join(lines) + "\n"


def test_infer_messy_csv(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(messy_csv(), encoding="utf-8")
    contract = infer_contract(path, "orders")
    columns = {c.name: c for c in contract.columns}
    assert list(columns) == [
        "Order ID",
        "Customer Name",
        "amount (€)",
        "status",
        "placed on",
        "flag",
    ]
    assert {name: c.type for name, c in columns.items()} == {
        "Order ID": "int64",
        "Customer Name": "string",
        "amount (€)": "float64",
        "status": "string",
        "placed on": "date32",
        "flag": "bool",
    }
    assert columns["Order ID"].nullable is False
    assert columns["amount (€)"].nullable is True
    assert columns["status"].allowed == ["open", "paid", "shipped"]
    assert columns["Customer Name"].allowed is None  # every value distinct
    assert all(c.min is None and c.max is None for c in contract.columns)
    assert contract.format == "csv" and contract.reader.delimiter is None
    assert validate_file(path, contract) == []


def test_inferred_contract_round_trips_through_yaml(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(messy_csv(), encoding="utf-8")
    contract = infer_contract(path, "orders")
    yaml_path = tmp_path / "orders.yaml"
    yaml_path.write_text(dump_contract(contract), encoding="utf-8")
    assert load_contract(yaml_path) == contract


def test_allowed_needs_enough_rows(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text(messy_csv(rows=20), encoding="utf-8")
    assert infer_contract(path, "orders").column("status").allowed is None


def test_infer_bom_semicolon_and_latin1(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffname;value\nx;1\n".encode())
    contract = infer_contract(bom, "bom")
    assert [c.name for c in contract.columns] == ["name", "value"]
    assert contract.reader.delimiter == ";"
    latin = tmp_path / "latin.csv"
    latin.write_bytes("ville,code\nMérignac,33700\nSète,34200\n".encode("latin-1"))
    contract = infer_contract(latin, "latin")
    assert contract.reader.encoding == "latin-1"
    assert validate_file(latin, contract) == []


def test_infer_empty_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFileError, match="empty"):
        infer_contract(empty, "empty")
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    contract = infer_contract(header, "header")
    assert [(c.name, c.type, c.nullable) for c in contract.columns] == [
        ("a", "string", True),
        ("b", "string", True),
    ]


def test_infer_gzipped_json_lines_and_parquet(tmp_path: Path) -> None:
    rows = [{"id": i, "at": "2024-01-01T10:00:00Z", "tags": ["a"]} for i in range(3)]
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    contract = infer_contract(path, "events")
    assert contract.format == "jsonl"
    assert [(c.name, c.type) for c in contract.columns] == [
        ("id", "int64"),
        ("at", "timestamp[s]"),  # Arrow JSON normalises "Z" times to naive UTC
        ("tags", "string"),
    ]
    assert validate_file(path, contract) == []
    parquet = tmp_path / "p.parquet"
    table = pa.table({"d": pa.array([1.5, None]), "n": pa.array([1, 2], pa.int16())})
    pq.write_table(table, parquet)
    contract = infer_contract(parquet, "p")
    assert [(c.name, c.type, c.nullable) for c in contract.columns] == [
        ("d", "float64", True),
        ("n", "int16", False),
    ]


def test_infer_sample_rows_limits_the_sample(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("id,note\n1,a\n2,b\n3,\n", encoding="utf-8")
    assert infer_contract(path, "orders", sample_rows=2).column("note").nullable is False
    assert infer_contract(path, "orders").column("note").nullable is True


def test_infer_rejects_bad_dataset_name(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("id\n1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="Bad Name"):
        infer_contract(path, "Bad Name")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2012/01/01", "2012/01/02", "2015/12/31"], ("date32", "%Y/%m/%d")),
        (["Jan 1 2000", "Feb 12 2000", "Dec 31 2010"], ("date32", "%b %d %Y")),
        (["25.12.2024", "01.02.2024"], ("date32", "%d.%m.%Y")),
        (["25/12/2024", "01/02/2024"], ("date32", "%d/%m/%Y")),  # day 25: day-first
        (["12/25/2024", "01/02/2024"], ("date32", "%m/%d/%Y")),  # day 25: month-first
        (["2024/05/01 10:30:00", "2024/05/02 23:59:59"], ("timestamp[s]", "%Y/%m/%d %H:%M:%S")),
        (["01/05/2024 10:30", "28/05/2024 08:00"], ("timestamp[s]", "%d/%m/%Y %H:%M")),
    ],
)
def test_infer_proposes_date_formats_arrow_does_not_read(
    tmp_path: Path, values: list[str], expected: tuple[str, str]
) -> None:
    path = tmp_path / "d.csv"
    path.write_text("when,label\n" + "".join(f"{v},x{i}\n" for i, v in enumerate(values)))
    contract = infer_contract(path, "d")
    when, label = contract.columns
    assert (when.type, when.format) == expected
    assert (label.type, label.format) == ("string", None)
    assert validate_file(path, _as_saved(tmp_path, contract)) == []


def test_infer_leaves_dates_that_read_both_ways_as_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "d.csv"
    path.write_text("when\n01/02/2024\n03/04/2024\n12/11/2024\n")
    (when,) = infer_contract(path, "d").columns
    assert (when.type, when.format) == ("string", None)
    assert "day-first and month-first" in caplog.text


def test_infer_does_not_take_a_date_with_a_stray_value_for_a_date(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("when\n2012/01/01\n2012/01/02\nsoon\n")
    (when,) = infer_contract(path, "d").columns
    assert (when.type, when.format) == ("string", None)


def _as_saved(tmp_path: Path, contract: Contract) -> Contract:
    """The contract as a user gets it: dumped to YAML by `hopper contract infer`, then loaded."""
    saved = tmp_path / "contract.yaml"
    saved.write_text(dump_contract(contract))
    return load_contract(saved)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_infer_reads_unicode_text_with_a_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "export.txt"
    text = "id\tname\tscore\r\n1\tAdé\t9.5\r\n2\tZoë\t3\r\n"
    bom = {"utf-16-be": "\ufeff"}.get(encoding, "")  # utf-16 and utf-32 write their own
    path.write_bytes((bom + text).encode(encoding))
    contract = infer_contract(path, "export")
    assert contract.reader.encoding in ("utf-16", "utf-32")
    assert [(c.name, c.type) for c in contract.columns] == [
        ("id", "int64"),
        ("name", "string"),
        ("score", "float64"),
    ]
    assert validate_file(path, _as_saved(tmp_path, contract)) == []


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("id,name\n1,Zoë\n".encode(), "utf-8"),
        ("id,name\n1,Zoë".encode()[:-1], "utf-8"),  # a sample cut inside a character
        ("id,price\n1,5 €\n".encode("cp1252"), "cp1252"),
        (b"id,name\n1,\x81\xe9\n", "latin-1"),  # 0x81 means nothing in Windows-1252
        ("id\n1\n".encode("utf-16"), "utf-16"),
    ],
)
def test_text_encoding_is_judged_from_the_first_bytes(head: bytes, expected: str) -> None:
    assert text_encoding(head) == expected


def test_infer_picks_windows_1252_for_a_spreadsheet_export(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_bytes("item;price\nCafé;3 €\nThé;2 €\n".encode("cp1252"))
    contract = infer_contract(path, "prices")
    assert contract.reader.encoding == "cp1252"
    assert validate_file(path, _as_saved(tmp_path, contract)) == []


@pytest.mark.parametrize(
    ("text", "skipped"),
    [
        ("# exported 2024-05-01\n# by the shop\nid,v\n1,2\n3,4\n", 2),
        ("Title line\nGenerated on Monday\n\nid;v\n1;2\n3;4\n", 2),
        ("\n\nid\tv\n1\t2\n3\t4\n", 0),  # blank lines alone: Arrow skips them itself
        ("id,v\n1,2\n3,4\n", 0),  # nothing above the header
    ],
)
def test_infer_skips_comment_and_title_lines_above_the_header(
    tmp_path: Path, text: str, skipped: int
) -> None:
    path = tmp_path / "report.csv"
    path.write_text(text)
    contract = infer_contract(path, "report")
    assert contract.reader.skip_rows == skipped
    assert [c.name for c in contract.columns] == ["id", "v"]
    assert validate_file(path, _as_saved(tmp_path, contract)) == []


@pytest.mark.parametrize(
    "text",
    [
        "id,v,w\n1,2\n3,4,5\n",  # ragged rows are the file's own problem
        "Totals, by region\nid,v\n1,2\n3,4\n",  # a title with a delimiter is not guessed at
        "# a comment\nid\n1\n2\n",  # one column: nothing to tell a header by
    ],
)
def test_no_preamble_is_guessed_without_clear_evidence(text: str) -> None:
    assert preamble_lines(text.encode(), ReaderOptions(), "csv") == 0
