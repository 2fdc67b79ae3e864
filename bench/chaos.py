"""Chaos: one fault in the middle of a burst, and how long the lake takes to settle after it.

Recovery time is a promise Hopper makes (the README's "How a file travels"): after any single
fault — the watcher SIGKILLed, the worker SIGKILLed mid-batch, the Prefect server stalled
(SIGSTOP, then SIGCONT) or SIGKILLed — the last file of a burst lands within the lease
(``HOPPER_LEASE_SECONDS``) plus 60 s of the fault ending, every source exactly once, nothing
quarantined. ``hopper up`` restarts what dies; this module only injects the faults, by the
PIDs ``hopper up`` writes to ``.hopper/up.json`` (each child leads its own process group, so
the signal reaches the whole group: uvicorn under the server, a flow run under the worker).

Each fault gets a burst of its own, one after another on the same ``hopper up``. A burst of
3,000 small files moves at ≈ 100 files/s, about 30 s — shorter than one lease — so faults
injected one after another into a single burst would meet an idle Hopper or each other's
recovery, and no figure would be one fault's alone. Shared by ``python -m bench --only
chaos`` and ``tests/integration/test_chaos.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cases import lake_outputs, quarantined, source_stem
from bench.data import write_small_files
from bench.procs import HopperUp

log = logging.getLogger(__name__)

FAULTS = ("watcher-kill", "worker-kill", "server-stall", "server-kill", "watcher-worker-kill")
WHO = {
    "watcher-kill": ("watcher",),
    "worker-kill": ("worker",),
    "server-stall": ("server",),
    "server-kill": ("server",),
    # A crash of the machine's Hopper processes but the server: the restarted watcher finds
    # every file already dispatched, and must still revive the batch the worker was running.
    "watcher-worker-kill": ("worker", "watcher"),
}
GRACE = 60.0  # seconds the promise allows beyond one lease


@dataclass(frozen=True)
class Fault:
    """A fault to inject, and when: once ``at`` of the burst has landed."""

    kind: str
    at: float = 1 / 3
    stall_seconds: float = 60.0


def ledger_states(root: Path, dataset: str | None = None) -> dict[str, int]:
    """File versions per state in the home's ledger, of one dataset or all (SQLite only)."""
    path = root / ".hopper" / "ledger.db"
    if not path.exists():
        return {}
    query = "SELECT state, count(*) FROM files"
    args: tuple[str, ...] = ()
    if dataset is not None:
        query, args = query + " WHERE dataset = ?", (dataset,)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        return dict(conn.execute(query + " GROUP BY state", args).fetchall())


def _group(up: HopperUp, who: str) -> int:
    return int(up.state()["children"][who])


def _signal(up: HopperUp, who: str, sig: int) -> int:
    pid = _group(up, who)
    os.killpg(pid, sig)
    log.info("chaos: sent %s to the %s (process group %d)", signal.Signals(sig).name, who, pid)
    return pid


def inject(up: HopperUp, fault: Fault) -> tuple[float, float]:
    """Inject ``fault`` into ``up``; return when it began and ended (``time.monotonic()``).

    A kill ends when it is sent (``hopper up`` restarts the process); a stall ends with its
    SIGCONT.
    """
    began = time.monotonic()
    if fault.kind == "server-stall":
        _signal(up, "server", signal.SIGSTOP)
        try:
            time.sleep(fault.stall_seconds)
        finally:
            _signal(up, "server", signal.SIGCONT)
        return began, time.monotonic()
    if fault.kind not in WHO:  # pragma: no cover - a typo in a caller
        raise ValueError(f"unknown fault {fault.kind!r}; one of {', '.join(FAULTS)}")
    for who in WHO[fault.kind]:
        _signal(up, who, signal.SIGKILL)
    return began, time.monotonic()


def _ready(up: HopperUp, fault: Fault, dataset: str) -> bool:
    """Whether the fault may be injected now (the worker is killed only mid-batch)."""
    if "worker" not in WHO[fault.kind]:
        return True
    return ledger_states(up.root, dataset).get("running", 0) > 0


def chaos_burst(
    up: HopperUp,
    dataset: str,
    count: int,
    staging: Path,
    fault: Fault,
    lease_seconds: float,
    timeout: float,
    prefix: str = "c",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Move ``count`` small files into the inbox at once, inject ``fault`` part-way, settle.

    Returns:
        ``fault``, ``files``, ``landed``, ``injected_after`` (seconds into the burst),
        ``landed_at_fault``, ``landed_at_fault_end``, ``fault_seconds`` (its duration),
        ``settle_seconds`` (fault end → the last output, or the ledger holding every file
        ingested if that comes later), ``budget_seconds`` (lease + 60),
        ``within_budget``, ``quarantined``, ``duplicates``, ``exactly_once``, ``ledger`` (the
        dataset's versions per state) and ``timed_out``.
    """
    say = progress or log.info
    paths = write_small_files(staging, count, prefix, seed=3)
    inbox = up.inbox(dataset)
    inbox.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for path in paths:
        os.replace(path, inbox / path.name)
    lake, bad_dir = up.lake(dataset), up.quarantine(dataset)
    deadline = started + timeout
    injected: tuple[float, float] | None = None
    landed_at_fault = landed_at_end = 0
    landed, previous, last_change = 0, 0, started
    while True:
        now = time.monotonic()
        landed = len(lake_outputs(lake))
        bad = len(quarantined(bad_dir))
        if landed != previous:
            previous, last_change = landed, now
        if injected is None and landed >= fault.at * count and _ready(up, fault, dataset):
            landed_at_fault = landed
            say(f"chaos: {fault.kind} after {now - started:.1f}s, {landed}/{count} landed")
            injected = inject(up, fault)
            landed_at_end = len(lake_outputs(lake))
            continue
        if landed + bad >= count or now > deadline:
            break
        # Until the fault is in, look often: a batch of a fast burst runs for a moment only.
        time.sleep(0.2 if injected else 0.03)
    end = injected[1] if injected else started
    timed_out = landed + bad < count
    budget = lease_seconds + GRACE
    # The lake can be whole before the ledger is: a run killed after writing its outputs but
    # before recording them leaves its files running until the lease lapses and they are
    # sent and ingested again (their outputs replaced). Settled means both, within budget.
    settled_at = last_change
    ledger = ledger_states(up.root, dataset)
    while not timed_out and ledger.get("ingested", 0) < count:
        if time.monotonic() > max(end + budget, last_change + 10.0):
            settled_at = deadline  # never settled: beyond any budget
            break
        time.sleep(0.25)
        ledger = ledger_states(up.root, dataset)
        settled_at = time.monotonic()
    settle = (deadline if timed_out else settled_at) - end
    names = lake_outputs(lake)
    per_source = Counter(source_stem(n) for n in names)
    duplicates = sorted(stem for stem, n in per_source.items() if n > 1)
    result = {
        "fault": fault.kind,
        "files": count,
        "landed": landed,
        "injected_after": round(injected[0] - started, 2) if injected else None,
        "landed_at_fault": landed_at_fault,
        "landed_at_fault_end": landed_at_end,
        "fault_seconds": round(injected[1] - injected[0], 2) if injected else None,
        "settle_seconds": round(max(settle, 0.0), 2),
        "budget_seconds": budget,
        "within_budget": injected is not None and not timed_out and settle <= budget,
        "quarantined": bad,
        "duplicates": duplicates[:20],
        "exactly_once": not timed_out
        and not duplicates
        and len(per_source) == count
        and len(names) == count
        and bad == 0,
        "ledger": ledger,
        "timed_out": timed_out,
    }
    say(
        f"chaos: {fault.kind}: {landed_at_end} landed by the fault's end, {landed}/{count} in "
        f"all, settled {result['settle_seconds']}s "
        f"after the fault ended (budget {budget:.0f}s), exactly once: {result['exactly_once']}"
    )
    return result
