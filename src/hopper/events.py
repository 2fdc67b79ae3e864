"""Hopper's Prefect events: names, resource ids and payloads, in one place.

``prefect.yaml``'s deployment trigger matches on exactly these strings; a unit test parses
``prefect.yaml`` and proves they agree. Building an event is pure; :func:`emit` is the only
function here that talks to Prefect.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from hopper.models import FileRef, IngestBatch, IngestOutcome, IngestRequest

log = logging.getLogger(__name__)

FILE_DETECTED = "hopper.file.detected"
FILE_INGESTED = "hopper.file.ingested"
FILE_QUARANTINED = "hopper.file.quarantined"
FILE_FAILED = "hopper.file.failed"
BATCH_DETECTED = "hopper.batch.detected"

ALERT_FILE = "hopper.alert.file"
ALERT_DIGEST = "hopper.alert.digest"

RESOURCE_PREFIX = "hopper.file."
DIGEST_RESOURCE = "hopper.alerts.digest"
RESOURCE_MATCH = RESOURCE_PREFIX + "*"
BATCH_PREFIX = "hopper.batch."
BATCH_MATCH = BATCH_PREFIX + "*"
INGEST_DEPLOYMENT = "ingest-file/ingest-file"
BATCH_DEPLOYMENT = "ingest-batch/ingest-batch"

OUTCOME_EVENTS = {
    "ingested": FILE_INGESTED,
    "quarantined": FILE_QUARANTINED,
    "failed": FILE_FAILED,
}


def file_resource_id(uri: str) -> str:
    """The Prefect resource id of a source file: stable for a URI, safe for any name."""
    return RESOURCE_PREFIX + hashlib.sha256(uri.encode()).hexdigest()[:20]


def file_resource(ref: FileRef) -> dict[str, str]:
    """The event resource describing a source file (id, readable name, labels)."""
    return {
        "prefect.resource.id": file_resource_id(ref.uri),
        "prefect.resource.name": ref.name,
        "hopper.uri": ref.uri,
        "hopper.dataset": ref.dataset or "",
        "hopper.fingerprint": ref.fingerprint,
    }


def detected_event(request: IngestRequest) -> dict[str, Any]:
    """Arguments of ``emit_event`` for a file ready to ingest; the payload carries the request."""
    return {
        "event": FILE_DETECTED,
        "resource": file_resource(request.ref),
        "payload": {"request": request.model_dump(mode="json")},
    }


def batch_event(batch: IngestBatch) -> dict[str, Any]:
    """Arguments of ``emit_event`` for files that arrived together (one ``ingest-batch`` run)."""
    count = batch.count or len(batch.refs)
    datasets = batch.datasets or sorted({r.dataset or "" for r in batch.refs})
    return {
        "event": BATCH_DETECTED,
        "resource": {
            "prefect.resource.id": BATCH_PREFIX + batch.dispatch_id,
            "prefect.resource.name": f"{count} files",
            "hopper.datasets": ",".join(datasets),
        },
        "payload": {"batch": batch.model_dump(mode="json")},
    }


def outcome_event(ref: FileRef, outcome: IngestOutcome, flow_run_id: str | None) -> dict[str, Any]:
    """Arguments of ``emit_event`` reporting how a file's ingestion ended."""
    related = []
    if flow_run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    return {
        "event": OUTCOME_EVENTS[outcome.state.value],
        "resource": file_resource(ref),
        "related": related,
        "payload": {
            "dataset": outcome.dataset,
            "reason": outcome.reason,
            "rows_in": outcome.rows_in,
            "rows_out": outcome.rows_out,
            "rows_rejected": outcome.rows_rejected,
            "outputs": outcome.outputs,
            "quarantine_path": outcome.quarantine_path,
        },
    }


def emit(spec: dict[str, Any]) -> bool:
    """Emit an event built by this module; False if Prefect's client dropped it.

    Prefect's ``emit_event`` never raises; callers that must not lose a file rely on the
    ledger and on confirming the flow run, not on this return value alone.
    """
    from prefect.events import emit_event

    try:
        return emit_event(**spec) is not None
    except Exception:  # the client is best-effort by design; never crash the caller
        log.exception("could not emit %s for %s", spec["event"], spec["resource"].get("hopper.uri"))
        return False
