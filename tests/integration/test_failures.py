"""Failures as a user meets them: one alert per incident, a digest in a storm, and files that
still land exactly once when the worker and its run are killed.

Alerts travel the real path: the flow marks the failure in the ledger, the watcher emits
`hopper.alert.*`, a Prefect automation (created by `hopper deploy`) sends it through a
Custom Webhook notification block to a local HTTP receiver.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import CONTRACT
from tests.integration.conftest import Running, hopper, wait_for

pytestmark = pytest.mark.integration

GOOD = "id,full name,score\n1,Ada,1.5\n2,Bob,2\n"
DAMAGED = "id,full name,score\n1,Ada,1.5\ntwo,Bob,lots\n"


def _drop(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def _state(up: Running, path: Path) -> str | None:
    result = hopper("status", str(path), "--json", env=up.env)
    return json.loads(result.stdout)["state"] if result.returncode == 0 else None


def test_one_alert_for_the_damaged_file_only(up: Running) -> None:
    _drop(up.root / "inbox" / "people" / "good-one.csv", GOOD)
    _drop(up.root / "inbox" / "people" / "damaged-one.csv", DAMAGED)
    (alert,) = wait_for(lambda: up.webhook.about("damaged-one.csv"), 120, "the alert")
    wait_for(
        lambda: (
            up.lake_files("people")
            and _state(up, up.root / "inbox" / "people" / "good-one.csv") == "ingested"
        ),
        60,
        "good-one.csv ingested",
    )
    time.sleep(12)  # longer than the hold: a duplicate would have arrived by now
    assert len(up.webhook.about("damaged-one.csv")) == 1
    assert up.webhook.about("good-one.csv") == []
    text = alert["subject"] + "\n" + alert["body"]
    assert "people" in text and "quarantined" in text
    assert "id" in alert["body"] and "two" in alert["body"]  # the reason names column and value
    assert "/runs/flow-run/" in alert["body"]
    assert "hopper replay " in alert["body"]


def test_killed_worker_mid_run_still_lands_exactly_once(up: Running) -> None:
    _flaky_contract(up, "slow", "slow")
    src = up.root / "inbox" / "slow" / "crash.csv"
    _drop(src, GOOD)
    wait_for(lambda: _state(up, src) == "running", 90, "the run to start")
    worker = up.state()["children"]["worker"]
    os.kill(worker, signal.SIGKILL)  # the machine running the flow is lost mid-run
    wait_for(lambda: up.state()["children"]["worker"] != worker, 30, "the worker to be restarted")
    # The lost run never reports back; reconciliation finds it and dispatches the file again.
    deadline = time.monotonic() + 120
    while _state(up, src) != "ingested" and time.monotonic() < deadline:
        result = hopper("reconcile", "--stuck-seconds", "20", env=up.env)
        assert result.returncode == 0, result.stdout + result.stderr
        time.sleep(4)
    assert _state(up, src) == "ingested"
    (out,) = up.lake_files("slow")
    assert pq.read_table(out).column("id").to_pylist() == [1, 2]
    history = json.loads(hopper("status", str(src), "--json", env=up.env).stdout)["history"]
    events = [h["event"] for h in history]
    assert events.count("ingested") == 1 and "requeued" in events
    # the requeue names the run that was lost, and a later run did the work
    lost = next(h["flow_run_id"] for h in history if h["event"] == "running")
    (requeued,) = [h for h in history if h["event"] == "requeued"]
    assert requeued["detail"]["dead_run"] == lost
    (ingested,) = [h for h in history if h["event"] == "ingested"]
    assert ingested["flow_run_id"] not in (None, lost)


def _flaky_contract(up: Running, name: str, func: str) -> None:
    text = CONTRACT.replace("name: people", f"name: {name}")
    (up.root / "datasets" / f"{name}.yaml").write_text(
        text + f'transform: "tests.integration.faults:{func}"\n'
    )


def test_transient_fault_is_retried_and_lands_without_alert(up: Running) -> None:
    _flaky_contract(up, "flaky", "flaky_once")
    src = up.root / "inbox" / "flaky" / "f.csv"
    _drop(src, GOOD)
    (out,) = wait_for(lambda: up.lake_files("flaky"), 120, "f.csv to land after a retry")
    assert pq.read_table(out).column("id").to_pylist() == [1, 2]
    wait_for(lambda: _state(up, src) == "ingested", 30, "the ledger to say ingested")
    time.sleep(10)  # past the alert hold
    assert up.webhook.about("flaky") == []


def test_fault_that_never_clears_fails_once_and_alerts_once(up: Running) -> None:
    _flaky_contract(up, "hopeless", "always_transient")
    src = up.root / "inbox" / "hopeless" / "h.csv"
    _drop(src, GOOD)
    wait_for(lambda: _state(up, src) == "failed", 240, "the run to fail after its retries")
    (alert,) = wait_for(lambda: up.webhook.about("h.csv"), 60, "the failure alert")
    assert "failed" in alert["subject"] and "never clears" in alert["body"]
    time.sleep(10)
    assert len(up.webhook.about("h.csv")) == 1
    assert up.lake_files("hopeless") == []


# Last in this module: the digest it provokes holds other alerts for its window.
def test_a_storm_of_failures_sends_one_digest(up: Running) -> None:
    (up.root / "datasets" / "storm.yaml").write_text(
        CONTRACT.replace("name: people", "name: storm")
    )
    for i in range(30):
        _drop(up.root / "inbox" / "storm" / f"bad-{i:02d}.csv", DAMAGED)
    (digest,) = wait_for(
        lambda: [a for a in up.webhook.about("bad-") if "files failed" in a.get("subject", "")],
        300,
        "the digest alert",
    )
    assert "storm" in digest["subject"]

    def quarantined() -> int:
        doc = json.loads(hopper("status", "--json", env=up.env).stdout)
        return int(doc["datasets"].get("storm", {}).get("quarantined", 0))

    wait_for(lambda: quarantined() == 30, 300, "all 30 files quarantined")
    time.sleep(12)  # past the hold: anything else would have been sent by now
    # One digest for the storm, no individual alerts: files failing after the digest, within
    # its window, wait for the next window instead of paging people again.
    individual = [a for a in up.webhook.about("bad-") if "files failed" not in a.get("subject", "")]
    assert individual == []
    assert len([a for a in up.webhook.about("bad-") if "files failed" in a["subject"]]) == 1
