"""Reconciliation: dead runs are re-dispatched, in batches, a bounded number of times."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from hopper.config import HopperConfig
from hopper.files import describe_file
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState
from hopper.prefect_api import RunState
from hopper.reconcile import is_dead, reconcile


class ScriptedRuns:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.created: list[dict[str, object]] = []
        self.crashed: list[str] = []

    def run_states(self, flow_run_ids: set[str]) -> dict[str, RunState]:
        now = time.time()
        return {
            i: RunState(type=self.states[i], since=now) for i in flow_run_ids if i in self.states
        }

    def mark_crashed(self, flow_run_id: str, message: str) -> None:
        self.crashed.append(flow_run_id)
        self.states[flow_run_id] = "CRASHED"

    def create_ingest_run(self, parameters: dict[str, object], idempotency_key: str) -> str:
        self.created.append(parameters)
        run_id = f"run-{len(self.created) + 100}"
        self.states[run_id] = "SCHEDULED"
        return run_id

    def create_batch_run(self, parameters: dict[str, object], idempotency_key: str) -> str:
        return self.create_ingest_run(parameters, idempotency_key)


def _running(home: HopperConfig, ledger: Ledger, name: str, run: str) -> FileRef:
    path = home.sources[0].path / "people" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id\n1\n")
    ref = describe_file(path, f"people/{name}", [])
    assert ref is not None
    ledger.record_detected(ref)
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d0")
    ledger.claim(ref, run)
    return ref


def test_is_dead_rules() -> None:
    from hopper.ledger import FileRecord

    ref = FileRef(uri="file:///a", size=1, mtime=1.0)
    now = time.time()
    rec = FileRecord(
        ref.uri,
        ref.fingerprint,
        None,
        FileState.RUNNING,
        ref,
        "d",
        now,
        1,
        "r",
        None,
        None,
        now,
        now,
    )

    def run(kind: str, since: float = now) -> RunState:
        return RunState(type=kind, since=since)

    assert is_dead(rec, run("CRASHED"), now, 60)
    assert is_dead(rec, None, now, 60)
    assert not is_dead(rec, run("RUNNING"), now + 10, 60)
    assert is_dead(rec, run("RUNNING"), now + 61, 60)  # its lease was not renewed
    assert not is_dead(rec, run("SCHEDULED"), now + 600, 60)
    queued = dataclasses.replace(rec, state=FileState.QUEUED)
    assert is_dead(queued, run("COMPLETED"), now, 60)  # completed without an outcome
    assert not is_dead(queued, run("PENDING"), now + 10, 60)
    assert is_dead(queued, run("PENDING"), now + 61, 60)  # picked up, never claimed: lost
    assert not is_dead(queued, run("SCHEDULED"), now + 600, 60)  # waiting for a free worker
    # queued long ago, taken by a worker only now: the clock starts when the run started
    assert not is_dead(queued, run("RUNNING", since=now + 590), now + 600, 60)
    assert is_dead(queued, run("RUNNING", since=now + 530), now + 600, 60)


def test_crashed_run_is_redispatched_then_given_up(home: HopperConfig, tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    ref = _running(home, ledger, "a.csv", "run-1")
    runs = ScriptedRuns({"run-1": "CRASHED"})
    report = reconcile(home, ledger, runs, max_dispatches=2, rescan=False)
    assert report.redispatched == [ref.uri]
    assert runs.created[0]["request"]["ref"]["uri"] == ref.uri  # type: ignore[index]
    # sent again as a first dispatch of a requeued version, linked to the run that died
    events = [(h["event"], h["detail"]) for h in ledger.history(ref.uri)]
    assert ("requeued", {"dead_run": "run-1"}) in events
    assert events[-1][0] == "queued"
    # the new run crashes too: the bound (2 dispatches) is reached → failed, alert pending
    new_run = ledger.latest(ref.uri).flow_run_id  # type: ignore[union-attr]
    ledger.claim(ref, new_run or "", replay=True)
    runs.states[new_run or ""] = "CRASHED"
    report = reconcile(home, ledger, runs, max_dispatches=2, rescan=False)
    assert report.given_up == [ref.uri]
    latest = ledger.latest(ref.uri)
    assert latest is not None and latest.state == FileState.FAILED and latest.alert == "pending"


def test_healthy_runs_are_left_alone_and_rescan_finds_files(home: HopperConfig) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    _running(home, ledger, "a.csv", "run-1")
    extra = home.sources[0].path / "people" / "new.csv"
    extra.write_text("id\n2\n")
    runs = ScriptedRuns({"run-1": "RUNNING"})
    report = reconcile(home, ledger, runs)
    assert report.redispatched == [] and report.given_up == []
    assert report.detected == 1


def test_many_dead_files_go_out_as_batches_not_one_run_each(home: HopperConfig) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    refs = [_running(home, ledger, f"{i}.csv", "run-lost") for i in range(5)]
    waiting = FileRef(uri="file:///in/people/late.csv", size=1, mtime=1.0, dataset="people")
    ledger.record_detected(waiting)  # detected while no watcher ran
    runs = ScriptedRuns({"run-lost": "CRASHED"})
    config = home.model_copy(update={"watch": home.watch.model_copy(update={"batch_max_files": 4})})
    report = reconcile(config, ledger, runs, rescan=False, pending_seconds=-1)
    assert sorted(report.redispatched) == sorted([*(r.uri for r in refs), waiting.uri])
    # six files, batches of at most four: two runs, never one per file
    assert len(runs.created) == 2
    batches = [p["batch"] for p in runs.created]  # type: ignore[index]
    assert sorted(b["count"] for b in batches) == [2, 4]  # type: ignore[index]
    # each batch run finds its files in the ledger under its dispatch id, queued for it
    taken = [r for b in batches for r in ledger.dispatched_under(b["dispatch_id"])]  # type: ignore[index]
    assert len({r.uri for r in taken}) == 6
    assert {r.state for r in taken} == {FileState.QUEUED}


def test_watcher_and_reconcile_give_up_at_the_same_limit(home: HopperConfig) -> None:
    """One revival policy: a version at MAX_DISPATCHES fails, whoever finds its run dead."""
    from hopper.reconcile import MAX_DISPATCHES, RevivalPolicy, revive_lost

    ledger = Ledger(sqlite_url(home.state_dir))
    ref = _running(home, ledger, "tired.csv", "run-1")
    for _ in range(MAX_DISPATCHES - 1):  # dispatched MAX_DISPATCHES times in all
        ledger.mark_dispatched(ref.uri, ref.fingerprint, "again")
    ledger.claim(ref, "run-1", replay=True)
    runs = ScriptedRuns({"run-1": "CRASHED"})
    (record,) = ledger.records()
    assert record.dispatch_count == MAX_DISPATCHES
    revival = revive_lost(ledger, runs, [record], RevivalPolicy(lease_seconds=60))
    assert revival.requeued == [] and [r.uri for r in revival.given_up] == [ref.uri]
    latest = ledger.latest(ref.uri)
    assert latest is not None and latest.state == FileState.FAILED and latest.alert == "pending"
    assert runs.created == []
