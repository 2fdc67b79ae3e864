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
from hopper.prefect_api import RunState
from hopper.replay import RunStarter, dispatch_replay
from hopper.settings import HopperSettings
from hopper.watch.local import LocalFolder

log = logging.getLogger(__name__)

DEAD_RUN_STATES = {"CRASHED", "CANCELLED", "FAILED", "CANCELLING"}


class CrashMarker(Protocol):
    """Marks a flow run Crashed in Prefect (a :class:`~hopper.prefect_api.PrefectAPI`)."""

    def mark_crashed(self, flow_run_id: str, message: str) -> None: ...


class RunLookup(RunStarter, CrashMarker, Protocol):
    """What reconciliation needs from Prefect (a :class:`~hopper.prefect_api.PrefectAPI`)."""

    def run_states(self, flow_run_ids: set[str]) -> dict[str, RunState]: ...


@dataclass
class ReconcileReport:
    """What one reconciliation pass did."""

    redispatched: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    detected: int = 0


def is_dead(record: FileRecord, run: RunState | None, now: float, lease_seconds: float) -> bool:
    """Whether a queued/running version's run can no longer finish it (pure).

    Args:
        record: the ledger's view of the version.
        run: the state of its flow run (None if Prefect does not know the run).
        now: current time.
        lease_seconds: a run renews its lease on the files it runs every quarter of this;
            past it without renewal, the worker is taken as lost. A run that started
            (PENDING/RUNNING) that long ago without claiming its queued files is lost too.
    """
    if record.flow_run_id is None:
        return now - record.updated_at > lease_seconds
    if run is None or run.type in DEAD_RUN_STATES:
        return True
    if run.type == "COMPLETED":
        # Completed without recording an outcome in the ledger: the outcome was lost.
        return True
    if run.type not in ("RUNNING", "PENDING"):
        return False  # scheduled (waiting for a free worker) or paused
    if record.state == FileState.RUNNING:
        return now - record.updated_at > lease_seconds  # its lease was not renewed
    # Queued: a run waits, scheduled, as long as the pool is busy; the clock starts when a
    # worker takes it.
    return now - max(record.updated_at, run.since) > lease_seconds


def crash_lost_runs(
    api: CrashMarker, dead: list[FileRecord], runs: dict[str, RunState]
) -> set[str]:
    """Mark Crashed the runs of ``dead`` versions that Prefect still shows as started.

    Their worker is gone; without this the UI would show them running forever. Returns the
    runs marked.
    """
    lost = {
        r.flow_run_id
        for r in dead
        if r.flow_run_id
        and r.flow_run_id in runs
        and runs[r.flow_run_id].type in ("RUNNING", "PENDING")
    }
    for run_id in sorted(lost):
        api.mark_crashed(run_id, "lost: its worker stopped renewing the lease")
    return lost


def reconcile(
    config: HopperConfig,
    ledger: Ledger,
    api: RunLookup,
    *,
    max_dispatches: int = 3,
    stuck_seconds: float | None = None,
    pending_seconds: float = 300.0,
    rescan: bool = True,
) -> ReconcileReport:
    """One reconciliation pass (see the module docstring).

    Args:
        config: the Hopper home's configuration.
        ledger: its ledger.
        api: the Prefect server.
        max_dispatches: give up on a version (a failure, which alerts) after this many.
        stuck_seconds: lease after which a running version counts as lost (default: the
            ``HOPPER_LEASE_SECONDS`` setting).
        pending_seconds: a version detected or dispatched this long ago with no run is sent
            again (the watcher should have done it).
        rescan: also look for local files the ledger does not know.
    """
    report = ReconcileReport()
    now = time.time()
    lease = stuck_seconds if stuck_seconds is not None else HopperSettings().lease_seconds
    if rescan:
        report.detected = _rescan(config, ledger)
    for record in ledger.records(states=[FileState.DETECTED, FileState.DISPATCHED]):
        if now - record.updated_at > pending_seconds:  # the watcher should have sent it
            try:
                dispatch_replay(record, config, ledger, api, replay=False)
                report.redispatched.append(record.uri)
            except Exception as exc:
                log.warning("could not dispatch pending %s: %s", record.uri, exc)
    active = ledger.records(states=[FileState.QUEUED, FileState.RUNNING])
    runs = api.run_states({r.flow_run_id for r in active if r.flow_run_id}) if active else {}

    def run_of(record: FileRecord) -> RunState | None:
        return runs.get(record.flow_run_id) if record.flow_run_id else None

    dead = [r for r in active if is_dead(r, run_of(r), now, lease)]
    crash_lost_runs(api, dead, runs)
    for record in dead:
        run = run_of(record)
        state = run.type if run else None
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
        log.warning(
            "%s: run %s ended %s; re-dispatched", record.uri, record.flow_run_id, state or "?"
        )
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
