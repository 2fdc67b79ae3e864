"""Chaos: one fault during a burst, and the lake settles within one lease plus 60 s.

A `hopper up` of its own (Prefect server on SQLite, warm worker, watcher), a short lease
(``HOPPER_LEASE_SECONDS``) and small batches, so that a burst of a few hundred files is
several batches in flight. Each case moves a burst into its own dataset's inbox and, once a
third has landed, injects one fault: the watcher SIGKILLed, the worker SIGKILLed while a
batch runs, the Prefect server stalled (SIGSTOP, SIGCONT) or SIGKILLed. `hopper up` restarts
what dies. Every source must then land exactly once, nothing quarantined, the last file
within lease + 60 s of the fault ending. The machinery is ``bench.chaos``, which also runs
the full-size version (``python -m bench --only chaos``).

A fifth case kills the watcher and the worker together mid-batch: the restarted watcher
finds every file already dispatched, nothing to do but revive the lost batch — the situation
in which a watcher that revived only after a dispatch never did. All cases run in CI (about
2–3 minutes with the `hopper up` start); ``pytest -m chaos`` selects them alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.chaos import Fault, chaos_burst
from bench.procs import HopperUp, Profile

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FILES = 600
LEASE = 10.0
STALL = 20.0
DATASETS = {
    "watcher-kill": "chaos_watcher",
    "worker-kill": "chaos_worker",
    "server-stall": "chaos_stall",
    "server-kill": "chaos_server",
    "watcher-worker-kill": "chaos_both",
}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HopperUp]:
    """A `hopper up` with a short lease and batches of 50, for this module only."""
    profile = Profile(
        "chaos",
        extra_yaml="watch:\n  batch_max_files: 50\n",
        env=(("HOPPER_LEASE_SECONDS", str(LEASE)),),
    )
    root = tmp_path_factory.mktemp("chaos")
    with HopperUp(root, list(DATASETS.values()), profile) as running:
        yield running


@pytest.mark.parametrize(
    "kind",
    [
        "watcher-kill",
        "worker-kill",
        "server-stall",
        "server-kill",
        "watcher-worker-kill",
    ],
)
def test_the_lake_settles_within_a_lease_and_a_minute_of_one_fault(
    up: HopperUp, tmp_path: Path, kind: str
) -> None:
    fault = Fault(kind, at=1 / 3, stall_seconds=STALL)
    result = chaos_burst(up, DATASETS[kind], FILES, tmp_path / "staging", fault, LEASE, timeout=240)
    assert result["landed_at_fault"] < FILES, f"the burst ended before the fault: {result}"
    assert not result["timed_out"], f"not every file landed: {result}"
    assert result["quarantined"] == 0, result
    assert result["duplicates"] == [], result
    assert result["exactly_once"], result
    assert result["ledger"] == {"ingested": FILES}, result  # one version each, all settled
    assert result["within_budget"], (
        f"settled {result['settle_seconds']}s after the fault, budget "
        f"{result['budget_seconds']}s: {result}\n{_logs(up)}"
    )


def _logs(up: HopperUp, lines: int = 40) -> str:
    """The last lines of the watcher's and the worker's logs, for a failure message."""
    out = []
    for name in ("watcher", "worker"):
        path = up.root / ".hopper" / "logs" / f"{name}.log"
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        out.append(f"--- {name}.log\n" + "\n".join(text[-lines:]))
    return "\n".join(out)
