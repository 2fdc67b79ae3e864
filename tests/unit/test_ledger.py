import dataclasses
import time
from pathlib import Path

from hopper.ledger import Lease, Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(sqlite_url(tmp_path / "state"))


def _ref(name: str = "a.csv", sha: str = "01") -> FileRef:
    return FileRef(uri=f"file:///in/sales/{name}", size=3, mtime=1.0, dataset="sales", sha256=sha)


def test_same_version_is_recorded_once_and_new_version_is_new(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.record_detected(_ref()) is True
    assert ledger.record_detected(_ref()) is False
    assert ledger.record_detected(_ref(sha="02")) is True
    assert [v.fingerprint for v in ledger.versions(_ref().uri)] == ["sha256:01", "sha256:02"]


def test_dispatch_until_confirmed(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.record_detected(ref)
    assert [r.uri for r in ledger.due_for_dispatch(confirm_seconds=60)] == [ref.uri]
    assert ledger.due_count(confirm_seconds=60) == 1  # counted as the watcher counts a burst
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d1")
    assert ledger.due_for_dispatch(confirm_seconds=60) == []
    assert ledger.due_count(confirm_seconds=60) == 0
    # unconfirmed for longer than confirm_seconds: due again
    assert [r.dispatch_id for r in ledger.due_for_dispatch(confirm_seconds=0)] == ["d1"]
    assert ledger.due_count(confirm_seconds=0) == 1
    ledger.mark_queued(ref.uri, ref.fingerprint, "run-1")
    assert ledger.due_for_dispatch(confirm_seconds=0) == []
    assert ledger.due_count(confirm_seconds=0) == 0
    assert ledger.get(ref.uri, ref.fingerprint).state == FileState.QUEUED  # type: ignore[union-attr]


def test_claim_is_exclusive_unless_replay(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.record_detected(ref)
    assert ledger.claim(ref, "run-1") is True
    assert ledger.claim(ref, "run-2") is False  # another run owns it
    assert ledger.claim(ref, "run-1") is True  # the same run may retry
    ledger.finish(
        IngestOutcome(
            uri=ref.uri, fingerprint=ref.fingerprint, dataset="sales", state=FileState.INGESTED
        ),
        "run-1",
    )
    assert ledger.claim(ref, "run-3") is False  # settled
    assert ledger.claim(ref, "run-4", replay=True) is True
    events = [h["event"] for h in ledger.history(ref.uri)]
    assert events == ["detected", "running", "skipped", "running", "ingested", "skipped", "running"]


def test_claim_records_unknown_versions(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    assert ledger.claim(ref, "run-1") is True
    assert ledger.latest(ref.uri).state == FileState.RUNNING  # type: ignore[union-attr]


def test_records_filters_latest_versions(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    old, new, other = _ref(sha="01"), _ref(sha="02"), _ref("b.csv")
    for ref in (old, new, other):
        ledger.record_detected(ref)
    ledger.finish(
        IngestOutcome(
            uri=other.uri,
            fingerprint=other.fingerprint,
            dataset="sales",
            state=FileState.QUARANTINED,
            reason="bad",
        ),
        "run-9",
    )
    latest = {r.uri: r.fingerprint for r in ledger.records()}
    assert latest == {old.uri: "sha256:02", other.uri: other.fingerprint}
    assert [r.uri for r in ledger.records(states=[FileState.QUARANTINED])] == [other.uri]
    assert [(r.dataset, r.state) for r in ledger.records()] == [
        ("sales", FileState.DETECTED),
        ("sales", FileState.QUARANTINED),
    ]


def test_redispatch_backs_off_exponentially(tmp_path: Path) -> None:
    import time

    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.record_detected(ref)
    for attempt in range(1, 4):
        ledger.mark_dispatched(ref.uri, ref.fingerprint, f"d{attempt}")
    # three dispatches: the next one waits 2**2 = 4 × confirm_seconds
    dispatched_at = ledger.latest(ref.uri).dispatched_at  # type: ignore[union-attr]
    assert dispatched_at is not None and dispatched_at <= time.time()
    assert ledger.due_for_dispatch(confirm_seconds=0.05) == []
    time.sleep(0.25)
    assert [r.dispatch_count for r in ledger.due_for_dispatch(confirm_seconds=0.05)] == [3]


def test_batch_operations_accept_nothing(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.claim_many([], "run-1") == []
    ledger.finish_many([], "run-1")
    assert ledger.dispatched_under("nope") == []


def test_refs_under_a_dispatch_are_those_of_its_unclaimed_records_in_order(
    tmp_path: Path,
) -> None:
    ledger = _ledger(tmp_path)
    refs = [_ref(f"{name}.csv", sha) for name, sha in (("c", "03"), ("a", "01"), ("b", "02"))]
    ledger.record_many(refs)
    for ref in refs:
        ledger.mark_dispatched(ref.uri, ref.fingerprint, "d1")
    other = _ref("other.csv", "04")
    ledger.record_many([other])
    ledger.mark_dispatched(other.uri, other.fingerprint, "d2")
    assert ledger.claim_many([refs[1]], "run-1") == [True]  # claimed: no longer under d1
    expected = [r.ref for r in ledger.dispatched_under("d1")]
    assert [r.uri for r in expected] == [refs[0].uri, refs[2].uri]  # in detection order
    assert ledger.refs_under("d1") == expected
    assert ledger.refs_under("d2") == [other]
    assert ledger.refs_under("nope") == []


def test_a_lease_is_renewed_while_held_and_a_lapsed_one_is_requeued(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    held, lost = _ref("held.csv"), _ref("lost.csv")
    assert ledger.claim_many([held, lost], "run-alive") == [True, True]
    ledger.claim(lost, "run-dead", replay=True)  # taken over by a run that then dies
    before = ledger.get(held.uri, held.fingerprint).updated_at  # type: ignore[union-attr]
    with Lease(ledger, "run-alive", seconds=0.8):  # renewed every 0.2 s
        time.sleep(0.7)
    renewed = ledger.get(held.uri, held.fingerprint)
    stale = ledger.get(lost.uri, lost.fingerprint)
    assert renewed is not None and renewed.updated_at > before
    assert stale is not None and stale.updated_at < renewed.updated_at
    # requeue is conditional on what was read: a renewed record is left alone
    outdated = dataclasses.replace(renewed, updated_at=before)
    assert ledger.requeue([outdated, stale]) == 1
    assert ledger.get(held.uri, held.fingerprint).state == FileState.RUNNING  # type: ignore[union-attr]
    assert ledger.get(lost.uri, lost.fingerprint).state == FileState.DETECTED  # type: ignore[union-attr]
    assert [r.uri for r in ledger.due_for_dispatch(confirm_seconds=60)] == [lost.uri]
    assert ledger.history(lost.uri)[-1]["event"] == "requeued"


def test_requeued_versions_can_be_taken_for_dispatch_at_once(tmp_path: Path) -> None:
    """Revival hands the requeued records straight to take_for_dispatch (reconcile does)."""
    ledger = _ledger(tmp_path)
    lost, moved_on = _ref("lost.csv"), _ref("moved.csv")
    ledger.record_many([lost, moved_on])
    taken = ledger.take_for_dispatch(ledger.due_for_dispatch(confirm_seconds=60), "d1")
    assert len(taken) == 2
    ledger.claim_many([lost, moved_on], "run-dead")
    read = {r.uri: r for r in ledger.records()}
    time.sleep(0.01)
    ledger.claim(moved_on, "run-new", replay=True)  # taken over after it was read: left alone
    requeued = ledger.requeue_records([read[lost.uri], read[moved_on.uri]])
    assert [r.uri for r in requeued] == [lost.uri]
    (record,) = requeued
    assert record.state == FileState.DETECTED and record.dispatch_id == "d1"
    assert record == ledger.get(lost.uri, lost.fingerprint)
    assert ledger.take_for_dispatch(requeued, "d2") == requeued
    assert ledger.get(lost.uri, lost.fingerprint).dispatch_id == "d2"  # type: ignore[union-attr]
    assert ledger.get(moved_on.uri, moved_on.fingerprint).state == FileState.RUNNING  # type: ignore[union-attr]
