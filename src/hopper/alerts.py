"""Alerts people trust: one per incident, a digest in a storm, delivered by Prefect.

A failed or quarantined file version is marked ``pending`` in the ledger by the flow. The
:class:`AlertDispatcher` (run by the watcher) waits until failures stop arriving for
``hold_seconds`` (at most ``max_hold_seconds``), then emits either one ``hopper.alert.file``
event per file or, when more than ``digest_threshold`` failed within the window, a single
``hopper.alert.digest``. Prefect automations created by ``hopper deploy`` turn those events
into notifications through notification blocks (webhook, Slack, Teams, e-mail); Hopper has
no mail or HTTP code of its own. Retries never alert: only a final outcome is ``pending``.

Freshness alerts need no dispatcher: a contract's ``expect: {every: …}`` becomes a Prefect
*proactive* automation (:func:`freshness_automation`) that fires when a window passes without
a ``hopper.file.ingested`` (or, from a batch run, ``hopper.batch.ingested``) event of the
dataset, and only once per silence.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from hopper import events
from hopper.config import AlertPolicy, AlertTarget, HopperConfig
from hopper.errors import ConfigError
from hopper.ledger import FileRecord, Ledger
from hopper.prefect_api import file_replay_url, replay_deployment_page, run_form_url, run_url

if TYPE_CHECKING:
    from prefect.automations import Automation

log = logging.getLogger(__name__)

WEBHOOK_ENV = "HOPPER_ALERTS_WEBHOOK_URL"
AUTOMATION_PREFIX = "hopper-alert-"
FRESHNESS_PREFIX = "hopper-freshness-"
FRESHNESS_VERSION = 2  # bump when freshness_automation's trigger changes shape


@dataclass(frozen=True)
class AlertPlan:
    """What to send now: individual alerts, or one digest covering ``digest``."""

    individual: list[FileRecord]
    digest: list[FileRecord]

    @property
    def empty(self) -> bool:
        return not self.individual and not self.digest


def plan_alerts(
    pending: list[FileRecord],
    sent_in_window: int,
    policy: AlertPolicy,
    now: float,
    last_digest_at: float | None = None,
) -> AlertPlan:
    """Decide which alerts go out now (pure).

    Args:
        pending: failed/quarantined versions not alerted yet, oldest first.
        sent_in_window: alerts already sent within the digest window.
        policy: holding and storm-control settings.
        now: current time (epoch seconds).
        last_digest_at: when the last digest went out, if any. While a storm goes on, at
            most one digest per window is sent; later failures wait for the next one.
    """
    if not pending:
        return AlertPlan([], [])
    window = policy.digest_window_minutes * 60
    if last_digest_at is not None and now - last_digest_at < window:
        return AlertPlan([], [])
    newest = max(r.updated_at for r in pending)
    oldest = min(r.updated_at for r in pending)
    quiet = now - newest >= policy.hold_seconds
    overdue = now - oldest >= policy.max_hold_seconds
    if not (quiet or overdue):
        return AlertPlan([], [])
    if sent_in_window + len(pending) > policy.digest_threshold:
        return AlertPlan([], list(pending))
    return AlertPlan(list(pending), [])


class AlertDispatcher:
    """Turns pending failures in the ledger into alert events, once each."""

    def __init__(
        self,
        ledger: Ledger,
        policy: AlertPolicy,
        emit: events.Emitter = events.emit,
        ui_url: str = "",
        replay_page: Callable[[], str | None] = replay_deployment_page,
    ) -> None:
        self.ledger = ledger
        self.policy = policy
        self.emit = emit
        self.ui_url = ui_url  # the Prefect UI, for each alert's link to its run
        self.replay_page = replay_page  # the hopper-replay deployment's page, or None

    def tick(self, now: float | None = None) -> AlertPlan:
        """Send what is due; return what was planned."""
        now = time.time() if now is None else now
        pending = self.ledger.pending_alerts()
        if not pending:
            return AlertPlan([], [])
        window = now - self.policy.digest_window_minutes * 60
        plan = plan_alerts(
            pending,
            self.ledger.alerts_since(window),
            self.policy,
            now,
            self.ledger.last_alert_at("digested"),
        )
        page = self.replay_page() if not plan.empty else None
        if plan.digest:
            claimed = [r for r in plan.digest if self.ledger.claim_alert(r, "digested")]
            if claimed:
                log.warning("%d files failed: sending one digest alert", len(claimed))
                replay = run_form_url(page, events.DIGEST_REPLAY_PARAMETERS) if page else ""
                self.emit(events.digest_event(claimed, self.policy.digest_window_minutes, replay))
        for record in plan.individual:
            if self.ledger.claim_alert(record, "sent"):
                log.info("alerting on %s (%s)", record.uri, record.state.value)
                link = run_url(self.ui_url, record.flow_run_id) if self.ui_url else None
                replay = file_replay_url(page, record.ref) or ""
                self.emit(events.file_alert_event(record, link or "", replay))
        return plan


# -- Prefect notification blocks and automations (applied by `hopper deploy`) -----------


def effective_targets(config: HopperConfig, environ: Mapping[str, str]) -> list[AlertTarget]:
    """Targets from hopper.yaml, plus a generic webhook if HOPPER_ALERTS_WEBHOOK_URL is set."""
    targets = list(config.alerts)
    if environ.get(WEBHOOK_ENV) and not any(t.url_env == WEBHOOK_ENV for t in targets):
        targets.append(AlertTarget(type="webhook", name="hopper-webhook", url_env=WEBHOOK_ENV))
    return targets


def _secret(environ: Mapping[str, str], name: str | None, target: AlertTarget) -> str:
    value = environ.get(name or "")
    if not value:
        raise ConfigError(
            f"alert target {target.name or target.type!r}: environment variable {name} is not "
            "set (secrets are read from the environment, never from hopper.yaml)"
        )
    return value


def block_name(target: AlertTarget, index: int) -> str:
    """A valid block name for a target (lowercase letters, digits and dashes)."""
    raw = target.name or f"hopper-{target.type}-{index}"
    return re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-") or f"hopper-{index}"


def build_block(target: AlertTarget, name: str, environ: Mapping[str, str]) -> Any:
    """The Prefect notification block for a target, secrets read from the environment."""
    from prefect.blocks import notifications as nb
    from prefect.types import SecretDict
    from pydantic import SecretStr

    if target.type == "webhook":
        # The URL goes into the block's secrets, so it is masked in the UI and the API.
        return nb.CustomWebhookNotificationBlock(
            name=name,
            url="{{hopper_webhook_url}}",
            method="POST",
            json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "hopper"},
            headers=None,
            cookies=None,
            secrets=SecretDict({"hopper_webhook_url": _secret(environ, target.url_env, target)}),
        )
    if target.type == "slack":
        return nb.SlackWebhook(url=SecretStr(_secret(environ, target.url_env, target)))
    if target.type == "teams":
        return nb.MicrosoftTeamsWebhook(url=SecretStr(_secret(environ, target.url_env, target)))
    return nb.SendgridEmail(
        api_key=SecretStr(_secret(environ, target.api_key_env, target)),
        sender_email=target.sender or "",
        to_emails=list(target.to),
    )


FILE_SUBJECT = (
    "Hopper: {{ event.payload.name }} {{ event.payload.state }} ({{ event.payload.dataset }})"
)
FILE_BODY = (
    "Dataset: {{ event.payload.dataset }}\n"
    "File: {{ event.payload.uri }}\n"
    "Outcome: {{ event.payload.state }}\n"
    "Reason: {{ event.payload.reason }}\n"
    "Run: {{ event.payload.run_url }}\n"
    "After fixing, run: {{ event.payload.replay }}\n"
    "or replay it from the Prefect UI: {{ event.payload.replay_url }}"
)
DIGEST_SUBJECT = "Hopper: {{ event.payload.count }} files failed ({{ event.payload.datasets }})"
DIGEST_BODY = (
    "{{ event.payload.count }} files failed or were quarantined within "
    "{{ event.payload.window_minutes }} minutes.\n{{ event.payload.files }}\n"
    "See `hopper status`; after fixing: {{ event.payload.replay }}\n"
    "or from the Prefect UI: {{ event.payload.replay_url }}"
)


def apply_alerting(
    config: HopperConfig, environ: Mapping[str, str] | None = None
) -> dict[str, UUID]:
    """Create or update notification blocks and the alert automations.

    Returns:
        Each block's name and id (freshness automations notify through the same blocks).

    Earlier Hopper alert automations are deleted first, so re-running leaves exactly one
    automation per target and kind.
    """
    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification

    env = os.environ if environ is None else environ
    targets = effective_targets(config, env)
    if not targets:
        log.warning(
            "no alert targets (hopper.yaml `alerts:` or %s): failures will not notify anyone",
            WEBHOOK_ENV,
        )
    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if automation.name.startswith(AUTOMATION_PREFIX):
                client.delete_automation(automation.id)
    names: dict[str, UUID] = {}
    for index, target in enumerate(targets):
        name = block_name(target, index)
        block = build_block(target, name, env)
        block_id = block.save(name, overwrite=True)
        for kind, expect, match, subject, body in (
            ("file", events.ALERT_FILE, events.RESOURCE_MATCH, FILE_SUBJECT, FILE_BODY),
            ("digest", events.ALERT_DIGEST, events.DIGEST_RESOURCE, DIGEST_SUBJECT, DIGEST_BODY),
        ):
            Automation(
                name=f"{AUTOMATION_PREFIX}{kind}-{name}",
                description=f"Hopper {kind} alerts to {target.type} target {name}",
                trigger=EventTrigger(
                    expect={expect},
                    match={"prefect.resource.id": match},
                    posture=Posture.Reactive,
                    threshold=1,
                ),
                actions=[SendNotification(block_document_id=block_id, subject=subject, body=body)],
            ).create()
        names[name] = block_id
        log.info("alerts go to %s target %s", target.type, name)
    return names


def freshness_subject(dataset: str, every: str) -> str:
    """The notification's subject: plain text, the dataset and window filled in."""
    return f"Hopper: no file for dataset {dataset} since {{{{ event.occurred }}}} ({every})"


def freshness_body(dataset: str, every: str) -> str:
    """The notification's body; Prefect fills in the event that opened the silent window."""
    return (
        f"No file for dataset {dataset} since {{{{ event.occurred }}}}: its contract expects "
        f"one at least every {every}.\n"
        f'{{% if event.event == "{events.FILE_INGESTED}" %}}'
        "The last file ingested: {{ event.resource.name }}."
        f'{{% elif event.event == "{events.BATCH_INGESTED}" %}}'
        "The last files ingested: {{ event.payload.files }} in one batch, the last listed "
        "{{ event.payload.names | last }}."
        "{% else %}No file has landed since the expectation was deployed.{% endif %}\n"
        f"Check the source that delivers {dataset}; `hopper status` lists what arrived. "
        "This alert is sent once: the next one only after a file lands and the window "
        "passes again."
    )


def freshness_automation(
    dataset: str, every: str, seconds: float, blocks: list[UUID]
) -> Automation:
    """The proactive automation alerting once when ``dataset`` gets no file for ``seconds``.

    Each ``hopper.file.ingested`` or ``hopper.batch.ingested`` event of the dataset (and the
    ``hopper.freshness.armed`` event ``hopper deploy`` sends) opens a window of ``seconds``; a
    later file closes it and opens the next. When a window ends without one, Prefect fires
    once and, because the trigger has ``after`` events and buckets per dataset, opens no new
    window until another file lands: one alert per silence, not one per window. (Without
    ``after``, Prefect opens the next window itself after firing and would alert every
    window; without ``for_each``, its periodic evaluation would open one too.)

    Args:
        dataset: the dataset's name.
        every: the window as the contract writes it (shown in the alert).
        seconds: the window in seconds (at least Prefect's floor of 10).
        blocks: the notification blocks to send through, one action each.
    """
    from datetime import timedelta

    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.events.actions import SendNotification

    subject, body = freshness_subject(dataset, every), freshness_body(dataset, every)
    spec = hashlib.sha256(
        repr((FRESHNESS_VERSION, seconds, sorted(map(str, blocks)), subject, body)).encode()
    ).hexdigest()[:12]
    return Automation(
        name=FRESHNESS_PREFIX + dataset,
        # The spec's hash lets `hopper deploy` leave an unchanged automation (and its
        # running window) alone.
        description=f"Hopper freshness: a file of dataset {dataset} at least every {every} "
        f"[spec {spec}]",
        trigger=EventTrigger(
            after={events.FILE_INGESTED, events.BATCH_INGESTED, events.FRESHNESS_ARMED},
            expect={events.FILE_INGESTED, events.BATCH_INGESTED},
            match={
                "prefect.resource.id": [events.RESOURCE_MATCH, events.DATASET_PREFIX + dataset],
                events.DATASET_LABEL: dataset,
            },
            for_each={events.DATASET_LABEL},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=seconds),
        ),
        actions=[
            SendNotification(block_document_id=block, subject=subject, body=body)
            for block in blocks
        ],
    )
