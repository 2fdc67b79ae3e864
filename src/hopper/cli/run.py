"""``hopper up``, ``hopper watch``, ``hopper deploy``: the long-running side of Hopper."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

from cyclopts import App, Parameter
from rich.console import Console

from hopper.config import FolderSource, HopperConfig, load_config
from hopper.errors import ConfigError, HopperError
from hopper.prefect_api import ui_url_of
from hopper.settings import HopperSettings
from hopper.stores import store_for

console = Console()
log = logging.getLogger(__name__)

ConfigOption = Annotated[
    Path | None,
    Parameter(
        name=["--config", "-c"],
        help="hopper.yaml of the Hopper home (default: $HOPPER_CONFIG, else config/hopper.yaml).",
    ),
]


def resolve_config(config: Path | None) -> HopperConfig:
    """Load the config named on the command line, else the one the settings point to."""
    return load_config(config or HopperSettings().config)


def prepare_home(cfg: HopperConfig) -> None:
    """Create the folders a home needs (inbox, lake, quarantine, state)."""
    for location in (cfg.lake.path, cfg.quarantine):
        store_for(location).prepare(location)
    for folder in [s.path for s in cfg.folders] + [cfg.state_dir]:
        folder.mkdir(parents=True, exist_ok=True)
    # One inbox folder per contract, so `cp file inbox/<dataset>/` works from the start.
    contracts = sorted(cfg.datasets_dir.glob("*.yaml")) if cfg.datasets_dir.is_dir() else []
    for source in cfg.folders:
        for contract in contracts:
            (source.path / contract.stem).mkdir(exist_ok=True)


def _default_api_url(config: Path | None = None) -> None:
    """Point Prefect at the local server unless PREFECT_API_URL says otherwise.

    The local server is the one the home's running `hopper up` recorded (so a command run
    beside `hopper up --port 4391` finds it), else $HOPPER_HOST and $HOPPER_PORT.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    from hopper.up import recorded_api_url

    settings = HopperSettings()
    url = None
    with contextlib.suppress(ConfigError):  # a bad config is reported by the command itself
        url = recorded_api_url(resolve_config(config).state_dir)
    os.environ["PREFECT_API_URL"] = url or f"http://{settings.host}:{settings.port}/api"


def _on_signals(stop: object) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop()  # type: ignore[operator]

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def up(*, config: ConfigOption = None, port: int | None = None) -> None:
    """Run everything on embedded defaults: Prefect server, work pool, deployments, worker, watcher.

    Reuses a Prefect server that already answers at $PREFECT_API_URL (or on --port);
    otherwise starts one on SQLite inside the home's state folder. Ctrl-C or SIGTERM stops
    every process it started.

    Args:
        config: hopper.yaml of the Hopper home.
        port: Port of the Prefect server to start or reuse (default $HOPPER_PORT or 4200).
    """
    from hopper.metrics import metrics_url
    from hopper.up import Supervisor
    from hopper.watch.daemon import check_sources

    settings = HopperSettings()
    cfg = resolve_config(config)
    check_sources(cfg)
    prepare_home(cfg)
    supervisor = Supervisor(cfg, settings, port or settings.port)
    _on_signals(supervisor.stop)

    def ready(sup: Supervisor) -> None:
        console.print("[bold green]Hopper is up.[/]")
        console.print(f"  Prefect UI  {ui_url_of(sup.api_url)}")
        for source in cfg.sources:
            where = source.path if isinstance(source, FolderSource) else source.root
            console.print(f"  inbox       {where}  (drop files into <inbox>/<dataset>/)")
        console.print(f"  contracts   {cfg.datasets_dir}")
        console.print(f"  lake        {cfg.lake.path} ({cfg.lake.format})")
        console.print(f"  quarantine  {cfg.quarantine}")
        console.print(f"  logs        {sup.logs}")
        if cfg.metrics.enabled:
            host, m = cfg.metrics.host, cfg.metrics
            console.print(f"  metrics     {metrics_url(host, m.watcher_port)} (watcher)")
            console.print(f"              {metrics_url(host, m.worker_port)} (worker)")
        console.print("Press Ctrl-C to stop.", highlight=False)

    code = supervisor.run(ready)
    console.print("Hopper stopped.")
    if code:
        raise SystemExit(code)


def watch(*, config: ConfigOption = None, ready_file: Path | None = None) -> None:
    """Watch the configured sources and dispatch each complete file to Prefect.

    Needs a Prefect server ($PREFECT_API_URL, else the home's running `hopper up`, else
    http://127.0.0.1:4200/api) with the Hopper deployments (`hopper deploy`). While the
    server is down, files stay pending in the ledger and are dispatched once it is back.

    Args:
        config: hopper.yaml of the Hopper home.
        ready_file: Written (with the watcher's PID) once every source is watched and
            scanned for files already there; removed on exit. For supervisors: `hopper up`
            says "Hopper is up." only after it appears.
    """
    _default_api_url(config)
    from hopper import metrics
    from hopper.heap import set_aside_startup
    from hopper.home import Home
    from hopper.watch.daemon import Watcher, check_sources

    with Home.open(config) as home:
        check_sources(home.config)
        prepare_home(home.config)
        api = home.api
        lease = home.settings.lease_seconds
        watcher = Watcher(home.config, home.ledger, api, lease_seconds=lease, ui_url=home.ui_url)
        cfg = home.config
        if cfg.metrics.enabled:
            contracts = cfg.datasets_dir.glob("*.yaml") if cfg.datasets_dir.is_dir() else []
            metrics.watch_backlog(home.ledger, sorted(p.stem for p in contracts))
            metrics.serve(cfg.metrics, cfg.metrics.watcher_port, "watcher")
        _on_signals(watcher.stop)
        log.info("watcher dispatching to %s", api.api_url)
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)

        def ready() -> None:
            set_aside_startup()  # imports and the startup scan: kept, never walked again
            if ready_file is not None:
                _write_ready(ready_file)

        try:
            watcher.run(on_ready=ready)
        finally:
            if ready_file is not None:
                ready_file.unlink(missing_ok=True)


def _write_ready(path: Path) -> None:
    """Write ``path`` atomically, holding this process's PID."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(f"{os.getpid()}\n", encoding="utf-8")
    partial.replace(path)
    log.info("watching every source (ready file %s)", path)


def deploy(*, config: ConfigOption = None) -> None:
    """Create the work pool and apply prefect.yaml (deployments and triggers), idempotently.

    Also deletes automations left behind by deleted deployments (Prefect keeps them firing).

    Args:
        config: hopper.yaml of the Hopper home (its work_pool is used).
    """
    _default_api_url(config)
    from hopper.deploy import deploy as apply

    settings = HopperSettings()
    cfg = resolve_config(config)
    removed = apply(settings.project_dir, cfg)
    console.print(
        f"Deployed {settings.project_dir / 'prefect.yaml'} to {os.environ['PREFECT_API_URL']}"
    )
    for name in removed:
        console.print(f"  removed stale automation {name!r}")


def reconcile(
    *,
    config: ConfigOption = None,
    max_dispatches: int | None = None,
    stuck_seconds: float | None = None,
) -> None:
    """Re-dispatch files whose flow run died without an outcome; rescan the sources.

    The `hopper-reconcile` deployment runs this every few minutes; run it by hand after an
    incident (e.g. a worker machine lost) to act at once.

    Args:
        config: hopper.yaml of the Hopper home.
        max_dispatches: Give up (record a failure, which alerts) after this many dispatches
            (default: the same limit the watcher uses).
        stuck_seconds: A running file whose run has not renewed its lease for this long
            counts as lost (default: $HOPPER_LEASE_SECONDS, 60).
    """
    _default_api_url(config)
    from hopper.home import Home
    from hopper.reconcile import reconcile as run_reconcile

    with Home.open(config) as home:
        report = run_reconcile(
            home.config,
            home.ledger,
            home.api,
            max_dispatches=max_dispatches,
            stuck_seconds=stuck_seconds
            if stuck_seconds is not None
            else home.settings.lease_seconds,
        )
    console.print(
        f"re-dispatched {len(report.redispatched)}, gave up on {len(report.given_up)}, "
        f"newly detected {report.detected}"
    )
    for uri in report.redispatched:
        console.print(f"  re-dispatched {uri}")
    for uri in report.given_up:
        console.print(f"  [red]gave up[/] on {uri}")


def worker(*, pool: str = "hopper", limit: int | None = None) -> None:
    """Run a warm Prefect worker: Hopper's flows run in this process, without start-up cost.

    It serves the same process work pool as `prefect worker start --pool hopper` (which also
    works, paying ≈ 2–3 s per run to start Python); start several, on several machines, to
    scale out. It takes a run as soon as Prefect's event stream announces one for its pool,
    or one of its runs ends while others wait for a slot; it polls every 5 s besides (every
    PREFECT_WORKER_QUERY_SECONDS while the stream is down). Stops on Ctrl-C or SIGTERM.

    Files themselves are read and written by its reader processes ($HOPPER_READERS, one per
    core by default), each under the file's contract limits (max_memory_mb, max_seconds):
    a file that crashes or exhausts a reader is quarantined, and the worker carries on.

    Args:
        pool: Work pool to serve.
        limit: Flow runs at once (default $HOPPER_WORKER_LIMIT).
    """
    _default_api_url()
    import anyio

    from hopper.worker import serve

    settings = HopperSettings()
    _serve_worker_metrics(settings)

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def until_signalled() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("received %s; stopping", signal.Signals(signum).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(until_signalled)
            tg.start_soon(
                lambda: serve(
                    pool,
                    project_dir=settings.project_dir,
                    limit=limit or settings.worker_limit,
                    readers=settings.readers,
                )
            )

    anyio.run(main)
    log.info("warm worker stopped")


def _serve_worker_metrics(settings: HopperSettings) -> None:
    """Serve the worker's /metrics if the home's hopper.yaml (``$HOPPER_CONFIG``) enables it.

    A worker needs no hopper.yaml otherwise, so one that cannot be read costs only metrics.
    """
    from hopper import metrics

    try:
        cfg = load_config(settings.config)
    except (HopperError, OSError) as exc:
        log.info("no metrics: cannot read %s (%s)", settings.config, exc)
        return
    metrics.serve(cfg.metrics, cfg.metrics.worker_port, "worker")


def register(app: App) -> None:
    """Add this module's commands to the CLI."""
    app.command(up)
    app.command(worker)
    app.command(reconcile)
    app.command(watch)
    app.command(deploy)
