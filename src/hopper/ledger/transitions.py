"""Where a file version may go next, and the one way the ledger moves it there.

As in dlt's load packages, a version changes state in one place: :func:`move` writes the new
state and its history row in the same transaction, and only along :data:`TRANSITIONS`;
:func:`enter` is the one move without a previous state (a version first seen is
``detected``). A move the table does not allow raises :class:`IllegalTransition`.

The table says where a version may go at all; each ledger operation narrows it further with
its own guard (a :class:`Step`): a claim leaves alone a version another run holds or that has
a conclusive outcome, a requeue only takes back what the caller read, and so on. The table is
wide on purpose where the world is racy: a replay may restart a version from any state, and
a run whose lease lapsed may still report its outcome after the version was sent again (the
last report wins).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hopper.errors import HopperError
from hopper.ledger.tables import files, history
from hopper.models import FileRef, FileState

_FINAL = frozenset(s for s in FileState if s.is_final)

TRANSITIONS: Mapping[FileState, frozenset[FileState]] = {
    # sent to Prefect; claimed by a run that came first (a replay, another watcher's event);
    # finished by a run whose lease lapsed after the version was requeued
    FileState.DETECTED: frozenset({FileState.DISPATCHED, FileState.RUNNING, *_FINAL}),
    # sent again (unconfirmed); a run exists for it; claimed; finished (as above)
    FileState.DISPATCHED: frozenset(
        {FileState.DISPATCHED, FileState.QUEUED, FileState.RUNNING, *_FINAL}
    ),
    # its run died (requeued); replayed; claimed; finished, or given up (failed)
    FileState.QUEUED: frozenset(
        {FileState.DETECTED, FileState.DISPATCHED, FileState.RUNNING, *_FINAL}
    ),
    # its lease lapsed (requeued); replayed; claimed again by its own run or by a replay;
    # finished, or given up (failed)
    FileState.RUNNING: frozenset(
        {FileState.DETECTED, FileState.DISPATCHED, FileState.RUNNING, *_FINAL}
    ),
    # done: only a replay (or the run that finished it, retried) starts it again; a second
    # run that held it may still report
    FileState.INGESTED: frozenset({FileState.DISPATCHED, FileState.RUNNING, *_FINAL}),
    FileState.QUARANTINED: frozenset({FileState.DISPATCHED, FileState.RUNNING, *_FINAL}),
    FileState.FAILED: frozenset({FileState.DISPATCHED, FileState.RUNNING, *_FINAL}),
}

# What a run may claim without a replay: a version no run holds and that is not done, except
# that a failure (given up after retries) may be tried again by any new run.
CLAIMABLE = frozenset(
    s for s in FileState if s is FileState.FAILED or not (s.is_final or s is FileState.RUNNING)
)

# Outcomes that owe an alert (one per incident; a later success cancels one not yet sent).
ALERTING = frozenset({FileState.QUARANTINED, FileState.FAILED})


class IllegalTransition(HopperError):
    """A ledger operation tried a move :data:`TRANSITIONS` does not allow (a bug in Hopper)."""


def check(was: FileState, to: FileState) -> None:
    """Raise :class:`IllegalTransition` unless a ``was`` version may become ``to``."""
    if to not in TRANSITIONS[was]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[was]))
        raise IllegalTransition(
            f"a file version cannot go from {was.value} to {to.value} "
            f"(from {was.value} it may go to: {allowed})"
        )


def sources(to: FileState) -> frozenset[FileState]:
    """The states a version may be in to become ``to``."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if to in nexts)


def history_row(
    uri: str,
    fingerprint: str,
    event: str,
    at: float,
    *,
    flow_run_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``history`` row (the only place one is spelled out)."""
    return {
        "uri": uri,
        "fingerprint": fingerprint,
        "at": at,
        "event": event,
        "flow_run_id": flow_run_id,
        "detail": json.dumps(detail, default=str) if detail else None,
    }


def log(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append history rows (one statement for all)."""
    if rows:
        conn.execute(history.insert(), list(rows))


@dataclass(frozen=True)
class Move:
    """One version's move to ``to``, noted in history as ``event``.

    Attributes:
        was: the state the caller read; the move then happens only from it. None: from
            whatever state the version is in, if the table allows it.
        params: values of the step's own bind parameters (``b_*`` written, ``g_*`` guards).
    """

    uri: str
    fingerprint: str
    to: FileState
    event: str
    was: FileState | None = None
    flow_run_id: str | None = None
    detail: Mapping[str, Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


def constant(value: str) -> sa.ColumnElement[str]:
    """A fixed text value written into the statement itself, not bound as a parameter.

    A statement run for many rows at once (``executemany``) has each row's parameters built
    by SQLAlchemy in Python, fixed ones included: the states a move goes from and to are the
    same for every row, so they cost nothing per row when written in the SQL. Only Hopper's
    own words (states, alert marks) are written so, never data.
    """
    if value and not (value.isascii() and value.replace("_", "").isalnum()):
        raise ValueError(f"{value!r} is not a word to write into SQL")
    return sa.literal_column(f"'{value}'", sa.String)


def one_of(column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column IN (values)`` for fixed words (see :func:`constant`): unlike ``in_`` on a
    list (one "expanding" parameter), it can be run for many rows at once (``executemany``)."""
    return column.in_([constant(value) for value in values])


class Step:
    """A kind of move: its guard and the columns it writes besides state and ``updated_at``.

    Statements are built once per (from, to) and reused: in batches building them costs more
    than running them.

    Args:
        guard: extra conditions (bind parameters named ``g_*``); a move they refuse is a lost
            race, not an error.
        values: extra columns to write (bind parameters named ``b_*``; ``b_now`` is the time).
        refused: the history event to note when the guard refuses (None: note nothing).
    """

    def __init__(
        self,
        *,
        guard: Sequence[sa.ColumnElement[bool]] = (),
        values: Mapping[str, Any] | None = None,
        refused: str | None = None,
    ) -> None:
        self.guard = tuple(guard)
        self.values = dict(values or {})
        self.refused = refused
        self._statements: dict[tuple[FileState | None, FileState], sa.Update] = {}

    def statement(self, was: FileState | None, to: FileState) -> sa.Update:
        """The UPDATE moving a version (``u``, ``f``) from ``was`` (or any source) to ``to``."""
        found = self._statements.get((was, to))
        if found is not None:
            return found
        where = [files.c.uri == sa.bindparam("u"), files.c.fingerprint == sa.bindparam("f")]
        if was is not None:
            where.append(files.c.state == constant(was.value))
        elif (froms := sources(to)) != frozenset(FileState):
            where.append(one_of(files.c.state, sorted(s.value for s in froms)))
        stmt = (
            files.update()
            .where(*where, *self.guard)
            .values(state=constant(to.value), updated_at=sa.bindparam("b_now"), **self.values)
        )
        self._statements[(was, to)] = stmt
        return stmt


def move(conn: Connection, step: Step, moves: Sequence[Move], now: float) -> list[bool]:
    """Move versions along :data:`TRANSITIONS`, writing each new state with its history row.

    Returns:
        For each move, whether it happened (False: the guard refused, the version was not
        in ``was`` any more, or it is unknown).

    Raises:
        IllegalTransition: a move the table does not allow; the transaction is rolled back.
    """
    for m in moves:
        if m.was is not None:
            check(m.was, m.to)
    moved = _execute(conn, step, moves, now)
    rows: list[dict[str, Any]] = []
    for m, ok in zip(moves, moved, strict=True):
        if not ok and m.was is None and not step.guard:
            _check_current(conn, m)  # nothing else could have stopped it
        event = m.event if ok else step.refused
        if event is not None:
            rows.append(
                history_row(
                    m.uri, m.fingerprint, event, now, flow_run_id=m.flow_run_id, detail=m.detail
                )
            )
    log(conn, rows)
    return moved


def _execute(conn: Connection, step: Step, moves: Sequence[Move], now: float) -> list[bool]:
    """Run the moves' UPDATEs; return whether each changed its row.

    Moves of distinct versions go as one ``executemany`` per statement when the driver
    counts the rows such a batch changed (a batch run's claims and outcomes: one round trip
    instead of hundreds). When some did not move, the ones that did are told apart by the
    state and time they were just given; a version moved twice in one call goes one by one.
    """

    def params(m: Move) -> dict[str, Any]:
        return {"u": m.uri, "f": m.fingerprint, "b_now": now, **m.params}

    versions = {(m.uri, m.fingerprint) for m in moves}
    if (
        len(moves) < 2
        or len(versions) < len(moves)
        or not conn.dialect.supports_sane_multi_rowcount
    ):
        return [bool(conn.execute(step.statement(m.was, m.to), params(m)).rowcount) for m in moves]
    moved = [False] * len(moves)
    by_statement: dict[tuple[FileState | None, FileState], list[int]] = {}
    for index, m in enumerate(moves):
        by_statement.setdefault((m.was, m.to), []).append(index)
    for (was, to), indexes in by_statement.items():
        result = conn.execute(step.statement(was, to), [params(moves[i]) for i in indexes])
        if result.rowcount == len(indexes):
            for i in indexes:
                moved[i] = True
            continue
        runs = _just_moved(conn, [moves[i].uri for i in indexes], to, now)
        for i in indexes:
            m = moves[i]
            key = (m.uri, m.fingerprint)
            # The run it was given, where the step writes one: a run elsewhere moving the
            # same version at the very same instant is not mistaken for this one.
            moved[i] = key in runs and ("b_run" not in m.params or runs[key] == m.params["b_run"])
    return moved


def _just_moved(
    conn: Connection, uris: list[str], to: FileState, now: float
) -> dict[tuple[str, str], Any]:
    """The versions of ``uris`` moved to ``to`` at ``now``, and the run each names."""
    found: dict[tuple[str, str], Any] = {}
    for start in range(0, len(uris), 500):
        query = sa.select(files.c.uri, files.c.fingerprint, files.c.flow_run_id).where(
            files.c.uri.in_(uris[start : start + 500]),
            files.c.state == to.value,
            files.c.updated_at == now,
        )
        found.update({(r.uri, r.fingerprint): r.flow_run_id for r in conn.execute(query)})
    return found


def _check_current(conn: Connection, m: Move) -> None:
    query = sa.select(files.c.state).where(
        files.c.uri == m.uri, files.c.fingerprint == m.fingerprint
    )
    state = conn.execute(query).scalar()
    if state is not None:
        check(FileState(state), m.to)


def enter(conn: Connection, refs: Sequence[FileRef], now: float) -> list[FileRef]:
    """Record the versions the ledger does not know yet as ``detected``; return them.

    Another process may insert the same version in between: PostgreSQL and SQLite skip it
    (ON CONFLICT DO NOTHING); other dialects raise ``IntegrityError``.
    """
    query = sa.select(files.c.uri, files.c.fingerprint).where(
        files.c.uri.in_(sorted({ref.uri for ref in refs}))
    )
    known = {(r.uri, r.fingerprint) for r in conn.execute(query)}
    new: list[FileRef] = []
    for ref in refs:
        if (ref.uri, ref.fingerprint) not in known:
            known.add((ref.uri, ref.fingerprint))
            new.append(ref)
    if not new:
        return []
    conn.execute(
        _insert_new(conn.dialect.name),
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
    log(
        conn,
        [
            history_row(ref.uri, ref.fingerprint, "detected", now, detail={"size": ref.size})
            for ref in new
        ],
    )
    return new


def _insert_new(dialect: str) -> Any:
    """INSERT of file versions that skips those another process inserted first."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(files).on_conflict_do_nothing(index_elements=["uri", "fingerprint"])
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(files).on_conflict_do_nothing(index_elements=["uri", "fingerprint"])
    return files.insert()
