"""Two Prefect API replicas and one services process, on PostgreSQL and Redis, one replica lost.

The topology of docs/deploy.md ("Two API replicas and services apart"), started by
:class:`bench.replicas.PrefectReplicas`: Prefect's database and the ledger on PostgreSQL,
``prefect-redis`` for messaging, two replicas without services, one services process.
Replica A serves watcher A and worker A, replica B serves watcher B and worker B; each watcher
has a folder of its own, and both feed one dataset.

1. **The path**: with the services process stopped, a file dropped for watcher A (which talks
   to replica A only) gets no flow run, though replica B already knows of its event; once
   the services process starts, the run is created by the file's automation, and Prefect's
   ``prefect.automation.action.executed`` event links the watcher's event to that run.
2. **A replica lost mid-burst**: 2,000 good files and a few damaged ones, half to each folder;
   once half are ingested, replica A is SIGKILLed, then started again on its port. Every good
   file lands exactly once, every damaged one is quarantined with exactly one alert, and no
   automation fired twice for one event.

Runs against the PostgreSQL on 127.0.0.1:5432 and the Redis on 127.0.0.1:6379; skipped, with
the reason, only where one of them does not answer. ``pytest -m replicas`` runs it alone.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from hopper.ledger import Ledger
from tests.conftest import make_home
from tests.integration.conftest import CLICKS_CONTRACT, WebhookReceiver, hopper, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.replicas]

GOOD = 2000
BAD = 6
ROWS = 2
POLICY = """\
alert_policy:
  hold_seconds: 2
  max_hold_seconds: 20
  digest_threshold: 1000
  digest_window_minutes: 1
"""


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[str, str, int]]:
    """Fresh PostgreSQL databases (Prefect's, the ledger's) and an empty Redis database."""
    pytest.importorskip("psycopg")
    pytest.importorskip("prefect_redis")
    from bench.replicas import redis_database
    from bench.scaleout import postgres_databases

    try:
        with postgres_databases() as (prefect_db, ledger_url), redis_database() as redis_db:
            yield prefect_db, ledger_url, redis_db
    except RuntimeError as exc:  # raised before yielding: PostgreSQL or Redis absent
        pytest.skip(str(exc))


def events(api_url: str, name: str, since: datetime) -> list[dict[str, Any]]:
    """Every event called ``name`` since ``since``, read page by page from Prefect's API."""
    body = {
        "filter": {
            "event": {"name": [name]},
            "occurred": {"since": since.isoformat()},
            "order": "ASC",
        },
        "limit": 50,
    }
    page = httpx.post(f"{api_url}/events/filter", json=body, timeout=30).raise_for_status().json()
    found = list(page["events"])
    while page.get("next_page"):
        page = httpx.get(page["next_page"], timeout=30).raise_for_status().json()
        found += page["events"]
    return found


def related(event: dict[str, Any], role: str) -> list[str]:
    """The resource ids ``event`` names in ``role``."""
    return [
        r["prefect.resource.id"]
        for r in event.get("related", [])
        if r["prefect.resource.role"] == role
    ]


def ingest_runs(api_url: str) -> list[dict[str, Any]]:
    """The flow runs of the deployments a file's event triggers (not the scheduled upkeep)."""
    body = {"deployments": {"name": {"any_": ["ingest-file", "ingest-batch"]}}}
    found = httpx.post(f"{api_url}/deployments/filter", json=body, timeout=30).raise_for_status()
    ids = [d["id"] for d in found.json()]
    body = {"flow_runs": {"deployment_id": {"any_": ids}}, "limit": 200}
    runs = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=30).raise_for_status()
    return list(runs.json())


def write_home(root: Path, name: str) -> Path:
    """A hopper.yaml of its own (folder, state) for one watcher; datasets and lake shared."""
    config = make_home(root, {"clicks": CLICKS_CONTRACT}, extra=POLICY)
    text = (
        config.read_text()
        .replace("sources:\n  - path: inbox\n", f"sources:\n  - path: inbox-{name}\n")
        .replace("state_dir: .hopper\n", f"state_dir: .hopper-{name}\n")
        .replace("confirm_seconds: 5\n", "confirm_seconds: 60\n")
        .replace("watch:\n", "watch:\n  batch_max_files: 100\n")
    )
    path = root / f"hopper-{name}.yaml"
    path.write_text(text)
    (root / f"inbox-{name}" / "clicks").mkdir(parents=True, exist_ok=True)
    return path


def test_two_replicas_services_apart_one_replica_lost_mid_burst(
    backends: tuple[str, str, int], tmp_path: Path
) -> None:
    from bench.procs import clean_env
    from bench.replicas import Fleet, PrefectReplicas

    prefect_db, ledger_url, redis_db = backends
    webhook = WebhookReceiver()
    configs = {name: write_home(tmp_path, name) for name in ("a", "b")}
    logs = tmp_path / "logs"
    logs.mkdir()
    base = clean_env(
        {
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HOPPER_LEDGER_URL": ledger_url,
            "HOPPER_LEASE_SECONDS": "10",
            "HOPPER_LOG_LEVEL": "INFO",
            "HOPPER_ALERTS_WEBHOOK_URL": webhook.url,
        }
    )
    clients = Fleet(logs)
    began = datetime.now(UTC)
    servers = PrefectReplicas(logs, prefect_db, redis_db, base)
    with servers:
        api = dict(zip("ab", servers.api_urls, strict=True))
        env = {
            name: base | {"PREFECT_API_URL": api[name], "HOPPER_CONFIG": str(configs[name])}
            for name in "ab"
        }
        try:
            deployed = hopper("deploy", "--config", str(configs["a"]), env=env["a"], timeout=300)
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
            for name in "ab":
                clients.start(
                    f"worker-{name}", ["worker", "--pool", "hopper", "--limit", "4"], env[name]
                )
                clients.start(
                    f"watcher-{name}", ["watch", "--config", str(configs[name])], env[name]
                )
            ledger = Ledger(ledger_url)

            # 1. The path: replica A receives the event; only the services process acts on it.
            servers.kill_role("services")
            first = tmp_path / "inbox-a" / "clicks" / "first.jsonl"
            first.write_text(json.dumps({"id": -1, "page": "/first"}) + "\n")
            wait_for(
                lambda: (r := ledger.latest(first.as_uri())) is not None and r.dispatched_at,
                120,
                "watcher A to send the first file's event",
            )
            time.sleep(5)
            assert ingest_runs(api["b"]) == [], "a run was created with no services process"
            servers.start_services()
            wait_for(
                lambda: (
                    (r := ledger.latest(first.as_uri())) is not None and r.state.value == "ingested"
                ),
                180,
                "the first file to land once the services process is up",
            )
            (run,) = ingest_runs(api["b"])
            executed = wait_for(
                lambda: [
                    e
                    for e in events(api["b"], "prefect.automation.action.executed", began)
                    if f"prefect.flow-run.{run['id']}" in json.dumps(e)
                ],
                60,
                "the automation's executed event for the first run",
            )
            (triggering,) = {t for e in executed for t in related(e, "triggering-event")}
            emitted = events(api["b"], "hopper.file.detected", began) + events(
                api["b"], "hopper.batch.detected", began
            )
            assert any(f"prefect.event.{e['id']}" == triggering for e in emitted), (
                triggering,
                emitted,
            )

            # 2. A burst, one replica lost once half of it has landed.
            staging = tmp_path / "staging"
            staging.mkdir()
            names: list[tuple[str, str]] = []
            for i in range(GOOD + BAD):
                folder = "ab"[i % 2]
                bad = i >= GOOD
                name = f"{'bad' if bad else 'c'}-{i:05d}.jsonl"
                text = (
                    "{not json\n"
                    if bad
                    else "".join(
                        json.dumps({"id": i * ROWS + k, "page": f"/p/{i}"}) + "\n"
                        for k in range(ROWS)
                    )
                )
                (staging / name).write_text(text)
                names.append((folder, name))
            for folder, name in names:
                os.rename(staging / name, tmp_path / f"inbox-{folder}" / "clicks" / name)

            def settled() -> Counter[str]:
                return Counter(r.state.value for r in ledger.records())

            wait_for(lambda: settled()["ingested"] >= (GOOD + 1) // 2, 300, "half the burst")
            # Lose replica A while worker A (which talks only to it) is in the middle of a run.
            victim = str(clients.procs["worker-a"].pid)
            in_flight = wait_for(
                lambda: next(
                    (
                        r["id"]
                        for r in ingest_runs(api["b"])
                        if r["state_type"] == "RUNNING"
                        and str(r.get("infrastructure_pid") or "").endswith(f":{victim}")
                    ),
                    None,
                ),
                120,
                "worker A to be running a flow",
            )
            servers.kill(0)
            time.sleep(3)
            servers.restart(0)

            try:
                wait_for(
                    lambda: settled()["ingested"] + settled()["quarantined"] >= GOOD + 1 + BAD,
                    480,
                    "every file settled",
                )
            except AssertionError:
                raise AssertionError(
                    f"ledger: {dict(settled())}\n"
                    + "\n".join(f"{n}:\n{clients.tail(n)}" for n in clients.procs)
                ) from None
            assert settled() == {"ingested": GOOD + 1, "quarantined": BAD}

            # The run that was in flight when its replica died does not stay Running: it ends
            # (its final state follows its last outcome in the ledger by a moment), or, had its
            # worker lost it, the watcher marks it Crashed once its lease lapses (10 s here).
            def in_flight_state() -> str:
                (run,) = [r for r in ingest_runs(api["b"]) if r["id"] == in_flight]
                return str(run["state_type"])

            wait_for(
                lambda: in_flight_state() in {"COMPLETED", "CRASHED"},
                60,
                "the run in flight to end",
            )

            # Exactly once in the lake: one file per source, every row once.
            lake = sorted((tmp_path / "lake" / "clicks").rglob("*.parquet"))
            assert len(lake) == GOOD + 1
            ids = [i for f in lake for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
            assert sorted(ids) == [-1, *range(GOOD * ROWS)]

            # One alert per damaged file.
            bad_names = [n for _, n in names if n.startswith("bad-")]
            wait_for(
                lambda: all(webhook.about(n) for n in bad_names), 120, "an alert per damaged file"
            )
            time.sleep(5)  # a second alert for any of them would come within the hold
            assert {n: len(webhook.about(n)) for n in bad_names} == dict.fromkeys(bad_names, 1)

            # No automation acted twice on one event, and none failed.
            acted = Counter(
                (e["resource"]["prefect.resource.id"], t)
                for e in events(api["b"], "prefect.automation.action.executed", began)
                for t in related(e, "triggering-event")
            )
            assert acted and max(acted.values()) == 1, acted.most_common(3)
            assert events(api["b"], "prefect.automation.action.failed", began) == []
            for name, proc in clients.procs.items():
                assert proc.poll() is None, f"{name} exited:\n{clients.tail(name)}"
            ledger.close()
        finally:
            clients.stop()
            webhook.close()
