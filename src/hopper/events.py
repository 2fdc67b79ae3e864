"""Hopper's Prefect events: names, resource ids and typed payloads, in one place.

Every event Hopper sends is a pydantic model here, shaped like Prefect's own
``prefect.events.schemas.events`` (an :class:`HopperEvent` is about one :class:`Resource`,
may name :class:`RelatedResource` objects, and carries a payload), but with each resource's
labels and each payload's fields typed, so code and tests read attributes, not dict keys.
Nothing outside this module builds an event by hand.

The names, resource ids and payload shapes are a contract: ``prefect.yaml``'s deployment
triggers match on these strings and template their parameters from ``event.payload``, and the
alert automations (``hopper.alerts``) template notifications from it. A unit test parses
``prefect.yaml`` and proves they agree; another pins the JSON each event sends. Building an
event is pure; :func:`emit` is the only function here that talks to Prefect.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from hopper.files import replay_command
from hopper.models import FileRef, FileState, IngestBatch, IngestOutcome, IngestRequest

if TYPE_CHECKING:
    from hopper.ledger import FileRecord

log = logging.getLogger(__name__)

FILE_DETECTED = "hopper.file.detected"
FILE_INGESTED = "hopper.file.ingested"
FILE_QUARANTINED = "hopper.file.quarantined"
FILE_FAILED = "hopper.file.failed"
BATCH_DETECTED = "hopper.batch.detected"
BATCH_INGESTED = "hopper.batch.ingested"

ALERT_FILE = "hopper.alert.file"
ALERT_DIGEST = "hopper.alert.digest"
FRESHNESS_ARMED = "hopper.freshness.armed"

RESOURCE_PREFIX = "hopper.file."
DIGEST_RESOURCE = "hopper.alerts.digest"
RESOURCE_MATCH = RESOURCE_PREFIX + "*"
BATCH_PREFIX = "hopper.batch."
BATCH_MATCH = BATCH_PREFIX + "*"
DATASET_PREFIX = "hopper.dataset."
DATASET_LABEL = "hopper.dataset"
FLOW_RUN_PREFIX = "prefect.flow-run."
INGEST_DEPLOYMENT = "ingest-file/ingest-file"
BATCH_DEPLOYMENT = "ingest-batch/ingest-batch"
REPLAY_DEPLOYMENT = "hopper-replay/hopper-replay"

OUTCOME_EVENTS = {
    "ingested": FILE_INGESTED,
    "quarantined": FILE_QUARANTINED,
    "failed": FILE_FAILED,
}

DIGEST_REPLAY = "hopper replay --failed --quarantined --since 1h --dry-run"
DIGEST_REPLAY_PARAMETERS = {"failed": True, "quarantined": True, "since": "1h", "dry_run": True}
""":data:`DIGEST_REPLAY` as the ``hopper-replay`` deployment's parameters."""
DIGEST_LINES = 20  # files listed in a digest; the rest are counted


def file_resource_id(uri: str) -> str:
    """The Prefect resource id of a source file: stable for a URI, safe for any name."""
    return RESOURCE_PREFIX + hashlib.sha256(uri.encode()).hexdigest()[:20]


def _file_name(uri: str, refs: Mapping[str, FileRef]) -> str:
    ref = refs.get(uri)
    return ref.name if ref is not None else uri.rsplit("/", 1)[-1]


def _first_line(reason: str | None) -> str:
    lines = (reason or "").splitlines()
    return lines[0] if lines else "unknown reason"


# -- Resources: what an event is about, as Prefect labels it ----------------------------


class Resource(BaseModel):
    """An object an event concerns; serialised as Prefect's flat ``label → value`` map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        min_length=1,
        serialization_alias="prefect.resource.id",
        description="The resource id automations match on (``prefect.resource.id``).",
    )
    name: str | None = Field(
        default=None,
        serialization_alias="prefect.resource.name",
        description="A readable name shown in the Prefect UI (``prefect.resource.name``).",
    )

    @property
    def labels(self) -> dict[str, str]:
        """The labels Prefect receives (unset ones left out)."""
        labels: dict[str, str] = self.model_dump(by_alias=True, exclude_none=True)
        return labels

    def describe(self) -> str:
        """What a log line calls this resource."""
        return self.name or self.id


class RelatedResource(Resource):
    """A resource with a role in an event (e.g. the flow run that ingested a file)."""

    role: str = Field(
        min_length=1,
        serialization_alias="prefect.resource.role",
        description="The part it played (``prefect.resource.role``).",
    )

    @classmethod
    def flow_run(cls, flow_run_id: str) -> RelatedResource:
        """The flow run an event came from."""
        return cls(id=FLOW_RUN_PREFIX + flow_run_id, role="flow-run")


class FileResource(Resource):
    """A source file version: id from its URI, labels naming the URI, dataset and version."""

    uri: str = Field(serialization_alias="hopper.uri", description="The file's URI.")
    dataset: str = Field(
        serialization_alias="hopper.dataset", description="Its dataset; empty when unrouted."
    )
    fingerprint: str = Field(
        serialization_alias="hopper.fingerprint", description="The version's fingerprint."
    )

    @classmethod
    def of(cls, ref: FileRef) -> FileResource:
        """The resource describing ``ref``."""
        return cls(
            id=file_resource_id(ref.uri),
            name=ref.name,
            uri=ref.uri,
            dataset=ref.dataset or "",
            fingerprint=ref.fingerprint,
        )

    def describe(self) -> str:
        return self.uri


class DatasetResource(Resource):
    """A dataset, labelled like a file of it, so freshness automations match both."""

    dataset: str = Field(serialization_alias=DATASET_LABEL, description="The dataset's name.")

    @classmethod
    def of(cls, dataset: str) -> DatasetResource:
        """The resource describing ``dataset``."""
        return cls(id=DATASET_PREFIX + dataset, name=dataset, dataset=dataset)


class BatchResource(Resource):
    """One dispatch of files that arrived together, named by its dispatch id."""

    datasets: list[str] = Field(
        serialization_alias="hopper.datasets",
        description="The datasets of its files (one comma-separated label).",
    )

    @field_serializer("datasets")
    def _joined(self, datasets: list[str]) -> str:
        return ",".join(datasets)

    @classmethod
    def of(cls, batch: IngestBatch) -> BatchResource:
        """The resource describing ``batch``."""
        count = batch.count or len(batch.refs)
        return cls(
            id=BATCH_PREFIX + batch.dispatch_id,
            name=f"{count} files",
            datasets=batch.datasets or sorted({r.dataset or "" for r in batch.refs}),
        )


# -- Payloads: what happened, templated by prefect.yaml and the alert automations -------


class DetectedPayload(BaseModel):
    """``hopper.file.detected``: the ``ingest-file`` flow's parameter, whole."""

    model_config = ConfigDict(frozen=True)

    request: IngestRequest = Field(description="Rendered by the trigger as ``request``.")


class BatchPayload(BaseModel):
    """``hopper.batch.detected``: the ``ingest-batch`` flow's parameter, whole."""

    model_config = ConfigDict(frozen=True)

    batch: IngestBatch = Field(description="Rendered by the trigger as ``batch``.")


class OutcomePayload(BaseModel):
    """How a file's ingestion ended (ingested, quarantined or failed)."""

    model_config = ConfigDict(frozen=True)

    dataset: str | None = Field(description="Dataset the file was routed to.")
    reason: str | None = Field(description="Why it was not ingested, if it was not.")
    rows_in: int = Field(description="Rows read from the source.")
    rows_out: int = Field(description="Rows written to the lake.")
    rows_rejected: int = Field(description="Rows sent to quarantine.")
    outputs: list[str] = Field(description="Lake files written.")
    quarantine_path: str | None = Field(description="Quarantined copy, if any.")

    @classmethod
    def of(cls, outcome: IngestOutcome) -> OutcomePayload:
        """The payload reporting ``outcome``."""
        return cls(
            dataset=outcome.dataset,
            reason=outcome.reason,
            rows_in=outcome.rows_in,
            rows_out=outcome.rows_out,
            rows_rejected=outcome.rows_rejected,
            outputs=outcome.outputs,
            quarantine_path=outcome.quarantine_path,
        )


class BatchIngestedPayload(BaseModel):
    """``hopper.batch.ingested``: the files of one dataset that one batch run ingested."""

    model_config = ConfigDict(frozen=True)

    dispatch_id: str = Field(description="The batch's dispatch id.")
    files: int = Field(description="How many files of the dataset it ingested.")
    rows_in: int = Field(description="Rows read from them.")
    rows_out: int = Field(description="Rows written to the lake.")
    bytes_out: int = Field(description="Parquet bytes written.")
    names: list[str] = Field(description="Their names (the first 20).")


class FileAlertPayload(BaseModel):
    """``hopper.alert.file``: everything a notification about one file says."""

    model_config = ConfigDict(frozen=True)

    dataset: str = Field(description="The file's dataset, or ``(unrouted)``.")
    uri: str = Field(description="The file's URI.")
    name: str = Field(description="Its readable name.")
    state: str = Field(description="``failed`` or ``quarantined``.")
    reason: str = Field(description="The first line of the reason.")
    run_url: str = Field(description="The flow run in the Prefect UI; empty if unknown.")
    replay: str = Field(description="The command that ingests it again after a fix.")
    replay_url: str = Field(
        description="The same from the Prefect UI: the ``hopper-replay`` deployment's run "
        "form with this file filled in; empty if that deployment is unknown.",
    )


class DigestPayload(BaseModel):
    """``hopper.alert.digest``: one notification standing for many failed files."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(description="How many files it covers.")
    window_minutes: float = Field(description="The digest window they failed within.")
    datasets: str = Field(description="Their datasets, comma-separated.")
    files: str = Field(description="One line per file (the first 20, then a count).")
    replay: str = Field(description="The command that replays them after a fix.")
    replay_url: str = Field(
        description="The same from the Prefect UI (the ``hopper-replay`` deployment's run form, "
        "filled in likewise); empty if that deployment is unknown.",
    )


class FreshnessPayload(BaseModel):
    """``hopper.freshness.armed``: a dataset's freshness window starts now."""

    model_config = ConfigDict(frozen=True)

    every: str = Field(description="The window, as the contract's ``expect.every`` says.")


# -- Events ---------------------------------------------------------------------------


class HopperEvent(BaseModel):
    """An event Hopper sends to Prefect: a name, the resource it concerns, a payload.

    Subclasses narrow the resource and payload types and list the names they may carry.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: ClassVar[tuple[str, ...]] = ()

    event: str = Field(description="The event's name; automations match on it.")
    resource: Resource = Field(description="The primary resource this event concerns.")
    related: list[RelatedResource] = Field(
        default_factory=list, description="Other resources involved."
    )
    payload: BaseModel = Field(description="What happened.")

    @model_validator(mode="after")
    def _known_name(self) -> Self:
        if self.event not in self.names:
            raise ValueError(
                f"{type(self).__name__} cannot be named {self.event!r}: "
                f"expected one of {', '.join(self.names)}"
            )
        return self

    def emit_arguments(self) -> dict[str, Any]:
        """The keyword arguments of Prefect's ``emit_event`` (plain JSON values)."""
        return {
            "event": self.event,
            "resource": self.resource.labels,
            "related": [r.labels for r in self.related],
            "payload": self.payload.model_dump(mode="json"),
        }


class FileDetected(HopperEvent):
    """A file is ready to ingest: starts one ``ingest-file`` run (prefect.yaml)."""

    names: ClassVar[tuple[str, ...]] = (FILE_DETECTED,)
    event: str = FILE_DETECTED
    resource: FileResource
    payload: DetectedPayload


class BatchDetected(HopperEvent):
    """Files arrived together: starts one ``ingest-batch`` run (prefect.yaml)."""

    names: ClassVar[tuple[str, ...]] = (BATCH_DETECTED,)
    event: str = BATCH_DETECTED
    resource: BatchResource
    payload: BatchPayload


class FileOutcome(HopperEvent):
    """A file was ingested, quarantined or failed; related to the run that decided it."""

    names: ClassVar[tuple[str, ...]] = tuple(OUTCOME_EVENTS.values())
    resource: FileResource
    payload: OutcomePayload


class BatchIngested(HopperEvent):
    """A batch run ingested files of one dataset: one event for them all, related to the run.

    A batch's quarantined and failed files still get a :class:`FileOutcome` each.
    """

    names: ClassVar[tuple[str, ...]] = (BATCH_INGESTED,)
    event: str = BATCH_INGESTED
    resource: DatasetResource
    payload: BatchIngestedPayload


class FileAlert(HopperEvent):
    """One failed or quarantined file to notify about (an alert automation sends it)."""

    names: ClassVar[tuple[str, ...]] = (ALERT_FILE,)
    event: str = ALERT_FILE
    resource: FileResource
    payload: FileAlertPayload


class DigestAlert(HopperEvent):
    """Many files failed together: one notification instead of one each."""

    names: ClassVar[tuple[str, ...]] = (ALERT_DIGEST,)
    event: str = ALERT_DIGEST
    resource: Resource = Field(default_factory=lambda: Resource(id=DIGEST_RESOURCE))
    payload: DigestPayload


class FreshnessArmed(HopperEvent):
    """Sent by ``hopper deploy`` when it creates or changes a dataset's freshness automation:
    starts the first window, so a dataset that never gets a file still alerts once."""

    names: ClassVar[tuple[str, ...]] = (FRESHNESS_ARMED,)
    event: str = FRESHNESS_ARMED
    resource: DatasetResource
    payload: FreshnessPayload


Emitter = Callable[[HopperEvent], bool]
"""What sends an event (:func:`emit` in production, a list's ``append`` in tests)."""


# -- Builders: one pure function per event --------------------------------------------


def detected_event(request: IngestRequest) -> FileDetected:
    """The event for a file ready to ingest; the payload carries the request."""
    return FileDetected(
        resource=FileResource.of(request.ref), payload=DetectedPayload(request=request)
    )


def batch_event(batch: IngestBatch) -> BatchDetected:
    """The event for files that arrived together (one ``ingest-batch`` run)."""
    return BatchDetected(resource=BatchResource.of(batch), payload=BatchPayload(batch=batch))


def outcome_event(ref: FileRef, outcome: IngestOutcome, flow_run_id: str | None) -> FileOutcome:
    """The event reporting how a file's ingestion ended."""
    return FileOutcome(
        event=OUTCOME_EVENTS[outcome.state.value],
        resource=FileResource.of(ref),
        related=[RelatedResource.flow_run(flow_run_id)] if flow_run_id else [],
        payload=OutcomePayload.of(outcome),
    )


def batch_ingested_events(
    outcomes: list[IngestOutcome],
    refs: Mapping[str, FileRef],
    dispatch_id: str,
    flow_run_id: str | None,
) -> list[BatchIngested]:
    """One event per dataset for the ingested files among a batch run's ``outcomes``.

    ``refs`` are the batch's files by URI (for their names).
    """
    by_dataset: dict[str, list[IngestOutcome]] = {}
    for outcome in outcomes:
        if outcome.state is FileState.INGESTED:
            by_dataset.setdefault(outcome.dataset or "", []).append(outcome)
    related = [RelatedResource.flow_run(flow_run_id)] if flow_run_id else []
    return [
        BatchIngested(
            resource=DatasetResource.of(dataset),
            related=related,
            payload=BatchIngestedPayload(
                dispatch_id=dispatch_id,
                files=len(done),
                rows_in=sum(o.rows_in for o in done),
                rows_out=sum(o.rows_out for o in done),
                bytes_out=sum(o.bytes_out for o in done),
                names=[_file_name(o.uri, refs) for o in done[:DIGEST_LINES]],
            ),
        )
        for dataset, done in sorted(by_dataset.items())
    ]


def file_alert_event(record: FileRecord, run_url: str, replay_url: str = "") -> FileAlert:
    """The alert for one failed or quarantined file.

    Args:
        record: the file version's ledger record.
        run_url: its flow run in the Prefect UI, or ``""``.
        replay_url: the ``hopper-replay`` run form for it in the Prefect UI, or ``""``.
    """
    ref = record.ref
    return FileAlert(
        resource=FileResource.of(ref),
        payload=FileAlertPayload(
            dataset=record.dataset or "(unrouted)",
            uri=record.uri,
            name=ref.name,
            state=record.state.value,
            reason=_first_line(record.reason),
            run_url=run_url,
            replay=replay_command(ref),
            replay_url=replay_url,
        ),
    )


def digest_event(
    records: list[FileRecord], window_minutes: float, replay_url: str = ""
) -> DigestAlert:
    """The alert replacing individual ones in a storm of ``records``.

    ``replay_url`` is the ``hopper-replay`` run form in the Prefect UI filled in like
    :data:`DIGEST_REPLAY` (:data:`DIGEST_REPLAY_PARAMETERS`), or ``""``.
    """
    datasets = sorted({r.dataset or "(unrouted)" for r in records})
    lines = [f"- {r.ref.name} ({r.dataset}): {_first_line(r.reason)}" for r in records]
    shown = lines[:DIGEST_LINES]
    if len(lines) > DIGEST_LINES:
        shown.append(f"- … and {len(lines) - DIGEST_LINES} more")
    return DigestAlert(
        payload=DigestPayload(
            count=len(records),
            window_minutes=window_minutes,
            datasets=", ".join(datasets),
            files="\n".join(shown),
            replay=DIGEST_REPLAY,
            replay_url=replay_url,
        )
    )


def freshness_armed_event(dataset: str, every: str) -> FreshnessArmed:
    """The event starting ``dataset``'s first freshness window of length ``every``."""
    return FreshnessArmed(
        resource=DatasetResource.of(dataset), payload=FreshnessPayload(every=every)
    )


def emit(event: HopperEvent) -> bool:
    """Send an event to Prefect; False if Prefect's client dropped it.

    Prefect's ``emit_event`` never raises; callers that must not lose a file rely on the
    ledger and on confirming the flow run, not on this return value alone.
    """
    from prefect.events import emit_event

    try:
        return emit_event(**event.emit_arguments()) is not None
    except Exception:  # the client is best-effort by design; never crash the caller
        log.exception("could not emit %s for %s", event.event, event.resource.describe())
        return False
