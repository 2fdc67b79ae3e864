"""Reconciliation: find files that fell through the cracks and send them round again.

Run every few minutes by the ``hopper-reconcile`` deployment (and on demand by
``hopper reconcile``). It looks for file versions whose flow run died without recording an
outcome (a worker or machine lost, a process killed), re-dispatches them a bounded number of
times, and records a final failure (which alerts) when that bound is reached. It also
rescans the local sources, so a file missed while no watcher ran is still picked up.

One revival policy, two callers. The watcher revives lost runs every few seconds (it is the
fast path, :meth:`~hopper.watch.daemon.Watcher.revive`); this deployment is the safety net
that runs without a watcher. Both go through :func:`revive_lost`, so one limit
(:data:`MAX_DISPATCHES`) and one rule (:func:`is_dead`) decide what is sent again and what
is given up, whoever looks first. Revival only *requeues* the versions in the ledger (due
for dispatch again, as if just detected); they then go out the way a fresh burst does, in
``ingest-batch`` runs (:func:`hopper.batching.batch_size`): the watcher's normal dispatch
emits the batch event, and reconciliation creates the batch runs through the API
(:func:`~hopper.replay.dispatch_batches`). Sending one run per file was what made recovery
from a lost 500-file batch take minutes instead of seconds.
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
from hopper.replay import BatchStarter, dispatch_batches
from hopper.scan import FolderScan
from hopper.settings import LEASE_SECONDS

log = logging.getLogger(__name__)

MAX_DISPATCHES = 5
"""Dispatches of one version after which a lost run is a failure (which alerts), not retried.

Counted over every dispatch (watcher, re-emission of an unconfirmed event, revival), so a
version that rode out a server outage and then lost its worker still has revivals left.
"""

DEAD_RUN_STATES = {"CRASHED", "CANCELLED", "FAILED", "CANCELLING"}


class CrashMarker(Protocol):
    """Marks a flow run Crashed in Prefect (a :class:`~hopper.prefect_api.PrefectAPI`)."""

    def mark_crashed(self, flow_run_id: str, message: str) -> None: ...


class RunReader(CrashMarker, Protocol):
    """What revival needs from Prefect: run states, and marking lost runs Crashed."""

    def run_states(self, flow_run_ids: set[str]) -> dict[str, RunState]: ...


class RunLookup(BatchStarter, RunReader, Protocol):
    """What reconciliation needs from Prefect (a :class:`~hopper.prefect_api.PrefectAPI`)."""


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


@dataclass(frozen=True)
class RevivalPolicy:
    """When a queued or running version counts as lost, and how often it is sent again."""

    lease_seconds: float
    max_dispatches: int = MAX_DISPATCHES


@dataclass
class Revival:
    """What one revival pass did: versions due again (``detected``) and versions given up."""

    requeued: list[FileRecord] = field(default_factory=list)
    given_up: list[FileRecord] = field(default_factory=list)


def split_lost(
    active: list[FileRecord], runs: dict[str, RunState], now: float, policy: RevivalPolicy
) -> tuple[list[FileRecord], list[FileRecord]]:
    """Which of ``active`` to send again and which to give up on (pure).

    Returns:
        ``(revive, give_up)``: dead versions under the dispatch limit, and those at it.
    """
    revive: list[FileRecord] = []
    give_up: list[FileRecord] = []
    for record in active:
        run = runs.get(record.flow_run_id) if record.flow_run_id else None
        if not is_dead(record, run, now, policy.lease_seconds):
            continue
        (give_up if record.dispatch_count >= policy.max_dispatches else revive).append(record)
    return revive, give_up


def revive_lost(
    ledger: Ledger,
    api: RunReader,
    active: list[FileRecord],
    policy: RevivalPolicy,
    now: float | None = None,
) -> Revival:
    """Requeue the versions of ``active`` whose run died or was lost; give up at the limit.

    The one place that decides revival, for the watcher and for reconciliation alike. Lost
    runs still shown as started are marked Crashed; versions under
    ``policy.max_dispatches`` become due for dispatch again (conditionally: one that moved
    on meanwhile is left alone); the others are recorded as failed, which alerts.

    Raises:
        Exception: whatever reading run states from Prefect raises (the caller retries).
    """
    now = time.time() if now is None else now
    ids = {r.flow_run_id for r in active if r.flow_run_id}
    runs = api.run_states(ids) if ids else {}
    revive, give_up = split_lost(active, runs, now, policy)
    crash_lost_runs(api, revive + give_up, runs)
    result = Revival(requeued=ledger.requeue_records(revive) if revive else [])
    for record in give_up:
        run = runs.get(record.flow_run_id) if record.flow_run_id else None
        reason = (
            f"its flow run ended {run.type if run else 'without trace'} "
            f"{record.dispatch_count} times; giving up (see the run logs, then `hopper replay`)"
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
        result.given_up.append(record)
    if result.requeued:
        log.warning(
            "%d file(s) whose run died or was lost are due for dispatch again",
            len(result.requeued),
        )
    return result


def reconcile(
    config: HopperConfig,
    ledger: Ledger,
    api: RunLookup,
    *,
    max_dispatches: int | None = None,
    stuck_seconds: float = LEASE_SECONDS,
    pending_seconds: float = 300.0,
    rescan: bool = True,
) -> ReconcileReport:
    """One reconciliation pass (see the module docstring).

    Args:
        config: the Hopper home's configuration.
        ledger: its ledger.
        api: the Prefect server.
        max_dispatches: give up on a version (a failure, which alerts) after this many
            dispatches (default: :data:`MAX_DISPATCHES`, the watcher's limit too).
        stuck_seconds: lease after which a running version counts as lost (callers pass the
            ``HOPPER_LEASE_SECONDS`` setting; the default is that setting's default).
        pending_seconds: a version detected or dispatched this long ago with no run is sent
            again (the watcher should have done it).
        rescan: also look for local files the ledger does not know.
    """
    report = ReconcileReport()
    now = time.time()
    lease = stuck_seconds
    if rescan:
        report.detected = _rescan(config, ledger)
    waiting = [  # the watcher should have sent these
        r
        for r in ledger.records(states=[FileState.DETECTED, FileState.DISPATCHED])
        if now - r.updated_at > pending_seconds
    ]
    active = ledger.records(states=[FileState.QUEUED, FileState.RUNNING])
    policy = RevivalPolicy(lease_seconds=lease, max_dispatches=max_dispatches or MAX_DISPATCHES)
    revival = revive_lost(ledger, api, active, policy, now) if active else Revival()
    report.given_up = [r.uri for r in revival.given_up]
    sent = dispatch_batches(waiting + revival.requeued, config, ledger, api)
    report.redispatched = [r.uri for r in sent]
    return report


def _rescan(config: HopperConfig, ledger: Ledger) -> int:
    """Record every complete local file the ledger does not know yet."""
    found = 0
    for source in config.folders:
        folder = FolderScan(source, config.routing, ignore=config.watch.ignore, stable_seconds=0)
        folder.scan()
        for ref in folder.poll():
            if ledger.record_detected(ref):
                found += 1
    return found
