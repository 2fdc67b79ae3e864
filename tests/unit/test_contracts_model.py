"""Contract model: type parsing, validation rules, YAML errors with key paths, dump round-trip."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from hopper.contracts import ColumnSpec, Contract, ReaderOptions, dump_contract, load_contract
from hopper.contracts.arrow_types import parse_arrow_type
from hopper.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("int64", pa.int64()),
        ("integer", pa.int64()),
        ("int", pa.int64()),
        ("uint16", pa.uint16()),
        ("float", pa.float64()),
        ("double", pa.float64()),
        ("float32", pa.float32()),
        ("text", pa.string()),
        ("str", pa.string()),
        ("large_string", pa.large_string()),
        ("boolean", pa.bool_()),
        ("date", pa.date32()),
        ("date32", pa.date32()),
        ("timestamp[us]", pa.timestamp("us")),
        ("timestamp[ms, tz=Europe/Paris]", pa.timestamp("ms", tz="Europe/Paris")),
        ("decimal128(12, 2)", pa.decimal128(12, 2)),
        ("decimal128(5,0)", pa.decimal128(5, 0)),
        ("time64[us]", pa.time64("us")),
    ],
)
def test_parse_arrow_type(text: str, expected: pa.DataType) -> None:
    assert parse_arrow_type(text) == expected
    assert ColumnSpec(name="c", type=text).arrow_type() == expected


def test_unknown_type_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown type 'int63'"):
        ColumnSpec(name="c", type="int63")


def test_contract_rules() -> None:
    col = {"name": "a", "type": "int64"}
    with pytest.raises(ValidationError, match="duplicate column names"):
        Contract(name="ds", columns=[col, col])
    with pytest.raises(ValidationError, match="pattern"):
        Contract(name="Bad Name", columns=[col])
    with pytest.raises(ValidationError, match="partition_by"):
        Contract(name="ds", columns=[col], partition_by=["nope"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        Contract(name="ds", columns=[col], colums=[])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="max"):
        ColumnSpec(name="a", type="int64", max="soon")
    with pytest.raises(ValidationError, match="encoding"):
        ReaderOptions(encoding="klingon-8")
    renamed = Contract(name="ds", columns=[{"name": "A b", "type": "int", "rename": "a_b"}])
    assert renamed.columns[0].output_name == "a_b"
    assert ReaderOptions().null_values[:3] == ["", "NA", "N/A"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orders.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_contract_error_names_key_path_line_and_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: orders\n"
        "columns:\n"
        "  - name: id\n"
        "    type: int64\n"
        "  - name: amount\n"
        "    type: float64\n"
        "  - name: placed at\n"
        "    type: timestamp[fortnight]\n",
    )
    with pytest.raises(ConfigError) as info:
        load_contract(path)
    message = str(info.value)
    assert str(path) in message
    assert "columns[2].type (line 8)" in message
    assert "'placed at'" in message
    assert "timestamp[us]" in message  # says what is expected


def test_load_contract_unknown_key_and_missing_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: orders\nbad_row: reject\n")
    with pytest.raises(ConfigError) as info:
        load_contract(path)
    message = str(info.value)
    assert "bad_row (line 2): unknown key" in message
    assert "columns" in message and "Field required" in message


def test_load_contract_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: orders\ncolumns:\n  - name: [id\n    type: int64\n")
    with pytest.raises(ConfigError, match=r"orders\.yaml: line \d+, column \d+: invalid YAML"):
        load_contract(path)


def test_load_contract_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read contract file"):
        load_contract(tmp_path / "nope.yaml")


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    contract = Contract(
        name="orders",
        version=3,
        format="csv",
        reader=ReaderOptions(delimiter=";", encoding="latin-1"),
        columns=[
            ColumnSpec(name="Order ID#", type="int64", nullable=False, unique=True),
            ColumnSpec(name="yes", type="string", allowed=["a", "b"], pattern="[ab]"),
            ColumnSpec(name="when", type="date", format="%d/%m/%Y", min=dt.date(2020, 1, 1)),
            ColumnSpec(name="amount", type="decimal128(12, 2)", min=0, rename="amount_eur"),
        ],
        bad_rows="quarantine",
        partition_by=["when"],
    )
    text = dump_contract(contract)
    assert text.index("name:") < text.index("version:") < text.index("format:")
    assert text.index("format:") < text.index("reader:") < text.index("columns:")
    assert "nullable: true" not in text  # defaults are left out
    assert "description" not in text
    path = _write(tmp_path, text)
    assert load_contract(path) == contract


def test_dump_minimal_contract_keeps_essentials() -> None:
    text = dump_contract(Contract(name="ds", columns=[{"name": "a", "type": "int"}]))
    assert text == "name: ds\nversion: 1\nformat: auto\ncolumns:\n- name: a\n  type: int\n"


def test_duplicate_columns_error_points_at_columns_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "name: orders\ncolumns:\n  - {name: id, type: int64}\n  - {name: id, type: int}\n"
    )
    with pytest.raises(ConfigError, match=r"columns \(line 2\): duplicate column names \['id'\]"):
        load_contract(path)
