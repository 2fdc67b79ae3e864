"""The Iceberg table lake without Prefect: staged sources committed by ``land``, exactly once.

Real files, a real SQLite catalog at ``<state_dir>/catalog.db`` and a real ledger; the
reader runs in this process (``isolate=False``) to keep the tests quick.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import load_catalog

from hopper.config import HopperConfig, load_config
from hopper.ingest import ingest
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from hopper.tables import land
from hopper.tables.commit import CLOCK_SKEW_SECONDS, LANDED_PROPERTY, landed_keys, landing_key
from tests.conftest import CONTRACT, ICEBERG_LAKE, drop_file, make_home


def _home(root: Path, contract: str = CONTRACT) -> HopperConfig:
    return load_config(make_home(root, {"people": contract}, lake=ICEBERG_LAKE))


@pytest.fixture
def table_home(tmp_path: Path) -> HopperConfig:
    return _home(tmp_path)


@pytest.fixture
def ledger(table_home: HopperConfig) -> Ledger:
    led = Ledger(sqlite_url(table_home.state_dir))
    yield led  # type: ignore[misc]
    led.close()


def _drop(home: HopperConfig, name: str, text: str) -> FileRef:
    return drop_file(home, "people", name, text)


def _run(
    home: HopperConfig, ledger: Ledger, refs: list[FileRef], dispatch: str
) -> list[IngestOutcome]:
    """What an ingest-batch run does: claim, read each file, land the batch, record it."""
    for ref in refs:
        ledger.record_detected(ref)
        assert ledger.claim(ref, "run-" + dispatch, replay=True)
    outcomes = [
        ingest(IngestRequest(ref=ref, dispatch_id=dispatch), home, isolate=False) for ref in refs
    ]
    landed = land(home, ledger, outcomes, dispatch)
    ledger.finish_many(landed, "run-" + dispatch)
    return landed


def _table(home: HopperConfig) -> object:
    catalog = load_catalog("hopper", type="sql", uri=f"sqlite:///{home.state_dir / 'catalog.db'}")
    return catalog.load_table("hopper.people")


def _rows(table: object, snapshot_id: int | None = None) -> list[tuple[int, str]]:
    scan = table.scan(snapshot_id=snapshot_id)  # type: ignore[attr-defined]
    arrow = scan.to_arrow().sort_by("id")
    ids, names = arrow.column("id").to_pylist(), arrow.column("full_name").to_pylist()
    return list(zip(ids, names, strict=True))


def test_a_batch_lands_in_one_snapshot_with_one_data_file(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    refs = [_drop(table_home, f"{i}.csv", f"id,full name,score\n{i},n{i},1.5\n") for i in range(5)]
    landed = _run(table_home, ledger, refs, "d1")
    assert {o.state for o in landed} == {FileState.INGESTED}
    table = _table(table_home)
    snapshot = table.current_snapshot()  # type: ignore[attr-defined]
    assert {o.outputs[0] for o in landed} == {f"hopper.people@{snapshot.snapshot_id}"}
    assert len(table.snapshots()) == 1  # type: ignore[attr-defined]
    assert _rows(table) == [(i, f"n{i}") for i in range(5)]
    files = table.inspect.files()  # type: ignore[attr-defined]
    assert files.num_rows == 1
    assert not any(Path(table_home.lake.path, "_staging").rglob("*.staged"))
    arrow = table.scan().to_arrow()  # type: ignore[attr-defined]
    assert arrow.schema.field("_ingested_at").type == pa.timestamp("us", tz="UTC")
    assert sorted(arrow.column("_source_uri").to_pylist()) == sorted(r.uri for r in refs)


def test_a_new_version_replaces_its_rows_in_one_commit(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    a = _drop(table_home, "a.csv", "id,full name,score\n1,Ada,1\n2,Bob,2\n")
    b = _drop(table_home, "b.csv", "id,full name,score\n3,Cy,3\n")
    _run(table_home, ledger, [a, b], "d1")
    before = _table(table_home).current_snapshot().snapshot_id  # type: ignore[attr-defined]
    a2 = _drop(table_home, "a.csv", "id,full name,score\n1,Ada,1\n2,Bea,2\n4,Dee,4\n")
    assert a2.fingerprint != a.fingerprint
    (outcome,) = _run(table_home, ledger, [a2], "d2")
    assert outcome.state is FileState.INGESTED
    table = _table(table_home)
    assert _rows(table) == [(1, "Ada"), (2, "Bea"), (3, "Cy"), (4, "Dee")]
    assert _rows(table, before) == [(1, "Ada"), (2, "Bob"), (3, "Cy")]  # time travel


def test_a_replay_of_the_same_version_replaces_rather_than_adds(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    a = _drop(table_home, "a.csv", "id,full name,score\n1,Ada,1\n")
    _run(table_home, ledger, [a], "d1")
    _run(table_home, ledger, [a], "replay-1")
    assert _rows(_table(table_home)) == [(1, "Ada")]


def _landed_unrecorded(home: HopperConfig, ledger: Ledger) -> FileRef:
    """``a.csv`` detected, claimed and landed by batch ``d1``, whose worker then died."""
    a = _drop(home, "a.csv", "id,full name,score\n1,Ada,1\n")
    ledger.record_detected(a)
    ledger.claim(a, "run-1")
    first = ingest(IngestRequest(ref=a, dispatch_id="d1"), home, isolate=False)
    land(home, ledger, [first], "d1")  # the worker dies here: the ledger never hears
    return a


def test_a_batch_retried_after_its_commit_does_not_append_again(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    a = _landed_unrecorded(table_home, ledger)
    snapshots = len(_table(table_home).snapshots())  # type: ignore[attr-defined]
    again = ingest(IngestRequest(ref=a, dispatch_id="d2"), table_home, isolate=False)
    (outcome,) = land(table_home, ledger, [again], "d2")
    assert outcome.state is FileState.INGESTED
    table = _table(table_home)
    assert len(table.snapshots()) == snapshots  # type: ignore[attr-defined]
    assert _rows(table) == [(1, "Ada")]
    key = landing_key(a.uri, a.fingerprint, 0)
    summary = table.current_snapshot().summary  # type: ignore[attr-defined]
    assert key in summary.additional_properties[LANDED_PROPERTY].split(",")


def test_only_snapshots_since_the_batch_was_detected_are_read_for_keys(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    a = _landed_unrecorded(table_home, ledger)
    table = _table(table_home)
    key = landing_key(a.uri, a.fingerprint, 0)
    since = ledger.first_detected([a.uri, "file:///never/seen.csv"])
    assert since is not None and since <= time.time()
    assert key in landed_keys(table, since=since)  # type: ignore[arg-type]
    assert key in landed_keys(table)  # type: ignore[arg-type]  # unbounded: the whole window
    # A batch detected well after that commit does not read it.
    later = time.time() + CLOCK_SKEW_SECONDS + 60
    assert landed_keys(table, since=later) == {}  # type: ignore[arg-type]
    assert ledger.first_detected(["file:///never/seen.csv"]) is None


def test_new_columns_evolve_the_table(table_home: HopperConfig, ledger: Ledger) -> None:
    _run(table_home, ledger, [_drop(table_home, "a.csv", "id,full name,score\n1,Ada,1\n")], "d1")
    later = _drop(table_home, "b.csv", "id,full name,score,city\n2,Bob,2,Oslo\n")
    (outcome,) = _run(table_home, ledger, [later], "d2")
    assert outcome.state is FileState.INGESTED
    arrow = _table(table_home).scan().to_arrow().sort_by("id")  # type: ignore[attr-defined]
    assert arrow.column("city").to_pylist() == [None, "Oslo"]


def test_a_column_whose_type_cannot_widen_is_quarantined(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    _run(
        table_home, ledger, [_drop(table_home, "a.csv", "id,full name,score,tag\n1,A,1,7\n")], "d1"
    )
    clash = _drop(table_home, "b.csv", "id,full name,score,tag\n2,B,2,seven\n")
    (outcome,) = _run(table_home, ledger, [clash], "d2")
    assert outcome.state is FileState.QUARANTINED
    assert "tag" in (outcome.reason or "") and "Migrating a table" in (outcome.reason or "")
    assert _rows(_table(table_home)) == [(1, "A")]


def test_partitioned_tables_take_the_contracts_partition_spec(tmp_path: Path) -> None:
    contract = CONTRACT + "  - name: day\n    type: date32\npartition_by: [month(day)]\n"
    home = _home(tmp_path, contract)
    led = Ledger(sqlite_url(home.state_dir))
    try:
        refs = [
            _drop(home, "a.csv", "id,full name,score,day\n1,A,1,2024-01-05\n2,B,2,2024-02-01\n"),
            _drop(home, "b.csv", "id,full name,score,day\n3,C,3,2024-01-09\n"),
        ]
        _run(home, led, refs, "d1")
    finally:
        led.close()
    table = _table(home)
    spec = table.spec()  # type: ignore[attr-defined]
    assert [(f.name, str(f.transform)) for f in spec.fields] == [("day_month", "month")]
    assert table.inspect.files().num_rows == 2  # type: ignore[attr-defined]  # one per month


@pytest.mark.parametrize(
    ("arrow", "value", "iceberg"),
    [
        (pa.uint32(), 4_000_000_000, "long"),
        (pa.uint64(), 18_000_000_000_000_000_000, "decimal(20, 0)"),
        (pa.timestamp("ns", tz="Asia/Tokyo"), 1_700_000_000_123_456_789, "timestamptz"),
        (pa.date64(), 1_700_000_000_000, "date"),
        (pa.time32("s"), 3600, "time"),
    ],
)
def test_types_iceberg_lacks_keep_every_value(
    tmp_path: Path, arrow: pa.DataType, value: int, iceberg: str
) -> None:
    from hopper.tables.schema import for_table

    rows = for_table(pa.table({"c": pa.array([value], arrow)}))
    catalog = load_catalog(
        "t", type="sql", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=tmp_path.as_uri()
    )
    catalog.create_namespace("n")
    table = catalog.create_table("n.t", schema=rows.schema)
    table.append(rows)
    assert str(table.schema().find_field("c").field_type) == iceberg
    back = table.scan().to_arrow().column("c")
    original = pa.array([value], arrow)
    if pa.types.is_timestamp(arrow):  # microseconds: the nanoseconds are cut, the instant kept
        assert back[0].value == original[0].value // 1000
    elif pa.types.is_date(arrow) or pa.types.is_time(arrow):
        assert back[0].as_py() == original[0].as_py()
    else:
        assert int(back[0].as_py()) == value


def test_contract_diff_compares_a_file_with_the_table(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    import json
    import subprocess
    import sys

    first = _drop(table_home, "a.csv", "id,full name,score,tag,n\n1,A,1,7,5\n")
    _run(table_home, ledger, [first], "d1")
    other = table_home.sources[0].path / "b.csv"
    other.write_text("id,full name,score,tag,city\n2,B,2,seven,Oslo\n")
    done = subprocess.run(
        [sys.executable, "-m", "hopper", "contract", "diff", str(other), "--dataset", "people",
         "--config", str(table_home.path), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    statuses = {c["column"]: c["status"] for c in json.loads(done.stdout)["table"]}
    assert statuses == {
        "id": "ok",
        "full_name": "ok",
        "score": "ok",
        "tag": "conflict",  # text where the table has numbers
        "city": "new",
        "n": "absent",
    }


def test_a_commit_that_breaks_fails_its_files_and_leaves_no_staging(
    table_home: HopperConfig, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hopper.tables import commit as commit_module

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the catalog fell over")

    monkeypatch.setattr(commit_module, "_commit", broken)
    ref = _drop(table_home, "a.csv", "id,full name,score\n1,Ada,1\n")
    (outcome,) = _run(table_home, ledger, [ref], "d1")
    assert outcome.state is FileState.FAILED
    assert outcome.reason == "the commit to its table failed: RuntimeError: the catalog fell over"
    assert ledger.get(ref.uri, ref.fingerprint).state is FileState.FAILED  # type: ignore[union-attr]
    assert not list(Path(table_home.lake.path, "_staging").rglob("*.staged"))


def test_the_table_a_batch_creates_can_retry_a_commit_that_lost_a_race(
    table_home: HopperConfig,
) -> None:
    from hopper.tables.commit import _load_table
    from hopper.tables.schema import for_table

    rows = for_table(pa.table({"id": [1], "full_name": ["A"], "score": [1.0]}))
    mine = _load_table(table_home, "people", rows.schema)  # this batch makes the table
    _table(table_home).append(rows)  # another batch commits first (and makes branch main)
    mine.append(rows)  # lost the race: pyiceberg refreshes the table and commits again
    assert len(_table(table_home).scan().to_arrow()) == 2


def test_a_transaction_works_out_its_metadata_once_per_staged_change(
    table_home: HopperConfig, ledger: Ledger
) -> None:
    from hopper.tables.transaction import transaction

    _run(table_home, ledger, [_drop(table_home, "a.csv", "id,full name,score\n1,Ada,1\n")], "d1")
    table = _table(table_home)
    txn = transaction(table)  # type: ignore[arg-type]
    first = txn.table_metadata
    assert txn.table_metadata is first  # read again, not replayed and copied again
    txn.set_properties({"hopper.test": "1"})
    staged = txn.table_metadata
    assert staged is not first and staged.properties["hopper.test"] == "1"
    plain = table.transaction()  # type: ignore[attr-defined]
    plain.set_properties({"hopper.test": "1"})
    # What pyiceberg works out itself (but for the time it stamps on each working-out).
    stamp = {"last_updated_ms"}
    assert plain.table_metadata.model_dump(exclude=stamp) == staged.model_dump(exclude=stamp)
