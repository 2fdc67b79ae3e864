"""The ledger: the source of truth for "what happened to this file".

Every file version is a row keyed by ``(uri, fingerprint)`` with an explicit state
(:class:`~hopper.models.FileState`); every transition is appended to a history table so
``hopper status FILE`` can tell the whole story. SQLAlchemy Core keeps one code path for
SQLite (WAL, the embedded default) and PostgreSQL (scale-out).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from hopper import migrations
from hopper.errors import TransientError
from hopper.models import FileRef, FileState, IngestOutcome

log = logging.getLogger(__name__)

metadata = sa.MetaData()

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(200), nullable=False),
    sa.Column("dataset", sa.String(80)),
    sa.Column("ref", sa.Text, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("dispatch_id", sa.String(64)),
    sa.Column("dispatched_at", sa.Float),
    sa.Column("dispatch_count", sa.Integer, nullable=False, default=0),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("reason", sa.Text),
    sa.Column("outcome", sa.Text),
    sa.Column("detected_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("alert", sa.String(20)),  # None | pending | sent | digested
    sa.Column("alerted_at", sa.Float),
    sa.UniqueConstraint("uri", "fingerprint", name="uq_files_uri_fingerprint"),
    sa.Index("ix_files_state", "state"),
    sa.Index("ix_files_alert", "alert"),
    sa.Index("ix_files_flow_run_id", "flow_run_id"),
)

history = sa.Table(
    "history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Index("ix_history_uri", "uri"),
)

# States a new dispatch must not disturb unless it is an explicit replay.
_SETTLED = (FileState.RUNNING, FileState.INGESTED, FileState.QUARANTINED)

# Statements used per file in batches, built once (building them costs more than running them).
_CLAIM = (
    files.update()
    .where(
        files.c.uri == sa.bindparam("u"),
        files.c.fingerprint == sa.bindparam("f"),
        sa.or_(
            files.c.state.notin_([s.value for s in _SETTLED]),
            files.c.flow_run_id == sa.bindparam("run"),
        ),
    )
    .values(
        state=FileState.RUNNING.value,
        flow_run_id=sa.bindparam("b_run"),
        updated_at=sa.bindparam("now"),
    )
)
_FINISH = (
    files.update()
    .where(files.c.uri == sa.bindparam("u"), files.c.fingerprint == sa.bindparam("f"))
    .values(
        alert=sa.case(
            (files.c.alert.in_(["sent", "digested"]), files.c.alert),
            else_=sa.bindparam("b_alert"),
        ),
        state=sa.bindparam("b_state"),
        dataset=sa.bindparam("b_dataset"),
        reason=sa.bindparam("b_reason"),
        outcome=sa.bindparam("b_outcome"),
        flow_run_id=sa.bindparam("b_run"),
        updated_at=sa.bindparam("b_now"),
    )
)


@dataclass(frozen=True)
class FileRecord:
    """One file version as the ledger knows it."""

    uri: str
    fingerprint: str
    dataset: str | None
    state: FileState
    ref: FileRef
    dispatch_id: str | None
    dispatched_at: float | None
    dispatch_count: int
    flow_run_id: str | None
    reason: str | None
    outcome: dict[str, Any] | None
    detected_at: float
    updated_at: float
    alert: str | None = None
    alerted_at: float | None = None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> FileRecord:
        m = row._mapping
        return cls(
            uri=m["uri"],
            fingerprint=m["fingerprint"],
            dataset=m["dataset"],
            state=FileState(m["state"]),
            ref=FileRef.model_validate_json(m["ref"]),
            dispatch_id=m["dispatch_id"],
            dispatched_at=m["dispatched_at"],
            dispatch_count=m["dispatch_count"] or 0,
            flow_run_id=m["flow_run_id"],
            reason=m["reason"],
            outcome=json.loads(m["outcome"]) if m["outcome"] else None,
            detected_at=m["detected_at"],
            updated_at=m["updated_at"],
            alert=m["alert"],
            alerted_at=m["alerted_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, as printed by ``hopper status --json``."""
        return {
            "uri": self.uri,
            "fingerprint": self.fingerprint,
            "dataset": self.dataset,
            "state": self.state.value,
            "dispatch_count": self.dispatch_count,
            "flow_run_id": self.flow_run_id,
            "reason": self.reason,
            "outcome": self.outcome,
            "detected_at": self.detected_at,
            "updated_at": self.updated_at,
        }


def sqlite_url(state_dir: Path) -> str:
    """The default ledger URL: a SQLite file in the Hopper home's state folder."""
    return f"sqlite:///{state_dir / 'ledger.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Ledger:
    """File versions and their states, shared by the watcher and the flows."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        try:
            migrations.upgrade(self.engine)  # tables are created and migrated on first open
        except OperationalError as exc:
            raise TransientError(f"ledger database unavailable ({url}): {exc.orig}") from exc

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise TransientError(f"ledger database unavailable ({self.url}): {exc.orig}") from exc

    @staticmethod
    def _log(conn: Connection, uri: str, fp: str, event: str, **detail: Any) -> None:
        run = detail.pop("flow_run_id", None)
        conn.execute(
            history.insert().values(
                uri=uri,
                fingerprint=fp,
                at=time.time(),
                event=event,
                flow_run_id=run,
                detail=json.dumps(detail, default=str) if detail else None,
            )
        )

    # -- watcher side -------------------------------------------------------------------

    def record_detected(self, ref: FileRef) -> bool:
        """Record a complete file version; True if it is new (and so must be dispatched)."""
        try:
            return bool(self.record_many([ref]))
        except IntegrityError:  # recorded by another process in between (other dialects)
            return False

    def _insert_missing(self, conn: Connection, refs: list[FileRef], now: float) -> list[FileRef]:
        """Insert the versions the ledger does not know yet (as detected); return them."""
        query = sa.select(files.c.uri, files.c.fingerprint).where(
            files.c.uri.in_(sorted({ref.uri for ref in refs}))
        )
        known = {(r.uri, r.fingerprint) for r in conn.execute(query)}
        new: list[FileRef] = []
        for ref in refs:
            if (ref.uri, ref.fingerprint) not in known:
                known.add((ref.uri, ref.fingerprint))
                new.append(ref)
        if new:
            conn.execute(
                self._insert_new(),
                [
                    {
                        "uri": ref.uri,
                        "fingerprint": ref.fingerprint,
                        "dataset": ref.dataset,
                        "ref": ref.model_dump_json(),
                        "state": FileState.DETECTED.value,
                        "dispatch_count": 0,
                        "detected_at": now,
                        "updated_at": now,
                    }
                    for ref in new
                ],
            )
        return new

    def _insert_new(self) -> Any:
        """INSERT of file versions that skips those another process inserted first."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(files).on_conflict_do_nothing(index_elements=["uri", "fingerprint"])
        if self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(files).on_conflict_do_nothing(
                index_elements=["uri", "fingerprint"]
            )
        return files.insert()

    def record_many(self, refs: list[FileRef]) -> list[FileRef]:
        """:meth:`record_detected` for many versions in one transaction; return the new ones."""
        if not refs:
            return []
        now = time.time()
        with self._begin() as conn:
            new = self._insert_missing(conn, refs, now)
            if new:
                conn.execute(
                    history.insert(),
                    [
                        {
                            "uri": ref.uri,
                            "fingerprint": ref.fingerprint,
                            "at": now,
                            "event": "detected",
                            "flow_run_id": None,
                            "detail": json.dumps({"size": ref.size}),
                        }
                        for ref in new
                    ],
                )
        return new

    def due_for_dispatch(self, confirm_seconds: float, limit: int = 500) -> list[FileRecord]:
        """Versions to (re)dispatch: never dispatched, or dispatched with no run confirmed.

        A version is re-dispatched after ``confirm_seconds``, then after twice that, and so
        on (capped at 32×): a slow server is not flooded with duplicate requests.
        """
        now = time.time()
        cutoff = now - confirm_seconds
        query = (
            sa.select(files)
            .where(
                sa.or_(
                    files.c.state == FileState.DETECTED.value,
                    sa.and_(
                        files.c.state == FileState.DISPATCHED.value,
                        files.c.dispatched_at < cutoff,
                    ),
                )
            )
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

    def mark_dispatched(
        self, uri: str, fp: str, dispatch_id: str, *, replay_of: str | None = None
    ) -> None:
        """Note that a run was asked for this version (``replay_of``: the run it replays)."""
        now = time.time()
        with self._begin() as conn:
            conn.execute(
                files.update()
                .where(files.c.uri == uri, files.c.fingerprint == fp)
                .values(
                    state=FileState.DISPATCHED.value,
                    dispatch_id=dispatch_id,
                    dispatched_at=now,
                    dispatch_count=files.c.dispatch_count + 1,
                    updated_at=now,
                )
            )
            if replay_of is not None:
                self._log(conn, uri, fp, "replayed", dispatch_id=dispatch_id, replay_of=replay_of)
            else:
                self._log(conn, uri, fp, "dispatched", dispatch_id=dispatch_id)

    def take_for_dispatch(self, records: list[FileRecord], dispatch_id: str) -> list[FileRecord]:
        """Mark versions dispatched under ``dispatch_id``, only if nobody else did meanwhile.

        Each update is conditional on the state and dispatch id the caller read, so when
        several watchers share one ledger (scale-out), each due version is taken by one.

        Returns:
            The records this caller now dispatches.
        """
        now = time.time()
        taken: list[FileRecord] = []
        with self._begin() as conn:
            for record in records:
                same_dispatch = (
                    files.c.dispatch_id.is_(None)
                    if record.dispatch_id is None
                    else files.c.dispatch_id == record.dispatch_id
                )
                result = conn.execute(
                    files.update()
                    .where(
                        files.c.uri == record.uri,
                        files.c.fingerprint == record.fingerprint,
                        files.c.state == record.state.value,
                        same_dispatch,
                    )
                    .values(
                        state=FileState.DISPATCHED.value,
                        dispatch_id=dispatch_id,
                        dispatched_at=now,
                        dispatch_count=files.c.dispatch_count + 1,
                        updated_at=now,
                    )
                )
                if result.rowcount:
                    taken.append(record)
            if taken:
                conn.execute(
                    history.insert(),
                    [
                        {
                            "uri": r.uri,
                            "fingerprint": r.fingerprint,
                            "at": now,
                            "event": "dispatched",
                            "flow_run_id": None,
                            "detail": json.dumps({"dispatch_id": dispatch_id}),
                        }
                        for r in taken
                    ],
                )
        return taken

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
        done: list[FileRecord] = []
        with self._begin() as conn:
            for record in records:
                result = conn.execute(
                    files.update()
                    .where(
                        files.c.uri == record.uri,
                        files.c.fingerprint == record.fingerprint,
                        files.c.state == record.state.value,
                        files.c.flow_run_id == record.flow_run_id,
                        files.c.updated_at == record.updated_at,
                    )
                    .values(state=FileState.DETECTED.value, updated_at=now)
                )
                if result.rowcount:
                    done.append(replace(record, state=FileState.DETECTED, updated_at=now))
            if done:
                conn.execute(
                    history.insert(),
                    [
                        {
                            "uri": r.uri,
                            "fingerprint": r.fingerprint,
                            "at": now,
                            "event": "requeued",
                            "flow_run_id": None,
                            "detail": json.dumps({"dead_run": r.flow_run_id}),
                        }
                        for r in done
                    ],
                )
        return done

    def renew(self, flow_run_id: str) -> int:
        """Renew the lease of ``flow_run_id`` on the versions it is running (its heartbeat).

        A running version whose lease is not renewed for ``lease_seconds`` counts as lost:
        its worker died, and the version is dispatched again.
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

    def dispatched_under(self, dispatch_id: str) -> list[FileRecord]:
        """The versions a dispatch took and that no run has claimed since."""
        query = (
            sa.select(files)
            .where(
                files.c.dispatch_id == dispatch_id,
                files.c.state.in_([FileState.DISPATCHED.value, FileState.QUEUED.value]),
            )
            .order_by(files.c.detected_at)
        )
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]

    def mark_queued(self, uri: str, fp: str, flow_run_id: str) -> None:
        """A flow run exists for this version's dispatch: stop re-dispatching it."""
        with self._begin() as conn:
            result = conn.execute(
                files.update()
                .where(
                    files.c.uri == uri,
                    files.c.fingerprint == fp,
                    files.c.state == FileState.DISPATCHED.value,
                )
                .values(
                    state=FileState.QUEUED.value, flow_run_id=flow_run_id, updated_at=time.time()
                )
            )
            if result.rowcount:
                self._log(conn, uri, fp, "queued", flow_run_id=flow_run_id)

    # -- flow side ----------------------------------------------------------------------

    def claim(self, ref: FileRef, flow_run_id: str, *, replay: bool = False) -> bool:
        """Mark a version running for ``flow_run_id``; False if another run owns or settled it.

        A replay always claims. The update is one conditional statement, so two runs racing
        for the same version cannot both win.
        """
        self.record_detected(ref)  # a replay or a foreign dispatch may precede detection
        now = time.time()
        cond = [files.c.uri == ref.uri, files.c.fingerprint == ref.fingerprint]
        if not replay:
            cond.append(
                sa.or_(
                    files.c.state.notin_([s.value for s in _SETTLED]),
                    files.c.flow_run_id == flow_run_id,
                )
            )
        with self._begin() as conn:
            result = conn.execute(
                files.update()
                .where(*cond)
                .values(state=FileState.RUNNING.value, flow_run_id=flow_run_id, updated_at=now)
            )
            if result.rowcount:
                self._log(conn, ref.uri, ref.fingerprint, "running", flow_run_id=flow_run_id)
            else:
                self._log(conn, ref.uri, ref.fingerprint, "skipped", flow_run_id=flow_run_id)
            return bool(result.rowcount)

    def claim_many(self, refs: list[FileRef], flow_run_id: str) -> list[bool]:
        """:meth:`claim` for a batch, in one transaction (statements prepared once).

        Returns:
            For each ref, whether this run owns it now.
        """
        if not refs:
            return []
        now = time.time()
        claimed: list[bool] = []
        with self._begin() as conn:
            self._insert_missing(conn, refs, now)  # a replay may precede detection
            for ref in refs:
                params = {"u": ref.uri, "f": ref.fingerprint, "run": flow_run_id, "now": now}
                result = conn.execute(_CLAIM, {**params, "b_run": flow_run_id})
                claimed.append(bool(result.rowcount))
            conn.execute(
                history.insert(),
                [
                    {
                        "uri": ref.uri,
                        "fingerprint": ref.fingerprint,
                        "at": now,
                        "event": "running" if won else "skipped",
                        "flow_run_id": flow_run_id,
                        "detail": None,
                    }
                    for ref, won in zip(refs, claimed, strict=True)
                ],
            )
        return claimed

    def finish_many(self, outcomes: list[IngestOutcome], flow_run_id: str | None) -> None:
        """:meth:`finish` for several outcomes, in one transaction."""
        with self._begin() as conn:
            for outcome in outcomes:
                self._finish(conn, outcome, flow_run_id)

    def finish(self, outcome: IngestOutcome, flow_run_id: str | None) -> None:
        """Record a version's final state and outcome."""
        with self._begin() as conn:
            self._finish(conn, outcome, flow_run_id)

    def _finish(self, conn: Connection, outcome: IngestOutcome, flow_run_id: str | None) -> None:
        # One alert per incident: a failure waits as "pending" for the alert dispatcher; a
        # later success of the same version cancels an alert not yet sent.
        bad = outcome.state in (FileState.QUARANTINED, FileState.FAILED)
        conn.execute(
            _FINISH,
            {
                "u": outcome.uri,
                "f": outcome.fingerprint,
                "b_alert": "pending" if bad else None,
                "b_state": outcome.state.value,
                "b_dataset": outcome.dataset,
                "b_reason": outcome.reason,
                "b_outcome": json.dumps(outcome.model_dump(mode="json", by_alias=True)),
                "b_run": flow_run_id,
                "b_now": time.time(),
            },
        )
        self._log(
            conn,
            outcome.uri,
            outcome.fingerprint,
            outcome.state.value,
            flow_run_id=flow_run_id,
            reason=outcome.reason,
            rows_out=outcome.rows_out,
            outputs=outcome.outputs,
        )

    # -- alerts -------------------------------------------------------------------------

    def pending_alerts(self) -> list[FileRecord]:
        """Failed or quarantined versions whose alert has not gone out yet."""
        query = sa.select(files).where(files.c.alert == "pending").order_by(files.c.updated_at)
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]

    def alerts_since(self, since: float) -> int:
        """How many alerts (individual or digested) went out since ``since``."""
        query = (
            sa.select(sa.func.count())
            .select_from(files)
            .where(files.c.alert.in_(["sent", "digested"]), files.c.alerted_at >= since)
        )
        with self._begin() as conn:
            return int(conn.execute(query).scalar_one())

    def last_alert_at(self, how: str) -> float | None:
        """When the latest alert of kind ``how`` (``sent`` or ``digested``) went out."""
        query = sa.select(sa.func.max(files.c.alerted_at)).where(files.c.alert == how)
        with self._begin() as conn:
            value = conn.execute(query).scalar_one()
        return float(value) if value is not None else None

    def claim_alert(self, record: FileRecord, how: str) -> bool:
        """Mark a pending alert as gone out (``sent`` or ``digested``); False if already taken.

        The conditional update makes two dispatchers (e.g. two watchers) unable to both send.
        """
        with self._begin() as conn:
            result = conn.execute(
                files.update()
                .where(
                    files.c.uri == record.uri,
                    files.c.fingerprint == record.fingerprint,
                    files.c.alert == "pending",
                )
                .values(alert=how, alerted_at=time.time())
            )
            if result.rowcount:
                self._log(conn, record.uri, record.fingerprint, "alerted", how=how)
            return bool(result.rowcount)

    # -- queries ------------------------------------------------------------------------

    def get(self, uri: str, fingerprint: str) -> FileRecord | None:
        """One version, or None."""
        query = sa.select(files).where(files.c.uri == uri, files.c.fingerprint == fingerprint)
        with self._begin() as conn:
            row = conn.execute(query).first()
        return FileRecord.from_row(row) if row else None

    def versions(self, uri: str) -> list[FileRecord]:
        """Every version of a file, oldest first."""
        query = sa.select(files).where(files.c.uri == uri).order_by(files.c.detected_at)
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]

    def latest(self, uri: str) -> FileRecord | None:
        """The newest version of a file, or None if never seen."""
        found = self.versions(uri)
        return found[-1] if found else None

    def history(self, uri: str) -> list[dict[str, Any]]:
        """Every recorded transition of a file, oldest first."""
        query = sa.select(history).where(history.c.uri == uri).order_by(history.c.id)
        with self._begin() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "at": r.at,
                "fingerprint": r.fingerprint,
                "event": r.event,
                "flow_run_id": r.flow_run_id,
                "detail": json.loads(r.detail) if r.detail else {},
            }
            for r in rows
        ]

    def records(
        self,
        *,
        states: list[FileState] | None = None,
        dataset: str | None = None,
        since: float | None = None,
        before: float | None = None,
        latest_only: bool = True,
    ) -> list[FileRecord]:
        """File versions filtered by state, dataset and last update time (since ≤ t < before)."""
        query = sa.select(files).order_by(files.c.detected_at)
        if states:
            query = query.where(files.c.state.in_([s.value for s in states]))
        if dataset:
            query = query.where(files.c.dataset == dataset)
        if since is not None:
            query = query.where(files.c.updated_at >= since)
        if before is not None:
            query = query.where(files.c.updated_at < before)
        with self._begin() as conn:
            found = [FileRecord.from_row(r) for r in conn.execute(query)]
        if not latest_only:
            return found
        newest = self._newest_fingerprints({r.uri for r in found})
        return [r for r in found if newest.get(r.uri) == r.fingerprint]

    def _newest_fingerprints(self, uris: set[str]) -> dict[str, str]:
        if not uris:
            return {}
        query = (
            sa.select(files.c.uri, files.c.fingerprint)
            .where(files.c.uri.in_(sorted(uris)))
            .order_by(files.c.detected_at)
        )
        with self._begin() as conn:
            return {r.uri: r.fingerprint for r in conn.execute(query)}

    def dataset_day(self, dataset: str, since: float) -> dict[str, int]:
        """File versions of ``dataset`` updated since ``since``, counted per state (one query)."""
        query = (
            sa.select(files.c.state, sa.func.count())
            .where(files.c.dataset == dataset, files.c.updated_at >= since)
            .group_by(files.c.state)
        )
        with self._begin() as conn:
            return {state: int(n) for state, n in conn.execute(query)}

    def recent_failures(self, dataset: str, since: float, limit: int = 10) -> list[FileRecord]:
        """The latest quarantined or failed versions of ``dataset`` since ``since``."""
        query = (
            sa.select(files)
            .where(
                files.c.dataset == dataset,
                files.c.updated_at >= since,
                files.c.state.in_([FileState.QUARANTINED.value, FileState.FAILED.value]),
            )
            .order_by(files.c.updated_at.desc())
            .limit(limit)
        )
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of latest file versions per dataset and state."""
        out: dict[str, dict[str, int]] = {}
        for rec in self.records():
            per = out.setdefault(rec.dataset or "(unrouted)", {})
            per[rec.state.value] = per.get(rec.state.value, 0) + 1
        return out


class Lease:
    """A flow run's hold on the versions it claimed, renewed in a background thread.

    Use it around the work of a run: ``with Lease(ledger, run_id, seconds): ...``. The lease
    is renewed every quarter of ``seconds``; when the process dies, renewals stop and the
    watchers (and reconciliation) take the versions back once ``seconds`` have passed.
    """

    def __init__(self, ledger: Ledger, flow_run_id: str, seconds: float) -> None:
        self.ledger = ledger
        self.flow_run_id = flow_run_id
        self.every = max(seconds / 4, 0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="hopper-lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.ledger.renew(self.flow_run_id)
            except TransientError as exc:  # the next beat tries again
                log.warning("could not renew the lease of run %s: %s", self.flow_run_id, exc)
