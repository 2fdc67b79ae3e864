"""Reserved column names: a file, a contract or a transform cannot forge Hopper's lineage.

A CSV with its own ``_source_uri`` column used to land with two ``_source_uri`` columns (the
file's first), a lake file no reader could query by that name.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hopper.contracts import Contract, load_contract, read_and_conform, validate_file
from hopper.contracts.stream import StreamingConform
from hopper.errors import ConfigError, ContractViolation
from hopper.lineage import (
    INGESTED_AT,
    RESERVED_COLUMNS,
    SOURCE_URI,
    add_lineage,
    reserved_name,
)
from hopper.sink import write_outputs

URI = "file:///inbox/orders/o.csv"
NOW = dt.datetime(2024, 5, 2, 12, tzinfo=dt.UTC)
COLUMNS = [{"name": "id", "type": "int64"}, {"name": "amount", "type": "float64"}]


def contract(columns: list[dict[str, Any]] = COLUMNS, **options: Any) -> Contract:
    return Contract.model_validate({"name": "orders", "columns": columns, **options})


def csv(tmp_path: Path, header: str, rows: list[str]) -> Path:
    path = tmp_path / "o.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_reserved_names_are_one_list_compared_loosely() -> None:
    assert RESERVED_COLUMNS == ("_source_uri", "_ingested_at", "_ingest_date", "_rescued_data")
    for name in ("_source_uri", "_SOURCE_URI", " _Source_Uri ", "\uff3fsource\uff3furi"):
        assert reserved_name(name) == SOURCE_URI, name
    assert reserved_name("_Ingested_At") == INGESTED_AT
    assert reserved_name("source_uri") is None and reserved_name("__source_uri") is None


@pytest.mark.parametrize("header", ["_source_uri", "_Source_URI", "_ingested_at", "_ingest_date"])
@pytest.mark.parametrize("extra_columns", ["evolve", "freeze"])
@pytest.mark.parametrize("bad_rows", ["reject", "quarantine"])
def test_a_file_bringing_a_reserved_column_is_refused_naming_the_fix(
    tmp_path: Path, header: str, extra_columns: str, bad_rows: str
) -> None:
    path = csv(tmp_path, f"id,amount,{header}", ["1,2.5,s3://elsewhere/forged.csv"])
    wanted = contract(extra_columns=extra_columns, bad_rows=bad_rows)
    with pytest.raises(ContractViolation) as info:
        read_and_conform(path, wanted, source_name=URI)
    message = str(info.value)
    assert f"column {header!r} [extra_column]: the name is reserved" in message
    assert "rename:" in message  # the fix: a rename rule in the contract
    (violation,) = [v for v in info.value.violations if v["column"] == header]
    assert violation["kind"] == "extra_column"
    (found,) = validate_file(path, wanted, source_name=URI)  # hopper validate says the same
    assert found.column == header and "reserved" in found.message


def test_a_streamed_file_bringing_a_reserved_column_is_refused(tmp_path: Path) -> None:
    rows = [f"{i},{i}.5,forged" for i in range(200)]
    path = csv(tmp_path, "id,amount,_source_uri", rows)
    stream = StreamingConform(path, contract(), source_name=URI, ingested_at=NOW, block_size=256)
    with pytest.raises(ContractViolation, match="reserved"):
        list(stream)


def test_a_reserved_column_renamed_by_the_contract_lands_beside_hopper_lineage(
    tmp_path: Path,
) -> None:
    path = csv(tmp_path, "id,amount,_source_uri", ["1,2.5,s3://elsewhere/forged.csv"])
    renamed = [*COLUMNS, {"name": "_source_uri", "type": "string", "rename": "source_uri"}]
    result = read_and_conform(path, contract(renamed), source_name=URI)
    table = add_lineage(result.table, URI, NOW)
    (written,) = write_outputs(
        table, lake=str(tmp_path / "lake"), dataset="orders", partition_by=[],
        source_name="o.csv", uri=URI,
    )  # fmt: skip
    lake = pq.read_table(written)
    assert lake.column_names == ["id", "amount", "source_uri", SOURCE_URI, INGESTED_AT]
    assert lake.column(SOURCE_URI).to_pylist() == [URI]
    assert lake.column("source_uri").to_pylist() == ["s3://elsewhere/forged.csv"]


def test_ingest_date_in_the_file_is_not_doubled_by_the_partition(tmp_path: Path) -> None:
    path = csv(tmp_path, "id,amount,_ingest_date", ["1,2.5,1999-01-01"])
    with pytest.raises(ContractViolation, match="reserved"):
        read_and_conform(path, contract(partition_by=["_ingest_date"]), source_name=URI)
    renamed = [*COLUMNS, {"name": "_ingest_date", "type": "date32", "rename": "file_date"}]
    table = read_and_conform(
        path, contract(renamed, partition_by=["_ingest_date"]), ingested_at=NOW
    ).table
    assert table.column_names == ["id", "amount", "file_date", "_ingest_date"]
    assert add_lineage(table, URI, NOW).column_names.count("_ingest_date") == 1


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ({"name": "_source_uri", "type": "string"}, "add rename: 'source_uri'"),
        ({"name": "_Ingested_At", "type": "string"}, "add rename: 'Ingested_At'"),
        ({"name": "origin", "type": "string", "rename": " _SOURCE_URI"}, "rename it to another"),
        ({"name": "day", "type": "date32", "rename": "_ingest_date"}, "rename it to another"),
    ],
)
def test_a_contract_declaring_a_reserved_output_column_does_not_load(
    tmp_path: Path, column: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "orders.yaml"
    rename = f"\n    rename: {column['rename']!r}" if "rename" in column else ""
    path.write_text(
        "name: orders\ncolumns:\n  - name: id\n    type: int64\n"
        f"  - name: {column['name']!r}\n    type: {column['type']}{rename}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_contract(path)
    message = str(info.value)
    assert "columns[1] (line 5)" in message and "Hopper writes itself" in message
    assert expected in message


def test_a_derived_column_cannot_take_a_reserved_name() -> None:
    with pytest.raises(ValueError, match="Hopper writes itself"):
        contract(derived=[{"name": "_Source_Uri", "expr": "id"}])


def test_lineage_is_never_written_twice_whatever_the_transform_returns() -> None:
    for name in ("_source_uri", "_INGESTED_AT", "\uff3fsource_uri"):
        table = pa.table({"id": [1], name: ["forged"]})
        with pytest.raises(ContractViolation, match=r"named like Hopper's own columns.*rename"):
            add_lineage(table, URI, NOW)
    twice = pa.table({"id": [1], "_ingest_date": [1], "_Ingest_Date": [2]})
    with pytest.raises(ContractViolation, match="_Ingest_Date"):
        add_lineage(twice, URI, NOW)


def test_hopper_validate_flags_a_transform_that_adds_a_reserved_column(tmp_path: Path) -> None:
    module = tmp_path / "forge_lineage.py"
    module.write_text(
        "def forge(table):\n    return table.append_column('_source_uri', table.column('id'))\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        path = csv(tmp_path, "id,amount", ["1,2.5"])
        (found,) = validate_file(path, contract(transform="forge_lineage:forge"))
    finally:
        sys.path.remove(str(tmp_path))
    assert found.kind == "transform" and found.column == "_source_uri"


def test_contract_infer_proposes_a_rename_for_a_reserved_column(tmp_path: Path) -> None:
    from hopper.contracts import dump_contract, infer_contract

    path = csv(tmp_path, "id,_source_uri", ["1,s3://a/b.csv", "2,s3://a/c.csv"])
    proposed = infer_contract(path, "orders")
    assert [(c.name, c.output_name) for c in proposed.columns] == [
        ("id", "id"),
        ("_source_uri", "source_uri"),
    ]
    (tmp_path / "orders.yaml").write_text(dump_contract(proposed))
    assert load_contract(tmp_path / "orders.yaml") == proposed
