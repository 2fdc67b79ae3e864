"""``hopper init``: scaffold a working Hopper home."""

from __future__ import annotations

from pathlib import Path

from cyclopts import App
from rich.console import Console

from hopper.config import WatchOptions
from hopper.errors import HopperError

console = Console()

HOPPER_YAML = """\
# Hopper home. Relative paths are relative to this file's folder.
# Docs: `hopper --help`, README.md.

# Where files arrive. The first folder under a source names the dataset:
# inbox/sales/jan.csv is ingested with the contract datasets/sales.yaml.
sources:
  - type: folder
    path: inbox
    recursive: true
    follow_symlinks: false   # true: ingest links that resolve inside this folder (never out of it)
    after_ingest: keep       # or delete, or archive (to archive/<dataset>/<date>/ once ingested)

# Explicit routing rules override the folder-name routing, first match wins.
# routing:
#   - glob: "exports/*-orders.csv"
#     dataset: orders
routing: []

lake: lake               # validated Parquet: lake/<dataset>/[partition=value/]<file>-<id>.parquet
# Or one Apache Iceberg table per dataset (docs/tables.md), in the catalog .hopper/catalog.db:
# lake:
#   path: lake
#   format: iceberg
quarantine: quarantine   # rejected files with <file>.error.json beside them
datasets_dir: datasets   # one contract per dataset: datasets/<name>.yaml
state_dir: .hopper       # ledger, logs and the embedded Prefect server's database
work_pool: hopper        # Prefect work pool the ingestion runs on

# Failure alerts (Prefect notification blocks). Secrets come from the environment:
# alerts:
#   - type: webhook
#     url_env: HOPPER_ALERTS_WEBHOOK_URL
alerts: []

# Prometheus /metrics of the watcher and the worker, on 127.0.0.1 (off unless enabled):
# metrics:
#   enabled: true
#   watcher_port: 9461
#   worker_port: 9462

"""


def watch_block(watch: WatchOptions | None = None) -> str:
    """The ``watch:`` block of a new home: the model's own defaults, each explained.

    Written from :class:`WatchOptions` so a home made by ``hopper init`` and one without a
    ``watch:`` block behave alike (and the benchmarks measure what users get).
    """
    w = watch or WatchOptions()
    rows = [
        ("stable_seconds", w.stable_seconds, "a file is complete once unchanged this long"),
        ("rescan_seconds", w.rescan_seconds, "full rescan that catches events the OS dropped"),
        ("confirm_seconds", w.confirm_seconds, "re-dispatch if Prefect shows no run by then"),
        ("batch_max_files", w.batch_max_files, "most files in one run (a burst: ~2 runs)"),
    ]
    lines = [f"  {f'{key}: {value:g}'.ljust(22)} # {why}\n" for key, value, why in rows]
    return "watch:\n" + "".join(lines)


EXAMPLE_CONTRACT = """\
# Contract of the dataset "example": drop CSV files into inbox/example/.
# Generate one from a sample file with: hopper contract infer FILE --dataset NAME
name: example
version: 1
format: auto
columns:
  - name: id
    type: int64
    nullable: false
  - name: name
    type: string
  - name: amount
    type: float64
# Alert once when no file of this dataset has landed for a day (`hopper deploy` sets it up):
# expect:
#   every: 24h
"""


def home_yaml() -> str:
    """The ``hopper.yaml`` that ``hopper init`` writes."""
    return HOPPER_YAML + watch_block()


def init(directory: Path, /, *, force: bool = False) -> None:
    """Create a Hopper home: hopper.yaml, datasets/, inbox/, lake/ and quarantine/.

    Args:
        directory: Folder to create or fill (existing files are kept unless --force).
        force: Overwrite an existing hopper.yaml and example contract.
    """
    directory = directory.resolve()
    config = directory / "hopper.yaml"
    if config.exists() and not force:
        raise HopperError(f"{config} already exists; use --force to overwrite it")
    for sub in ("datasets", "inbox/example", "lake", "quarantine"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    config.write_text(home_yaml(), encoding="utf-8")
    example = directory / "datasets" / "example.yaml"
    if force or not example.exists():
        example.write_text(EXAMPLE_CONTRACT, encoding="utf-8")
    console.print(f"Created a Hopper home in [bold]{directory}[/]:")
    console.print(f"  config     {config}")
    console.print(f"  contracts  {directory / 'datasets'}  (one <dataset>.yaml per dataset)")
    console.print(f"  inbox      {directory / 'inbox'}  (drop files into inbox/<dataset>/)")
    console.print(f"  lake       {directory / 'lake'}")
    console.print(f"  quarantine {directory / 'quarantine'}")
    console.print("Next:")
    console.print(
        f"  hopper contract infer sample.csv --dataset mydata > {directory}/datasets/mydata.yaml"
    )
    console.print(f"  hopper up --config {config}")


def register(app: App) -> None:
    """Add this module's commands to the CLI."""
    app.command(init)
