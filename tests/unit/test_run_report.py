"""An ingest run's final state is named after its worst outcome, and Hopper reads only its type.

The runs list in the Prefect UI shows ``Quarantined`` and ``Failed files``; revival
(:mod:`hopper.reconcile`, shared by the watcher) must not take such a run's settled files for
lost ones: only files the ledger still shows queued or running are sent again.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hopper.config import HopperConfig
from hopper.files import describe_file
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome
from hopper.prefect_api import RunState
from hopper.reconcile import reconcile
from hopper.report import (
    FAILED_FILES,
    QUARANTINED,
    SKIPPED,
    counts,
    file_markdown,
    final_state,
    outcome_rows,
)


def _outcome(name: str, state: FileState, reason: str | None = None) -> IngestOutcome:
    return IngestOutcome(
        uri=f"file:///in/sales/{name}", fingerprint="f", dataset="sales", state=state, reason=reason
    )


GOOD = _outcome("good.csv", FileState.INGESTED)
BAD = _outcome("bad.csv", FileState.QUARANTINED, "column 'qty': not int64 (rows 2)\ndetail")
BROKEN = _outcome("broken.csv", FileState.FAILED, "TransientError: the lake is unreachable")


def test_all_ingested_is_plain_completed() -> None:
    state = final_state([GOOD, GOOD], {"ingested": 2})
    assert state.is_completed() and state.name == "Completed"
    assert state.message == "2 files ingested"


def test_quarantined_files_name_the_completed_state() -> None:
    state = final_state([GOOD, BAD])
    assert state.is_completed() and state.name == QUARANTINED
    assert state.message == "1 of 2 files quarantined: bad.csv (column 'qty': not int64 (rows 2))"


def test_any_failed_file_fails_the_run_and_both_kinds_are_counted() -> None:
    state = final_state([GOOD, BAD, BROKEN])
    assert state.is_failed() and state.name == FAILED_FILES
    assert state.message == (
        "1 of 3 files failed: broken.csv (TransientError: the lake is unreachable). "
        "1 of 3 files quarantined: bad.csv (column 'qty': not int64 (rows 2))"
    )


def test_a_long_list_is_cut_and_counted() -> None:
    many = [_outcome(f"f{i}.csv", FileState.QUARANTINED, "x" * 300) for i in range(6)]
    message = final_state(many).message or ""
    assert message.startswith("6 of 6 files quarantined: f0.csv (")
    assert "f3.csv" not in message and len(message) <= 1000
    assert final_state(many[:4]).message.endswith("; and 1 more")  # type: ignore[union-attr]


def test_a_run_with_nothing_of_its_own_says_skipped() -> None:
    state = final_state([], {"skipped": 3}, skipped=3)
    assert state.is_completed() and state.name == SKIPPED
    assert state.message == "3 files already handled by other runs"


def test_rows_list_each_file_with_its_outcome_reason_and_replay() -> None:
    refs = {
        o.uri: FileRef(uri=o.uri, size=1, mtime=1.0, dataset="sales") for o in (GOOD, BAD, BROKEN)
    }
    rows = outcome_rows([GOOD, BAD, BROKEN], refs)
    assert [(r["file"], r["state"], r["replay"]) for r in rows] == [
        ("good.csv", "ingested", ""),
        ("bad.csv", "quarantined", "hopper replay /in/sales/bad.csv"),
        ("broken.csv", "failed", "hopper replay /in/sales/broken.csv"),
    ]
    assert rows[1]["reason"] == BAD.reason
    assert len(outcome_rows([BAD] * 5, refs, limit=2)) == 2
    assert counts([GOOD, BAD, BAD]) == {"ingested": 1, "quarantined": 2, "failed": 0}


def test_one_files_note_says_both_ways_to_replay() -> None:
    ref = FileRef(uri=BAD.uri, size=1, mtime=1.0, dataset="sales")
    text = file_markdown(BAD, ref, "http://ui/deployments/deployment/d1")
    assert text.startswith("# bad.csv: quarantined")
    assert "`hopper replay /in/sales/bad.csv`" in text
    assert "[from the Prefect UI](http://ui/deployments/deployment/d1/run?parameters=" in text
    assert "Prefect UI" not in file_markdown(BAD, ref, None)


class Runs:
    """Prefect's view of flow runs, as revival reads it."""

    def __init__(self, states: dict[str, RunState]) -> None:
        self.states = states
        self.created: list[dict[str, Any]] = []
        self.crashed: list[str] = []

    def run_states(self, flow_run_ids: set[str]) -> dict[str, RunState]:
        return {i: s for i, s in self.states.items() if i in flow_run_ids}

    def mark_crashed(self, flow_run_id: str, message: str) -> None:
        self.crashed.append(flow_run_id)

    def create_ingest_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        self.created.append(parameters)
        return f"run-new-{len(self.created)}"

    def create_batch_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        return self.create_ingest_run(parameters, idempotency_key)


def _claimed(home: HopperConfig, ledger: Ledger, name: str, run: str) -> FileRef:
    path = home.sources[0].path / "sales" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"id\n{name}\n")
    ref = describe_file(path, f"sales/{name}", [])
    assert ref is not None
    ledger.record_detected(ref)
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d0")
    ledger.claim(ref, run)
    return ref


@pytest.mark.parametrize("worst", [FileState.QUARANTINED, FileState.FAILED])
def test_a_named_final_state_never_sends_settled_files_again(
    home: HopperConfig, tmp_path: Path, worst: FileState
) -> None:
    ledger = Ledger(sqlite_url(tmp_path / "state"))
    good, bad, lost = (_claimed(home, ledger, n, "run-1") for n in ("a.csv", "b.csv", "c.csv"))
    outcomes = [
        IngestOutcome(uri=ref.uri, fingerprint=ref.fingerprint, dataset="sales", state=state)
        for ref, state in ((good, FileState.INGESTED), (bad, worst))
    ]
    ledger.finish_many(outcomes, "run-1")  # "c.csv" has no outcome: its run lost it
    state = final_state(outcomes)
    assert state.name == (QUARANTINED if worst is FileState.QUARANTINED else FAILED_FILES)
    run = RunState.of(SimpleNamespace(state=state))  # what Hopper reads of it: the type
    assert run is not None and run.type == ("COMPLETED" if state.is_completed() else "FAILED")

    report = reconcile(home, ledger, Runs({"run-1": run}), rescan=False)

    assert report.redispatched == [lost.uri]  # only the file without an outcome goes again
    after = {ref.uri: ledger.latest(ref.uri) for ref in (good, bad)}
    assert [(r.state, r.flow_run_id) for r in after.values() if r] == [
        (FileState.INGESTED, "run-1"),
        (worst, "run-1"),
    ]
