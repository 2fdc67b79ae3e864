"""Contract transforms: defaults, derived expressions, drop, _ingest_date and Python callables."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from hopper.config import load_config
from hopper.contracts import (
    Contract,
    dump_contract,
    load_contract,
    read_and_conform,
    validate_file,
)
from hopper.contracts.expr import ExpressionError, parse_expression
from hopper.errors import ConfigError, ContractViolation, TerminalError
from hopper.ingest import ingest
from hopper.models import FileRef, FileState, IngestRequest
from tests.conftest import make_home

COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "type": "int64", "nullable": False},
    {"name": "qty", "type": "int64"},
    {"name": "unit price", "type": "float64", "rename": "price"},
    {"name": "country", "type": "string"},
    {"name": "day", "type": "date32"},
]
CSV = "id,qty,unit price,country,day\n1,2,2.5,fr,2024-03-09\n2,,4,de,2023-12-31\n"


def make_contract(**options: Any) -> Contract:
    return Contract.model_validate({"name": "orders", "columns": COLUMNS, **options})


def conform(tmp_path: Path, contract: Contract, text: str = CSV, **kwargs: Any) -> pa.Table:
    path = tmp_path / "o.csv"
    path.write_text(text, encoding="utf-8")
    return read_and_conform(path, contract, **kwargs).table


# --------------------------------------------------------------------------- expressions


def test_expression_columns_and_evaluation() -> None:
    table = pa.table({"a b": [1, 2], "x": [3, None], "s": ["ab", "Cd"]})
    expr = parse_expression('concat(upper(s), "-", col("a b") * 2)')
    assert expr.columns == ("s", "a b")
    assert expr.evaluate(table).to_pylist() == ["AB-2", "CD-4"]
    assert parse_expression("x / 2").evaluate(table).to_pylist() == [1.5, None]
    assert parse_expression("coalesce(x, 0) - -1").evaluate(table).to_pylist() == [4, 1]
    assert parse_expression("round(x / 7, 2)").evaluate(table).to_pylist() == [0.43, None]
    assert parse_expression("42").evaluate(table).to_pylist() == [42, 42]
    assert parse_expression("length(lower(s))").evaluate(table).to_pylist() == [2, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('x')", "unknown function"),
        ("a.b", "not allowed"),
        ("a ** 2", "not allowed"),
        ("a[0]", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("a if b else c", "not allowed"),
        ("True", "not a number or text"),
        ("upper(a, b)", r"call upper\(text\)"),
        ("upper(a=1)", r"call upper\(text\)"),
        ("col(a)", "quoted column name"),
        ("round(a, 1.5)", "whole number"),
        ("a +", "not a valid expression"),
    ],
)
def test_expressions_outside_the_language_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse_expression(text)


def test_expression_type_errors_are_expression_errors() -> None:
    table = pa.table({"s": ["a"], "n": [1]})
    with pytest.raises(ExpressionError, match="concat"):
        parse_expression("s + n").evaluate(table)
    with pytest.raises(ExpressionError, match="unknown column"):
        parse_expression("missing * 2").evaluate(table)
    with pytest.raises(ExpressionError, match="overflow"):
        parse_expression("n * 9223372036854775807 * 2").evaluate(table)


# --------------------------------------------------------------------------- defaults


def test_default_fills_nulls_and_satisfies_nullable_false(tmp_path: Path) -> None:
    columns = [
        COLUMNS[0],
        {"name": "qty", "type": "int64", "nullable": False, "default": 0},
        {"name": "country", "type": "string", "default": "??"},
    ]
    contract = Contract(name="orders", columns=columns)
    table = conform(tmp_path, contract, "id,qty,country\n1,,\n2,5,fr\n")
    assert table.column("qty").to_pylist() == [0, 5]
    assert table.column("country").to_pylist() == ["??", "fr"]


def test_default_does_not_hide_bad_values(tmp_path: Path) -> None:
    columns = [COLUMNS[0], {"name": "qty", "type": "int64", "default": 0}]
    path = tmp_path / "o.csv"
    path.write_text("id,qty\n1,lots\n2,\n", encoding="utf-8")
    [violation] = validate_file(path, Contract(name="orders", columns=columns))
    assert (violation.column, violation.kind, violation.rows) == ("qty", "type", [1])


def test_default_must_fit_type_and_allowed() -> None:
    with pytest.raises(ValidationError, match="default"):
        Contract(name="o", columns=[{"name": "a", "type": "int64", "default": "many"}])
    with pytest.raises(ValidationError, match="not in allowed"):
        Contract(
            name="o", columns=[{"name": "a", "type": "string", "allowed": ["x"], "default": "y"}]
        )
    ok = Contract(name="o", columns=[{"name": "d", "type": "date32", "default": "2024-01-01"}])
    assert ok.columns[0].default == "2024-01-01"


# --------------------------------------------------------------------------- derived and drop


def test_derived_columns_and_drop(tmp_path: Path) -> None:
    contract = make_contract(
        derived=[
            {"name": "total", "expr": "coalesce(qty, 0) * price"},
            {"name": "label", "expr": 'concat(upper(country), "/", year(day))'},
            {"name": "month", "expr": "month(day)", "type": "int8"},
        ],
        drop=["price", "qty"],
    )
    table = conform(tmp_path, contract)
    assert table.column_names == ["id", "country", "day", "total", "label", "month"]
    assert table.column("total").to_pylist() == [5.0, 0.0]
    assert table.column("label").to_pylist() == ["FR/2024", "DE/2023"]
    assert table.schema.field("month").type == pa.int8()


def test_derived_failure_is_a_contract_violation_naming_the_column(tmp_path: Path) -> None:
    contract = make_contract(derived=[{"name": "code", "expr": "country", "type": "int64"}])
    with pytest.raises(ContractViolation, match=r"derived column 'code' = 'country' failed"):
        conform(tmp_path, contract)
    path = tmp_path / "o.csv"
    [violation] = validate_file(path, contract)
    assert (violation.kind, violation.column) == ("transform", "code")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"derived": [{"name": "t", "expr": "nope * 2"}]}, r"unknown column\(s\) \['nope'\]"),
        ({"derived": [{"name": "t", "expr": "qty ** 2"}]}, "not allowed"),
        ({"derived": [{"name": "price", "expr": "qty"}]}, "already an output column"),
        ({"derived": [{"name": "t", "expr": "u"}, {"name": "u", "expr": "qty"}]}, "unknown"),
        ({"drop": ["unit price"]}, r"unknown output columns \['unit price'\]"),
        ({"drop": ["qty"], "partition_by": ["qty"]}, "also in drop"),
        ({"partition_by": ["_ingest_day"]}, "unknown output columns"),
        ({"transform": "not a path"}, "pattern"),
    ],
)
def test_transform_keys_are_checked_when_loading(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_contract(**options)


def test_transform_keys_round_trip_and_errors_name_the_line(tmp_path: Path) -> None:
    contract = make_contract(
        derived=[{"name": "total", "expr": "qty * price", "type": "float64"}],
        transform="mypkg.mod:fix",
        transform_input="pandas",
        drop=["qty"],
        partition_by=["_ingest_date", "total"],
    )
    path = tmp_path / "orders.yaml"
    path.write_text(dump_contract(contract), encoding="utf-8")
    assert load_contract(path) == contract
    path.write_text(
        "name: o\ncolumns:\n  - {name: a, type: int64}\nderived:\n  - name: b\n    expr: a ** 2\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"derived\[0\]\.expr \(line 6\)"):
        load_contract(path)


# --------------------------------------------------------------------------- partitions


def test_ingest_date_partition_column(tmp_path: Path) -> None:
    contract = make_contract(partition_by=["_ingest_date"])
    when = dt.datetime(2024, 5, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    table = conform(tmp_path, contract, ingested_at=when)
    assert table.schema.field("_ingest_date").type == pa.date32()
    assert table.column("_ingest_date").to_pylist() == [dt.date(2024, 5, 2)] * 2  # UTC date


def test_ingest_date_defaults_to_today(tmp_path: Path) -> None:
    table = conform(tmp_path, make_contract(partition_by=["_ingest_date"]))
    assert set(table.column("_ingest_date").to_pylist()) == {dt.datetime.now(dt.UTC).date()}


def test_partition_by_derived_column(tmp_path: Path) -> None:
    contract = make_contract(derived=[{"name": "year", "expr": "year(day)"}], partition_by=["year"])
    assert conform(tmp_path, contract).column("year").to_pylist() == [2024, 2023]


# --------------------------------------------------------------------------- Python transforms


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "hopper_test_plugins.py").write_text(
        textwrap.dedent(
            """
            import pyarrow as pa
            import pyarrow.compute as pc

            def arrow(table):
                return table.append_column("id2", pc.multiply(table["id"], 2))

            def pandas(frame):
                frame["country"] = frame["country"].str.title()
                return frame

            def boom(table):
                raise RuntimeError("no network here")

            def wrong(table):
                return 42

            NOT_CALLABLE = 3
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(folder))
    return "hopper_test_plugins"


def test_arrow_transform(tmp_path: Path, plugins: str) -> None:
    contract = make_contract(transform=f"{plugins}:arrow", drop=["id2"], partition_by=["id"])
    table = conform(tmp_path, make_contract(transform=f"{plugins}:arrow"))
    assert table.column("id2").to_pylist() == [2, 4]
    assert "id2" not in conform(tmp_path, contract).column_names


def test_pandas_transform(tmp_path: Path, plugins: str) -> None:
    contract = make_contract(transform=f"{plugins}:pandas", transform_input="pandas")
    table = conform(tmp_path, contract)
    assert table.column("country").to_pylist() == ["Fr", "De"]
    assert table.column_names[:2] == ["id", "qty"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("{plugins}:missing", "has no attribute 'missing'"),
        ("{plugins}:NOT_CALLABLE", "non-callable 'NOT_CALLABLE'"),
        ("{plugins}:boom", "raised RuntimeError: no network here"),
        ("{plugins}:wrong", "returned int, not a pyarrow Table"),
    ],
)
def test_transform_failures_are_terminal_and_name_the_function(
    tmp_path: Path, plugins: str, spec: str, message: str
) -> None:
    spec = spec.format(plugins=plugins)
    with pytest.raises(TerminalError, match=message) as caught:
        conform(tmp_path, make_contract(transform=spec))
    assert f"transform {spec!r}" in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "o.csv"))


def test_transform_that_loses_a_partition_column(tmp_path: Path, plugins: str) -> None:
    contract = make_contract(transform=f"{plugins}:arrow", drop=["nope"])
    with pytest.raises(ContractViolation, match=r"drop names column\(s\) \['nope'\]"):
        conform(tmp_path, contract)
    contract = make_contract(transform=f"{plugins}:arrow", partition_by=["nope"])
    with pytest.raises(ContractViolation, match=r"partition_by column\(s\) \['nope'\]"):
        conform(tmp_path, contract)


def test_quarantined_rows_are_not_transformed(tmp_path: Path) -> None:
    contract = make_contract(bad_rows="quarantine", derived=[{"name": "d2", "expr": "qty * 2"}])
    text = CSV + "3,x,1,it,2024-01-01\n"
    path = tmp_path / "o.csv"
    path.write_text(text, encoding="utf-8")
    result = read_and_conform(path, contract)
    assert result.table.column("d2").to_pylist() == [4, None]
    assert result.rejected is not None and result.rejected.column("qty").to_pylist() == ["x"]


# --------------------------------------------------------------------------- through ingest


def test_ingest_writes_transformed_rows_in_ingest_date_folders(tmp_path: Path) -> None:
    contract = """\
name: sales
columns:
  - {name: id, type: int64, nullable: false}
  - {name: qty, type: int64, default: 1}
  - {name: price, type: float64}
derived:
  - {name: total, expr: qty * price}
drop: [price]
partition_by: [_ingest_date]
"""
    config = load_config(make_home(tmp_path, {"sales": contract}))
    path = config.sources[0].path / "sales" / "s.csv"
    path.parent.mkdir(parents=True)
    path.write_text("id,qty,price\n1,,2.5\n2,3,1\n", encoding="utf-8")
    ref = FileRef(uri=path.as_uri(), size=1, mtime=1.0, dataset="sales")
    outcome = ingest(IngestRequest(ref=ref, dispatch_id="d"), config)
    assert outcome.state == FileState.INGESTED, outcome.reason
    (out,) = outcome.outputs
    assert Path(out).parent.name == f"_ingest_date={dt.datetime.now(dt.UTC).date()}"
    table = pq.read_table(out, partitioning=None)
    assert table.column_names == ["id", "qty", "total", "_source_uri", "_ingested_at"]
    assert table.column("total").to_pylist() == [2.5, 3.0]


def test_ingest_reason_file_holds_the_diff(tmp_path: Path) -> None:
    config = load_config(make_home(tmp_path))
    path = config.sources[0].path / "people" / "p.csv"
    path.parent.mkdir(parents=True)
    path.write_text("id,fullname,score\n1,Ada,1.5\n", encoding="utf-8")
    ref = FileRef(uri=path.as_uri(), size=1, mtime=1.0, dataset="people")
    outcome = ingest(IngestRequest(ref=ref, dispatch_id="d"), config)
    assert outcome.state == FileState.QUARANTINED
    reason_file = Path(outcome.quarantine_path or "").parent / "p.csv.error.json"
    reason = json.loads(reason_file.read_text())["reason"]
    assert "missing    'full name' (contract string, file -)" in reason
    assert "extra      'fullname' (contract -, file string)" in reason
