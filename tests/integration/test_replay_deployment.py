"""Failures told truthfully in the Prefect UI, and replayed from it, under a real `hopper up`.

A quarantined file's reason file, alert and `hopper status` name the `hopper-replay`
deployment's run form; a run of that deployment, created through Prefect's API as the UI
does, ingests the file once its contract is fixed and lists it in its artifact. A batch that
quarantined one of its files ends in a state named `Quarantined`, and its artifact lists
each file with its outcome, reason and replay command.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyarrow.parquet as pq
import pytest
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from hopper.ledger import Ledger, sqlite_url
from tests.integration.conftest import Running, hopper, wait_for

pytestmark = pytest.mark.integration

REPLAY = "hopper-replay/hopper-replay"


def _drop(*files: tuple[Path, str]) -> None:
    """Write files elsewhere, then move them in one after the other, at once."""
    staged = []
    for path, text in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent.parent / f".staging-{path.name}"
        staging.write_text(text, encoding="utf-8")
        staged.append((staging, path))
    for staging, path in staged:
        os.replace(staging, path)


def _get(up: Running, path: str) -> Any:
    response = httpx.get(f"{up.api_url}{path}", timeout=10)
    response.raise_for_status()
    return response.json()


def _artifacts(up: Running, run_id: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    response = httpx.post(f"{up.api_url}/artifacts/filter", json=body, timeout=10)
    response.raise_for_status()
    return list(response.json())


def _file(up: Running, path: Path) -> dict[str, Any] | None:
    result = hopper("status", str(path), "--json", env=up.env)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _settled(up: Running, path: Path, state: str) -> dict[str, Any]:
    doc: dict[str, Any] = wait_for(
        lambda: (d := _file(up, path)) and d["state"] == state and d,
        90,
        f"{path.name} {state}",
    )
    return doc


def _run_of(doc: dict[str, Any], event: str) -> str:
    """The flow run that recorded a file's latest ``event`` (e.g. ``quarantined``)."""
    runs = [h["flow_run_id"] for h in doc["history"] if h["event"] == event]
    assert runs and runs[-1], doc["history"]
    return str(runs[-1])


def _form(url: str) -> dict[str, Any]:
    (raw,) = parse_qs(urlsplit(url).query)["parameters"]
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def _alerts_quiet(up: Running, window: float = 60) -> bool:
    """No alert pending, none sent within the digest ``window`` (ALERT_POLICY's minute).

    Then the next failure is alerted on its own, never folded into a digest of the session's
    earlier failures (the hostile corpus quarantines dozens of files just before).
    """
    ledger = Ledger(sqlite_url(up.root / ".hopper"))
    try:
        last = max((ledger.last_alert_at(how) or 0.0) for how in ("sent", "digested"))
        return not ledger.pending_alerts() and time.time() - last > window
    finally:
        ledger.close()


def _replay(up: Running, **parameters: Any) -> Any:
    """A run of `hopper-replay`, created through Prefect's API and waited for."""
    with temporary_settings(updates={PREFECT_API_URL: up.api_url}):
        run = run_deployment(REPLAY, parameters=parameters, timeout=120, poll_interval=1)
    assert run.state is not None and run.state.is_final(), run.state
    return run


def test_a_quarantined_file_is_replayed_from_the_ui_once_its_contract_is_fixed(
    up: Running,
) -> None:
    ui = up.api_url.removesuffix("/api")
    page = f"{ui}/deployments/deployment/{_get(up, f'/deployments/name/{REPLAY}')['id']}"
    contract = up.root / "datasets" / "uifix.yaml"
    contract.write_text("name: uifix\ncolumns:\n  - name: code\n    type: int64\n")
    src = up.root / "inbox" / "uifix" / "uicodes.csv"
    wait_for(lambda: _alerts_quiet(up), 300, "the session's earlier alerts to go out")
    _drop((src, "code\n1\nA7\n"))
    doc = _settled(up, src, "quarantined")
    target = str(src.resolve())

    # The run that quarantined it says so in its state's name.
    run = _get(up, f"/flow_runs/{_run_of(doc, 'quarantined')}")
    assert (run["state"]["type"], run["state"]["name"]) == ("COMPLETED", "Quarantined")
    assert "uicodes.csv" in run["state"]["message"]

    # The reason file, `hopper status` and the alert name both ways to replay it.
    (reason_file,) = (up.root / "quarantine" / "uifix").rglob("uicodes.csv.error.json")
    reason = json.loads(reason_file.read_text())
    assert reason["replay"] == f"hopper replay {target}"
    assert reason["replay_url"].startswith(f"{page}/run?parameters=")
    assert _form(reason["replay_url"]) == {"targets": [target]}
    status = json.loads(hopper("status", "--json", env=up.env).stdout)
    (failure,) = [f for f in status["failures"] if f["uri"] == doc["uri"]]
    assert failure["replay"] == reason["replay"] and failure["replay_url"] == reason["replay_url"]
    # Its own alert, a hold later (the session's alerts were quiet when it was dropped).
    (alert,) = wait_for(lambda: up.webhook.about("uicodes.csv"), 120, "the alert about uicodes.csv")
    assert reason["replay_url"] in alert["body"] and reason["replay"] in alert["body"]

    contract.write_text("name: uifix\nversion: 2\ncolumns:\n  - name: code\n    type: string\n")

    dry = _replay(up, targets=[target], dry_run=True)
    assert dry.state.is_completed(), dry.state
    (note,) = [a for a in _artifacts(up, str(dry.id)) if a["type"] == "markdown"]
    assert note["key"] == "hopper-replay"
    assert note["data"].startswith("# Dry run: 1 file would be replayed")
    assert f"`{doc['uri']}` | quarantined |" in note["data"]
    assert (_file(up, src) or {})["state"] == "quarantined"  # a dry run changes nothing

    replay = _replay(up, targets=[target])
    assert replay.state.is_completed(), replay.state
    after = _settled(up, src, "ingested")
    (out,) = up.lake_files("uifix")
    assert pq.read_table(out).column("code").to_pylist() == ["1", "A7"]
    new_run = _run_of(after, "ingested")
    (listed,) = [a for a in _artifacts(up, str(replay.id)) if a["type"] == "markdown"]
    assert listed["data"].startswith("# Replayed 1 file")
    assert f"`{doc['uri']}` | quarantined |" in listed["data"]  # the state before
    assert f"[{new_run}]({ui}/runs/flow-run/{new_run})" in listed["data"]
    events = [h["event"] for h in after["history"]]
    assert events.index("quarantined") < events.index("replayed") < events.index("ingested")


def test_a_batch_with_a_bad_file_ends_quarantined_and_lists_each_file(up: Running) -> None:
    (up.root / "datasets" / "uibatch.yaml").write_text(
        "name: uibatch\ncolumns:\n  - name: id\n    type: int64\n  - name: city\n    type: string\n"
    )
    good = up.root / "inbox" / "uibatch" / "good.csv"
    bad = up.root / "inbox" / "uibatch" / "bad.csv"
    _drop((good, "id,city\n1,Oslo\n2,Lima\n"), (bad, "id,city\n1,Oslo\nX,Lima\n"))
    run_id = _run_of(_settled(up, good, "ingested"), "ingested")
    bad_doc = _settled(up, bad, "quarantined")
    assert _run_of(bad_doc, "quarantined") == run_id, "the two files were not one batch"

    run = _get(up, f"/flow_runs/{run_id}")
    assert run["name"] == "uibatch/2 files"
    assert (run["state"]["type"], run["state"]["name"]) == ("COMPLETED", "Quarantined")
    assert run["state"]["message"].startswith("1 of 2 files quarantined: bad.csv (")

    (table,) = [a for a in _artifacts(up, run_id) if a["type"] == "table"]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    by_file = {r["file"]: r for r in rows}
    assert set(by_file) == {"good.csv", "bad.csv"}
    assert (by_file["good.csv"]["state"], by_file["good.csv"]["replay"]) == ("ingested", "")
    assert by_file["bad.csv"]["state"] == "quarantined"
    assert by_file["bad.csv"]["reason"] == bad_doc["reason"]
    assert by_file["bad.csv"]["replay"] == f"hopper replay {bad.resolve()}"
    page = f"/deployments/deployment/{_get(up, f'/deployments/name/{REPLAY}')['id']}"
    assert page in table["description"]
