"""Freshness alerts end to end: a dataset whose files stop coming alerts once, one whose
files keep coming never does, and `hopper deploy` follows the contracts' `expect`.

The path is the real one: `hopper up` (its `hopper deploy`) creates one Prefect proactive
automation per contract with `expect` and arms it; the flow's `hopper.file.ingested` events
keep it quiet; when a window passes without one, Prefect sends one notification through the
Custom Webhook block to a local HTTP receiver. The module has its own `hopper up`, since its
contracts must hold `expect` before the server starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONTRACT, make_home
from tests.integration.conftest import (
    Running,
    hopper,
    hopper_up,
    wait_for,
)

pytestmark = pytest.mark.integration

STALE_EVERY = 20  # seconds; Prefect's proactive floor is 10
STEADY_EVERY = 30  # wide enough for a loaded machine to ingest each file well within it
SLACK = 40  # Prefect evaluates proactive triggers every 5 s; the webhook call takes a moment
GOOD = "id,full name,score\n1,Ada,1.5\n"


def _contract(name: str, every: int | None = None) -> str:
    text = CONTRACT.replace("name: people", f"name: {name}")
    return text + (f"expect:\n  every: {every}s\n" if every else "")


@pytest.fixture(scope="module")
def fresh_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`hopper up` with `stale` expecting a file every 20 s (none will come), and `steady`."""
    root = tmp_path_factory.mktemp("fresh")
    config = make_home(
        root, {"stale": _contract("stale", STALE_EVERY), "steady": _contract("steady")}
    )
    with hopper_up(root, config, start_timeout=240) as running:
        yield running


def _freshness_alerts(up: Running, dataset: str) -> list[dict[str, Any]]:
    return up.webhook.about(f"no file for dataset {dataset} since")


def _automations(up: Running) -> dict[str, Any]:
    """Hopper's freshness automations on the server, by name."""
    code = (
        "import json\n"
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    print(json.dumps({a.name: a.model_dump(mode='json') for a in c.read_automations()"
        " if a.name.startswith('hopper-freshness-')}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **up.env},
        check=True,
    )
    automations: dict[str, Any] = json.loads(result.stdout)
    return automations


def _ingested(up: Running, dataset: str) -> int:
    doc = json.loads(hopper("status", "--json", env=up.env).stdout)
    return int(doc["datasets"].get(dataset, {}).get("ingested", 0))


def _drop(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_silent_dataset_alerts_once_and_a_steady_one_never(fresh_up: Running) -> None:
    up = fresh_up
    assert set(_automations(up)) == {"hopper-freshness-stale"}
    (up.root / "datasets" / "steady.yaml").write_text(_contract("steady", STEADY_EVERY))
    result = hopper("deploy", env=up.env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_automations(up)) == {"hopper-freshness-stale", "hopper-freshness-steady"}
    # `steady` gets a file every 5 s for two of its windows and more, while `stale` gets none
    # for as long: one alert for `stale` (Prefect opens no new window until a file lands,
    # and the redeploy left its unchanged automation alone), none for `steady`.
    began = time.monotonic()
    n = 0
    while time.monotonic() - began < max(2.2 * STEADY_EVERY, 2.5 * STALE_EVERY + 10):
        _drop(up.root / "inbox" / "steady" / f"s-{n:03d}.csv", GOOD)
        n += 1
        time.sleep(5)
    wait_for(lambda: _ingested(up, "steady") == n, 180, "every steady file to land")
    wait_for(lambda: _freshness_alerts(up, "stale"), STALE_EVERY + SLACK, "the freshness alert")
    (alert,) = _freshness_alerts(up, "stale")
    assert "at least every 20s" in alert["body"]
    assert "since the expectation was deployed" in alert["body"]
    assert _freshness_alerts(up, "steady") == []


def test_deploy_updates_then_removes_the_automation_with_the_expectation(
    fresh_up: Running,
) -> None:
    up = fresh_up
    before = _automations(up)["hopper-freshness-steady"]
    (up.root / "datasets" / "steady.yaml").write_text(_contract("steady", 60))
    result = hopper("deploy", env=up.env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    after = _automations(up)["hopper-freshness-steady"]
    assert after["id"] == before["id"]  # updated in place
    assert after["trigger"]["within"] == 60 and "every 60s" in after["description"]

    (up.root / "datasets" / "steady.yaml").write_text(_contract("steady"))
    (up.root / "datasets" / "stale.yaml").unlink()
    result = hopper("deploy", env=up.env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _automations(up) == {}
