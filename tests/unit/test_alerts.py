"""Alert planning and dispatch: once per incident, digests in a storm."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hopper import events
from hopper.alerts import AlertDispatcher, block_name, effective_targets, plan_alerts
from hopper.config import AlertPolicy, AlertTarget, HopperConfig
from hopper.errors import ConfigError
from hopper.events import DigestAlert, FileAlert, HopperEvent
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome

POLICY = AlertPolicy(hold_seconds=5, max_hold_seconds=60, digest_threshold=3)


class Sent(list[HopperEvent]):
    """An emitter that keeps what it is given."""

    def __call__(self, event: HopperEvent) -> bool:
        self.append(event)
        return True


def _fail(ledger: Ledger, name: str, state: FileState = FileState.QUARANTINED) -> FileRef:
    ref = FileRef(uri=f"file:///in/sales/{name}", size=1, mtime=1.0, dataset="sales")
    ledger.record_detected(ref)
    ledger.finish(
        IngestOutcome(
            uri=ref.uri,
            fingerprint=ref.fingerprint,
            dataset="sales",
            state=state,
            reason=f"{name}: column 'qty' has 2 values that are not int64\nmore detail",
        ),
        "run-1",
    )
    return ref


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(sqlite_url(tmp_path))


def test_plan_waits_for_quiet_then_sends_individually(ledger: Ledger) -> None:
    _fail(ledger, "a.csv")
    pending = ledger.pending_alerts()
    now = pending[0].updated_at
    assert plan_alerts(pending, 0, POLICY, now + 1).empty  # still holding
    plan = plan_alerts(pending, 0, POLICY, now + 6)
    assert [r.ref.name for r in plan.individual] == ["a.csv"] and plan.digest == []


def test_plan_digests_a_storm_and_counts_recent_alerts(ledger: Ledger) -> None:
    for i in range(4):
        _fail(ledger, f"f{i}.csv")
    pending = ledger.pending_alerts()
    now = max(r.updated_at for r in pending) + 6
    assert len(plan_alerts(pending, 0, POLICY, now).digest) == 4
    assert len(plan_alerts(pending[:2], 2, POLICY, now).digest) == 2  # 2 sent + 2 pending > 3
    # never held beyond max_hold_seconds, even if failures keep coming
    oldest = min(r.updated_at for r in pending)
    assert not plan_alerts(pending, 0, POLICY, oldest + 61).empty


def test_dispatcher_sends_each_incident_once(ledger: Ledger) -> None:
    sent = Sent()
    dispatcher = AlertDispatcher(ledger, POLICY, sent, "http://ui:4200")
    _fail(ledger, "a.csv")
    _fail(ledger, "b.csv", FileState.FAILED)
    later = time.time() + 10
    dispatcher.tick(later)
    dispatcher.tick(later + 10)
    assert [s.event for s in sent] == [events.ALERT_FILE, events.ALERT_FILE]
    assert isinstance(sent[0], FileAlert) and isinstance(sent[1], FileAlert)
    first = sent[0].payload
    assert first.name == "a.csv" and first.dataset == "sales" and first.state == "quarantined"
    assert first.reason == "a.csv: column 'qty' has 2 values that are not int64"
    assert first.replay == "hopper replay /in/sales/a.csv"
    assert first.run_url == "http://ui:4200/runs/flow-run/run-1"
    assert sent[0].resource.uri == "file:///in/sales/a.csv"
    assert sent[1].payload.state == "failed"


def test_dispatcher_sends_one_digest_for_a_storm(ledger: Ledger) -> None:
    sent = Sent()
    dispatcher = AlertDispatcher(ledger, POLICY, sent)
    for i in range(30):
        _fail(ledger, f"f{i}.csv")
    dispatcher.tick(time.time() + 10)
    dispatcher.tick(time.time() + 20)
    (digest,) = sent
    assert isinstance(digest, DigestAlert) and digest.event == events.ALERT_DIGEST
    assert digest.resource.id == events.DIGEST_RESOURCE
    assert digest.payload.count == 30 and digest.payload.files.endswith("- … and 10 more")


def test_success_after_failure_cancels_the_pending_alert(ledger: Ledger) -> None:
    ref = _fail(ledger, "a.csv", FileState.FAILED)
    ledger.finish(
        IngestOutcome(
            uri=ref.uri, fingerprint=ref.fingerprint, dataset="sales", state=FileState.INGESTED
        ),
        "run-2",
    )
    assert ledger.pending_alerts() == []


def test_targets_and_secrets(tmp_path: Path) -> None:
    config = HopperConfig()
    assert effective_targets(config, {}) == []
    (target,) = effective_targets(config, {"HOPPER_ALERTS_WEBHOOK_URL": "http://127.0.0.1:1/x"})
    assert target.type == "webhook" and block_name(target, 0) == "hopper-webhook"
    slack = AlertTarget(type="slack", url_env="SLACK_URL")
    from hopper.alerts import build_block

    with pytest.raises(ConfigError, match="SLACK_URL is not set"):
        build_block(slack, "s", {})
    with pytest.raises(ValueError, match="url_env"):
        AlertTarget(type="teams")


def test_webhook_url_is_kept_secret() -> None:
    from hopper.alerts import build_block

    target = AlertTarget(type="webhook", url_env="HOOK")
    block = build_block(target, "hook", {"HOOK": "http://127.0.0.1:9/secret-token"})
    assert "secret-token" not in block.model_dump_json()
    assert "secret-token" not in repr(block)


def test_stragglers_of_a_storm_wait_for_the_next_window(ledger: Ledger) -> None:
    sent = Sent()
    dispatcher = AlertDispatcher(ledger, POLICY, sent)
    for i in range(5):
        _fail(ledger, f"f{i}.csv")
    now = time.time() + 10
    dispatcher.tick(now)
    _fail(ledger, "late.csv")
    dispatcher.tick(now + 30)  # within the 10-minute window: held
    assert [s.event for s in sent] == [events.ALERT_DIGEST]
    dispatcher.tick(now + POLICY.digest_window_minutes * 60 + 1)
    assert [type(s) for s in sent] == [DigestAlert, FileAlert]
