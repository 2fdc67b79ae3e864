"""A warm Prefect worker: Hopper's flows run inside the worker's own interpreter.

A process worker starts a fresh Python for every flow run and pays ≈ 2–3 s importing Prefect,
pyarrow and pandas before any work; for small files that is nearly all of the time. This
worker serves the same ``process`` work pool but runs the flow runs of Hopper's own
deployments (their entrypoints live in the project's ``flows/`` folder) in threads of its
long-lived process, with imports and flow objects already loaded. Any other deployment on the
pool is handed to the regular process path. Prefect still orchestrates everything: runs are
created by automations, picked up by polling the pool (at once when Prefect's event stream
announces a run of the pool or a run of this worker ends, else on a slow clock: see
:mod:`hopper.wake`), and their states, logs and artifacts are Prefect's; scale out by
starting more workers on the pool.

Cancelling a warm run from the UI is not supported (its "infrastructure" is the worker).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import anyio.abc
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from hopper.heap import set_aside_startup
from hopper.home import keep_ledgers
from hopper.isolate import shared_pool
from hopper.prefect_api import prefect_client_for_run, skip_suspension_watch, warm_run_clients
from hopper.wake import Wake, poll_when_scheduled

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import WorkerFlowRunResponse
    from prefect.flows import Flow

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL before another that waits gets it (Python's default: 5 ms).

The threads that feed the reader processes wait on pipes, then need the GIL for a moment to
take the reply and send the next file; behind a busy thread (a run's bookkeeping, Prefect's
event loops) each such moment waited up to 5 ms, for files a reader converts in about 1 ms.
"""


WARM_CLIENTS = 8
"""At most this many Prefect clients are opened at the worker's start (one per run slot)."""


class WarmJobConfiguration(ProcessJobConfiguration):
    """The process job configuration, with Prefect's settings as variables made once.

    Prefect builds every run's configuration before it knows how the run will go, and part
    of that is the environment a child process would get: every Prefect setting set in this
    one, serialised anew for each run (about 45 ms of CPU here, the worker's own). A warm run
    never uses it, and the settings do not change while the worker serves; they are
    serialised again only if the settings in effect are another object.
    """

    _settings_environment: ClassVar[tuple[Any, dict[str, str]] | None] = None

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        kept = WarmJobConfiguration._settings_environment
        if kept is None or kept[0] is not settings:
            kept = (settings, super()._base_environment())
            WarmJobConfiguration._settings_environment = kept
        return dict(kept[1])


class WarmWorker(ProcessWorker):
    """A process-pool worker that runs Hopper's flows in-process."""

    job_configuration = WarmJobConfiguration

    def __init__(self, *args: Any, project_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project_dir = project_dir.resolve()
        self._flows: dict[str, Flow[..., Any]] = {}
        self._entrypoints: dict[str, str | None] = {}
        self._load_lock = threading.Lock()
        self._threads = anyio.CapacityLimiter(max(1, self._limit or 4))
        self.wake = Wake()

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        """Prefect's regular poll, every poll interval: it reaches the server only when due."""
        if not self.wake.regular_poll_due():
            return []
        return await self.poll_now()

    async def poll_now(self) -> list[FlowRun]:
        """Poll the pool and submit the runs it holds, up to the free slots.

        With every slot taken, a poll could take nothing (and costs the server about 40 ms
        of CPU): it is left to the end of the next run.
        """
        if self._limiter is not None and self._limiter.available_tokens < 1:
            self.wake.runs_waiting = True
            return []
        self.wake.polled()
        return await super().get_and_submit_flow_runs()

    async def _submit_scheduled_flow_runs(
        self, flow_run_response: list[WorkerFlowRunResponse]
    ) -> list[FlowRun]:
        """Prefect's submission of the runs a poll found; notes whether any were left."""
        submitted = await super()._submit_scheduled_flow_runs(flow_run_response)
        self.wake.runs_waiting = len(submitted) < len(flow_run_response)
        return submitted

    async def _entrypoint(self, flow_run: FlowRun) -> str | None:
        """The deployment's entrypoint if it is one of Hopper's flows, else None."""
        if flow_run.deployment_id is None:
            return None
        key = str(flow_run.deployment_id)
        if key not in self._entrypoints:
            deployment = await self.client.read_deployment(flow_run.deployment_id)
            entry = deployment.entrypoint or ""
            path = entry.split(":", 1)[0]
            ours = path.startswith("flows/") and (self.project_dir / path).is_file()
            self._entrypoints[key] = entry if ours else None
        return self._entrypoints[key]

    def _flow(self, entrypoint: str) -> Flow[..., Any]:
        from prefect.flows import load_flow_from_entrypoint

        with self._load_lock:
            if entrypoint not in self._flows:
                path, func = entrypoint.split(":", 1)
                self._flows[entrypoint] = load_flow_from_entrypoint(
                    f"{self.project_dir / path}:{func}"
                )
            return self._flows[entrypoint]

    def preload(self) -> int:
        """Import the flows named in ``prefect.yaml`` now, so the first run starts warm.

        Prefect's API models are completed too (:func:`complete_prefect_models`).
        """
        import yaml

        complete_prefect_models()

        try:
            doc = yaml.safe_load((self.project_dir / "prefect.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            log.warning("cannot read prefect.yaml to preload flows: %s", exc)
            return 0
        loaded = 0
        for deployment in doc.get("deployments") or []:
            entry = str(deployment.get("entrypoint", ""))
            if entry.startswith("flows/") and ":" in entry:
                try:
                    self._flow(entry)
                    loaded += 1
                except Exception:
                    log.exception("cannot load flow %s", entry)
        return loaded

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        entrypoint = await self._entrypoint(flow_run)
        if entrypoint is None:
            return await super().run(flow_run, configuration, task_status)
        flow = self._flow(entrypoint)
        # Shown as the run's infrastructure in the UI: which worker process runs it.
        identifier = f"{socket.gethostname()}:{os.getpid()}"
        if task_status is not None:
            task_status.started(identifier)  # type: ignore[arg-type]
        try:
            state = await anyio.to_thread.run_sync(
                _run_in_thread, flow, flow_run, limiter=self._threads
            )
        finally:
            self.wake.slot_freed()
        return ProcessWorkerResult(identifier=identifier, status_code=0 if state else 1)


def complete_prefect_models() -> int:
    """Build now what Prefect's client models leave for their first use; how many were left.

    Many of Prefect's response models are defined before the types they refer to, and are
    built the first time they validate something: the worker's first poll that finds runs
    paid about a third of a second for them in the middle of a burst. All of them take about
    40 ms here, at start.
    """
    import inspect

    import prefect.client.schemas.objects as objects
    import prefect.client.schemas.responses as responses
    from pydantic import BaseModel

    completed = 0
    for module in (objects, responses):
        for kind in vars(module).values():
            if (
                inspect.isclass(kind)
                and issubclass(kind, BaseModel)
                and not kind.__pydantic_complete__
                and kind.model_rebuild(raise_errors=False)
            ):
                completed += 1
    return completed


def _run_in_thread(flow: Flow[..., Any], flow_run: FlowRun) -> bool:
    """Run one flow run to a final state; True unless the engine itself crashed."""
    from prefect.flow_engine import run_flow

    try:
        with prefect_client_for_run():
            run_flow(flow, flow_run=flow_run, return_type="state")
    except BaseException:  # the engine records the run's state; keep the worker alive
        log.exception("flow run %s crashed in the warm worker", flow_run.id)
        return False
    return True


async def serve(pool: str, *, project_dir: Path, limit: int, readers: int = 0) -> None:
    """Run a warm worker on ``pool`` until cancelled, with ``readers`` reader processes.

    The reader pool is made here, before any flow run, so the runs share it
    (0 readers: one per core). Beside the worker runs its wake-up on Prefect's event stream
    (:func:`~hopper.wake.poll_when_scheduled`), in a task group entered before the
    worker: Prefect's worker enters and leaves its own task groups in ``start``, which must
    nest inside any other.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    skip_suspension_watch()
    keep_ledgers()  # every run opens its home: the ledger stays open between them
    async with anyio.create_task_group() as beside:
        async with WarmWorker(
            work_pool_name=pool,
            limit=limit,
            project_dir=project_dir,
            prefetch_seconds=5,
        ) as worker:
            loaded = worker.preload()
            # one client per run slot, opened now (a large limit opens the rest when needed)
            await anyio.to_thread.run_sync(warm_run_clients, min(max(1, limit), WARM_CLIENTS))
            reader_pool = shared_pool(readers)
            reader_pool.warm()  # the first files need not wait for the readers' Python
            log.info(
                "warm worker %s serving pool %s (limit %d, %d flows loaded, %d reader processes)",
                worker.name,
                pool,
                limit,
                loaded,
                reader_pool.size,
            )
            set_aside_startup()  # what was loaded is kept: full collections need not walk it
            beside.start_soon(poll_when_scheduled, pool, worker.poll_now, worker.wake)
            try:
                await worker.start(
                    run_once=False,
                    with_healthcheck=False,
                    printer=lambda *_args, **_kw: None,
                )
            finally:
                reader_pool.close()
        beside.cancel_scope.cancel()
