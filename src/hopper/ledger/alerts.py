"""Alert bookkeeping: which failed or quarantined versions still owe their one alert.

A version's ``alert`` column goes ``pending`` (set when a failure is recorded, see
:class:`~hopper.ledger.facade.Ledger.finish`) → ``sent`` or ``digested``; a later success
of the same version clears a pending one. This is not a state of the version: the state
table (:mod:`hopper.ledger.transitions`) is not involved.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from hopper.ledger.record import FileRecord
from hopper.ledger.store import Store
from hopper.ledger.tables import files
from hopper.ledger.transitions import history_row, log

GONE_OUT = ("sent", "digested")


class AlertBook(Store):
    """Pending alerts and the alerts that went out."""

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
            .where(files.c.alert.in_(GONE_OUT), files.c.alerted_at >= since)
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
        now = time.time()
        with self._begin() as conn:
            result = conn.execute(
                files.update()
                .where(
                    files.c.uri == record.uri,
                    files.c.fingerprint == record.fingerprint,
                    files.c.alert == "pending",
                )
                .values(alert=how, alerted_at=now)
            )
            if result.rowcount:
                log(
                    conn,
                    [
                        history_row(
                            record.uri, record.fingerprint, "alerted", now, detail={"how": how}
                        )
                    ],
                )
            return bool(result.rowcount)
