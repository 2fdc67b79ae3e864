"""The few Prefect API calls Hopper makes, behind one small class that is passed in.

Created once per process (CLI command, watcher) and handed to whoever needs it, so that the
deciding code never builds clients of its own. Links into the Prefect UI are built here too,
by pure functions; one of them needs the ``hopper-replay`` deployment's id, which
:func:`replay_deployment_page` looks up once per process (the reason file of a quarantined
file is written deep in the flow path, where no client is handed down). What the warm
worker changes in how Prefect's engine starts the runs it hosts lives here as well: no watch
for a suspension (:func:`skip_suspension_watch`), and clients kept between runs
(:func:`prefect_client_for_run`); when it polls is :mod:`hopper.wake`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from hopper.errors import TransientError
from hopper.events import BATCH_DEPLOYMENT, INGEST_DEPLOYMENT, REPLAY_DEPLOYMENT
from hopper.files import replay_target
from hopper.models import FileRef

log = logging.getLogger(__name__)


class RunState(BaseModel):
    """A flow run's state as Prefect reports it: its type (e.g. ``RUNNING``) and since when."""

    model_config = ConfigDict(frozen=True)

    type: str
    since: float = Field(description="When the run entered this state (epoch seconds).")

    @classmethod
    def of(cls, run: Any) -> RunState | None:
        """The state of a Prefect ``FlowRun`` (None if it has none)."""
        state = run.state
        if state is None:
            return None
        return cls(type=state.type.value, since=state.timestamp.timestamp())


def ui_url_of(api_url: str) -> str:
    """The Prefect UI's base URL for an API URL: the API URL without its ``/api`` suffix."""
    return api_url.rstrip("/").removesuffix("/api")


def run_url(ui_url: str, flow_run_id: str | None) -> str | None:
    """Link to a flow run in the Prefect UI at ``ui_url``, or None without a run."""
    return f"{ui_url}/runs/flow-run/{flow_run_id}" if flow_run_id else None


def deployment_url(ui_url: str, deployment_id: str) -> str:
    """A deployment's page in the Prefect UI at ``ui_url`` (the UI routes deployments by id)."""
    return f"{ui_url}/deployments/deployment/{deployment_id}"


def run_form_url(deployment_page: str, parameters: Mapping[str, Any]) -> str:
    """The deployment's "Custom run" form with ``parameters`` filled in (pure).

    Both of Prefect 3's UIs take the form's values as JSON in the ``parameters`` query
    parameter of ``/deployments/deployment/<id>/run``; parameters left out keep their defaults.
    """
    encoded = quote(json.dumps(dict(parameters), separators=(",", ":")), safe="")
    return f"{deployment_page}/run?parameters={encoded}"


def file_replay_url(replay_page: str | None, ref: FileRef) -> str | None:
    """The ``hopper-replay`` run form with ``ref`` as its one target, or None without a page."""
    return run_form_url(replay_page, {"targets": [replay_target(ref)]}) if replay_page else None


REPLAY_PAGE_TTL = 3600.0
"""Seconds a found ``hopper-replay`` page is reused before it is looked up again."""
REPLAY_PAGE_RETRY = 300.0
"""Seconds before a failed look-up is tried again (no deployment yet, server down)."""

_replay_pages: dict[str, tuple[float, str | None]] = {}
_replay_pages_lock = threading.Lock()


def replay_deployment_page(now: float | None = None) -> str | None:
    """The ``hopper-replay`` deployment's page in the Prefect UI, or None if unknown.

    Looked up by name on the server Prefect's settings name (``PREFECT_API_URL``) at most
    once per :data:`REPLAY_PAGE_TTL` per process, and a failed look-up at most once per
    :data:`REPLAY_PAGE_RETRY`: quarantining a file, alerting or ``hopper status`` never pays
    an API call per file. Without a configured server it is None at once (Prefect would
    otherwise start a temporary server of its own). Never raises.
    """
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    if not api_url:
        return None
    now = time.monotonic() if now is None else now
    with _replay_pages_lock:
        hit = _replay_pages.get(api_url)
        if hit is not None and now - hit[0] < (REPLAY_PAGE_TTL if hit[1] else REPLAY_PAGE_RETRY):
            return hit[1]
        page: str | None = None
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name(REPLAY_DEPLOYMENT)
            page = deployment_url(ui_url_of(api_url), str(deployment.id))
        except Exception as exc:  # a link is a convenience: never fail what asked for it
            log.info("no link to %s on %s for now: %s", REPLAY_DEPLOYMENT, api_url, exc)
        _replay_pages[api_url] = (now, page)
        return page


def _versions_in(
    parameters: dict[str, Any], by_dispatch: dict[str, list[tuple[str, str]]]
) -> list[tuple[str, str]]:
    """The ``(uri, fingerprint)`` of every file a run's parameters ask for.

    A batch names its files by dispatch id (``by_dispatch`` maps it to the versions taken
    under it) or, if sent with them, by its refs.
    """
    request = parameters.get("request")
    batch = parameters.get("batch")
    refs = [request.get("ref")] if isinstance(request, dict) else []
    out: list[tuple[str, str]] = []
    if isinstance(batch, dict):
        out += by_dispatch.get(str(batch.get("dispatch_id")), [])
        if isinstance(batch.get("refs"), list):
            refs += batch["refs"]
    for ref in refs:
        try:
            parsed = FileRef.model_validate(ref)
        except ValueError:
            continue
        out.append((parsed.uri, parsed.fingerprint))
    return out


class PrefectAPI:
    """Synchronous access to the Prefect server named by ``PREFECT_API_URL``."""

    def __init__(self) -> None:
        from prefect.client.orchestration import get_client

        self._client = get_client(sync_client=True)
        self._client.__enter__()
        self._deployment_id: UUID | None = None
        self._batch_deployment_ids: list[UUID] = []

    def close(self) -> None:
        """Close the underlying HTTP client."""
        self._client.__exit__(None, None, None)

    @property
    def api_url(self) -> str:
        """The API URL this client talks to."""
        return str(self._client.api_url)

    def healthy(self) -> bool:
        """Whether the server answers its health check right now."""
        try:
            return self._client.api_healthcheck() is None
        except Exception:
            return False

    def ingest_deployment_id(self) -> UUID:
        """Id of the ``ingest-file`` deployment (cached once found)."""
        if self._deployment_id is None:
            try:
                deployment = self._client.read_deployment_by_name(INGEST_DEPLOYMENT)
            except Exception as exc:
                raise TransientError(
                    f"deployment {INGEST_DEPLOYMENT} not found on {self.api_url} ({exc}); "
                    "run `hopper deploy`"
                ) from exc
            self._deployment_id = deployment.id
        return self._deployment_id

    def ingest_deployment_ids(self) -> list[UUID]:
        """Ids of the deployments that ingest files (``ingest-file`` and ``ingest-batch``)."""
        if not self._batch_deployment_ids:
            ids = [self.ingest_deployment_id()]
            try:
                ids.append(self._client.read_deployment_by_name(BATCH_DEPLOYMENT).id)
            except Exception:
                log.debug("no %s deployment; batches cannot be confirmed", BATCH_DEPLOYMENT)
            self._batch_deployment_ids = ids
        return self._batch_deployment_ids

    def runs_for_files(
        self,
        versions: set[tuple[str, str]],
        since: datetime,
        by_dispatch: dict[str, list[tuple[str, str]]] | None = None,
    ) -> dict[tuple[str, str], str]:
        """Map file versions ``(uri, fingerprint)`` to an ``ingest-file`` run that carries them.

        Any run for the version counts, whichever dispatch created it: a slow automation must
        not make the watcher dispatch the same file again and again. Prefect cannot filter on
        parameters, so this reads the deployment's runs expected to start after ``since`` and
        matches ``request.ref`` client-side.
        """
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort

        # Only runs that have not started: a started run claims its files in the ledger, which
        # takes them out of the watcher's "unconfirmed" list by itself.
        flt = FlowRunFilter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
            ),
            deployment_id=FlowRunFilterDeploymentId(any_=self.ingest_deployment_ids()),
            expected_start_time=FlowRunFilterExpectedStartTime(after_=since),  # type: ignore[arg-type]
        )
        found: dict[tuple[str, str], str] = {}
        offset, page = 0, 200
        while len(found) < len(versions):
            runs = self._client.read_flow_runs(
                flow_run_filter=flt,
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=page,
                offset=offset,
            )
            for run in runs:
                for key in _versions_in(run.parameters or {}, by_dispatch or {}):
                    if key in versions:
                        found[key] = str(run.id)
            if len(runs) < page:
                break
            offset += page
        return found

    def run_states(self, flow_run_ids: set[str]) -> dict[str, RunState]:
        """States of flow runs, read in one request per 200 runs (unknown runs left out)."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        ids = sorted(flow_run_ids)
        states: dict[str, RunState] = {}
        for start in range(0, len(ids), 200):
            chunk = [UUID(i) for i in ids[start : start + 200]]
            runs = self._client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=200
            )
            for run in runs:
                state = RunState.of(run)
                if state is not None:
                    states[str(run.id)] = state
        return states

    def create_ingest_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        """Start an ``ingest-file`` run directly (used by replay); returns its id."""
        run = self._client.create_flow_run_from_deployment(
            self.ingest_deployment_id(), parameters=parameters, idempotency_key=idempotency_key
        )
        return str(run.id)

    def create_batch_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        """Start an ``ingest-batch`` run directly (used by reconciliation); returns its id."""
        try:
            deployment = self._client.read_deployment_by_name(BATCH_DEPLOYMENT)
        except Exception as exc:
            raise TransientError(
                f"deployment {BATCH_DEPLOYMENT} not found on {self.api_url} ({exc}); "
                "run `hopper deploy`"
            ) from exc
        run = self._client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, idempotency_key=idempotency_key
        )
        return str(run.id)

    def mark_crashed(self, flow_run_id: str, message: str) -> None:
        """Set a run whose worker is gone to Crashed (best effort: logged, never raised)."""
        from prefect.states import Crashed

        try:
            self._client.set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)
        except Exception as exc:
            log.warning("could not mark run %s crashed: %s", flow_run_id, exc)

    def worker_polled_since(self, pool: str, since: datetime) -> bool:
        """Whether a worker of ``pool`` has sent a heartbeat since ``since`` (it polls then)."""
        try:
            workers = self._client.read_workers_for_work_pool(work_pool_name=pool)
        except Exception:
            return False
        return any(w.last_heartbeat_time and w.last_heartbeat_time >= since for w in workers)


@contextlib.contextmanager
def _no_suspension_watch(*_args: Any, **_kwargs: Any) -> Iterator[None]:
    """What the warm worker's runs use instead of Prefect's watch for a suspension: nothing."""
    yield


def skip_suspension_watch() -> bool:
    """Let this process's flow runs start without Prefect's watch for a suspension.

    Prefect's engine gives every run of a deployment a watch for a ``Suspended`` state set
    from outside: a thread with its own event loop, API client and event-stream subscription,
    which the run waits for before it starts. Hopper's flows never suspend (an ingestion is
    replayed, not resumed; a warm run cannot be paused or cancelled from the UI either), so the
    warm worker, whose in-process runs are only Hopper's, starts them without it: one thread,
    one client and one subscription on the server less per run, and no wait for them.

    Returns:
        False if this Prefect has no such watch (nothing to skip).
    """
    import prefect.flow_engine as engine

    if not hasattr(engine, "observe_flow_run_suspension"):
        return False
    engine.observe_flow_run_suspension = _no_suspension_watch  # type: ignore[assignment]
    return True


class ClientPool:
    """Prefect client contexts kept open for the warm worker's runs, one lent to each run.

    When no client is in context, Prefect's engine opens one for every run: an SSL context
    (about 20 ms of CPU here), a new connection and an API version check, each time. Keeping
    one per thread was not enough: a run goes to whichever of anyio's worker threads is free,
    and in a burst many were new. A run borrows a kept context for its duration
    (:meth:`lend`) and gives it back; there are never more than the runs at once.
    """

    def __init__(self) -> None:
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self.opened = 0

    def _open(self) -> Any:
        from prefect.context import SyncClientContext

        context = SyncClientContext()
        # Opened for the process's life (never left, so never closed), in a throwaway copy
        # of the current context: it is a run's context only while lent.
        contextvars.copy_context().run(context.__enter__)
        with self._lock:
            self.opened += 1
        return context

    def warm(self, count: int) -> int:
        """Open clients now until ``count`` are kept (the worker's run slots); how many exist.

        Each costs about 20 ms of CPU; a worker pays it at start rather than in its first
        burst. If the API cannot be reached, the rest are opened when runs need them.
        """
        while self.opened < count:
            try:
                context = self._open()
            except Exception as exc:
                log.debug("cannot open a Prefect client ahead of the runs: %r", exc)
                break
            with self._lock:
                self._free.append(context)
        return self.opened

    @contextlib.contextmanager
    def lend(self) -> Iterator[Any]:
        """Make a kept client context the current one until the block ends; yield it."""
        with self._lock:
            context = self._free.pop() if self._free else None
        if context is None:
            context = self._open()
        token = type(context).__var__.set(context)
        try:
            yield context
        finally:
            type(context).__var__.reset(token)
            with self._lock:
                self._free.append(context)


_clients = ClientPool()


def prefect_client_for_run() -> contextlib.AbstractContextManager[Any]:
    """Lend the process's kept Prefect client to the run this thread is about to start."""
    return _clients.lend()


def warm_run_clients(count: int) -> int:
    """Open the clients for ``count`` runs at once now (see :meth:`ClientPool.warm`)."""
    return _clients.warm(count)
