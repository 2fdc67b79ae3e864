"""Column-by-column diffs of a file against its contract: the function, the CLI, quarantine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hopper.contracts import Contract, diff_file, format_diff, read_and_conform
from hopper.errors import ContractViolation, UnreadableFileError
from tests.conftest import make_home, run_cli

COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "type": "int64", "nullable": False},
    {"name": "amount", "type": "float64"},
    {"name": "country", "type": "string", "nullable": False},
    {"name": "shipped", "type": "date32"},
]


def make_contract(columns: list[dict[str, Any]] | None = None, **options: Any) -> Contract:
    return Contract.model_validate({"name": "orders", "columns": columns or COLUMNS, **options})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_matching_file_has_no_differences(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country,shipped\n1,2.5,FR,2024-01-02\n")
    diff = diff_file(path, make_contract())
    assert diff.matches
    assert [(c.column, c.status) for c in diff.columns] == [
        ("id", "ok"),
        ("amount", "ok"),
        ("country", "ok"),
        ("shipped", "ok"),
    ]
    assert diff.rows == 1 and diff.format == "csv"


def test_every_kind_of_difference(tmp_path: Path) -> None:
    text = "id,amount,country,note,id2\n1,2,FR,x,1.5\nz,3,,y,2\n"
    path = write(tmp_path, "o.csv", text)
    diff = diff_file(path, make_contract())
    by_name = {c.column: c for c in diff.columns}
    assert not diff.matches
    assert list(by_name) == ["id", "amount", "country", "shipped", "note", "id2"]

    bad = by_name["id"]
    assert (bad.status, bad.contract_type, bad.file_type, bad.converts) == (
        "type",
        "int64",
        "string",
        False,
    )
    assert (bad.bad_values, bad.rows, bad.samples) == (1, [2], ["z"])

    widened = by_name["amount"]  # Arrow infers int64, every value converts to float64
    assert (widened.status, widened.file_type, widened.converts) == ("compatible", "int64", True)
    assert not widened.differs

    nulls = by_name["country"]
    assert (nulls.status, nulls.nulls, nulls.rows) == ("nulls", 1, [2])

    missing = by_name["shipped"]
    assert (missing.status, missing.file_type, missing.converts) == ("missing", None, None)

    assert (by_name["note"].status, by_name["note"].file_type) == ("extra", "string")
    assert (by_name["id2"].status, by_name["id2"].file_type) == ("extra", "float64")
    assert "evolve" in by_name["note"].message
    assert [c.column for c in diff.differences] == ["id", "country", "shipped", "note", "id2"]


def test_type_and_nulls_on_one_column(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id\n1\nx\nNA\n")
    [column] = diff_file(path, make_contract(COLUMNS[:1])).columns
    assert (column.status, column.bad_values, column.nulls) == ("type", 1, 1)
    assert "nullable is false" in column.message


def test_frozen_extras_and_duplicate_header(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,id,extra\n1,2,3\n")
    diff = diff_file(path, make_contract(COLUMNS[:1], extra_columns="freeze"))
    statuses = {(c.column, c.status) for c in diff.columns}
    assert statuses == {("id", "duplicate"), ("extra", "extra")}
    extra = next(c for c in diff.columns if c.column == "extra")
    assert "freeze" in extra.message and extra.file_type == "int64"


def test_json_lines_types_come_from_the_json_reader(tmp_path: Path) -> None:
    path = write(tmp_path, "o.jsonl", '{"id": 1, "amount": "3.5", "country": "FR"}\n')
    diff = diff_file(path, make_contract(COLUMNS[:3]))
    amount = next(c for c in diff.columns if c.column == "amount")
    assert (amount.status, amount.file_type, amount.converts) == ("compatible", "string", True)
    assert diff.matches and diff.format == "jsonl"


def test_headerless_file_is_compared_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "1,2.5,FR,2024-01-01,surplus\n")
    diff = diff_file(path, make_contract(reader={"header": False}))
    assert [(c.column, c.status) for c in diff.columns][-1] == ("f4", "extra")
    assert diff.columns[0].status == "ok"


def test_unreadable_file_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "")
    with pytest.raises(UnreadableFileError, match="empty"):
        diff_file(path, make_contract())


def test_format_diff_lists_differences_and_counts_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country\n1,2.5,FR\n")
    text = format_diff(diff_file(path, make_contract()))
    assert "contract 'orders' v1" in text
    assert "missing    'shipped' (contract date32, file -)" in text
    assert "(3 other column(s) match the contract)" in text
    assert "'id'" not in text
    assert "'id'" in format_diff(diff_file(path, make_contract()), all_columns=True)


# --------------------------------------------------------------------------- quarantine reasons


def test_missing_column_reason_contains_the_diff(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country,coutnry2\n1,2.5,FR,x\n")
    contract = make_contract(bad_rows="quarantine")
    with pytest.raises(ContractViolation) as caught:
        read_and_conform(path, contract, source_name="file:///in/o.csv")
    reason = str(caught.value)
    assert reason.splitlines()[0] == "file:///in/o.csv: 1 contract violation(s):"
    assert "Diff of file:///in/o.csv against contract 'orders' v1" in reason
    assert "missing    'shipped' (contract date32, file -)" in reason
    assert "extra      'coutnry2' (contract -, file string)" in reason
    assert reason.rstrip().splitlines()[-1].startswith("Fix:")
    assert caught.value.violations[0]["kind"] == "missing_column"


def test_type_change_quarantines_the_file_even_with_bad_rows_quarantine(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country,shipped\n1,cheap,FR,\n2,dear,DE,\n")
    with pytest.raises(ContractViolation) as caught:
        read_and_conform(path, make_contract(bad_rows="quarantine"))
    reason = str(caught.value)
    assert "Column 'amount' changed type" in reason
    assert "type       'amount' (contract float64, file string): 2 value(s)" in reason


def test_a_few_bad_values_with_quarantine_still_split_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country,shipped\n1,cheap,FR,\n2,3,DE,\n")
    result = read_and_conform(path, make_contract(bad_rows="quarantine"))
    assert result.rows_out == 1
    assert result.rejected is not None and result.rejected.num_rows == 1


def test_value_check_failures_do_not_add_a_diff(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "id,amount,country,shipped\n1,-5,FR,\n")
    columns = [COLUMNS[0], {"name": "amount", "type": "float64", "min": 0}, *COLUMNS[2:]]
    with pytest.raises(ContractViolation) as caught:
        read_and_conform(path, make_contract(columns))
    assert "Diff of" not in str(caught.value)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def config(tmp_path: Path) -> str:
    contract = "name: people\ncolumns:\n  - {name: id, type: int64, nullable: false}\n"
    contract += "  - {name: score, type: float64}\n"
    return str(make_home(tmp_path / "home", {"people": contract}))


def test_cli_diff_exit_codes_and_table(
    tmp_path: Path, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "good.csv", "id,score\n1,2.5\n")
    code, out, _ = run_cli(
        capsys, "contract", "diff", str(good), "--dataset", "people", "-c", config
    )
    assert code == 0 and "matches" in out

    bad = write(tmp_path, "bad.csv", "id,extra\nx,1\n")
    argv = ("contract", "diff", str(bad), "--dataset", "people", "--config", config)
    code, out, _ = run_cli(capsys, *argv)
    assert code == 1
    assert "differs" in out and "missing" in out and "extra" in out and "'x'" in out


def test_cli_diff_json(tmp_path: Path, config: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.csv", "id,extra\nx,1\n")
    argv = ("contract", "diff", str(bad), "--dataset", "people", "--config", config, "--json")
    code, out, _ = run_cli(capsys, *argv)
    doc = json.loads(out)
    assert code == 1 and doc["matches"] is False
    statuses = {c["column"]: c["status"] for c in doc["columns"]}
    assert statuses == {"id": "type", "score": "missing", "extra": "extra"}
    assert doc["columns"][0]["samples"] == ["x"]


def test_cli_diff_errors(tmp_path: Path, config: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "contract", "diff", str(tmp_path / "nope.csv"), "--dataset", "people", "-c", config
    )
    assert code == 1 and "no such file" in err
    path = write(tmp_path, "x.csv", "a\n1\n")
    code, _, err = run_cli(
        capsys, "contract", "diff", str(path), "--dataset", "ghost", "-c", config
    )
    assert code == 2 and "no contract for dataset 'ghost'" in err
