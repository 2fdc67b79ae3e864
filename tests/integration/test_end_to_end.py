"""The core path, as a user drives it: `hopper up`, drop files, read Parquet back.

Everything is real: the Prefect server (SQLite), the deployment trigger, a process worker,
the watchdog-based watcher, the ledger and the files. The tests in this module share one
`hopper up` and run in order; the last one stops it and checks nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import Running, free_port, hopper, make_home, wait_for

pytestmark = pytest.mark.integration

PEOPLE = "id,full name,score\n1,Ada Lovelace,9.5\n2,Alan Turing,NA\n3,,7\n"


def _drop(path: Path, text: str) -> Path:
    """Write a file elsewhere, then move it in (as careful uploaders do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent.parent / f".staging-{path.name}"
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)
    return path


def _status(up: Running, *args: str) -> dict:  # type: ignore[type-arg]
    result = hopper("status", *args, "--json", env=up.env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _state_of(up: Running, path: Path) -> str | None:
    result = hopper("status", str(path), "--json", env=up.env)
    return json.loads(result.stdout)["state"] if result.returncode == 0 else None


def test_up_is_ready_only_once_the_watcher_watches_and_a_worker_polls(up: Running) -> None:
    # The first test to run: the fixture returned as soon as "Hopper is up." was printed.
    ready = up.root / ".hopper" / "watcher.ready"
    assert ready.read_text().strip() == str(up.state()["children"]["watcher"])
    response = httpx.post(f"{up.api_url}/work_pools/hopper/workers/filter", json={})
    response.raise_for_status()
    assert [w for w in response.json() if w["last_heartbeat_time"]], response.json()
    assert "did not report ready" not in up.log.read_text()  # no 60 s wait, then a warning


def test_csv_lands_as_typed_parquet(up: Running) -> None:
    src = _drop(up.root / "inbox" / "people" / "people.csv", PEOPLE)
    (out,) = wait_for(lambda: up.lake_files("people"), 90, "people.csv in the lake")
    table = pq.read_table(out)
    assert table.column_names == ["id", "full_name", "score", "_source_uri", "_ingested_at"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("_ingested_at").type == pa.timestamp("us", tz="UTC")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("full_name").to_pylist() == ["Ada Lovelace", "Alan Turing", None]
    assert table.column("score").to_pylist() == [9.5, None, 7.0]
    assert set(table.column("_source_uri").to_pylist()) == {src.resolve().as_uri()}
    frame = pd.read_parquet(out)
    assert frame["score"].isna().sum() == 1 and len(frame) == 3
    wait_for(lambda: _state_of(up, src) == "ingested", 30, "the ledger to say ingested")


def test_flow_run_is_named_after_the_file_and_has_an_artifact(up: Running) -> None:
    wait_for(lambda: up.lake_files("people"), 90, "people.csv in the lake")
    api = up.api_url
    runs = wait_for(
        lambda: httpx.post(
            f"{api}/flow_runs/filter",
            json={"flow_runs": {"name": {"any_": ["people/people.csv"]}}},
        ).json(),
        30,
        "the flow run named people/people.csv",
    )
    run_id = runs[0]["id"]
    artifacts = httpx.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    (table,) = [a for a in artifacts if a["type"] == "table"]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    items = {r["item"]: r["value"] for r in rows}
    assert items["rows in"] == 3 and items["rows out"] == 3
    assert items["column score"] == "double"


def test_large_csv_with_na_nulls(up: Running) -> None:
    n = 300_000
    cities = ["Paris", "Oslo", "NA", ""]
    lines = ["id,city,amount,qty"]
    for i in range(n):
        amount = "NA" if i % 7 == 0 else f"{i * 0.5}"
        qty = "" if i % 11 == 0 else str(i % 100)
        lines.append(f"{i},{cities[i % 4]},{amount},{qty}")
    _drop(up.root / "inbox" / "big" / "big.csv", "\n".join(lines) + "\n")
    (out,) = wait_for(lambda: up.lake_files("big"), 120, "big.csv in the lake")
    table = pq.read_table(out)
    assert table.num_rows == n
    assert table.column("id").null_count == 0
    assert table.column("city").null_count == n // 2
    assert table.column("amount").null_count == len(range(0, n, 7))
    assert table.column("qty").null_count == len(range(0, n, 11))
    assert table.schema.field("qty").type == pa.int64()
    assert sum(table.column("id").to_pylist()) == n * (n - 1) // 2
    expected_amount = sum(i * 0.5 for i in range(n) if i % 7)
    assert abs(pa.compute.sum(table.column("amount")).as_py() - expected_amount) < 1e-3


def test_json_lines_dataset(up: Running) -> None:
    body = "\n".join(
        json.dumps(r)
        for r in [
            {"id": 1, "kind": "click", "value": 0.5},
            {"id": 2, "kind": "view", "value": None},
        ]
    )
    _drop(up.root / "inbox" / "events" / "day1.jsonl", body + "\n")
    (out,) = wait_for(lambda: up.lake_files("events"), 90, "day1.jsonl in the lake")
    table = pq.read_table(out)
    assert table.select(["id", "kind", "value"]).to_pylist() == [
        {"id": 1, "kind": "click", "value": 0.5},
        {"id": 2, "kind": "view", "value": None},
    ]


def test_bad_file_is_quarantined_with_reason(up: Running) -> None:
    bad = _drop(up.root / "inbox" / "people" / "broken.csv", "id,full name,score\n1,a,x1\n2,b,3\n")
    reason_files = wait_for(
        lambda: list((up.root / "quarantine" / "people").rglob("broken.csv.error.json")),
        90,
        "broken.csv in quarantine",
    )
    reason = json.loads(reason_files[0].read_text())
    assert "score" in reason["reason"] and "x1" in reason["reason"]
    assert reason["replay"] == f"hopper replay {bad.resolve()}"
    assert (reason_files[0].parent / "broken.csv").read_text().startswith("id,full name")
    assert not [p for p in up.lake_files("people") if p.name.startswith("broken")]
    wait_for(lambda: _state_of(up, bad) == "quarantined", 30, "the ledger to say quarantined")


def test_file_without_contract_is_quarantined_not_dropped(up: Running) -> None:
    _drop(up.root / "inbox" / "nocontract" / "x.csv", "a\n1\n")
    reason_files = wait_for(
        lambda: list((up.root / "quarantine" / "nocontract").rglob("x.csv.error.json")),
        90,
        "x.csv in quarantine",
    )
    assert "has no contract" in json.loads(reason_files[0].read_text())["reason"]


def test_new_version_replaces_output_and_replay_never_duplicates(up: Running) -> None:
    src = up.root / "inbox" / "people" / "people.csv"
    wait_for(lambda: _state_of(up, src) == "ingested", 90, "people.csv ingested")
    _drop(src, "id,full name,score\n7,Grace Hopper,10\n")
    wait_for(
        lambda: [p for p in up.lake_files("people") if pq.read_table(p).num_rows == 1],
        90,
        "the new version to replace the old output",
    )
    result = hopper("replay", str(src), "--wait", "--timeout", "90", env=up.env, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    files = [p for p in up.lake_files("people") if p.name.startswith("people-")]
    assert len(files) == 1
    assert pq.read_table(files[0]).column("id").to_pylist() == [7]
    history = _status(up, str(src))
    events = [h["event"] for h in history["history"]]
    assert events.count("ingested") == 3 and "replayed" in events
    assert len(history["versions"]) == 2


def test_status_summarises_datasets(up: Running) -> None:
    wait_for(lambda: _status(up)["datasets"].get("nocontract"), 60, "status of nocontract")
    doc = _status(up)
    assert doc["datasets"]["people"]["quarantined"] >= 1
    assert doc["datasets"]["big"]["ingested"] == 1
    assert any(f["uri"].endswith("broken.csv") and f["run_url"] for f in doc["failures"])


def test_files_survive_a_server_outage_and_a_watcher_restart(up: Running, tmp_path: Path) -> None:
    """A second home's watcher starts while 'its' server is unreachable, then is restarted."""
    config = make_home(tmp_path)
    (tmp_path / "inbox" / "people").mkdir(parents=True)
    env = {**os.environ, "HOPPER_LOG_LEVEL": "INFO"}
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    watch = [sys.executable, "-m", "hopper", "watch", "--config", str(config)]
    first = subprocess.Popen(watch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        src = _drop(tmp_path / "inbox" / "people" / "during-outage.csv", PEOPLE)
        wait_for(
            lambda: hopper("status", str(src), "--json", "--config", str(config)).returncode == 0,
            30,
            "the file to be recorded while the server is down",
        )
        doc = json.loads(hopper("status", str(src), "--json", "--config", str(config)).stdout)
        assert doc["state"] == "detected"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=15)
    env["PREFECT_API_URL"] = up.api_url
    second = subprocess.Popen(watch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (out,) = wait_for(
            lambda: sorted((tmp_path / "lake" / "people").rglob("*.parquet")),
            90,
            "the file to land once the server is reachable",
        )
        assert pq.read_table(out).num_rows == 3
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)


def test_deploy_is_idempotent_and_removes_stale_automations(up: Running) -> None:
    api = up.api_url
    stale = httpx.post(
        f"{api}/automations/",
        json={
            "name": "left-behind",
            "trigger": {"type": "event", "expect": ["never.happens"], "posture": "Reactive"},
            "actions": [
                {
                    "type": "run-deployment",
                    "source": "selected",
                    "deployment_id": "00000000-0000-0000-0000-000000000001",
                }
            ],
        },
    )
    assert stale.status_code == 201, stale.text
    for _ in range(2):
        result = hopper("deploy", env=up.env, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
    automations = httpx.post(f"{api}/automations/filter", json={}).json()
    names = [a["name"] for a in automations]
    assert "left-behind" not in names
    assert names.count("ingest-file__automation_1") == 1


def test_init_scaffolds_a_home(tmp_path: Path) -> None:
    result = hopper("init", str(tmp_path / "h"))
    assert result.returncode == 0, result.stderr
    for sub in ("hopper.yaml", "datasets/example.yaml", "inbox", "lake", "quarantine"):
        assert (tmp_path / "h" / sub).exists()
    again = hopper("init", str(tmp_path / "h"))
    assert again.returncode == 1 and "already exists" in again.stderr
    shutil.rmtree(tmp_path / "h")


def test_replay_twice_keeps_rows_and_fixed_contract_replays_quarantined(up: Running) -> None:
    src = up.root / "inbox" / "people" / "people.csv"
    wait_for(lambda: _state_of(up, src) == "ingested", 90, "people.csv ingested")
    before = sorted(pq.read_table(p).num_rows for p in up.lake_files("people"))
    for _ in range(2):
        result = hopper("replay", str(src), "--wait", "--timeout", "90", env=up.env, timeout=150)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ingested" in result.stdout
    assert sorted(pq.read_table(p).num_rows for p in up.lake_files("people")) == before

    contract = up.root / "datasets" / "fixme.yaml"
    contract.write_text("name: fixme\ncolumns:\n  - name: code\n    type: int64\n")
    bad = _drop(up.root / "inbox" / "fixme" / "codes.csv", "code\n1\nA7\n")
    wait_for(lambda: _state_of(up, bad) == "quarantined", 90, "codes.csv quarantined")
    dry = hopper("replay", "--quarantined", "--dataset", "fixme", "--dry-run", env=up.env)
    assert dry.returncode == 0 and "codes.csv" in dry.stdout
    contract.write_text("name: fixme\nversion: 2\ncolumns:\n  - name: code\n    type: string\n")
    result = hopper(
        "replay", "--quarantined", "--dataset", "fixme", "--wait", env=up.env, timeout=150
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (out,) = up.lake_files("fixme")
    assert pq.read_table(out).column("code").to_pylist() == ["1", "A7"]
    history = [h["event"] for h in _status(up, str(bad))["history"]]
    assert history.index("quarantined") < history.index("replayed") < history.index("ingested")


def test_daily_summary_artifact_per_dataset(up: Running) -> None:
    wait_for(lambda: up.lake_files("people"), 90, "people ingested")
    found = wait_for(
        lambda: httpx.post(
            f"{up.api_url}/artifacts/latest/filter",
            json={"artifacts": {"key": {"any_": ["hopper-daily-people"]}}},
        ).json(),
        30,
        "the daily artifact of people",
    )
    assert "the last 24 hours" in found[0]["data"] and "| ingested |" in found[0]["data"]


def test_the_warm_worker_keeps_prefect_clients_for_its_runs(up: Running) -> None:
    from prefect.context import SyncClientContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hopper.prefect_api import ClientPool

    pool = ClientPool()
    seen: list[object] = []

    def one_run() -> None:
        with temporary_settings({PREFECT_API_URL: up.api_url}), pool.lend() as lent:
            context = SyncClientContext.get()
            assert context is lent
            assert context.client.hello().status_code == 200  # open, and answers
            seen.append(context)
        assert SyncClientContext.get() is None  # set for the run only

    for _ in range(3):  # runs one after another, each on a new thread: one client for all
        thread = threading.Thread(target=one_run)
        thread.start()
        thread.join()
    assert seen[0] is seen[1] is seen[2] and pool.opened == 1
    with (
        temporary_settings({PREFECT_API_URL: up.api_url}),
        pool.lend() as first,
        pool.lend() as second,  # two runs at once: two clients
    ):
        assert first is not second
    assert pool.opened == 2
    with temporary_settings({PREFECT_API_URL: up.api_url}):
        assert pool.warm(3) == 3  # opened ahead of the runs (as the worker does at start)
        with pool.lend(), pool.lend(), pool.lend():
            pass
    assert pool.opened == 3  # three runs at once found the clients opened ahead
