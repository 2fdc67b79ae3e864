"""``bad_rows: rescue``: bad values become null (or the default), the row stays, and the value
as read goes into ``_rescued_data`` — whole or streamed, in a Parquet or an Iceberg lake."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import load_catalog

import hopper.contracts.stream as stream_module
from hopper.config import HopperConfig, load_config
from hopper.contracts import Contract, load_contract, read_and_conform, validate_file
from hopper.contracts.rescue import RESCUE_MAX_CHARS
from hopper.contracts.stream import StreamingConform
from hopper.errors import ConfigError, ContractViolation
from hopper.ingest import ingest
from hopper.ledger import Ledger, sqlite_url
from hopper.lineage import INGESTED_AT, RESCUED_DATA, RESERVED_COLUMNS, SOURCE_URI
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from hopper.tables import land
from tests.conftest import ICEBERG_LAKE, drop_file, make_home
from tests.unit.test_streaming import orders_contract, orders_csv

ROWS = 3000
ORDERS = [
    {"name": "id", "type": "int64", "nullable": False},
    {"name": "qty", "type": "int32", "min": 1, "default": 1},
    {"name": "price", "type": "float64", "min": 0},
    {"name": "region", "type": "string", "allowed": ["EU", "US"], "rename": "zone"},
    {"name": "sku", "type": "string", "pattern": "[A-Z]{3}-[0-9]{4}"},
]
HEADER = "id,qty,price,region,sku"


def contract(columns: list[dict[str, Any]] = ORDERS, **options: Any) -> Contract:
    return Contract.model_validate(
        {"name": "orders", "columns": columns, "bad_rows": "rescue", **options}
    )


def csv(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "o.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def rescued(table: pa.Table) -> list[dict[str, Any] | None]:
    """``_rescued_data`` parsed, row by row."""
    return [None if v is None else json.loads(v) for v in table.column(RESCUED_DATA).to_pylist()]


def test_a_value_that_does_not_convert_is_nulled_and_kept_as_read(tmp_path: Path) -> None:
    path = csv(tmp_path, ["1,2,1.5,EU,ABC-0001", "2,3,twelve,US,ABC-0002"])
    result = read_and_conform(path, contract())
    assert result.table.column("price").to_pylist() == [1.5, None]
    assert result.table.column("id").to_pylist() == [1, 2]  # the row is kept
    assert rescued(result.table) == [None, {"price": "twelve"}]
    assert result.table.schema.field(RESCUED_DATA).type == pa.string()
    assert (result.rows_in, result.rows_out, result.rows_rescued) == (2, 2, 1)
    assert result.rejected is None
    (violation,) = result.violations  # still reported, as with quarantine
    assert (violation.column, violation.kind, violation.rows) == ("price", "type", [2])


def test_values_that_fail_their_checks_are_rescued(tmp_path: Path) -> None:
    rows = ["1,2,-3.5,EU,ABC-0001", "2,3,4,MARS,abc-1", "3,4,5,US,ABC-0003"]
    result = read_and_conform(csv(tmp_path, rows), contract())
    table = result.table
    assert table.column("price").to_pylist() == [None, 4.0, 5.0]  # min 0
    assert table.column("zone").to_pylist() == ["EU", None, "US"]  # allowed
    assert table.column("sku").to_pylist() == ["ABC-0001", None, "ABC-0003"]  # pattern
    # Keys are the columns' names in the file (region, not its rename), in contract order.
    assert table.column(RESCUED_DATA).to_pylist() == [
        '{"price":"-3.5"}',
        '{"region":"MARS","sku":"abc-1"}',
        None,
    ]
    assert result.rows_rescued == 2


def test_the_default_replaces_a_rescued_value_when_declared(tmp_path: Path) -> None:
    status = {"name": "status", "type": "string", "nullable": False, "default": "new"}
    columns = [*ORDERS, {**status, "allowed": ["new", "paid"]}]
    rows = ["1,0,1,EU,ABC-0001,paid", "2,lots,1,EU,ABC-0002,", "3,5,1,EU,ABC-0003,lost"]
    table = read_and_conform(
        csv(tmp_path, rows, header=HEADER + ",status"), contract(columns)
    ).table
    assert table.column("qty").to_pylist() == [1, 1, 5]  # min 1 and a type failure: default 1
    # Not nullable, but with a default: its bad value is rescued too (a null is just filled).
    assert table.column("status").to_pylist() == ["paid", "new", "new"]
    assert rescued(table) == [{"qty": "0"}, {"qty": "lots"}, {"status": "lost"}]


def test_a_unique_column_rescues_duplicates_to_null_never_to_its_default(tmp_path: Path) -> None:
    columns = [*ORDERS[:4], {"name": "sku", "type": "string", "unique": True, "default": "none"}]
    rows = ["1,1,1,EU,A", "2,1,1,EU,B", "3,1,1,EU,A"]
    table = read_and_conform(csv(tmp_path, rows), contract(columns)).table
    assert table.column("sku").to_pylist() == [None, "B", None]
    assert rescued(table) == [{"sku": "A"}, None, {"sku": "A"}]


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (
            ["1,1,1,EU,ABC-0001", "x,1,1,EU,ABC-0002"],
            "'id''s bad value(s) would be rescued as null",
        ),
        (["1,1,1,EU,ABC-0001", ",1,1,EU,ABC-0002"], "'id' has null value(s) but is not nullable"),
    ],
)
def test_a_non_nullable_column_without_default_still_refuses_the_file(
    tmp_path: Path, rows: list[str], why: str
) -> None:
    with pytest.raises(ContractViolation) as caught:
        read_and_conform(csv(tmp_path, rows), contract())
    message = str(caught.value)
    assert "bad_rows: rescue cannot keep these rows: column " + why in message
    assert "give the column a default, make it nullable, or use bad_rows: quarantine" in message
    assert [v["column"] for v in caught.value.violations] == ["id"]


def test_a_non_nullable_unique_column_cannot_be_rescued(tmp_path: Path) -> None:
    columns = [{**ORDERS[0], "unique": True, "default": 0}, *ORDERS[1:]]
    rows = ["1,1,1,EU,ABC-0001", "1,1,1,EU,ABC-0002"]
    with pytest.raises(ContractViolation, match="not nullable and unique"):
        read_and_conform(csv(tmp_path, rows), contract(columns))


def test_a_column_none_of_whose_values_converts_still_refuses_the_file(tmp_path: Path) -> None:
    rows = ["1,1,cheap,EU,ABC-0001", "2,1,dear,EU,ABC-0002"]
    with pytest.raises(ContractViolation, match="'price' changed type"):
        read_and_conform(csv(tmp_path, rows), contract())


def test_a_default_that_fails_its_own_check_does_not_load() -> None:
    bad = [{**ORDERS[0]}, {"name": "qty", "type": "int32", "min": 1, "default": 0}]
    with pytest.raises(ValueError, match=r"column 'qty': rescue writes its default 0 .* below min"):
        contract(bad)
    Contract.model_validate({"name": "orders", "columns": bad})  # fine without rescue


ODD = [
    'say "hi"',
    "back\\slash, and a comma",
    "tab\there",
    "two\nlines",
    "bell\x07 and unit\x1f",
    "café ☕ 😀 \u2028 עברית",
    '{"already": ["json"]}',
    "None of the above",
    "é" * (RESCUE_MAX_CHARS + 500),
]


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@pytest.mark.parametrize("streamed", [False, True])
def test_odd_values_are_escaped_as_json_and_cut_to_a_thousand_characters(
    tmp_path: Path, streamed: bool
) -> None:
    header = 'id,"la""bel ✓"'
    good = [f"{i},abc" for i in range(1, 101)]  # the odd rows span several blocks
    odd = [f"{i},{_quoted(value)}" for i, value in enumerate(ODD, 101)]
    rows = [*good, *odd, *good]
    path = csv(tmp_path, rows, header=header)
    columns = [ORDERS[0], {"name": 'la"bel ✓', "type": "string", "pattern": "[a-z]+"}]
    wanted = contract(columns, stream_threshold_mb=0)
    if streamed:
        stream = StreamingConform(path, wanted, block_size=4096)
        table = pa.concat_tables(list(stream))
        assert stream.blocks > 1 and stream.rows_rescued == len(ODD)
    else:
        table = read_and_conform(path, wanted).table
    values = [row and row['la"bel ✓'] for row in rescued(table)]
    assert values == [*[None] * 100, *(value[:RESCUE_MAX_CHARS] for value in ODD), *[None] * 100]
    assert len(values[100 + len(ODD) - 1]) == RESCUE_MAX_CHARS  # characters, not bytes
    assert table.column('la"bel ✓').null_count == len(ODD)


def test_a_converted_value_is_kept_as_its_value_not_its_spelling(tmp_path: Path) -> None:
    # Whether a numeric column is read as text depends on other rows (here: "later"), so a
    # value that converts is kept in Arrow's spelling, whatever the rest of the file holds.
    alone = read_and_conform(csv(tmp_path, ["1,-01,1,EU,ABC-0001"], name="a.csv"), contract())
    rows = ["1,-01,1,EU,ABC-0001", "2,later,1,EU,ABC-0002"]
    mixed = read_and_conform(csv(tmp_path, rows, name="b.csv"), contract())
    assert rescued(alone.table) == [{"qty": "-1"}]
    assert rescued(mixed.table) == [{"qty": "-1"}, {"qty": "later"}]


def test_a_json_lines_file_is_rescued_too(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    rows: list[dict[str, Any]] = [
        {"id": 1, "qty": 2, "price": 1.5, "region": "EU", "sku": "ABC-0001"},
        {"id": 2, "qty": "two", "price": -1, "region": "US", "sku": "ABC-0002"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    table = read_and_conform(path, contract()).table
    assert rescued(table) == [None, {"qty": "two", "price": "-1"}]
    assert table.column("qty").to_pylist() == [2, 1]


def test_hopper_validate_still_lists_what_rescue_would_rescue(tmp_path: Path) -> None:
    found = validate_file(csv(tmp_path, ["1,1,x,EU,ABC-0001", "2,1,2,EU,ABC"]), contract())
    assert [(v.column, v.kind) for v in found] == [("price", "type"), ("sku", "pattern")]


# Reserved name


def test_rescued_data_is_a_reserved_name() -> None:
    assert RESCUED_DATA == "_rescued_data" and RESCUED_DATA in RESERVED_COLUMNS
    with pytest.raises(ValueError, match="Hopper writes itself"):
        contract([*ORDERS, {"name": "_Rescued_Data", "type": "string"}])


@pytest.mark.parametrize("bad_rows", ["reject", "quarantine", "rescue"])
def test_a_file_bringing_rescued_data_is_refused(tmp_path: Path, bad_rows: str) -> None:
    path = csv(tmp_path, ["1,1,1,EU,ABC-0001,forged"], header=HEADER + ",_rescued_data")
    with pytest.raises(ContractViolation, match="'_rescued_data' \\[extra_column\\]: the name"):
        read_and_conform(path, contract(bad_rows=bad_rows))


def test_other_datasets_do_not_get_the_column(tmp_path: Path) -> None:
    path = csv(tmp_path, ["1,1,1,EU,ABC-0001", "2,1,x,EU,ABC-0002"])
    result = read_and_conform(path, contract(bad_rows="quarantine"))
    assert RESCUED_DATA not in result.table.column_names and result.rows_rescued == 0


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return f"{name}:apply"


def test_a_transform_sees_the_column_and_it_is_written_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _module(
        tmp_path, monkeypatch, "rescue_keep", "def apply(frame):\n    return frame.iloc[::-1]\n"
    )
    wanted = contract(
        transform=spec, transform_input="pandas", derived=[{"name": "d", "expr": "qty"}]
    )
    rows = ["1,1,1,EU,ABC-0001", "2,1,x,EU,ABC-0002", "3,1,1,EU,ABC-0003"]
    table = read_and_conform(csv(tmp_path, rows), wanted).table
    assert table.column_names[-2:] == ["d", RESCUED_DATA]
    assert table.schema.field(RESCUED_DATA).type == pa.string()
    assert rescued(table) == [None, {"price": "x"}, None]


def test_a_transform_that_loses_the_column_refuses_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "def apply(table):\n    return table.drop_columns(['_rescued_data'])\n"
    spec = _module(tmp_path, monkeypatch, "rescue_lose", body)
    with pytest.raises(ContractViolation, match=r"0 column\(s\) '_rescued_data'.*rescue_lose"):
        rows = ["1,1,x,EU,ABC-0001", "2,1,2,EU,ABC-0002"]
        read_and_conform(csv(tmp_path, rows), contract(transform=spec))


def test_a_transform_cannot_forge_the_column_of_another_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "def apply(table):\n    return table.append_column('_rescued_data', table['sku'])\n"
    spec = _module(tmp_path, monkeypatch, "rescue_forge", body)
    path = csv(tmp_path, ["1,1,1,EU,ABC-0001"])
    wanted = contract(bad_rows="reject", transform=spec)
    with pytest.raises(ContractViolation, match="only for bad_rows: rescue"):
        read_and_conform(path, wanted)
    (found,) = validate_file(path, wanted)
    assert found.kind == "transform" and "only for bad_rows: rescue" in found.message


# Ingestion: outcome, Parquet lake, streaming, Iceberg table


_drop = drop_file


def _ingest(home: HopperConfig, ref: FileRef) -> IngestOutcome:
    # In this process: the streaming test shrinks the block size by patching this module.
    return ingest(IngestRequest(ref=ref, dispatch_id="d"), home, isolate=False)


BAD = {
    5: "5,01/01/2024,-01,1.0,EU,n,1",  # qty below min 0 (text -01): default 1, kept as -1
    1500: "1500,01/01/2024,4,oops,MARS,n,1",  # price does not convert, region not allowed
    2990: '2990,01/01/2024,4,"1,5",US,n,1',  # price does not convert
}


def test_whole_and_streamed_files_land_the_same_rescued_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "STREAM_BLOCK_BYTES", 4096)
    home = load_config(
        make_home(
            tmp_path,
            {
                "whole": orders_contract("whole", bad_rows="rescue"),
                "streamed": orders_contract(
                    "streamed", bad_rows="rescue", extra="stream_threshold_mb: 0\n"
                ),
            },
        )
    )
    text = orders_csv(bad=BAD)
    whole = _ingest(home, _drop(home, "whole", "orders.csv", text))
    streamed = _ingest(home, _drop(home, "streamed", "orders.csv", text))
    for outcome in (whole, streamed):
        assert outcome.state is FileState.INGESTED
        assert (outcome.rows_in, outcome.rows_out, outcome.rows_rescued) == (ROWS, ROWS, 3)
        assert outcome.rows_rejected == 0 and outcome.schema_[RESCUED_DATA] == "string"
    tables = [
        pq.read_table(o.outputs[0]).drop_columns([INGESTED_AT, SOURCE_URI])
        for o in (whole, streamed)
    ]
    assert tables[0].schema == tables[1].schema
    assert tables[0].to_pylist() == tables[1].to_pylist()
    table = tables[1]
    assert table.column_names[-3:] == ["total", "label", RESCUED_DATA]  # after derived
    found = {i + 1: row for i, row in enumerate(rescued(table)) if row is not None}
    assert found == {
        5: {"qty": "-1"},
        1500: {"price": "oops", "region": "MARS"},
        2990: {"price": "1,5"},
    }
    assert table.column("qty")[4].as_py() == 1 and table.column("region")[1499].as_py() is None


def test_a_value_rescue_cannot_keep_quarantines_the_streamed_file_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "STREAM_BLOCK_BYTES", 4096)
    extra = "stream_threshold_mb: 0\n"
    home = load_config(
        make_home(tmp_path, {"s": orders_contract("s", bad_rows="rescue", extra=extra)})
    )
    outcome = _ingest(
        home, _drop(home, "s", "o.csv", orders_csv(bad={ROWS: ",01/01/2024,4,2.0,US,n,1"}))
    )
    assert outcome.state is FileState.QUARANTINED
    assert "order id" in (outcome.reason or "")
    reason = json.loads(Path(f"{outcome.quarantine_path}.error.json").read_text())["reason"]
    assert "bad_rows: rescue cannot keep these rows: column 'order id' has null" in reason
    assert not [p for p in Path(home.lake.path).rglob("*") if p.is_file()]


def test_the_parquet_lake_has_the_column_and_the_outcome_counts(tmp_path: Path) -> None:
    people = (
        "name: people\ncolumns:\n  - {name: id, type: int64}\n  - {name: score, type: float64}\n"
    )
    home = load_config(
        make_home(
            tmp_path,
            {"people": people + "bad_rows: rescue\n", "plain": people.replace("people", "plain")},
        )
    )
    text = "id,score\n1,1.5\n2,n/a?\n3,2\n"
    outcome = _ingest(home, _drop(home, "people", "p.csv", text))
    assert (outcome.rows_in, outcome.rows_out, outcome.rows_rescued) == (3, 3, 1)
    lake = pq.read_table(outcome.outputs[0])
    assert lake.column_names == ["id", "score", RESCUED_DATA, SOURCE_URI, INGESTED_AT]
    assert lake.column(RESCUED_DATA).to_pylist() == [None, '{"score":"n/a?"}', None]
    assert lake.column("score").to_pylist() == [1.5, None, 2.0]
    assert IngestOutcome.model_validate_json(outcome.model_dump_json()).rows_rescued == 1
    plain = _ingest(home, _drop(home, "plain", "p.csv", "id,score\n1,1.5\n"))
    assert RESCUED_DATA not in pq.read_table(plain.outputs[0]).column_names  # unchanged schema


def test_a_rescued_row_lands_in_the_iceberg_table_with_its_rescued_data(tmp_path: Path) -> None:
    people = (
        "name: people\ncolumns:\n  - {name: id, type: int64}\n  - {name: score, type: float64}\n"
    )
    home = load_config(
        make_home(tmp_path, {"people": people + "bad_rows: rescue\n"}, lake=ICEBERG_LAKE)
    )
    ref = _drop(home, "people", "p.csv", 'id,score\n1,1.5\n2,"9,5"\n')
    ledger = Ledger(sqlite_url(home.state_dir))
    try:
        ledger.record_detected(ref)
        assert ledger.claim(ref, "run-d1", replay=True)
        (outcome,) = land(home, ledger, [_ingest(home, ref)], "d1")
        ledger.finish_many([outcome], "run-d1")
    finally:
        ledger.close()
    assert outcome.state is FileState.INGESTED and outcome.rows_rescued == 1
    catalog = load_catalog("hopper", type="sql", uri=f"sqlite:///{home.state_dir / 'catalog.db'}")
    table = catalog.load_table("hopper.people")
    assert str(table.schema().find_field(RESCUED_DATA).field_type) == "string"
    rows = table.scan().to_arrow().sort_by("id")
    assert rows.column("score").to_pylist() == [1.5, None]
    assert rows.column(RESCUED_DATA).to_pylist() == [None, '{"score":"9,5"}']


def test_load_contract_reads_rescue(tmp_path: Path) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(orders_contract("orders", bad_rows="rescue"), encoding="utf-8")
    assert load_contract(path).bad_rows == "rescue"
    path.write_text(orders_contract("orders", bad_rows="salvage"), encoding="utf-8")
    with pytest.raises(ConfigError, match="bad_rows"):
        load_contract(path)
