"""Hopper's events: typed models whose JSON is the contract prefect.yaml and alerts template."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prefect.events import Event
from pydantic import BaseModel, ValidationError

from hopper import alerts, events
from hopper.events import (
    BatchDetected,
    BatchIngested,
    DigestAlert,
    FileAlert,
    FileDetected,
    FileOutcome,
    FileResource,
    OutcomePayload,
    RelatedResource,
    Resource,
)
from hopper.ledger import FileRecord, Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestBatch, IngestOutcome, IngestRequest

REF = FileRef(uri="file:///in/sales/a b.csv", size=3, mtime=1.5, dataset="sales", sha256="ab")
RID = events.file_resource_id(REF.uri)
FILE_LABELS = {
    "prefect.resource.id": RID,
    "prefect.resource.name": "a b.csv",
    "hopper.uri": "file:///in/sales/a b.csv",
    "hopper.dataset": "sales",
    "hopper.fingerprint": "sha256:ab",
}
REF_JSON = {
    "uri": "file:///in/sales/a b.csv",
    "size": 3,
    "mtime": 1.5,
    "dataset": "sales",
    "sha256": "ab",
    "etag": None,
    "version_id": None,
}


def test_detected_event_sends_the_request_whole() -> None:
    event = events.detected_event(IngestRequest(ref=REF, dispatch_id="d1"))
    assert isinstance(event.resource, FileResource) and event.resource.uri == REF.uri
    assert event.payload.request.dispatch_id == "d1"
    assert event.emit_arguments() == {
        "event": "hopper.file.detected",
        "resource": FILE_LABELS,
        "related": [],
        "payload": {
            "request": {
                "ref": REF_JSON,
                "dispatch_id": "d1",
                "config_path": None,
                "replay": False,
            }
        },
    }


def test_an_unrouted_file_has_an_empty_dataset_label() -> None:
    labels = FileResource.of(REF.model_copy(update={"dataset": None})).labels
    assert labels["hopper.dataset"] == ""


def test_batch_event_names_its_dispatch_and_datasets() -> None:
    refs = [REF, REF.model_copy(update={"uri": "file:///in/hr/x.csv", "dataset": "hr"})]
    event = events.batch_event(IngestBatch(refs=refs, dispatch_id="b1"))
    assert event.resource.datasets == ["hr", "sales"]
    wire = event.emit_arguments()
    assert wire["event"] == "hopper.batch.detected"
    assert wire["resource"] == {
        "prefect.resource.id": "hopper.batch.b1",
        "prefect.resource.name": "2 files",
        "hopper.datasets": "hr,sales",
    }
    assert wire["payload"]["batch"]["refs"][0] == REF_JSON
    only_id = events.batch_event(IngestBatch(dispatch_id="b2", count=7, datasets=["a"]))
    assert only_id.emit_arguments()["resource"]["prefect.resource.name"] == "7 files"
    assert only_id.emit_arguments()["payload"] == {
        "batch": {
            "dispatch_id": "b2",
            "count": 7,
            "datasets": ["a"],
            "refs": [],
            "config_path": None,
        }
    }


def test_a_batch_reports_its_ingested_files_in_one_event_per_dataset() -> None:
    hr = [
        FileRef(uri=f"file:///in/hr/{i:02d}.csv", size=1, mtime=1.0, dataset="hr")
        for i in range(25)
    ]
    refs = {r.uri: r for r in [REF, *hr]}
    outcomes = [
        IngestOutcome.of(REF, FileState.INGESTED, rows_in=3, rows_out=2, bytes_out=100),
        *[IngestOutcome.of(r, FileState.INGESTED, rows_in=1, rows_out=1, bytes_out=10) for r in hr],
        IngestOutcome.of(hr[0], FileState.QUARANTINED, rows_in=9),  # not counted: not ingested
    ]
    built = events.batch_ingested_events(outcomes, refs, "b1", "run-9")
    assert [e.resource.dataset for e in built] == ["hr", "sales"]
    wire = built[0].emit_arguments()
    assert wire["event"] == "hopper.batch.ingested"
    assert wire["resource"] == {
        "prefect.resource.id": "hopper.dataset.hr",
        "prefect.resource.name": "hr",
        "hopper.dataset": "hr",
    }
    assert wire["related"] == [
        {"prefect.resource.id": "prefect.flow-run.run-9", "prefect.resource.role": "flow-run"}
    ]
    assert {k: v for k, v in wire["payload"].items() if k != "names"} == {
        "dispatch_id": "b1",
        "files": 25,
        "rows_in": 25,
        "rows_out": 25,
        "bytes_out": 250,
    }
    assert wire["payload"]["names"] == [f"{i:02d}.csv" for i in range(20)]  # the first 20
    assert built[1].payload.files == 1 and built[1].payload.names == ["a b.csv"]
    assert events.batch_ingested_events(outcomes[-1:], refs, "b1", None) == []


@pytest.mark.parametrize("state", [FileState.INGESTED, FileState.QUARANTINED, FileState.FAILED])
def test_outcome_event_is_named_by_the_outcome_and_relates_its_run(state: FileState) -> None:
    outcome = IngestOutcome(
        uri=REF.uri,
        fingerprint=REF.fingerprint,
        dataset="sales",
        state=state,
        rows_in=3,
        rows_out=2,
        rows_rejected=1,
        outputs=["lake/sales/x.parquet"],
        reason="bad",
    )
    event = events.outcome_event(REF, outcome, "run-9")
    assert event.event == f"hopper.file.{state.value}"
    assert event.related == [RelatedResource(id="prefect.flow-run.run-9", role="flow-run")]
    assert event.emit_arguments() == {
        "event": f"hopper.file.{state.value}",
        "resource": FILE_LABELS,
        "related": [
            {"prefect.resource.id": "prefect.flow-run.run-9", "prefect.resource.role": "flow-run"}
        ],
        "payload": {
            "dataset": "sales",
            "reason": "bad",
            "rows_in": 3,
            "rows_out": 2,
            "rows_rejected": 1,
            "outputs": ["lake/sales/x.parquet"],
            "quarantine_path": None,
        },
    }
    assert events.outcome_event(REF, outcome, None).related == []


def test_an_event_cannot_carry_another_events_name() -> None:
    payload = OutcomePayload.of(
        IngestOutcome(uri=REF.uri, fingerprint="f", state=FileState.INGESTED)
    )
    with pytest.raises(
        ValidationError, match=r"FileOutcome cannot be named 'hopper\.file\.detected'"
    ):
        FileOutcome(event=events.FILE_DETECTED, resource=FileResource.of(REF), payload=payload)
    with pytest.raises(ValidationError):
        Resource(id="")


def _failed(tmp_path: Any, names: list[str], reason: str | None = "bad\nmore") -> list[FileRecord]:
    ledger = Ledger(sqlite_url(tmp_path))
    for name in names:
        ref = FileRef(uri=f"file:///in/sales/{name}", size=1, mtime=1.0, dataset="sales")
        ledger.record_detected(ref)
        ledger.finish(
            IngestOutcome(
                uri=ref.uri,
                fingerprint=ref.fingerprint,
                dataset="sales",
                state=FileState.QUARANTINED,
                reason=reason,
            ),
            "run-1",
        )
    records = ledger.pending_alerts()
    ledger.close()
    return records


def test_file_alert_payload(tmp_path: Any) -> None:
    (record,) = _failed(tmp_path, ["a b.csv"])
    form = "http://ui/deployments/deployment/d1/run?parameters=x"
    event = events.file_alert_event(record, "http://ui/runs/flow-run/run-1", form)
    assert event.emit_arguments() == {
        "event": "hopper.alert.file",
        "resource": FILE_LABELS | {"hopper.fingerprint": record.fingerprint},
        "related": [],
        "payload": {
            "dataset": "sales",
            "uri": "file:///in/sales/a b.csv",
            "name": "a b.csv",
            "state": "quarantined",
            "reason": "bad",
            "run_url": "http://ui/runs/flow-run/run-1",
            "replay": "hopper replay '/in/sales/a b.csv'",
            "replay_url": form,
        },
    }


def test_digest_lists_twenty_files_and_counts_the_rest(tmp_path: Any) -> None:
    records = _failed(tmp_path, [f"f{i:02}.csv" for i in range(23)], reason=None)
    event = events.digest_event(records, 10.0, "http://ui/deployments/deployment/d1/run?p")
    wire = event.emit_arguments()
    assert wire["resource"] == {"prefect.resource.id": "hopper.alerts.digest"}
    files = wire["payload"].pop("files").splitlines()
    assert wire["payload"] == {
        "count": 23,
        "window_minutes": 10.0,
        "datasets": "sales",
        "replay": "hopper replay --failed --quarantined --since 1h --dry-run",
        "replay_url": "http://ui/deployments/deployment/d1/run?p",
    }
    assert files[0] == "- f00.csv (sales): unknown reason"  # no reason is no crash
    assert len(files) == 21 and files[-1] == "- … and 3 more"


def test_prefect_accepts_every_event(tmp_path: Any) -> None:
    """Each event's arguments build Prefect's own Event (its label and role rules included)."""
    records = _failed(tmp_path, ["a.csv"])
    outcome = IngestOutcome(uri=REF.uri, fingerprint="f", state=FileState.FAILED, reason="x")
    built = [
        events.detected_event(IngestRequest(ref=REF, dispatch_id="d")),
        events.batch_event(IngestBatch(refs=[REF], dispatch_id="b")),
        events.outcome_event(REF, outcome, "run-1"),
        *events.batch_ingested_events(
            [outcome.model_copy(update={"state": FileState.INGESTED})], {}, "b", "run-1"
        ),
        events.file_alert_event(records[0], ""),
        events.digest_event(records, 10.0),
    ]
    assert [type(e) for e in built] == [
        FileDetected,
        BatchDetected,
        FileOutcome,
        BatchIngested,
        FileAlert,
        DigestAlert,
    ]
    for event in built:
        prefect_event = Event(**event.emit_arguments())
        assert prefect_event.event == event.event
        assert prefect_event.resource.id == event.resource.id
        assert [r.role for r in prefect_event.related] == [r.role for r in event.related]


def _payload_fields(template: str) -> set[str]:
    return set(re.findall(r"\{\{\s*event\.payload\.(\w+)", template))


@pytest.mark.parametrize(
    ("templates", "payload"),
    [
        ((alerts.FILE_SUBJECT, alerts.FILE_BODY), events.FileAlertPayload),
        ((alerts.DIGEST_SUBJECT, alerts.DIGEST_BODY), events.DigestPayload),
    ],
)
def test_alert_templates_read_only_payload_fields(
    templates: tuple[str, str], payload: type[BaseModel]
) -> None:
    used = set().union(*(_payload_fields(t) for t in templates))
    assert used and used <= set(payload.model_fields)


def test_emit_hands_prefect_the_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    sent: list[dict[str, Any]] = []

    def fake_emit_event(**kwargs: Any) -> Event:
        sent.append(kwargs)
        return Event(**kwargs)

    event = events.detected_event(IngestRequest(ref=REF, dispatch_id="d1"))
    monkeypatch.setattr(prefect.events, "emit_event", fake_emit_event)
    assert events.emit(event) is True
    assert sent == [event.emit_arguments()]
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kwargs: None)
    assert events.emit(event) is False  # dropped by Prefect's client


def test_emit_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import prefect.events

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("no client")

    monkeypatch.setattr(prefect.events, "emit_event", broken)
    assert events.emit(events.detected_event(IngestRequest(ref=REF, dispatch_id="d1"))) is False
    assert f"could not emit hopper.file.detected for {REF.uri}" in caplog.text
