"""Table upkeep without Prefect: compaction, snapshot expiry and orphan removal.

Real files, a real SQLite catalog and a real ledger; batches are landed through the ingest
path's own commit (:func:`hopper.tables.land`), the reader running in this process.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hopper.config import LANDING_WINDOW_HOURS, HopperConfig, MaintainOptions, load_config
from hopper.errors import ConfigError, HopperError
from hopper.ingest import ingest
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestRequest
from hopper.tables import land, open_catalog
from hopper.tables import maintain as upkeep
from hopper.tables.commit import LANDED_PROPERTY, LANDING_WINDOW_SECONDS, landed_keys
from hopper.tables.maintain import (
    MAINTENANCE_PROPERTY,
    Listed,
    check_options,
    expirable,
    maintain,
    orphans,
    pack,
    report_markdown,
)
from tests.conftest import CONTRACT, ICEBERG_LAKE, make_home, run_cli

ROOT = Path(__file__).resolve().parents[2]
MONTHLY = CONTRACT + "  - name: day\n    type: date32\npartition_by: [month(day)]\n"
HEADER = "id,full name,score,day\n"


def _home(root: Path, maintain_block: str = "") -> HopperConfig:
    return load_config(make_home(root, {"people": MONTHLY}, lake=ICEBERG_LAKE + maintain_block))


@pytest.fixture
def home(tmp_path: Path) -> HopperConfig:
    return _home(tmp_path)


@pytest.fixture
def ledger(home: HopperConfig) -> Any:
    led = Ledger(sqlite_url(home.state_dir))
    yield led
    led.close()


def _drop(home: HopperConfig, name: str, rows: list[tuple[int, str]]) -> FileRef:
    path = home.sources[0].path / "people" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{i},n{i},1.5,{day}\n" for i, day in rows))
    st = path.stat()
    return FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset="people")


def _land(home: HopperConfig, ledger: Ledger, refs: list[FileRef], dispatch: str) -> None:
    """What an ingest-batch run does: claim, read each file, commit the batch, record it."""
    for ref in refs:
        ledger.record_detected(ref)
        assert ledger.claim(ref, "run-" + dispatch, replay=True)
    outcomes = [
        ingest(IngestRequest(ref=r, dispatch_id=dispatch), home, isolate=False) for r in refs
    ]
    landed = land(home, ledger, outcomes, dispatch)
    assert {o.state for o in landed} == {FileState.INGESTED}
    ledger.finish_many(landed, "run-" + dispatch)


def _batches(home: HopperConfig, ledger: Ledger, count: int, start: int = 0) -> None:
    """``count`` batches of two files, each file with a row in January and one in February."""
    for b in range(start, start + count):
        refs = [
            _drop(
                home, f"{b}-{f}.csv", [(b * 10 + f, "2024-01-05"), (b * 10 + f + 5, "2024-02-07")]
            )
            for f in range(2)
        ]
        _land(home, ledger, refs, f"d{b}")


def _table(home: HopperConfig) -> Any:
    return open_catalog(home).load_table("hopper.people")


def _rows(table: Any) -> list[dict[str, Any]]:
    rows = table.scan().to_arrow().to_pylist()
    return sorted(rows, key=lambda r: (r["id"], r["_source_uri"]))


def _files(table: Any) -> list[str]:
    return sorted(table.inspect.files().column("file_path").to_pylist())


def _on_disk(home: HopperConfig, folder: str) -> set[str]:
    root = Path(home.lake.path) / "hopper" / "people" / folder
    return {str(p) for p in root.rglob("*") if p.is_file()}


def _age(paths: set[str], seconds: float) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


# --------------------------------------------------------------------------- planning


def test_pack_groups_small_files_up_to_the_target_and_never_alone() -> None:
    sizes = [("a", 60), ("b", 50), ("c", 30), ("d", 20), ("e", 90)]
    assert pack(sizes, 100) == [["a", "c"], ["b", "d"]]  # e (90) alone is left as it is
    assert pack([("a", 10)], 100) == []
    assert pack([("a", 70), ("b", 70)], 100) == []  # together they would overshoot


def test_expirable_keeps_the_newest_the_current_and_the_young() -> None:
    snapshots = [(i, 1000 * i) for i in range(1, 13)]  # id i committed at i seconds
    assert expirable(snapshots, keep=set(), cutoff_ms=100_000, keep_last=10) == [1, 2]
    assert expirable(snapshots, keep={1}, cutoff_ms=100_000, keep_last=10) == [2]
    assert expirable(snapshots, keep=set(), cutoff_ms=1500, keep_last=3) == [1]
    assert expirable(snapshots, keep=set(), cutoff_ms=100_000, keep_last=20) == []


def test_orphans_are_unreferenced_and_old() -> None:
    listed = [Listed("old", 1, 10), Listed("young", 1, 1000), Listed("live", 1, 10)]
    listed.append(Listed("no-mtime", 1, None))
    assert [f.path for f in orphans(listed, {"live"}, before_ns=500)] == ["old"]


def test_expiry_may_not_reach_into_the_landing_window(tmp_path: Path) -> None:
    assert LANDING_WINDOW_HOURS * 3600 == LANDING_WINDOW_SECONDS
    with pytest.raises(ConfigError, match=r"hopper\.yaml:.*snapshot_max_age_hours.*168"):
        _home(tmp_path, "  maintain:\n    snapshot_max_age_hours: 24\n")
    sneaky = MaintainOptions.model_construct(snapshot_max_age_hours=1, keep_snapshots=1)
    with pytest.raises(ConfigError, match="at least"):
        check_options(sneaky)


# --------------------------------------------------------------------------- compaction


def test_compaction_keeps_every_row_and_cuts_the_file_count(
    home: HopperConfig, ledger: Ledger
) -> None:
    _batches(home, ledger, 4)
    table = _table(home)
    before, files = _rows(table), _files(table)
    keys = landed_keys(table)
    assert len(files) == 8 and len(before) == 16  # a file per month per batch

    report = maintain(home)
    (done,) = report.tables
    assert done.error is None and (done.files_before, done.files_after) == (8, 2)
    assert (done.files_rewritten, done.files_written) == (8, 2)
    table = _table(home)
    assert _rows(table) == before  # every row, lineage columns included
    assert len(_files(table)) == 2
    summary = table.current_snapshot().summary.additional_properties
    assert summary[MAINTENANCE_PROPERTY] == "compaction"
    assert LANDED_PROPERTY not in summary
    assert landed_keys(table) == keys  # exactly once still finds every landing
    assert done.compaction_snapshot_id == table.current_snapshot().snapshot_id

    again = maintain(home).tables[0]  # one file per partition: nothing left to do
    assert (again.files_rewritten, again.compaction_snapshot_id) == (0, None)


def test_a_batch_retried_after_compaction_does_not_append_again(
    home: HopperConfig, ledger: Ledger
) -> None:
    ref = _drop(home, "a.csv", [(1, "2024-01-05")])
    ledger.record_detected(ref)
    ledger.claim(ref, "run-1")
    first = ingest(IngestRequest(ref=ref, dispatch_id="d1"), home, isolate=False)
    land(home, ledger, [first], "d1")  # the worker dies before the ledger hears
    _batches(home, ledger, 2, start=1)
    maintain(home)
    rows = _rows(_table(home))
    retried = ingest(IngestRequest(ref=ref, dispatch_id="d2"), home, isolate=False)
    (outcome,) = land(home, ledger, [retried], "d2")
    assert outcome.state is FileState.INGESTED
    assert _rows(_table(home)) == rows


def test_an_append_committed_during_compaction_is_neither_lost_nor_duplicated(
    home: HopperConfig, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _batches(home, ledger, 3)
    stale = _table(home)  # what the maintenance planned with
    before = _rows(stale)
    rewrite, waits = upkeep.rewrite, []

    def rewrite_while_an_ingest_commits(table: Any, tasks: Any) -> Any:
        written = rewrite(table, tasks)
        if not waits:
            waits.append("ingest")
            _batches(home, ledger, 1, start=7)  # lands between planning and committing
        return written

    monkeypatch.setattr(upkeep, "rewrite", rewrite_while_an_ingest_commits)
    done = upkeep.maintain_table(
        stale, home.lake.maintain, target_bytes=128 << 20, sleep=waits.append
    )
    assert len(waits) > 1  # the commit conflicted and was retried after a pause
    table = _table(home)
    rows = _rows(table)
    assert len(rows) == len(before) + 4
    assert [r for r in rows if r["id"] < 70] == before
    assert sorted(r["id"] for r in rows if r["id"] >= 70) == [70, 71, 75, 76]
    assert done.files_after == len(_files(table)) == 2 + 2  # the compacted two, the new batch's
    assert done.rows_after == len(rows)


def test_rows_replaced_during_compaction_do_not_come_back(
    home: HopperConfig, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _batches(home, ledger, 3)
    stale = _table(home)
    rewrite, waits = upkeep.rewrite, []

    def rewrite_while_a_new_version_lands(table: Any, tasks: Any) -> Any:
        written = rewrite(table, tasks)
        if not waits:
            waits.append("replay")
            newer = _drop(home, "0-0.csv", [(900, "2024-01-05")])  # replaces ids 0 and 5
            _land(home, ledger, [newer], "new-version")
        return written

    monkeypatch.setattr(upkeep, "rewrite", rewrite_while_a_new_version_lands)
    upkeep.maintain_table(stale, home.lake.maintain, target_bytes=128 << 20, sleep=waits.append)
    ids = [r["id"] for r in _rows(_table(home))]
    assert 0 not in ids and 5 not in ids and ids.count(900) == 1
    assert len(ids) == 12 - 2 + 1
    assert len(ids) == len(set(ids))


def test_dry_run_changes_nothing(home: HopperConfig, ledger: Ledger) -> None:
    _batches(home, ledger, 3)
    files, snapshots = _files(_table(home)), len(_table(home).snapshots())
    later = datetime.now(UTC) + timedelta(days=30)
    (done,) = maintain(home, dry_run=True, now=later).tables
    assert (done.files_rewritten, done.files_written, done.files_after) == (6, 2, 2)
    assert done.snapshots_expired == 0  # 3 snapshots, all among the latest 10
    assert _files(_table(home)) == files and len(_table(home).snapshots()) == snapshots


# --------------------------------------------------------------------------- expiry


def test_expiry_removes_old_snapshots_and_keeps_the_latest(tmp_path: Path) -> None:
    home = _home(tmp_path, "  maintain:\n    compact: false\n    keep_snapshots: 3\n")
    led = Ledger(sqlite_url(home.state_dir))
    try:
        _batches(home, led, 5)
    finally:
        led.close()
    snapshots = [s.snapshot_id for s in _table(home).snapshots()]
    rows = _rows(_table(home))

    (young,) = maintain(home).tables  # all younger than 7 days
    assert young.snapshots_expired == 0 and len(_table(home).snapshots()) == 5

    (done,) = maintain(home, now=datetime.now(UTC) + timedelta(days=8)).tables
    assert (done.snapshots_expired, done.snapshots_kept) == (2, 3)
    table = _table(home)
    assert [s.snapshot_id for s in table.snapshots()] == snapshots[2:]
    assert table.current_snapshot().snapshot_id == snapshots[-1]
    assert _rows(table) == rows


# --------------------------------------------------------------------------- orphans


def test_orphan_removal_deletes_only_old_unreferenced_files(
    home: HopperConfig, ledger: Ledger
) -> None:
    _batches(home, ledger, 2)
    referenced = _on_disk(home, "data") | _on_disk(home, "metadata")
    _age(referenced, 2 * 86400)  # referenced files are old too, and must stay
    data = Path(home.lake.path) / "hopper" / "people" / "data"
    old_orphan = data / "day_month=2024-01" / "00000-0-left-behind.parquet"
    young_orphan = data / "day_month=2024-01" / "00000-0-being-committed.parquet"
    old_orphan.write_bytes(b"PAR1")
    young_orphan.write_bytes(b"PAR1")
    _age({str(old_orphan)}, 2 * 86400)
    rows = _rows(_table(home))
    no_compaction = home.model_copy(
        update={"lake": home.lake.model_copy(update={"maintain": MaintainOptions(compact=False)})}
    )

    (dry,) = maintain(no_compaction, dry_run=True).tables
    assert dry.orphans == 1 and old_orphan.exists()

    (done,) = maintain(no_compaction).tables
    assert (done.orphans, done.orphan_bytes) == (1, 4)
    assert not old_orphan.exists() and young_orphan.exists()
    assert referenced <= _on_disk(home, "data") | _on_disk(home, "metadata")
    assert _rows(_table(home)) == rows


def test_a_full_pass_leaves_only_what_the_table_refers_to(
    tmp_path: Path,
) -> None:
    home = _home(tmp_path, "  maintain:\n    keep_snapshots: 1\n")
    led = Ledger(sqlite_url(home.state_dir))
    try:
        _batches(home, led, 3)
    finally:
        led.close()
    rows = _rows(_table(home))
    maintain(home)  # compacts; the replaced files stay for the older snapshots
    assert len(_on_disk(home, "data")) == 6 + 2
    _age(_on_disk(home, "data") | _on_disk(home, "metadata"), 9 * 86400)
    (done,) = maintain(home, now=datetime.now(UTC) + timedelta(days=8)).tables
    assert done.snapshots_kept == 1 and done.orphans >= 6
    table = _table(home)
    assert _rows(table) == rows
    assert {Path(p.removeprefix("file://")) for p in _files(table)} == {
        Path(p) for p in _on_disk(home, "data")
    }


def test_orphan_removal_stands_down_when_live_files_are_not_where_it_looks(
    home: HopperConfig, ledger: Ledger
) -> None:
    _batches(home, ledger, 1)
    data = Path(home.lake.path) / "hopper" / "people" / "data"
    stray = data / "stray.parquet"
    stray.write_bytes(b"x")
    _age({str(stray)}, 2 * 86400)
    live = Path(_files(_table(home))[0].removeprefix("file://"))
    live.rename(live.with_name("moved.parquet"))
    (done,) = maintain(home).tables
    assert done.orphans == 0 and stray.exists()
    assert any("orphan removal skipped" in note for note in done.notes)


# --------------------------------------------------------------------------- surfaces


def test_a_parquet_lake_has_nothing_to_maintain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_home(tmp_path)
    report = maintain(load_config(config))
    assert report.tables == [] and report.lake_format == "parquet"
    assert "nothing to maintain" in report_markdown(report)
    code, out, _ = run_cli(capsys, "maintain", "--config", str(config))
    assert code == 0 and "Nothing to maintain" in out


def test_the_command_reports_each_table(
    home: HopperConfig, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    _batches(home, ledger, 2)
    code, out, _ = run_cli(capsys, "maintain", "--config", str(home.path), "--json")
    doc = json.loads(out)
    assert code == 0
    (table,) = doc["tables"]
    assert table["table"] == "hopper.people" and table["files_after"] == 2
    assert table["rows_after"] == 8 and table["error"] is None

    code, _, err = run_cli(capsys, "maintain", "--config", str(home.path), "--dataset", "orders")
    assert code == 1 and "no table hopper.orders yet" in err
    with pytest.raises(HopperError, match="no table"):
        maintain(home, "orders")


def test_the_report_renders_as_markdown(home: HopperConfig, ledger: Ledger) -> None:
    _batches(home, ledger, 2)
    text = report_markdown(maintain(home, dry_run=True))
    assert "dry run" in text and "| hopper.people | 4 → 2 | 8 |" in text


def test_the_maintain_deployment_is_scheduled_on_the_pool() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    PrefectYamlModel.model_validate(doc)
    (deployment,) = [d for d in doc["deployments"] if d["name"] == "hopper-maintain"]
    assert deployment["work_pool"]["name"] == "hopper"
    assert 0 < deployment["schedules"][0]["interval"] <= 86400
    assert deployment["concurrency_limit"]["limit"] == 1
    module, func = deployment["entrypoint"].split(":")
    source = (ROOT / module).read_text()
    assert f"def {func}(" in source and 'name="hopper-maintain"' in source


def test_a_new_version_whose_commit_meets_a_compaction_lands_on_retry(
    home: HopperConfig, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hopper.tables import commit as commit_module

    _batches(home, ledger, 3)
    before, compacted = commit_module.landed_keys, []

    def compaction_first(
        table: Any, now_ms: int | None = None, since: float | None = None
    ) -> dict[str, int]:
        if not compacted:  # between the landing's read of the table and its commit
            compacted.append(True)
            upkeep.compact(_table(home), 128 << 20, upkeep.TableUpkeep(table="hopper.people"))
        return before(table, now_ms, since)

    monkeypatch.setattr(commit_module, "landed_keys", compaction_first)
    newer = _drop(home, "0-0.csv", [(900, "2024-01-05")])  # replaces ids 0 and 5
    _land(home, ledger, [newer], "new-version")  # asserts the file ends ingested
    assert compacted
    ids = [r["id"] for r in _rows(_table(home))]
    assert 0 not in ids and 5 not in ids and ids.count(900) == 1
    assert len(ids) == 12 - 2 + 1
