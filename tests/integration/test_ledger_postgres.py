"""The ledger on PostgreSQL: the same code path as SQLite, through one database URL.

Runs against the PostgreSQL on 127.0.0.1:5432 in a database created for the session; skipped
(with the reason) only where no PostgreSQL answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hopper.ledger import Ledger
from hopper.models import FileRef, FileState, IngestOutcome
from tests.integration.conftest import postgres_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database("hopper_test") as url:
        yield url


def _ref(name: str) -> FileRef:
    return FileRef(uri=f"s3://landing/in/d/{name}", size=1, mtime=1.0, dataset="d", etag=name)


def test_states_history_and_alerts_on_postgres(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    ref = _ref("a.csv")
    assert ledger.record_detected(ref) and not ledger.record_detected(ref)
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d1")
    ledger.mark_queued(ref.uri, ref.fingerprint, "run-1")
    assert ledger.claim(ref, "run-1") and not ledger.claim(ref, "run-2")
    ledger.finish(
        IngestOutcome(uri=ref.uri, fingerprint=ref.fingerprint, dataset="d",
                      state=FileState.QUARANTINED, reason="bad"),
        "run-1",
    )  # fmt: skip
    (pending,) = ledger.pending_alerts()
    assert ledger.claim_alert(pending, "sent") and not ledger.claim_alert(pending, "sent")
    events = [h["event"] for h in ledger.history(ref.uri)]
    assert events == ["detected", "dispatched", "queued", "running", "skipped", "quarantined",
                      "alerted"]  # fmt: skip
    ledger.close()


def test_batch_claims_are_exclusive_across_processes_sharing_postgres(pg_url: str) -> None:
    """Two workers (two Ledger engines) race for the same 200 files: each file has one owner."""
    refs = [_ref(f"race-{i}.csv") for i in range(200)]
    Ledger(pg_url).claim_many(refs[:1], "warmup")  # create the tables before the race
    results: dict[str, list[bool]] = {}

    def worker(run: str) -> None:
        results[run] = Ledger(pg_url).claim_many(refs, run)

    threads = [threading.Thread(target=worker, args=(f"run-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    owners = [a + b for a, b in zip(results["run-0"], results["run-1"], strict=True)]
    assert owners[1:] == [1] * 199  # every file (but the warm-up one) claimed exactly once
    ledger = Ledger(pg_url)
    done = [
        IngestOutcome(uri=r.uri, fingerprint=r.fingerprint, dataset="d", state=FileState.INGESTED)
        for r in refs
    ]
    ledger.finish_many(done, "run-0")
    assert ledger.dataset_day("d", since=0)["ingested"] == 200
