"""prefect.yaml must agree with the event constants the watcher emits."""

from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from hopper import events
from hopper.models import FileRef, IngestBatch, IngestRequest

ROOT = Path(__file__).resolve().parents[2]


def _deployment(name: str = "ingest-file") -> dict:  # type: ignore[type-arg]
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = [d for d in doc["deployments"] if d["name"] == name]
    return deployment


_ingest_deployment = _deployment


def test_trigger_matches_the_detected_event() -> None:
    deployment = _ingest_deployment()
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == [events.FILE_DETECTED]
    pattern = trigger["match"]["prefect.resource.id"]
    assert pattern == events.RESOURCE_MATCH
    ref = FileRef(uri="file:///in/sales/a b.csv", size=1, mtime=1.0, dataset="sales")
    event = events.detected_event(IngestRequest(ref=ref, dispatch_id="d"))
    wire = event.emit_arguments()
    assert fnmatchcase(wire["resource"]["prefect.resource.id"], pattern)
    assert wire["event"] in trigger["expect"]


def test_trigger_parameters_rebuild_the_request() -> None:
    deployment = _ingest_deployment()
    params = deployment["triggers"][0]["parameters"]
    assert params == {"request": "{{ event.payload.request }}"}
    ref = FileRef(uri="file:///in/sales/a.csv", size=1, mtime=1.0, dataset="sales", sha256="aa")
    request = IngestRequest(ref=ref, dispatch_id="d1")
    payload = events.detected_event(request).emit_arguments()["payload"]
    assert IngestRequest.model_validate(payload["request"]) == request


def test_entrypoint_and_deployment_name_exist() -> None:
    deployment = _ingest_deployment()
    module, func = deployment["entrypoint"].split(":")
    assert (ROOT / module).is_file()
    assert f"def {func}(" in (ROOT / module).read_text()
    assert f"ingest-file/{deployment['name']}" == events.INGEST_DEPLOYMENT
    assert 'name="ingest-file"' in (ROOT / module).read_text()


def test_resource_ids_are_stable_and_safe() -> None:
    rid = events.file_resource_id("file:///in/sales/../../etc\nx.csv")
    assert rid == events.file_resource_id("file:///in/sales/../../etc\nx.csv")
    assert rid.startswith(events.RESOURCE_PREFIX) and rid.replace(".", "").isalnum()


def test_batch_trigger_matches_the_batch_event() -> None:
    deployment = _deployment("ingest-batch")
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == [events.BATCH_DETECTED]
    assert trigger["match"]["prefect.resource.id"] == events.BATCH_MATCH
    assert trigger["parameters"] == {"batch": "{{ event.payload.batch }}"}
    refs = [FileRef(uri=f"file:///in/s/{i}.csv", size=1, mtime=1.0, dataset="s") for i in range(3)]
    batch = IngestBatch(refs=refs, dispatch_id="b1")
    wire = events.batch_event(batch).emit_arguments()
    assert wire["event"] in trigger["expect"]
    assert fnmatchcase(wire["resource"]["prefect.resource.id"], events.BATCH_MATCH)
    assert IngestBatch.model_validate(wire["payload"]["batch"]) == batch
    assert f"ingest-batch/{deployment['name']}" == events.BATCH_DEPLOYMENT
    module, func = deployment["entrypoint"].split(":")
    assert f"def {func}(" in (ROOT / module).read_text()


def test_reconcile_deployment_is_scheduled() -> None:
    deployment = _deployment("hopper-reconcile")
    assert deployment["schedules"][0]["interval"] <= 600
