"""``hopper maintain``: upkeep of an Iceberg lake's tables, on demand."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Table

from hopper.cli.run import ConfigOption, resolve_config
from hopper.errors import HopperError

if TYPE_CHECKING:
    from hopper.tables.maintain import TableUpkeep

console = Console()


def maintain(
    *,
    dataset: str | None = None,
    dry_run: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    config: ConfigOption = None,
) -> None:
    """Keep an Iceberg lake's tables lean: compact small files, expire snapshots, drop orphans.

    For each dataset's table (lake.format: iceberg), in one pass:

    1. Compaction: per partition, data files under 3/4 of lake.target_file_mb (two or more)
       are rewritten into files near that size, in one snapshot per table. Rows and lineage
       columns are unchanged; ingestion may go on meanwhile (a lost race is redone).
    2. Expiry: snapshots older than lake.maintain.snapshot_max_age_hours (168, never less)
       go, except the latest lake.maintain.keep_snapshots (10) and the current one.
    3. Orphans: files under the table's data/ and metadata/ that nothing refers to, older
       than lake.maintain.orphan_min_age_hours (24), are deleted.

    The hopper-maintain deployment runs this every hour. A Parquet lake has nothing to
    maintain. Exit 1 if any table's upkeep failed.

    Args:
        dataset: Maintain this dataset's table only (default: every table).
        dry_run: Show what would be compacted, expired and deleted; change nothing.
        json_output: Print the report as JSON (a table per entry: files_before,
            files_after, rows_after, files_rewritten, files_written, snapshots_expired,
            snapshots_kept, orphans, orphan_bytes, notes, error).
        config: hopper.yaml of the Hopper home.
    """
    from hopper.tables.maintain import maintain as run_maintain

    cfg = resolve_config(config)
    if not cfg.lake.is_table and not json_output:
        console.print(
            f"Nothing to maintain: the lake is {cfg.lake.format} files "
            "(upkeep is for lake.format: iceberg)."
        )
        return
    report = run_maintain(cfg, dataset, dry_run=dry_run)
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    elif not report.tables:
        console.print("No tables yet: a dataset's table is made by its first ingested file.")
    else:
        _print(report.tables, dry_run)
    if report.failed:
        names = ", ".join(f"{t.table} ({t.error})" for t in report.failed)
        raise HopperError(f"upkeep failed for {names}; the next run tries again")


def _print(tables: list[TableUpkeep], dry_run: bool) -> None:
    grid = Table(
        "table",
        "data files",
        "rows",
        "compacted",
        "snapshots expired / kept",
        "orphans",
        title="Table upkeep (dry run: nothing changed)" if dry_run else "Table upkeep",
    )
    for t in tables:
        grid.add_row(
            t.table,
            f"{t.files_before} → {t.files_after}",
            str(t.rows_after),
            f"{t.files_rewritten} → {t.files_written}",
            f"{t.snapshots_expired} / {t.snapshots_kept}",
            f"{t.orphans} ({t.orphan_bytes:,} bytes)",
        )
    console.print(grid)
    for t in tables:
        for note in t.notes:
            console.print(f"  {t.table}: {note}", highlight=False)


def register(app: App) -> None:
    """Add this module's commands to the CLI."""
    app.command(maintain)
