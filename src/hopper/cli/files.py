"""``hopper status`` and ``hopper replay``: every file's fate, and re-running any of them."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Table

from hopper.cli.run import ConfigOption, _default_api_url
from hopper.config import HopperConfig
from hopper.errors import HopperError
from hopper.files import replay_command
from hopper.home import Home
from hopper.ledger import FileRecord, Ledger
from hopper.models import FileRef, FileState
from hopper.prefect_api import file_replay_url, run_url

console = Console()

PENDING = (FileState.DETECTED, FileState.DISPATCHED, FileState.QUEUED, FileState.RUNNING)


def _no_page() -> str | None:
    return None


def summary(
    ledger: Ledger,
    ui_url: str,
    failures: int = 10,
    replay_page: Callable[[], str | None] = _no_page,
) -> dict[str, Any]:
    """The ``hopper status --json`` document: per-dataset counts and the latest failures.

    Each failure names both ways to run it again: the ``hopper replay`` command and the
    ``hopper-replay`` deployment's run form in the Prefect UI.

    Args:
        ledger: the home's ledger.
        ui_url: the Prefect UI, for links to runs.
        failures: how many of the latest failures to list.
        replay_page: the ``hopper-replay`` deployment's page in the UI, or None; asked only
            when there are failures to list.
    """
    now = time.time()
    datasets: dict[str, dict[str, Any]] = {}
    bad: list[FileRecord] = []
    for rec in ledger.records():
        row = datasets.setdefault(
            rec.dataset or "(unrouted)",
            {
                "ingested": 0,
                "quarantined": 0,
                "failed": 0,
                "pending": 0,
                "oldest_pending_seconds": None,
            },
        )
        if rec.state in PENDING:
            row["pending"] += 1
            age = round(now - rec.detected_at, 1)
            row["oldest_pending_seconds"] = max(row["oldest_pending_seconds"] or 0, age)
        else:
            row[rec.state.value] += 1
        if rec.state in (FileState.QUARANTINED, FileState.FAILED):
            bad.append(rec)
    bad.sort(key=lambda r: r.updated_at, reverse=True)
    page = replay_page() if bad else None
    return {
        "datasets": datasets,
        "failures": [
            {
                "uri": r.uri,
                "dataset": r.dataset,
                "state": r.state.value,
                "reason": r.reason,
                "flow_run_id": r.flow_run_id,
                "run_url": run_url(ui_url, r.flow_run_id),
                "updated_at": r.updated_at,
                "replay": replay_command(r.ref),
                "replay_url": file_replay_url(page, r.ref),
            }
            for r in bad[:failures]
        ],
    }


def tables_report(config: HopperConfig, datasets: list[str]) -> dict[str, Any]:
    """Each dataset's table as ``hopper status --json`` shows it (``tables`` key)."""
    from hopper.tables.status import table_status

    found = {name: table_status(config, name) for name in datasets if name != "(unrouted)"}
    return {name: status.model_dump() for name, status in found.items() if status is not None}


def file_report(ledger: Ledger, target: str, ui_url: str) -> dict[str, Any]:
    """The ``hopper status FILE --json`` document: versions and history of one file."""
    from hopper.replay import to_uri

    uri = to_uri(target)
    versions = ledger.versions(uri)
    if not versions:
        raise HopperError(f"{target}: Hopper has no record of this file")
    latest = versions[-1]
    return {
        "uri": uri,
        "state": latest.state.value,
        "dataset": latest.dataset,
        "reason": latest.reason,
        "run_url": run_url(ui_url, latest.flow_run_id),
        "versions": [v.to_dict() for v in versions],
        "history": ledger.history(uri),
    }


def status(
    file: str | None = None,
    /,
    *,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    config: ConfigOption = None,
) -> None:
    """Show what happened to files: counts per dataset and latest failures, or one file's history.

    With an Iceberg lake (lake.format: iceberg) it also shows each dataset's table: its
    current snapshot, data files, rows and the snapshots kept (--json: the "tables" key).

    Args:
        file: A file path or URI to show in full (every version, run and outcome).
        json_output: Print JSON (stable keys, documented in README) instead of tables.
        config: hopper.yaml of the Hopper home.
    """
    _default_api_url(config)
    from hopper.prefect_api import replay_deployment_page

    with Home.open(config) as home:
        ui_url = home.ui_url
        doc = (
            file_report(home.ledger, file, ui_url)
            if file
            else summary(home.ledger, ui_url, replay_page=replay_deployment_page)
        )
        if not file and home.config.lake.is_table:
            doc["tables"] = tables_report(home.config, sorted(doc["datasets"]))
    if json_output:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    if file:
        console.print(f"[bold]{doc['uri']}[/]: {doc['state']}  {doc['reason'] or ''}")
        if doc["run_url"]:
            console.print(f"  run: {doc['run_url']}")
        table = Table("time", "event", "version", "detail")
        for h in doc["history"]:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["at"]))
            detail = ", ".join(
                f"{k}={v}" for k, v in h["detail"].items() if v not in (None, [], "")
            )
            table.add_row(stamp, h["event"], h["fingerprint"][:22], detail)
        console.print(table)
        return
    table = Table("dataset", "ingested", "quarantined", "failed", "pending", "oldest pending")
    for name, row in sorted(doc["datasets"].items()):
        age = row["oldest_pending_seconds"]
        table.add_row(
            name,
            *(str(row[k]) for k in ("ingested", "quarantined", "failed", "pending")),
            f"{age:.0f}s" if age is not None else "-",
        )
    console.print(table)
    if doc.get("tables"):
        tables = Table("table", "snapshot", "data files", "rows", "snapshots kept")
        for t in doc["tables"].values():
            tables.add_row(
                t["table"],
                str(t["snapshot_id"]),
                str(t["data_files"]),
                str(t["rows"]),
                str(t["snapshots"]),
            )
        console.print(tables)
    for f in doc["failures"]:
        console.print(f"[red]{f['state']}[/] {f['uri']}: {f['reason']}")
        if f["run_url"]:
            console.print(f"    run:    {f['run_url']}")
        console.print(f"    replay: {f['replay']}", markup=False, soft_wrap=True)
        if f["replay_url"]:  # soft_wrap: a link cut in two lines cannot be followed
            console.print(f"    or in the Prefect UI: {f['replay_url']}", soft_wrap=True)


def replay(
    *targets: str,
    failed: bool = False,
    quarantined: bool = False,
    dataset: str | None = None,
    since: str | None = None,
    dry_run: bool = False,
    wait: bool = False,
    timeout: float = 600.0,
    config: ConfigOption = None,
) -> None:
    """Re-run files through their Prefect deployment; outputs are replaced, never duplicated.

    Name files by path, URI or glob, and/or select them from the ledger with --failed,
    --quarantined, --dataset and --since (these filters combine with AND). The
    `hopper-replay` deployment does the same from the Prefect UI.

    Args:
        targets: File paths, URIs or globs (e.g. './inbox/sales/*.csv').
        failed: Replay files whose ingestion failed.
        quarantined: Replay quarantined files (e.g. after fixing their contract).
        dataset: Only files of this dataset.
        since: Only files updated within this duration (e.g. 30m, 2h, 7d).
        dry_run: List what would be replayed; change nothing.
        wait: Wait for the runs, show progress, end with a summary; exit 1 if any did not land.
        timeout: Seconds --wait waits at most.
        config: hopper.yaml of the Hopper home.
    """
    _default_api_url(config)
    from hopper.replay import run_replay, selection

    sel = selection(
        list(targets), failed=failed, quarantined=quarantined, dataset=dataset, since=since
    )
    with Home.open(config) as home:
        report = run_replay(
            home.ledger, home.config, None if dry_run else home.api, sel, dry_run=dry_run
        )
        if not report.files:
            console.print("nothing to replay")
            return
        if dry_run:
            for item in report.files:
                console.print(f"would replay {item.record.uri}  ({item.record.state.value})")
            return
        for ref, run_id in report.started:
            console.print(f"replaying {ref.uri} → {run_url(home.ui_url, run_id)}")
        if wait:
            _wait(home.ledger, report.started, timeout)


def _wait(ledger: Ledger, started: list[tuple[FileRef, str]], timeout: float) -> None:
    from rich.progress import Progress

    deadline = time.monotonic() + timeout
    final: dict[str, FileRecord] = {}
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("replaying", total=len(started))
        while len(final) < len(started) and time.monotonic() < deadline:
            for ref, run_id in started:
                rec = ledger.get(ref.uri, ref.fingerprint)
                if rec and rec.state.is_final and rec.flow_run_id == run_id:
                    final[ref.uri] = rec
            progress.update(bar, completed=len(final))
            time.sleep(0.5)
    table = Table("file", "outcome", "reason", "written to")
    for ref, _ in started:
        rec = final.get(ref.uri)
        outputs = (rec.outcome or {}).get("outputs", []) if rec else []
        table.add_row(
            ref.name,
            rec.state.value if rec else "timed out",
            (rec.reason or "") if rec else "",
            "\n".join(outputs),  # files, or a table's snapshot: hopper.<dataset>@<id>
        )
    console.print(table)
    if any(r.state != FileState.INGESTED for r in final.values()) or len(final) < len(started):
        raise SystemExit(1)


def register(app: App) -> None:
    """Add this module's commands to the CLI."""
    app.command(status)
    app.command(replay)
