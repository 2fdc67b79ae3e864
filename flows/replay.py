"""Prefect entry point ``hopper-replay``: ``hopper replay``, run from the Prefect UI.

Started by hand (the deployment has no schedule), typically from the link a quarantine
reason file, an alert or ``hopper status`` gives, with that file already filled in. The work
is :func:`hopper.replay.run_replay`, the same as the command's; the run's markdown artifact
lists each file, its state before and its new ``ingest-file`` run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from hopper.home import Home
from hopper.replay import report_markdown, run_replay, selection


@flow(name="hopper-replay", log_prints=False)
def replay(
    targets: tuple[str, ...] = (),
    failed: bool = False,
    quarantined: bool = False,
    dataset: str | None = None,
    since: str | None = None,
    dry_run: bool = False,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Re-run files through ingestion; their outputs are replaced, never duplicated.

    Name files and/or select them; the filters combine with AND, as in ``hopper replay``.

    Args:
        targets: File paths, URIs or globs (e.g. ``/data/inbox/sales/*.csv``).
        failed: Replay files whose ingestion failed.
        quarantined: Replay quarantined files (e.g. after fixing their contract).
        dataset: Only files of this dataset.
        since: Only files updated within this duration (e.g. 30m, 2h, 7d).
        dry_run: List what would be replayed; change nothing.
        config_path: hopper.yaml of the Hopper home (default: the worker's HOPPER_CONFIG).
    """
    logger = get_run_logger()
    sel = selection(
        list(targets), failed=failed, quarantined=quarantined, dataset=dataset, since=since
    )
    with Home.open(config_path) as home:
        api = None if dry_run else home.api
        report = run_replay(home.ledger, home.config, api, sel, dry_run=dry_run)
        ui_url = home.ui_url
    create_markdown_artifact(
        markdown=report_markdown(report, ui_url),
        key="hopper-replay",
        description="Files replayed" if not dry_run else "Files a replay would re-run",
    )
    for item in report.files:
        if item.flow_run_id:
            logger.info(
                "replaying %s (%s) as flow run %s",
                item.record.uri,
                item.record.state.value,
                item.flow_run_id,
            )
        else:
            logger.info("would replay %s (%s)", item.record.uri, item.record.state.value)
    if not report.files:
        logger.info("nothing to replay")
    return {
        "dry_run": dry_run,
        "files": [
            {
                "uri": item.record.uri,
                "state_before": item.record.state.value,
                "flow_run_id": item.flow_run_id,
            }
            for item in report.files
        ],
    }
