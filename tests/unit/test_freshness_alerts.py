"""Freshness alerts: the contracts' expectations and the proactive automation built from them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.server.events.schemas.automations import EventTrigger as ServerTrigger
from prefect.server.events.schemas.automations import Posture
from prefect.server.events.schemas.events import ReceivedEvent
from pydantic import ValidationError

from hopper import events
from hopper.alerts import FRESHNESS_PREFIX, freshness_automation
from hopper.contracts.freshness import Freshness
from hopper.deploy import contract_expectations
from hopper.models import FileRef, FileState, IngestOutcome
from tests.conftest import CONTRACT

BLOCKS = [uuid.UUID(int=1), uuid.UUID(int=2)]


def test_contract_expectations_names_broken_contracts(tmp_path: Path) -> None:
    (tmp_path / "people.yaml").write_text(CONTRACT)
    (tmp_path / "fresh.yaml").write_text(
        CONTRACT.replace("name: people", "name: fresh") + "expect: {every: 2h}\n"
    )
    (tmp_path / "broken.yaml").write_text("name: broken\n")
    expected, broken = contract_expectations(tmp_path)
    assert expected == {"fresh": Freshness(every="2h")}
    assert broken == {"broken"}
    assert contract_expectations(tmp_path / "missing") == ({}, set())


def _received(event: events.HopperEvent) -> ReceivedEvent:
    now = datetime.now(UTC)
    return ReceivedEvent(**event.emit_arguments(), id=uuid.uuid4(), occurred=now)


def _ingested(dataset: str) -> ReceivedEvent:
    ref = FileRef(uri=f"file:///in/{dataset}/a.csv", size=1, mtime=1.0, dataset=dataset)
    outcome = IngestOutcome(uri=ref.uri, fingerprint="f", state=FileState.INGESTED)
    return _received(events.outcome_event(ref, outcome, "run-1"))


def _batch_ingested(dataset: str) -> ReceivedEvent:
    ref = FileRef(uri=f"file:///in/{dataset}/b.csv", size=1, mtime=1.0, dataset=dataset)
    outcome = IngestOutcome.of(ref, FileState.INGESTED)
    (event,) = events.batch_ingested_events([outcome], {ref.uri: ref}, "d-1", "run-1")
    return _received(event)


def test_freshness_automation_is_proactive_once_per_silence() -> None:
    automation = freshness_automation("orders", "20s", 20, BLOCKS)
    assert automation.name == FRESHNESS_PREFIX + "orders"
    assert [a.block_document_id for a in automation.actions] == BLOCKS  # type: ignore[union-attr]
    # The server's own model of the trigger, as Prefect will evaluate it.
    trigger = ServerTrigger.model_validate(automation.trigger.model_dump(mode="json"))
    assert trigger.posture == Posture.Proactive
    assert trigger.within == timedelta(seconds=20) and trigger.threshold == 1
    assert trigger.expect == {events.FILE_INGESTED, events.BATCH_INGESTED}
    # `after` plus buckets per dataset: a fired window opens no next one by itself.
    assert trigger.after == {events.FILE_INGESTED, events.BATCH_INGESTED, events.FRESHNESS_ARMED}
    assert trigger.for_each == {events.DATASET_LABEL}

    ingested = _ingested("orders")
    batch = _batch_ingested("orders")
    armed = _received(events.freshness_armed_event("orders", "20s"))
    assert trigger.covers(ingested) and trigger.covers(batch) and trigger.covers(armed)
    assert trigger.bucketing_key(ingested) == trigger.bucketing_key(armed) == ("orders",)
    assert trigger.bucketing_key(batch) == ("orders",)
    assert not trigger.covers(_ingested("people"))
    assert not trigger.covers(_batch_ingested("people"))
    assert not trigger.covers(_received(events.freshness_armed_event("people", "20s")))


def test_freshness_templates_name_the_dataset_and_the_window() -> None:
    action = freshness_automation("orders", "6h", 21_600, BLOCKS[:1]).actions[0]
    subject, body = action.subject, action.body  # type: ignore[union-attr]
    assert "no file for dataset orders since {{ event.occurred }}" in subject
    assert "every 6h" in body and "{{ event.resource.name }}" in body


def test_the_spec_in_the_description_changes_with_what_matters() -> None:
    def description(every: str, seconds: float, blocks: list[uuid.UUID]) -> str:
        return freshness_automation("orders", every, seconds, blocks).description

    same = description("20s", 20, BLOCKS)
    assert description("20s", 20, list(reversed(BLOCKS))) == same
    assert description("30s", 30, BLOCKS) != same
    assert description("20s", 20, BLOCKS[:1]) != same


def test_a_proactive_window_below_the_floor_is_refused_by_prefect() -> None:
    with pytest.raises(ValidationError, match="10 seconds"):
        freshness_automation("orders", "5s", 5, BLOCKS)
