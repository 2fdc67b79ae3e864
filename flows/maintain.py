"""Prefect entry point ``hopper-maintain``: upkeep of an Iceberg lake's tables.

Scheduled every hour by prefect.yaml; the work is in ``hopper.tables.maintain``. A Parquet
lake has nothing to maintain, and the run says so.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from hopper.errors import HopperError
from hopper.home import Home
from hopper.tables.maintain import maintain as run_maintain
from hopper.tables.maintain import report_markdown


@flow(name="hopper-maintain", log_prints=False)
def maintain(
    config_path: str | None = None, dataset: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Compact small files, expire old snapshots and remove orphan files, table by table.

    The report is the run's markdown artifact (key ``hopper-maintain``); the run fails if any
    table's upkeep failed, after the others were maintained.
    """
    logger = get_run_logger()
    with Home.open(config_path) as home:
        report = run_maintain(home.config, dataset, dry_run=dry_run)
    create_markdown_artifact(
        markdown=report_markdown(report), key="hopper-maintain", description="Table upkeep"
    )
    for table in report.tables:
        logger.info(
            "%s: %d → %d data files, %d snapshots expired, %d orphans removed",
            table.table,
            table.files_before,
            table.files_after,
            table.snapshots_expired,
            table.orphans,
        )
    if not report.tables:
        logger.info("nothing to maintain (lake.format: %s)", report.lake_format)
    if report.failed:
        names = ", ".join(f"{t.table} ({t.error})" for t in report.failed)
        raise HopperError(f"upkeep failed for {names}")
    return report.model_dump(mode="json")
