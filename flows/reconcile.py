"""Prefect entry point ``hopper-reconcile``: re-dispatch files whose runs died; rescan sources.

It also removes staged files that dead writers left in the lake (a day old or more).

Scheduled every few minutes by prefect.yaml; the work is in ``hopper.reconcile``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from hopper.home import Home
from hopper.reconcile import reconcile as run_reconcile
from hopper.staging import sweep_staging


@flow(name="hopper-reconcile", log_prints=False)
def reconcile(config_path: str | None = None, max_dispatches: int | None = None) -> dict[str, Any]:
    """Find file versions whose flow run died without an outcome and send them again.

    ``max_dispatches`` defaults to the limit the watcher uses (``hopper.reconcile``).
    """
    logger = get_run_logger()
    with Home.open(config_path) as home:
        report = run_reconcile(
            home.config,
            home.ledger,
            home.api,
            max_dispatches=max_dispatches,
            stuck_seconds=home.settings.lease_seconds,
        )
        swept = sweep_staging(home.config.lake.path, home.s3)
    logger.info(
        "re-dispatched %d, gave up on %d, newly detected %d, %d stale staged attempts removed",
        len(report.redispatched),
        len(report.given_up),
        report.detected,
        swept,
    )
    return {
        "redispatched": report.redispatched,
        "given_up": report.given_up,
        "detected": report.detected,
        "swept": swept,
    }
