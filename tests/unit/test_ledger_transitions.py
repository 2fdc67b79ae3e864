"""The ledger's table of allowed moves, and the one helper that keeps to it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from hopper.ledger import TRANSITIONS, IllegalTransition, Ledger, sqlite_url
from hopper.ledger.tables import files
from hopper.ledger.transitions import (
    CLAIMABLE,
    Move,
    Step,
    check,
    constant,
    move,
    one_of,
    sources,
)
from hopper.models import FileRef, FileState, IngestOutcome

S = FileState
FINAL = {s for s in FileState if s.is_final}

# Every move the ledger's callers make (watcher, flows, reconcile, replay), and why.
CALLERS_MOVES = [
    *((S.DETECTED, to) for to in (S.DISPATCHED,)),  # watcher / reconcile take it
    (S.DISPATCHED, S.DISPATCHED),  # unconfirmed: sent again
    (S.DISPATCHED, S.QUEUED),  # its run was found
    *((s, S.RUNNING) for s in (S.DETECTED, S.DISPATCHED, S.QUEUED, S.FAILED)),  # claimed
    *((s, S.RUNNING) for s in FileState),  # replay, or its own run retried
    *((s, S.DISPATCHED) for s in FileState),  # hopper replay
    *((s, f) for s in (S.QUEUED, S.RUNNING) for f in FINAL),  # outcome; revival gives up
    *((s, f) for s in FileState for f in FINAL),  # a late outcome of a lapsed run
    (S.QUEUED, S.DETECTED),  # revival: its run died
    (S.RUNNING, S.DETECTED),  # revival: its lease lapsed
]


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(sqlite_url(tmp_path / "state"))


def _ref(name: str = "a.csv") -> FileRef:
    return FileRef(uri=f"file:///in/sales/{name}", size=3, mtime=1.0, dataset="sales", sha256="01")


def _outcome(ref: FileRef, state: FileState) -> IngestOutcome:
    return IngestOutcome(uri=ref.uri, fingerprint=ref.fingerprint, dataset="sales", state=state)


def test_the_table_names_every_state_and_every_callers_move() -> None:
    assert set(TRANSITIONS) == set(FileState)
    for was, to in CALLERS_MOVES:
        check(was, to)
    assert {(w, t) for w, nexts in TRANSITIONS.items() for t in nexts} == set(CALLERS_MOVES)


def test_what_the_table_forbids() -> None:
    assert sources(S.QUEUED) == {S.DISPATCHED}
    assert sources(S.DETECTED) == {S.QUEUED, S.RUNNING}
    with pytest.raises(IllegalTransition, match="cannot go from ingested to detected"):
        check(S.INGESTED, S.DETECTED)
    assert {S.DETECTED, S.DISPATCHED, S.QUEUED, S.FAILED} == CLAIMABLE


def test_a_burst_is_marked_queued_in_a_few_transactions_each_version_once(
    tmp_path: Path,
) -> None:
    ledger = _ledger(tmp_path)
    refs = [_ref(f"f{i}.csv") for i in range(1203)]
    for ref in refs:
        ledger.record_detected(ref)
    ledger.take_for_dispatch(ledger.due_for_dispatch(confirm_seconds=60, limit=5000), "d1")
    assert ledger.claim(refs[0], "run-early")  # a worker was quicker than the confirmation
    ledger.mark_queued_many([(r.uri, r.fingerprint, f"run-{i // 600}") for i, r in enumerate(refs)])
    states = [ledger.get(r.uri, r.fingerprint) for r in refs]
    assert states[0] is not None and states[0].state == S.RUNNING  # not taken back
    assert all(r is not None and r.state == S.QUEUED for r in states[1:])
    assert {r.flow_run_id for r in states[1:] if r} == {"run-0", "run-1", "run-2"}
    assert [h["event"] for h in ledger.history(refs[700].uri)] == [
        "detected", "dispatched", "queued",
    ]  # fmt: skip


def test_a_version_along_the_watcher_path_notes_each_move(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.record_detected(ref)
    (taken,) = ledger.take_for_dispatch(ledger.due_for_dispatch(confirm_seconds=60), "d1")
    assert taken.state == S.DETECTED  # as read
    ledger.mark_queued(ref.uri, ref.fingerprint, "run-1")
    assert ledger.claim(ref, "run-1")
    ledger.finish(_outcome(ref, S.INGESTED), "run-1")
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d2", replay_of="run-1")
    ledger.mark_queued(ref.uri, ref.fingerprint, "run-2")
    assert ledger.claim(ref, "run-2", replay=True)
    history = ledger.history(ref.uri)
    assert [h["event"] for h in history] == [
        "detected", "dispatched", "queued", "running", "ingested",
        "replayed", "queued", "running",
    ]  # fmt: skip
    assert history[5]["detail"] == {"dispatch_id": "d2", "replay_of": "run-1"}
    assert history[6]["flow_run_id"] == "run-2"
    record = ledger.get(ref.uri, ref.fingerprint)
    assert record is not None and record.dispatch_count == 2 and record.dispatch_id == "d2"


def test_an_illegal_move_raises_and_writes_nothing(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.record_detected(ref)
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d1")
    read = ledger.get(ref.uri, ref.fingerprint)
    assert read is not None
    with pytest.raises(IllegalTransition, match="cannot go from dispatched to detected"):
        ledger.requeue([read])  # only a queued or running version is taken back
    with pytest.raises(IllegalTransition, match="an outcome must be final"):
        ledger.finish(_outcome(ref, S.RUNNING), "run-1")
    assert ledger.get(ref.uri, ref.fingerprint) == read
    assert [h["event"] for h in ledger.history(ref.uri)] == ["detected", "dispatched"]


def test_a_guarded_move_that_finds_another_state_is_a_lost_race_not_an_error(
    tmp_path: Path,
) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.record_detected(ref)
    ledger.mark_queued(ref.uri, ref.fingerprint, "run-1")  # never dispatched: nothing to do
    assert ledger.claim(ref, "run-1")
    running = ledger.get(ref.uri, ref.fingerprint)
    assert running is not None
    assert ledger.requeue([dataclasses.replace(running, state=S.QUEUED)]) == 0  # as read once
    assert ledger.get(ref.uri, ref.fingerprint).state == S.RUNNING  # type: ignore[union-attr]
    assert [h["event"] for h in ledger.history(ref.uri)] == ["detected", "running"]


def test_an_unguarded_move_from_a_state_the_table_forbids_raises(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.record_detected(ref)
    to_queued = Move(ref.uri, ref.fingerprint, S.QUEUED, "queued")
    with (
        pytest.raises(IllegalTransition, match="cannot go from detected to queued"),
        ledger._begin() as conn,
    ):
        move(conn, Step(), [to_queued], 1.0)
    assert ledger.get(ref.uri, ref.fingerprint).state == S.DETECTED  # type: ignore[union-attr]


def test_a_batch_claim_of_an_unknown_version_notes_its_detection(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    assert ledger.claim_many([ref], "run-1") == [True]
    assert [h["event"] for h in ledger.history(ref.uri)] == ["detected", "running"]


def test_a_late_outcome_of_a_lapsed_run_still_lands(tmp_path: Path) -> None:
    """Its version was requeued (detected) meanwhile; the last report wins, as before."""
    ledger = _ledger(tmp_path)
    ref = _ref()
    ledger.claim(ref, "run-slow")
    read = ledger.get(ref.uri, ref.fingerprint)
    assert read is not None and ledger.requeue([read]) == 1
    ledger.finish(_outcome(ref, S.QUARANTINED), "run-slow")
    record = ledger.get(ref.uri, ref.fingerprint)
    assert record is not None and record.state == S.QUARANTINED and record.alert == "pending"


def test_a_batch_claim_tells_which_versions_it_won_when_some_are_taken(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    refs = [_ref(f"{i}.csv") for i in range(5)]
    assert ledger.claim_many(refs[1:4:2], "run-other") == [True, True]  # 1 and 3
    assert ledger.claim_many(refs, "run-1") == [True, False, True, False, True]
    for i, ref in enumerate(refs):
        record = ledger.get(ref.uri, ref.fingerprint)
        assert record is not None and record.flow_run_id == ("run-other" if i % 2 else "run-1")
        events = [h["event"] for h in ledger.history(ref.uri)]
        assert events == (["detected", "running", "skipped"] if i % 2 else ["detected", "running"])
    # Outcomes of a batch, one of them for a version its run no longer holds.
    outcomes = [_outcome(ref, S.INGESTED) for ref in refs]
    ledger.finish_many(outcomes, "run-1")
    assert [ledger.get(r.uri, r.fingerprint).state for r in refs] == [S.INGESTED] * 5  # type: ignore[union-attr]


def test_a_version_twice_in_one_batch_moves_once(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ref = _ref()
    assert ledger.claim_many([ref, ref], "run-1") == [True, True]  # the same run holds it
    assert [h["event"] for h in ledger.history(ref.uri)] == ["detected", "running", "running"]


def test_the_states_a_move_goes_from_and_to_are_written_into_its_statement() -> None:
    # Run for many rows at once, a statement's fixed values would be rebuilt for every row
    # if they were bound parameters; only the row's own values are.
    statement = Step(guard=[one_of(files.c.alert, ["sent", "digested"])]).statement(
        None, FileState.RUNNING
    )
    compiled = statement.compile(dialect=sqlite.dialect())
    assert set(compiled.params) == {"u", "f", "b_now"}
    assert "'running'" in str(compiled) and "'sent'" in str(compiled)
    assert str(constant("").compile()) == "''"
    for word in ("x'; DROP TABLE files; --", "a b", "état"):
        with pytest.raises(ValueError, match="not a word"):
            constant(word)
