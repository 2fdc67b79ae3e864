"""Reconciliation: find files that fell through the cracks and send them round again.

Run every few minutes by the ``hopper-reconcile`` deployment (and on demand by
``hopper reconcile``). It looks for file versions whose flow run died without recording an
outcome (a worker or machine lost, a process killed), re-dispatches them a bounded number of
times, and records a final failure (which alerts) when that bound is reached. It also
rescans the local sources, so a file missed while no watcher ran is still picked up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from hopper.config import HopperConfig
from hopper.ledger import FileRecord, Ledger
from hopper.models import FileState, IngestOutcome
from hopper.replay import RunStarter, dispatch_replay
from hopper.watch.local import LocalFolder

log = logging.getLogger(__name__)

DEAD_RUN_STATES = {"CRASHED", "CANCELLED", "FAILED", "CANCELLING"}


class RunLookup(RunStarter, Protocol):
    """What reconciliation needs from Prefect (a :class:`~hopper.prefect_api.PrefectAPI`)."""

    def flow_run_state(self, flow_run_id: str) -> str | None: ...


@dataclass
class ReconcileReport:
    """What one reconciliation pass did."""

    redispatched: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    detected: int = 0


def is_dead(record: FileRecord, run_state: str | None, now: float, stuck_seconds: float) -> bool:
    """Whether a queued/running version's run can no longer finish it (pure).

    Args:
        record: the ledger's view of the version.
        run_state: the Prefect state type of its flow run (None if the run is unknown).
        now: current time.
        stuck_seconds: a run RUNNING without a ledger update for this long counts as lost.
    """
    if record.flow_run_id is None:
        return now - record.updated_at > stuck_seconds
    if run_state is None or run_state in DEAD_RUN_STATES:
        return True
    if run_state == "COMPLETED":
        # Completed without recording an outcome in the ledger: the outcome was lost.
        return True
    return run_state == "RUNNING" and now - record.updated_at > stuck_seconds


def reconcile(
    config: HopperConfig,
    ledger: Ledger,
    api: RunLookup,
    *,
    max_dispatches: int = 3,
    stuck_seconds: float = 1800.0,
    rescan: bool = True,
) -> ReconcileReport:
    """One reconciliation pass (see the module docstring)."""
    report = ReconcileReport()
    now = time.time()
    if rescan:
        report.detected = _rescan(config, ledger)
    for record in ledger.records(states=[FileState.DETECTED, FileState.DISPATCHED]):
        if now - record.updated_at > stuck_seconds / 6:  # the watcher should have sent it
            try:
                dispatch_replay(record, config, ledger, api, replay=False)
                report.redispatched.append(record.uri)
            except Exception as exc:
                log.warning("could not dispatch pending %s: %s", record.uri, exc)
    for record in ledger.records(states=[FileState.QUEUED, FileState.RUNNING]):
        state = api.flow_run_state(record.flow_run_id) if record.flow_run_id else None
        if not is_dead(record, state, now, stuck_seconds):
            continue
        if record.dispatch_count >= max_dispatches:
            reason = (
                f"its flow run ended {state or 'without trace'} {record.dispatch_count} times; "
                "giving up (see the run logs, then `hopper replay`)"
            )
            ledger.finish(
                IngestOutcome(
                    uri=record.uri,
                    fingerprint=record.fingerprint,
                    dataset=record.dataset,
                    state=FileState.FAILED,
                    reason=reason,
                ),
                record.flow_run_id,
            )
            log.error("%s: %s", record.uri, reason)
            report.given_up.append(record.uri)
            continue
        try:
            dispatch_replay(record, config, ledger, api)
        except Exception as exc:  # one bad record must not stop the pass
            log.warning("could not re-dispatch %s: %s", record.uri, exc)
            continue
        log.warning("%s: run %s ended %s; re-dispatched", record.uri, record.flow_run_id, state)
        report.redispatched.append(record.uri)
    return report


def _rescan(config: HopperConfig, ledger: Ledger) -> int:
    """Record every complete local file the ledger does not know yet."""
    found = 0
    for source in config.folders:
        folder = LocalFolder(source, config.routing, ignore=config.watch.ignore, stable_seconds=0)
        folder.scan()
        for ref in folder.poll():
            if ledger.record_detected(ref):
                found += 1
    return found
