"""The ledger's side of source clean-up: which versions are due, settling once, replays."""

from __future__ import annotations

from pathlib import Path

from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(sqlite_url(tmp_path / "state"))


def _ingested(
    ledger: Ledger, uri: str, sha: str = "01", state: FileState = FileState.INGESTED
) -> FileRef:
    ref = FileRef(uri=uri, size=3, mtime=1.0, dataset="sales", sha256=sha)
    ledger.claim(ref, "run-1")
    ledger.finish(
        IngestOutcome(uri=uri, fingerprint=ref.fingerprint, dataset="sales", state=state), "run-1"
    )
    return ref


def test_only_ingested_versions_under_the_prefixes_are_due(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    a = _ingested(ledger, "file:///in/sales/a.csv")
    _ingested(ledger, "file:///in/sales/bad.csv", state=FileState.QUARANTINED)
    _ingested(ledger, "file:///in/sales/lost.csv", state=FileState.FAILED)
    _ingested(ledger, "file:///kept/sales/k.csv")
    pending = FileRef(uri="file:///in/sales/new.csv", size=1, mtime=1.0, sha256="02")
    ledger.record_detected(pending)
    assert [r.uri for r in ledger.cleanup_due(["file:///in/"])] == [a.uri]
    assert ledger.cleanup_due([]) == []


def test_a_prefix_with_like_wildcards_matches_only_itself(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _ingested(ledger, "file:///in_x/sales/a.csv")
    _ingested(ledger, "file:///in%25/sales/b.csv")
    assert ledger.cleanup_due(["file:///in_/"]) == []
    assert [r.uri for r in ledger.cleanup_due(["file:///in%25/"])] == ["file:///in%25/sales/b.csv"]


def test_a_clean_up_is_settled_once_with_its_history_row(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ingested(ledger, "file:///in/sales/a.csv")
    target = "file:///archive/sales/2026-01-02/a.csv"
    assert ledger.mark_cleaned(ref.uri, ref.fingerprint, "archived", archived_uri=target)
    assert not ledger.mark_cleaned(ref.uri, ref.fingerprint, "archived", archived_uri=target)
    record = ledger.get(ref.uri, ref.fingerprint)
    assert record is not None
    assert (record.state, record.cleanup, record.archived_uri) == (
        FileState.INGESTED,
        "archived",
        target,
    )
    assert record.cleaned_at is not None
    assert ledger.cleanup_due(["file:///in/"]) == []
    events = [h for h in ledger.history(ref.uri) if h["event"] == "archived"]
    assert len(events) == 1 and events[0]["detail"]["archived_uri"] == target


def test_a_version_left_alone_is_noted_as_skipped(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ingested(ledger, "file:///in/sales/a.csv")
    assert ledger.mark_cleaned(ref.uri, ref.fingerprint, "changed")
    assert ledger.history(ref.uri)[-1]["event"] == "cleanup_skipped"
    assert ledger.history(ref.uri)[-1]["detail"]["cleanup"] == "changed"


def test_a_replay_makes_an_archived_version_due_again_once_ingested(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ingested(ledger, "file:///in/sales/a.csv")
    ledger.mark_cleaned(ref.uri, ref.fingerprint, "archived", archived_uri="file:///ar/a.csv")
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d2", replay_of="run-1")
    assert ledger.cleanup_due(["file:///in/"]) == []  # not before it is ingested again
    ledger.claim(ref, "run-2", replay=True)
    ledger.finish(
        IngestOutcome(
            uri=ref.uri, fingerprint=ref.fingerprint, dataset="sales", state=FileState.INGESTED
        ),
        "run-2",
    )
    assert [r.uri for r in ledger.cleanup_due(["file:///in/"])] == [ref.uri]
    record = ledger.get(ref.uri, ref.fingerprint)
    assert record is not None and record.archived_uri == "file:///ar/a.csv"


def test_a_plain_dispatch_leaves_the_clean_up_alone(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ingested(ledger, "file:///in/sales/a.csv")
    ledger.mark_cleaned(ref.uri, ref.fingerprint, "deleted")
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d2")
    record = ledger.get(ref.uri, ref.fingerprint)
    assert record is not None and record.cleaned_at is not None
