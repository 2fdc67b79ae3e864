"""Partition keys: parsing ``partition_by`` entries, their values, and the folders they make."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from hopper.contracts import Contract, dump_contract, load_contract, read_and_conform
from hopper.contracts.partitions import PartitionKey, parse_partition, partition_values
from hopper.contracts.stream import StreamingConform
from hopper.errors import ContractViolation
from hopper.sink import StreamingOutputs, write_outputs

URI = "file:///inbox/orders/o.csv"
NEW_YORK = dt.timezone(dt.timedelta(hours=-4))  # EDT, as America/New_York in May
TOKYO = dt.timezone(dt.timedelta(hours=9))


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "source", "transform", "name"),
    [
        ("region", "region", "identity", "region"),
        ("unit price", "unit price", "identity", "unit price"),
        ("day(order_ts)", "order_ts", "day", "order_ts_day"),
        ("day( order_ts )", "order_ts", "day", "order_ts_day"),
        (" month (created_at) ", "created_at", "month", "created_at_month"),
        ("year(shipped)", "shipped", "year", "shipped_year"),
        ("identity(region)", "region", "identity", "region"),
        ("identity(price (EUR))", "price (EUR)", "identity", "price (EUR)"),
        ("_ingest_date", "_ingest_date", "identity", "_ingest_date"),
    ],
)
def test_parse_partition(text: str, source: str, transform: str, name: str) -> None:
    key = parse_partition(text)
    assert (key.source, key.transform, key.name) == (source, transform, name)
    assert parse_partition(key.text) == key


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("week(x)", "unknown transform 'week'"),
        ("bucket(4, x)", "unknown transform 'bucket'"),
        ("day(x", "is not"),
        ("x)", "is not"),
        ("", "is not"),
        ("  ", "is not"),
        ("day()", "takes one column name"),
        ("day(a, b)", "takes one column name"),
        ("month(day(x))", "takes one column name"),
    ],
)
def test_bad_entries_name_the_allowed_forms(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"year\(column\), month\(column\) or day\(column\)") as e:
        parse_partition(text)
    assert problem in str(e.value)


# --------------------------------------------------------------------------- values


def _values(column: pa.Array, *transforms: Any) -> dict[str, list[Any]]:
    keys = [PartitionKey("c", t) for t in transforms]
    values: dict[str, list[Any]] = partition_values(pa.table({"c": column}), keys).to_pydict()
    return values


def test_values_of_a_date_column() -> None:
    dates = pa.array([dt.date(2024, 5, 1), dt.date(1969, 12, 31), None], pa.date32())
    values = _values(dates, "day", "month", "year", "identity")
    assert values == {
        "c_day": [dt.date(2024, 5, 1), dt.date(1969, 12, 31), None],
        "c_month": ["2024-05", "1969-12", None],
        "c_year": [2024, 1969, None],
        "c": [dt.date(2024, 5, 1), dt.date(1969, 12, 31), None],
    }
    stamps = pa.table({"c": pa.array([dt.datetime(2024, 5, 1)], pa.timestamp("ms"))})
    keys = [PartitionKey("c", "day"), PartitionKey("c", "month"), PartitionKey("c", "year")]
    assert partition_values(stamps, keys).schema == pa.schema(
        [("c_day", pa.date32()), ("c_month", pa.string()), ("c_year", pa.int32())]
    )


def test_values_of_a_naive_timestamp_are_taken_as_they_are() -> None:
    stamps = pa.array(
        [dt.datetime(2024, 4, 30, 23, 59, 59), dt.datetime(1969, 12, 31, 23, 0), None],
        pa.timestamp("us"),
    )
    values = _values(stamps, "day", "month", "year")
    assert values == {
        "c_day": [dt.date(2024, 4, 30), dt.date(1969, 12, 31), None],
        "c_month": ["2024-04", "1969-12", None],
        "c_year": [2024, 1969, None],
    }


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_values_of_a_zoned_timestamp_are_taken_in_utc(unit: str) -> None:
    # Late on 30 April in New York is already 1 May in UTC; early on New Year's day in
    # Tokyo is still the old year in UTC. The zone of the column must not matter.
    stamps = [
        dt.datetime(2024, 4, 30, 22, 30, tzinfo=NEW_YORK),
        dt.datetime(2024, 1, 1, 1, 0, tzinfo=TOKYO),
        None,
    ]
    for zone in ("America/New_York", "Asia/Tokyo", "UTC"):
        values = _values(pa.array(stamps, pa.timestamp(unit, tz=zone)), "day", "month", "year")
        assert values == {
            "c_day": [dt.date(2024, 5, 1), dt.date(2023, 12, 31), None],
            "c_month": ["2024-05", "2023-12", None],
            "c_year": [2024, 2023, None],
        }


def test_values_agree_with_iceberg_transforms() -> None:
    transforms = pytest.importorskip("pyiceberg.transforms")
    types = pytest.importorskip("pyiceberg.types")
    stamps = [
        dt.datetime(2024, 4, 30, 22, 30, tzinfo=NEW_YORK),
        dt.datetime(2024, 1, 1, 1, 0, tzinfo=TOKYO),
        dt.datetime(1969, 12, 31, 23, 59, tzinfo=dt.UTC),
        dt.datetime(1900, 2, 28, 12, 0, tzinfo=dt.UTC),
    ]
    ours = _values(pa.array(stamps, pa.timestamp("us", tz="Asia/Tokyo")), "day", "month", "year")
    iceberg = {
        "c_day": transforms.DayTransform(),
        "c_month": transforms.MonthTransform(),
        "c_year": transforms.YearTransform(),
    }
    source = types.TimestamptzType()
    for name, transform in iceberg.items():
        expected = [
            transform.to_human_string(source, transform.transform(source)(s)) for s in stamps
        ]
        assert [str(v) for v in ours[name]] == expected, name


def test_a_transform_of_a_column_that_is_not_a_date_is_a_contract_violation() -> None:
    table = pa.table({"ts": ["2024-05-01"]})
    with pytest.raises(ContractViolation, match=r"column 'ts' is string, not a date") as e:
        partition_values(table, [parse_partition("day(ts)")])
    assert e.value.violations[0]["column"] == "ts"
    with pytest.raises(ContractViolation, match=r"column 'nope' is not in the output"):
        partition_values(table, [parse_partition("month(nope)")])
    assert partition_values(table, [parse_partition("ts")]).column_names == ["ts"]


# --------------------------------------------------------------------------- contracts

COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "type": "int64"},
    {"name": "region", "type": "string"},
    {"name": "ts", "type": "timestamp[us, tz=UTC]"},
    {"name": "shipped", "type": "date32"},
]


def make_contract(**options: Any) -> Contract:
    return Contract.model_validate({"name": "orders", "columns": COLUMNS, **options})


def test_contract_partition_keys_and_yaml_round_trip(tmp_path: Path) -> None:
    contract = make_contract(partition_by=["region", "day(ts)", "month( shipped )", "_ingest_date"])
    assert [(k.source, k.transform) for k in contract.partition_keys] == [
        ("region", "identity"),
        ("ts", "day"),
        ("shipped", "month"),
        ("_ingest_date", "identity"),
    ]
    path = tmp_path / "orders.yaml"
    path.write_text(dump_contract(contract), encoding="utf-8")
    assert load_contract(path) == contract
    assert make_contract(partition_by=["year(_ingest_date)"]).partition_keys[0].name == (
        "_ingest_date_year"
    )


@pytest.mark.parametrize(
    ("partition_by", "message"),
    [
        (["week(ts)"], r"\[0\] .*unknown transform 'week'.*day\(column\)"),
        (["region", "day(ts"], r"\[1\] .*is not a column name"),
        (["day(region)"], r"column 'region' is string, not a date or timestamp"),
        (["day(id)"], r"column 'id' is int64"),
        (["day(nope)"], r"unknown output columns \['nope'\]"),
        (["day(ts)", "day( ts )"], r"make the same partition"),
        (["ts_day", "day(ts)"], r"make the same partition"),
        (["region", "region"], r"make the same partition"),
    ],
)
def test_bad_partition_by_is_a_validation_error(partition_by: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_contract(partition_by=partition_by)


def test_a_partition_name_may_not_repeat_an_output_column() -> None:
    columns = [*COLUMNS, {"name": "TS_Day", "type": "string"}]
    with pytest.raises(ValidationError, match=r"folders named 'ts_day', but 'TS_Day' is an"):
        Contract.model_validate({"name": "o", "columns": columns, "partition_by": ["day(ts)"]})
    dropped = Contract.model_validate(
        {"name": "o", "columns": columns, "drop": ["TS_Day"], "partition_by": ["day(ts)"]}
    )
    assert dropped.partition_keys[0].name == "ts_day"
    with pytest.raises(ValidationError, match=r"\['day\(ts\)'\] are also in drop"):
        make_contract(drop=["ts"], partition_by=["day(ts)"])


def test_a_derived_column_of_the_wrong_type_is_refused_when_the_file_is_read(
    tmp_path: Path,
) -> None:
    contract = make_contract(
        derived=[{"name": "label", "expr": "upper(region)"}], partition_by=["day(label)"]
    )
    path = tmp_path / "o.csv"
    path.write_text(CSV, encoding="utf-8")
    with pytest.raises(ContractViolation, match=r"o\.csv: partition_by 'day\(label\)': column "):
        read_and_conform(path, contract)


def test_a_month_of_the_ingest_date_keeps_the_ingest_date_column(tmp_path: Path) -> None:
    contract = make_contract(partition_by=["month(_ingest_date)"])
    path = tmp_path / "o.csv"
    path.write_text(CSV, encoding="utf-8")
    when = dt.datetime(2024, 5, 31, 23, 0, tzinfo=NEW_YORK)  # 1 June in UTC
    table = read_and_conform(path, contract, ingested_at=when).table
    assert set(table.column("_ingest_date").to_pylist()) == {dt.date(2024, 6, 1)}
    values = partition_values(table, contract.partition_keys)
    assert values.to_pydict() == {"_ingest_date_month": ["2024-06"] * 4}


# --------------------------------------------------------------------------- the lake

CSV = (
    "id,region,ts,shipped\n"
    "1,EU,2024-05-01T08:00:00Z,2024-05-03\n"
    "2,US,2024-05-01T23:30:00-04:00,2024-05-04\n"  # 2 May in UTC
    "3,EU,2024-05-02T00:10:00Z,\n"
    "4,EU,,2024-06-01\n"
)


def _lake_files(lake: Path) -> dict[str, pa.Table]:
    return {
        str(p.parent.relative_to(lake / "orders")): pq.read_table(p)
        for p in sorted(lake.rglob("*.parquet"))
    }


def test_write_outputs_names_folders_after_the_day_and_keeps_the_column(tmp_path: Path) -> None:
    contract = make_contract(partition_by=["day(ts)"])
    path = tmp_path / "o.csv"
    path.write_text(CSV, encoding="utf-8")
    table = read_and_conform(path, contract).table
    lake = tmp_path / "lake"
    written = write_outputs(
        table,
        lake=str(lake),
        dataset="orders",
        partition_by=contract.partition_by,
        source_name="o.csv",
        uri=URI,
    )
    files = _lake_files(lake)
    assert len(written) == 3
    assert sorted(files) == [
        "ts_day=2024-05-01",
        "ts_day=2024-05-02",
        "ts_day=__HIVE_DEFAULT_PARTITION__",
    ]
    assert files["ts_day=2024-05-02"].column_names == ["id", "region", "ts", "shipped"]
    assert files["ts_day=2024-05-02"].column("id").to_pylist() == [2, 3]
    assert files["ts_day=__HIVE_DEFAULT_PARTITION__"].column("id").to_pylist() == [4]


def test_identity_keys_are_dropped_and_transform_sources_kept(tmp_path: Path) -> None:
    contract = make_contract(partition_by=["region", "month(shipped)", "year(ts)"])
    path = tmp_path / "o.csv"
    path.write_text(CSV, encoding="utf-8")
    lake = tmp_path / "lake"
    write_outputs(
        read_and_conform(path, contract).table,
        lake=str(lake),
        dataset="orders",
        partition_by=contract.partition_by,
        source_name="o.csv",
        uri=URI,
    )
    files = _lake_files(lake)
    assert sorted(files) == [
        "region=EU/shipped_month=2024-05/ts_year=2024",
        "region=EU/shipped_month=2024-06/ts_year=__HIVE_DEFAULT_PARTITION__",
        "region=EU/shipped_month=__HIVE_DEFAULT_PARTITION__/ts_year=2024",
        "region=US/shipped_month=2024-05/ts_year=2024",
    ]
    for table in files.values():
        assert table.column_names == ["id", "ts", "shipped"]


def test_a_streamed_file_is_partitioned_alike(tmp_path: Path) -> None:
    contract = make_contract(partition_by=["day(ts)"], stream_threshold_mb=0)
    path = tmp_path / "o.csv"
    rows = [f"{i},EU,2024-05-0{1 + i % 3}T12:00:00+02:00,2024-05-01" for i in range(600)]
    path.write_text("id,region,ts,shipped\n" + "\n".join(rows) + "\n", encoding="utf-8")
    lake = tmp_path / "lake"
    blocks = StreamingConform(path, contract, source_name=URI, block_size=4096)
    with StreamingOutputs(
        lake=lake,
        dataset="orders",
        partition_by=contract.partition_by,
        source_name="o.csv",
        uri=URI,
    ) as outputs:
        for block in blocks:
            outputs.write(block)
        written = outputs.commit()
    assert blocks.blocks > 1
    files = _lake_files(lake)
    assert len(written) == 3
    assert sorted(files) == ["ts_day=2024-05-01", "ts_day=2024-05-02", "ts_day=2024-05-03"]
    for folder, table in files.items():
        assert table.column_names == ["id", "region", "ts", "shipped"]
        days = {v.date().isoformat() for v in table.column("ts").to_pylist()}
        assert days == {folder.removeprefix("ts_day=")}
    assert sum(t.num_rows for t in files.values()) == 600


def test_a_streamed_table_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ContractViolation, match=r"column 'ts' is string"),
        StreamingOutputs(
            lake=tmp_path / "lake",
            dataset="orders",
            partition_by=["day(ts)"],
            source_name="o.csv",
            uri=URI,
        ) as outputs,
    ):
        outputs.write(pa.table({"ts": ["2024-05-01"]}))
    assert not list((tmp_path / "lake").rglob("*.parquet"))
