"""A replay is taken in the ledger before its run exists, as the watcher's dispatch is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hopper.config import HopperConfig
from hopper.files import describe_file
from hopper.ledger import FileRecord, Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from hopper.replay import dispatch_replay


def _ingested(home: HopperConfig, ledger: Ledger) -> FileRecord:
    path = home.sources[0].path / "people" / "a.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,full name,score\n1,Ada,1.5\n")
    ref = describe_file(path, "people/a.csv", [])
    assert ref is not None
    ledger.record_detected(ref)
    ledger.claim(ref, "run-0")
    ledger.finish(_outcome(ref, FileState.INGESTED), "run-0")
    record = ledger.latest(ref.uri)
    assert record is not None and record.state is FileState.INGESTED
    return record


def _outcome(ref: FileRef, state: FileState) -> IngestOutcome:
    return IngestOutcome(uri=ref.uri, fingerprint=ref.fingerprint, dataset=ref.dataset, state=state)


class FastRun:
    """A run that claims and finishes its file before the API call returns."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.seen: list[FileState] = []

    def create_ingest_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        request = IngestRequest.model_validate(parameters["request"])
        before = self.ledger.latest(request.ref.uri)
        assert before is not None
        self.seen.append(before.state)
        self.ledger.claim(request.ref, "run-1", replay=request.replay)
        self.ledger.finish(_outcome(request.ref, FileState.INGESTED), "run-1")
        return "run-1"


class DownServer:
    def create_ingest_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        raise ConnectionError("the Prefect server is down")


def test_a_replay_is_dispatched_before_its_run_exists(home: HopperConfig, tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url(tmp_path / "state"))
    record = _ingested(home, ledger)
    api = FastRun(ledger)
    ref, run_id = dispatch_replay(record, home, ledger, api)
    assert (run_id, api.seen) == ("run-1", [FileState.DISPATCHED])
    after = ledger.latest(ref.uri)
    # The run's outcome stands: the replay does not move the file back to be sent again.
    assert after is not None and (after.state, after.flow_run_id) == (FileState.INGESTED, "run-1")


def test_a_replay_whose_run_cannot_be_created_stays_due_for_dispatch(
    home: HopperConfig, tmp_path: Path
) -> None:
    ledger = Ledger(sqlite_url(tmp_path / "state"))
    record = _ingested(home, ledger)
    with pytest.raises(ConnectionError, match="down"):
        dispatch_replay(record, home, ledger, DownServer())
    after = ledger.latest(record.uri)
    assert after is not None and after.state is FileState.DISPATCHED
    assert after.dispatch_id is not None and after.dispatch_id != record.dispatch_id
    assert [r.uri for r in ledger.unconfirmed(limit=10)] == [record.uri]
    assert ledger.awaiting_runs(limit=10) == [
        (after.uri, after.fingerprint, after.dispatch_id, after.dispatched_at)
    ]
