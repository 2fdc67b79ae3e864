"""The :class:`Ledger`: the watcher's dispatch protocol and the flows' claims on file versions.

A version goes ``detected`` → ``dispatched`` (a run was asked for) → ``queued`` (the run
exists) → ``running`` (the run claimed it, under a lease) → ``ingested`` | ``quarantined`` |
``failed``; a lost run sends it back to ``detected``. Every state change goes through
:func:`hopper.ledger.transitions.move`, which writes the history row with it and keeps to
the table of allowed moves. Reads and alert bookkeeping live in the base classes
(:mod:`~hopper.ledger.queries`, :mod:`~hopper.ledger.alerts`).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from hopper.ledger.alerts import AlertBook
from hopper.ledger.queries import Queries, uri_under
from hopper.ledger.record import Awaiting, FileRecord
from hopper.ledger.tables import files
from hopper.ledger.transitions import (
    ALERTING,
    CLAIMABLE,
    IllegalTransition,
    Move,
    Step,
    constant,
    enter,
    history_row,
    move,
    one_of,
)
from hopper.ledger.transitions import log as append_history
from hopper.models import FileRef, FileState, IngestOutcome

# The dispatch update, for the watcher's take and for a replay's single dispatch.
_DISPATCHED = {
    "dispatch_id": sa.bindparam("b_dispatch"),
    "dispatched_at": sa.bindparam("b_now"),
    "dispatch_count": files.c.dispatch_count + 1,
}
_DISPATCH = Step(values=_DISPATCHED)
# A replay re-ingests the version: its source, restored from the archive, is cleaned up anew.
_REPLAY = Step(values={**_DISPATCHED, "cleaned_at": None})
# Only if nobody took it meanwhile: the same state (in the move) and dispatch id as read.
_TAKE = Step(
    guard=[sa.func.coalesce(files.c.dispatch_id, constant("")) == sa.bindparam("g_dispatch")],
    values=_DISPATCHED,
)
_QUEUE = Step(values={"flow_run_id": sa.bindparam("b_run")})
_CLAIM = Step(
    guard=[
        sa.or_(
            one_of(files.c.state, sorted(s.value for s in CLAIMABLE)),
            files.c.flow_run_id == sa.bindparam("g_run"),
        )
    ],
    values={"flow_run_id": sa.bindparam("b_run")},
    refused="skipped",
)
_CLAIM_REPLAY = Step(values={"flow_run_id": sa.bindparam("b_run")}, refused="skipped")
# Only if it did not move on since it was read: same state (in the move), run and update time.
_REQUEUE = Step(
    guard=[
        sa.func.coalesce(files.c.flow_run_id, constant("")) == sa.bindparam("g_run"),
        files.c.updated_at == sa.bindparam("g_updated"),
    ]
)
_FINISH = Step(
    values={
        # One alert per incident: a failure waits as "pending" for the alert dispatcher; a
        # later success of the same version cancels an alert not yet sent.
        "alert": sa.case(
            (one_of(files.c.alert, ["sent", "digested"]), files.c.alert),
            else_=sa.bindparam("b_alert"),
        ),
        "dataset": sa.bindparam("b_dataset"),
        "reason": sa.bindparam("b_reason"),
        "outcome": sa.bindparam("b_outcome"),
        "flow_run_id": sa.bindparam("b_run"),
    }
)


class Ledger(Queries, AlertBook):
    """File versions and their states, shared by the watcher and the flows."""

    # -- watcher side -------------------------------------------------------------------

    def record_detected(self, ref: FileRef) -> bool:
        """Record a complete file version; True if it is new (and so must be dispatched)."""
        try:
            return bool(self.record_many([ref]))
        except IntegrityError:  # recorded by another process in between (other dialects)
            return False

    def record_many(self, refs: list[FileRef]) -> list[FileRef]:
        """:meth:`record_detected` for many versions in one transaction; return the new ones."""
        if not refs:
            return []
        with self._begin() as conn:
            return enter(conn, refs, time.time())

    def due_for_dispatch(
        self,
        confirm_seconds: float,
        limit: int = 500,
        prefixes: Collection[str] | None = None,
    ) -> list[FileRecord]:
        """Versions to (re)dispatch: never dispatched, or dispatched with no run confirmed.

        A version is re-dispatched after ``confirm_seconds``, then after twice that, and so
        on (capped at 32×): a slow server is not flooded with duplicate requests.

        Args:
            confirm_seconds: how long a dispatched version waits for its run.
            limit: at most this many.
            prefixes: only versions whose URI starts with one of these (a watcher's own
                sources: watchers sharing a ledger each send only what their
                ``hopper.yaml`` covers); None, every version.
        """
        if prefixes is not None and not prefixes:
            return []
        now = time.time()
        query = (
            sa.select(files)
            .where(self._due(now - confirm_seconds, prefixes))
            .order_by(files.c.detected_at)
            .limit(limit)
        )
        with self._begin() as conn:
            found = [FileRecord.from_row(r) for r in conn.execute(query)]
        return [
            r
            for r in found
            if r.state == FileState.DETECTED
            or now - (r.dispatched_at or 0) >= confirm_seconds * 2 ** min(r.dispatch_count - 1, 5)
        ]

    def due_count(self, confirm_seconds: float, prefixes: Collection[str] | None = None) -> int:
        """How many versions :meth:`due_for_dispatch` could return, counted, not read.

        The watcher asks it while a burst is still being checked, to learn whether a batch
        is full yet. An upper bound: re-dispatches still in their back-off count too.
        """
        if prefixes is not None and not prefixes:
            return 0
        query = sa.select(sa.func.count()).where(self._due(time.time() - confirm_seconds, prefixes))
        with self._begin() as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _due(cutoff: float, prefixes: Collection[str] | None) -> sa.ColumnElement[bool]:
        """Never dispatched, or dispatched before ``cutoff`` and not confirmed since."""
        due = sa.or_(
            files.c.state == FileState.DETECTED.value,
            sa.and_(
                files.c.state == FileState.DISPATCHED.value,
                files.c.dispatched_at < cutoff,
            ),
        )
        mine = uri_under(prefixes) if prefixes is not None else sa.true()
        return sa.and_(due, mine)

    def unconfirmed(self, limit: int = 500) -> list[FileRecord]:
        """Dispatched versions whose flow run has not been seen yet."""
        query = (
            sa.select(files)
            .where(files.c.state == FileState.DISPATCHED.value)
            .order_by(files.c.dispatched_at)
            .limit(limit)
        )
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]

    def awaiting_runs(self, limit: int = 500) -> list[Awaiting]:
        """:meth:`unconfirmed`, as only the four fields a confirmation needs (a burst's
        thousands are read at every round of the watcher, so no whole records)."""
        c = files.c
        query = (
            sa.select(c.uri, c.fingerprint, c.dispatch_id, c.dispatched_at)
            .where(c.state == FileState.DISPATCHED.value)
            .order_by(c.dispatched_at)
            .limit(limit)
        )
        with self._begin() as conn:
            return [Awaiting(*row) for row in conn.execute(query)]

    def mark_dispatched(
        self, uri: str, fp: str, dispatch_id: str, *, replay_of: str | None = None
    ) -> None:
        """Note that a run was asked for this version (``replay_of``: the run it replays)."""
        detail = {"dispatch_id": dispatch_id}
        if replay_of is not None:
            detail["replay_of"] = replay_of
        step = Move(
            uri,
            fp,
            FileState.DISPATCHED,
            "dispatched" if replay_of is None else "replayed",
            detail=detail,
            params={"b_dispatch": dispatch_id},
        )
        with self._begin() as conn:
            move(conn, _DISPATCH if replay_of is None else _REPLAY, [step], time.time())

    def take_for_dispatch(self, records: list[FileRecord], dispatch_id: str) -> list[FileRecord]:
        """Mark versions dispatched under ``dispatch_id``, only if nobody else did meanwhile.

        Each update is conditional on the state and dispatch id the caller read, so when
        several watchers share one ledger (scale-out), each due version is taken by one.

        Returns:
            The records this caller now dispatches.
        """
        moves = [
            Move(
                r.uri,
                r.fingerprint,
                FileState.DISPATCHED,
                "dispatched",
                was=r.state,
                detail={"dispatch_id": dispatch_id},
                params={"b_dispatch": dispatch_id, "g_dispatch": r.dispatch_id or ""},
            )
            for r in records
        ]
        with self._begin() as conn:
            taken = move(conn, _TAKE, moves, time.time())
        return [r for r, ok in zip(records, taken, strict=True) if ok]

    def requeue(self, records: list[FileRecord]) -> int:
        """Make versions due for dispatch again: their run died, or its lease expired.

        Each update is conditional on the state, run and ``updated_at`` the caller read, so
        a version that moved on meanwhile (claimed, renewed, settled) is left alone. Returns
        how many were requeued (:meth:`requeue_records` returns them).
        """
        return len(self.requeue_records(records))

    def requeue_records(self, records: list[FileRecord]) -> list[FileRecord]:
        """:meth:`requeue`, returning the versions requeued as they now stand (``detected``).

        The dispatch id is kept, so the returned records can go straight to
        :meth:`take_for_dispatch` (which is conditional on state and dispatch id).
        """
        now = time.time()
        moves = [
            Move(
                r.uri,
                r.fingerprint,
                FileState.DETECTED,
                "requeued",
                was=r.state,
                detail={"dead_run": r.flow_run_id},
                params={"g_run": r.flow_run_id or "", "g_updated": r.updated_at},
            )
            for r in records
        ]
        with self._begin() as conn:
            done = move(conn, _REQUEUE, moves, now)
        return [
            replace(r, state=FileState.DETECTED, updated_at=now)
            for r, ok in zip(records, done, strict=True)
            if ok
        ]

    def dispatched_under(self, dispatch_id: str) -> list[FileRecord]:
        """The versions a dispatch took and that no run has claimed since."""
        query = sa.select(files).where(*_unclaimed_under(dispatch_id)).order_by(files.c.detected_at)
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]

    def refs_under(self, dispatch_id: str) -> list[FileRef]:
        """The files of :meth:`dispatched_under`, in its order: what a batch run ingests.

        Only their refs are read and parsed, not whole records (a third of the cost, for a
        batch of thousands).
        """
        query = (
            sa.select(files.c.ref)
            .where(*_unclaimed_under(dispatch_id))
            .order_by(files.c.detected_at)
        )
        with self._begin() as conn:
            return [FileRef.model_validate_json(ref) for (ref,) in conn.execute(query)]

    def mark_queued(self, uri: str, fp: str, flow_run_id: str) -> None:
        """A flow run exists for this version's dispatch: stop re-dispatching it."""
        self.mark_queued_many([(uri, fp, flow_run_id)])

    def mark_queued_many(self, found: list[tuple[str, str, str]]) -> None:
        """:meth:`mark_queued` for many ``(uri, fingerprint, flow run id)``, a few hundred
        per transaction (a burst's confirmations are not one commit each)."""
        for start in range(0, len(found), 500):
            steps = [
                Move(
                    uri,
                    fp,
                    FileState.QUEUED,
                    "queued",
                    was=FileState.DISPATCHED,
                    flow_run_id=run_id,
                    params={"b_run": run_id},
                )
                for uri, fp, run_id in found[start : start + 500]
            ]
            with self._begin() as conn:
                move(conn, _QUEUE, steps, time.time())

    def mark_cleaned(
        self,
        uri: str,
        fp: str,
        cleanup: str,
        *,
        archived_uri: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Settle an ingested version's source clean-up, with its history row, in one go.

        Not a state move: the version stays ``ingested``. Written only once per ingestion
        (while ``cleaned_at`` is unset), so a clean-up repeated after a crash records once.

        Args:
            uri: the source's URI.
            fp: the version's fingerprint.
            cleanup: ``archived``, ``deleted``, ``changed`` (the source is another version
                now: left alone) or ``gone`` (nothing was there to clean up).
            archived_uri: where the archived copy is (``archived``).
            detail: more for the history row.

        Returns:
            Whether this call settled it (False: already settled, or unknown).
        """
        now = time.time()
        event = cleanup if cleanup in ("archived", "deleted") else "cleanup_skipped"
        with self._begin() as conn:
            result = conn.execute(
                files.update()
                .where(files.c.uri == uri, files.c.fingerprint == fp, files.c.cleaned_at.is_(None))
                .values(cleaned_at=now, cleanup=cleanup, archived_uri=archived_uri)
            )
            if not result.rowcount:
                return False
            info: dict[str, Any] = {"cleanup": cleanup, **(detail or {})}
            if archived_uri:
                info["archived_uri"] = archived_uri
            append_history(conn, [history_row(uri, fp, event, now, detail=info)])
        return True

    # -- flow side ----------------------------------------------------------------------

    def claim(self, ref: FileRef, flow_run_id: str, *, replay: bool = False) -> bool:
        """Mark a version running for ``flow_run_id``; False if another run owns or settled it.

        A replay always claims. The update is one conditional statement, so two runs racing
        for the same version cannot both win.
        """
        self.record_detected(ref)  # a replay or a foreign dispatch may precede detection
        with self._begin() as conn:
            (won,) = move(
                conn, _CLAIM_REPLAY if replay else _CLAIM, [_claim(ref, flow_run_id)], time.time()
            )
        return won

    def claim_many(self, refs: list[FileRef], flow_run_id: str) -> list[bool]:
        """:meth:`claim` for a batch, in one transaction (statements prepared once).

        Returns:
            For each ref, whether this run owns it now.
        """
        if not refs:
            return []
        now = time.time()
        with self._begin() as conn:
            enter(conn, refs, now)  # a replay may precede detection
            return move(conn, _CLAIM, [_claim(ref, flow_run_id) for ref in refs], now)

    def renew(self, flow_run_id: str) -> int:
        """Renew the lease of ``flow_run_id`` on the versions it is running (its heartbeat).

        A running version whose lease is not renewed for ``lease_seconds`` counts as lost:
        its worker died, and the version is dispatched again. Not a move: no history.
        """
        with self._begin() as conn:
            result = conn.execute(
                files.update()
                .where(
                    files.c.flow_run_id == flow_run_id,
                    files.c.state == FileState.RUNNING.value,
                )
                .values(updated_at=time.time())
            )
        return int(result.rowcount or 0)

    def finish(self, outcome: IngestOutcome, flow_run_id: str | None) -> None:
        """Record a version's final state and outcome."""
        self.finish_many([outcome], flow_run_id)

    def finish_many(self, outcomes: list[IngestOutcome], flow_run_id: str | None) -> None:
        """:meth:`finish` for several outcomes, in one transaction.

        Raises:
            IllegalTransition: an outcome whose state is not final.
        """
        for outcome in outcomes:
            if not outcome.state.is_final:
                raise IllegalTransition(
                    f"{outcome.uri}: an outcome must be final, not {outcome.state.value}"
                )
        moves = [_finished(outcome, flow_run_id) for outcome in outcomes]
        with self._begin() as conn:
            move(conn, _FINISH, moves, time.time())


def _claim(ref: FileRef, flow_run_id: str) -> Move:
    return Move(
        ref.uri,
        ref.fingerprint,
        FileState.RUNNING,
        "running",
        flow_run_id=flow_run_id,
        params={"b_run": flow_run_id, "g_run": flow_run_id},
    )


def _finished(outcome: IngestOutcome, flow_run_id: str | None) -> Move:
    return Move(
        outcome.uri,
        outcome.fingerprint,
        outcome.state,
        outcome.state.value,
        flow_run_id=flow_run_id,
        detail={"reason": outcome.reason, "rows_out": outcome.rows_out, "outputs": outcome.outputs},
        params={
            "b_alert": "pending" if outcome.state in ALERTING else None,
            "b_dataset": outcome.dataset,
            "b_reason": outcome.reason,
            "b_outcome": outcome.model_dump_json(by_alias=True),
            "b_run": flow_run_id,
        },
    )


def _unclaimed_under(dispatch_id: str) -> tuple[sa.ColumnElement[bool], ...]:
    """The versions a dispatch took that no run has claimed since (a query's conditions)."""
    return (
        files.c.dispatch_id == dispatch_id,
        files.c.state.in_([FileState.DISPATCHED.value, FileState.QUEUED.value]),
    )
