"""Reading the ledger: versions, their history, and filtered or counted views of them.

Nothing here writes; ``hopper status``, replay selection and reports read through these.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from hopper.ledger.record import FileRecord
from hopper.ledger.store import Store
from hopper.ledger.tables import files
from hopper.ledger.tables import history as history_table
from hopper.ledger.transitions import ALERTING
from hopper.models import FileState


def uri_under(prefixes: Collection[str]) -> sa.ColumnElement[bool]:
    """The condition that a version's URI starts with one of ``prefixes`` (not empty)."""
    return sa.or_(*(files.c.uri.startswith(p, autoescape=True) for p in sorted(prefixes)))


class Queries(Store):
    """The ledger's read side."""

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
        query = sa.select(history_table).where(history_table.c.uri == uri)
        with self._begin() as conn:
            rows = conn.execute(query.order_by(history_table.c.id)).all()
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

    def ingestions(self, uris: Collection[str]) -> dict[tuple[str, str], int]:
        """How often each version of these files was ingested, by ``(uri, fingerprint)``.

        A table lake uses it to tell a replay or a new version (whose earlier rows it must
        replace) from a first ingestion, and to name each landing of a version uniquely.
        Versions never ingested are absent.
        """
        found: dict[tuple[str, str], int] = {}
        ordered = sorted(set(uris))
        with self._begin() as conn:
            for start in range(0, len(ordered), 500):
                query = (
                    sa.select(history_table.c.uri, history_table.c.fingerprint, sa.func.count())
                    .where(
                        history_table.c.uri.in_(ordered[start : start + 500]),
                        history_table.c.event == FileState.INGESTED.value,
                    )
                    .group_by(history_table.c.uri, history_table.c.fingerprint)
                )
                for uri, fingerprint, count in conn.execute(query):
                    found[(uri, fingerprint)] = int(count)
        return found

    def first_detected(self, uris: Collection[str]) -> float | None:
        """When the earliest version of these files was detected (epoch seconds), or None.

        No landing of a version in a table can be older: a table lake reads only the
        snapshots since then when it looks for a batch's earlier commit.
        """
        earliest: float | None = None
        ordered = sorted(set(uris))
        with self._begin() as conn:
            for start in range(0, len(ordered), 500):
                query = sa.select(sa.func.min(files.c.detected_at)).where(
                    files.c.uri.in_(ordered[start : start + 500])
                )
                value = conn.execute(query).scalar_one()
                if value is not None and (earliest is None or value < earliest):
                    earliest = float(value)
        return earliest

    def cleanup_due(self, prefixes: Collection[str], limit: int = 500) -> list[FileRecord]:
        """Ingested versions under ``prefixes`` whose source clean-up is not settled yet.

        Oldest first. A replay makes an archived version due again once it is ingested anew
        (:meth:`~hopper.ledger.Ledger.mark_dispatched` clears ``cleaned_at``).

        Args:
            prefixes: URI prefixes of the sources that clean up (``after_ingest`` other than
                ``keep``); none, nothing is due.
            limit: at most this many.
        """
        if not prefixes:
            return []
        query = (
            sa.select(files)
            .where(
                files.c.state == FileState.INGESTED.value,
                files.c.cleaned_at.is_(None),
                uri_under(prefixes),
            )
            .order_by(files.c.updated_at)
            .limit(limit)
        )
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]

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
                files.c.state.in_(sorted(s.value for s in ALERTING)),
            )
            .order_by(files.c.updated_at.desc())
            .limit(limit)
        )
        with self._begin() as conn:
            return [FileRecord.from_row(r) for r in conn.execute(query)]
