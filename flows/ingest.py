"""Prefect entry points ``ingest-file`` and ``ingest-batch``: files in, Parquet or quarantine out.

Thin on purpose: retries, logging and artifacts live here; the work is in ``hopper.ingest``.
A run ends in a state named after its worst outcome (``Quarantined``, ``Failed files``), set
by ``hopper.report``, so that the runs list in the Prefect UI tells the truth at a glance.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from hopper import events, metrics
from hopper.config import HopperConfig
from hopper.errors import is_transient
from hopper.home import Home
from hopper.ingest import failed_outcome, ingest, ingest_many, retry_policy
from hopper.isolate import ReaderPool
from hopper.models import FileRef, FileState, IngestBatch, IngestOutcome, IngestRequest
from hopper.prefect_api import replay_deployment_page
from hopper.report import counts, file_markdown, final_state, outcome_rows
from hopper.tables import land


def _run_name() -> str:
    request: Any = flow_run.parameters.get("request", {})
    ref = request.ref if isinstance(request, IngestRequest) else IngestRequest(**request).ref
    return f"{ref.dataset or 'unrouted'}/{ref.name}"


def _retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


@task(  # retries and their delay are the contract's, set per file by _with_retry_policy
    name="ingest",
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_if_transient,
    cache_policy=NO_CACHE,
)
def ingest_task(
    request: IngestRequest,
    config: HopperConfig,
    flow_run_id: str,
    s3: Any = None,
    readers: ReaderPool | None = None,
) -> IngestOutcome:
    """Read, validate, transform and write one file (terminal faults end in quarantine)."""
    return ingest(request, config, flow_run_id=flow_run_id, s3=s3, readers=readers)


def _with_retry_policy(config: HopperConfig, request: IngestRequest) -> Any:
    """The ingest task with the retry policy of the file's dataset contract."""
    retries, delay = retry_policy(config, request.ref)
    return ingest_task.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=delay)
    )


def _report(outcome: IngestOutcome) -> None:
    rows: list[dict[str, Any]] = [
        {"item": "state", "value": outcome.state.value},
        {"item": "rows in", "value": outcome.rows_in},
        {"item": "rows out", "value": outcome.rows_out},
        {"item": "rows rejected", "value": outcome.rows_rejected},
        {"item": "rows rescued", "value": outcome.rows_rescued},
        {"item": "bytes out", "value": outcome.bytes_out},
        {"item": "seconds", "value": outcome.seconds},
    ]
    if outcome.reason:
        rows.append({"item": "reason", "value": outcome.reason})
    rows += [{"item": f"column {name}", "value": kind} for name, kind in outcome.schema_.items()]
    rows += [{"item": "output", "value": path} for path in outcome.outputs]
    create_table_artifact(table=rows, description=f"Ingestion of `{outcome.uri}`")


def _daily_summary(home: Home, dataset: str | None) -> None:
    """Refresh the dataset's "last 24 hours" markdown artifact (one key per dataset)."""
    if not dataset:
        return
    since = time.time() - 86400
    counts = home.ledger.dataset_day(dataset, since)
    lines = [
        f"# {dataset}: the last 24 hours",
        "",
        "| state | files |",
        "|---|---|",
        *[f"| {state} | {n} |" for state, n in sorted(counts.items())],
    ]
    failures = home.ledger.recent_failures(dataset, since)
    if failures:
        lines += ["", "## Latest failures", ""]
        lines += [f"- `{r.ref.name}` ({r.state.value}): {r.reason}" for r in failures]
    key = "hopper-daily-" + dataset.replace("_", "-")
    create_markdown_artifact(markdown="\n".join(lines), key=key, description=f"{dataset} today")


@flow(name="ingest-file", flow_run_name=_run_name, log_prints=False)
def ingest_file(request: IngestRequest) -> State[Any]:
    """Ingest one file version into its dataset's lake folder, or quarantine it.

    The run ends ``Completed``, ``Quarantined`` (a Completed state) or ``Failed files``.
    """
    logger = get_run_logger()
    ref = request.ref
    run_id = str(flow_run.id)
    with Home.open(request.config_path) as home:
        if not home.ledger.claim(ref, run_id, replay=request.replay):
            logger.info(
                "%s (%s) is already handled by another run; skipping", ref.uri, ref.fingerprint
            )
            return final_state([], {"uri": ref.uri, "skipped": True}, skipped=1)
        try:
            task_ = _with_retry_policy(home.config, request)
            with home.lease(run_id):
                outcome = task_(request, home.config, run_id, home.s3_for(ref), home.readers)
                (outcome,) = land(
                    home.config,
                    home.ledger,
                    [outcome],
                    request.dispatch_id,
                    home.s3,
                    flow_run_id=run_id,
                )
        except Exception as exc:  # recorded as failed; the run ends "Failed files"
            outcome = failed_outcome(ref, exc)
            logger.error("%s failed after retries: %s", ref.uri, outcome.reason, exc_info=True)
        home.ledger.finish(outcome, run_id)
        metrics.observe([outcome], {ref.uri: ref})
        events.emit(events.outcome_event(ref, outcome, run_id))
        _report(outcome)
        if outcome.state is not FileState.INGESTED:
            create_markdown_artifact(
                markdown=file_markdown(outcome, ref, replay_deployment_page()),
                description=f"{ref.name} {outcome.state.value}: how to replay it",
            )
        _daily_summary(home, outcome.dataset)
    logger.info("%s: %s (%d rows out)", ref.uri, outcome.state.value, outcome.rows_out)
    return final_state([outcome], outcome.model_dump(mode="json", by_alias=True))


def _batch_run_name() -> str:
    raw: Any = flow_run.parameters.get("batch", {})
    batch = raw if isinstance(raw, IngestBatch) else IngestBatch(**raw)
    datasets = batch.datasets or sorted({r.dataset or "unrouted" for r in batch.refs})
    label = datasets[0] if len(datasets) == 1 else f"{len(datasets)} datasets"
    return f"{label}/{batch.count or len(batch.refs)} files"


@flow(name="ingest-batch", flow_run_name=_batch_run_name, log_prints=False)
def ingest_batch(batch: IngestBatch) -> State[Any]:
    """Ingest files that arrived together; each keeps its own claim and outcome.

    The files ingested are reported by one ``hopper.batch.ingested`` event per dataset;
    each quarantined or failed file has its own event.

    The run ends ``Completed``, ``Quarantined`` (a Completed state) or ``Failed files``,
    after every outcome is in the ledger.
    """
    logger = get_run_logger()
    run_id = str(flow_run.id)
    outcomes: list[IngestOutcome] = []
    with Home.open(batch.config_path) as home:
        refs = batch.refs or home.ledger.refs_under(batch.dispatch_id)
        if not refs:
            logger.info(
                "dispatch %s has no files left (re-sent under a newer one)", batch.dispatch_id
            )
        requests = batch.requests(refs)
        refs_by_uri = {r.ref.uri: r.ref for r in requests}
        owned = home.ledger.claim_many([r.ref for r in requests], run_id)
        skipped = owned.count(False)
        with home.lease(run_id):  # renewed while the batch works
            # the others: another run has them, or they are settled
            mine = [request for request, ok in zip(requests, owned, strict=True) if ok]
            unrecorded: list[IngestOutcome] = []
            held: list[IngestOutcome] = []  # staged for the table's commit

            def record(request_ref: FileRef, outcome: IngestOutcome) -> None:
                if outcome.state is not FileState.INGESTED:  # the ingested: one event below
                    events.emit(events.outcome_event(request_ref, outcome, run_id))
                outcomes.append(outcome)
                unrecorded.append(outcome)
                if len(unrecorded) >= 50:  # outcomes reach the ledger in small transactions
                    home.ledger.finish_many(unrecorded, run_id)
                    unrecorded.clear()

            for request, outcome in ingest_many(
                mine, home.config, flow_run_id=run_id, s3_for=home.s3_for, readers=home.readers
            ):
                if home.config.lake.is_table and outcome.state is FileState.INGESTED:
                    held.append(outcome)
                else:
                    record(request.ref, outcome)
            landed = land(
                home.config, home.ledger, held, batch.dispatch_id, home.s3, flow_run_id=run_id
            )
            for outcome in landed:
                record(refs_by_uri[outcome.uri], outcome)
            home.ledger.finish_many(unrecorded, run_id)
        for event in events.batch_ingested_events(outcomes, refs_by_uri, batch.dispatch_id, run_id):
            events.emit(event)
        metrics.observe(outcomes, refs_by_uri)
        _report_batch(outcomes, skipped, refs_by_uri)
        for dataset in sorted({o.dataset for o in outcomes if o.dataset}):
            _daily_summary(home, dataset)
    tally = counts(outcomes)
    logger.info("batch of %d files: %s, %d skipped", len(requests), tally, skipped)
    return final_state(outcomes, {**tally, "skipped": skipped}, skipped=skipped)


def _report_batch(outcomes: list[IngestOutcome], skipped: int, refs: dict[str, FileRef]) -> None:
    note = f"{len(outcomes)} files ingested or rejected, {skipped} already handled elsewhere"
    if any(o.state is not FileState.INGESTED for o in outcomes):
        page = replay_deployment_page()
        note += ". After fixing, replay a file with the command in its row" + (
            f", or [from the Prefect UI]({page})." if page else "."
        )
    create_table_artifact(table=outcome_rows(outcomes, refs), description=note)
