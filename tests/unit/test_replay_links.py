"""Both ways to replay, everywhere a failure is told: the command and the Prefect UI's run form.

And the one replay both run (:func:`hopper.replay.run_replay`) with its report.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import prefect.client.orchestration
import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from hopper import events, prefect_api
from hopper import replay as replay_module
from hopper.alerts import AlertDispatcher
from hopper.cli.files import summary
from hopper.config import AlertPolicy, HopperConfig
from hopper.errors import HopperError, TerminalError
from hopper.events import DigestAlert, FileAlert, HopperEvent
from hopper.files import describe_file
from hopper.ledger import FileRecord, Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from hopper.prefect_api import (
    deployment_url,
    file_replay_url,
    replay_deployment_page,
    run_form_url,
)
from hopper.replay import ReplayReport, report_markdown, run_replay, selection

quarantine_module = importlib.import_module("hopper.sink.quarantine")  # the package re-exports

PAGE = "http://ui:4200/deployments/deployment/6f1c"
ROOT = Path(__file__).resolve().parents[2]


def test_the_replay_deployment_is_declared_on_the_pool_without_a_schedule() -> None:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = [d for d in doc["deployments"] if d["name"] == "hopper-replay"]
    assert f"hopper-replay/{deployment['name']}" == events.REPLAY_DEPLOYMENT
    assert deployment["work_pool"]["name"] == "hopper"
    assert not deployment.get("schedules") and not deployment.get("triggers")
    module, func = deployment["entrypoint"].split(":")
    source = (ROOT / module).read_text()
    assert f"def {func}(" in source and 'name="hopper-replay"' in source


def _form_parameters(url: str) -> dict[str, Any]:
    """What the UI's run form reads from a link: the JSON in ``?parameters=``."""
    parts = urlsplit(url)
    assert parts.path.endswith("/run")
    (raw,) = parse_qs(parts.query)["parameters"]
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def test_links_name_the_deployment_page_and_fill_in_the_run_form() -> None:
    assert deployment_url("http://ui:4200", "6f1c") == PAGE
    url = run_form_url(PAGE, {"targets": ["/in/a b&c.csv"], "dry_run": True})
    assert url.startswith(PAGE + "/run?parameters=")
    assert " " not in url and "&" not in url.split("?", 1)[1]  # one query parameter, encoded
    assert _form_parameters(url) == {"targets": ["/in/a b&c.csv"], "dry_run": True}
    local = FileRef(uri="file:///in/sales/a%20b.csv", size=1, mtime=1.0)
    assert _form_parameters(file_replay_url(PAGE, local) or "") == {
        "targets": ["/in/sales/a b.csv"]
    }
    remote = FileRef(uri="s3://landing/sales/x.csv", size=1, mtime=1.0)
    assert _form_parameters(file_replay_url(PAGE, remote) or "") == {
        "targets": ["s3://landing/sales/x.csv"]
    }
    assert file_replay_url(None, local) is None


class FakeClient:
    """Prefect's client, as far as the page look-up uses it."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read_deployment_by_name(self, name: str) -> Any:
        self.asked.append(name)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeDeployment:
    id = "6f1c"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient([])
    monkeypatch.setattr(prefect.client.orchestration, "get_client", lambda **_: fake)
    monkeypatch.setattr(prefect_api, "_replay_pages", {})
    return fake


def test_the_page_is_looked_up_once_per_process(client: FakeClient) -> None:
    client.answers += [ConnectionError("down"), FakeDeployment()]
    with temporary_settings(updates={PREFECT_API_URL: "http://ui:4200/api"}):
        assert replay_deployment_page(now=0.0) is None  # the server is down: no link, no error
        assert replay_deployment_page(now=10.0) is None  # not asked again at once
        assert replay_deployment_page(now=prefect_api.REPLAY_PAGE_RETRY + 1) == PAGE
        for t in (400.0, 1000.0, 3000.0):
            assert replay_deployment_page(now=t) == PAGE
    assert client.asked == [events.REPLAY_DEPLOYMENT] * 2


def test_no_server_configured_means_no_link_and_no_call(client: FakeClient) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert replay_deployment_page() is None
    assert client.asked == []


def test_the_reason_file_names_both_ways_to_replay(
    home: HopperConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quarantine_module, "replay_deployment_page", lambda: PAGE)
    path = home.sources[0].path / "people" / "bad.csv"
    path.parent.mkdir(parents=True)
    path.write_text("id\nx\n")
    ref = describe_file(path, "people/bad.csv", [])
    assert ref is not None
    now = datetime(2024, 5, 6, tzinfo=UTC)
    outcome = quarantine_module.quarantine(
        home, ref, TerminalError("bad id"), None, "run-1", now, None, None
    )
    reason = json.loads(Path(f"{outcome.quarantine_path}.error.json").read_text())
    assert reason["replay"] == f"hopper replay {path}"
    assert reason["replay_url"].startswith(PAGE + "/run?")
    assert _form_parameters(reason["replay_url"]) == {"targets": [str(path)]}

    monkeypatch.setattr(quarantine_module, "replay_deployment_page", lambda: None)
    outcome = quarantine_module.quarantine(
        home, ref, TerminalError("bad id"), None, "run-2", now, None, None
    )
    assert (
        json.loads(Path(f"{outcome.quarantine_path}.error.json").read_text())["replay_url"] is None
    )


class Sent(list[HopperEvent]):
    def __call__(self, event: HopperEvent) -> bool:
        self.append(event)
        return True


def _fail(ledger: Ledger, name: str, state: FileState = FileState.QUARANTINED) -> FileRef:
    ref = FileRef(uri=f"file:///in/sales/{name}", size=1, mtime=1.0, dataset="sales")
    ledger.record_detected(ref)
    outcome = IngestOutcome(
        uri=ref.uri, fingerprint=ref.fingerprint, dataset="sales", state=state, reason="bad"
    )
    ledger.finish(outcome, "run-1")
    return ref


def test_alerts_carry_the_run_form(tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url(tmp_path))
    policy = AlertPolicy(hold_seconds=5, max_hold_seconds=60, digest_threshold=3)
    asked: list[int] = []

    def page() -> str:
        asked.append(1)
        return PAGE

    sent = Sent()
    dispatcher = AlertDispatcher(ledger, policy, sent, "http://ui:4200", replay_page=page)
    assert dispatcher.tick().empty and asked == []  # nothing to send: nothing looked up
    _fail(ledger, "a.csv")
    dispatcher.tick(ledger.pending_alerts()[0].updated_at + 10)
    (alert,) = sent
    assert isinstance(alert, FileAlert)
    assert _form_parameters(alert.payload.replay_url) == {"targets": ["/in/sales/a.csv"]}
    assert alert.payload.replay == "hopper replay /in/sales/a.csv"

    for i in range(5):
        _fail(ledger, f"storm{i}.csv")
    dispatcher.tick(max(r.updated_at for r in ledger.pending_alerts()) + 10)
    digest = sent[-1]
    assert isinstance(digest, DigestAlert)
    assert _form_parameters(digest.payload.replay_url) == events.DIGEST_REPLAY_PARAMETERS

    quiet, other = Sent(), Ledger(sqlite_url(tmp_path / "other"))
    _fail(other, "b.csv")
    AlertDispatcher(other, policy, quiet, replay_page=lambda: None).tick(
        other.pending_alerts()[0].updated_at + 10
    )
    assert isinstance(quiet[0], FileAlert) and quiet[0].payload.replay_url == ""


def test_status_failures_name_both_ways_to_replay(tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url(tmp_path))
    _fail(ledger, "a.csv")
    _fail(ledger, "b.csv", FileState.FAILED)
    doc = summary(ledger, "http://ui:4200", replay_page=lambda: PAGE)
    by_name = {Path(f["uri"]).name: f for f in doc["failures"]}
    assert by_name["b.csv"]["replay"] == "hopper replay /in/sales/b.csv"
    assert _form_parameters(by_name["b.csv"]["replay_url"]) == {"targets": ["/in/sales/b.csv"]}
    assert summary(ledger, "http://ui:4200")["failures"][0]["replay_url"] is None

    clean = Ledger(sqlite_url(tmp_path / "clean"))
    asked: list[int] = []
    summary(clean, "http://ui:4200", replay_page=lambda: asked.append(1) or PAGE)
    assert asked == []  # no failure: the page is not looked up


def test_a_replay_names_or_selects_something() -> None:
    with pytest.raises(HopperError, match="name files to replay"):
        selection([])
    with pytest.raises(HopperError, match="30m"):
        selection([], quarantined=True, since="yesterday")
    sel = selection(["/in/a.csv"], failed=True, dataset="sales", since="2h")
    assert (sel.targets, sel.failed, sel.dataset, sel.since_seconds) == (
        ["/in/a.csv"],
        True,
        "sales",
        7200.0,
    )


class Runs:
    """A Prefect server that starts runs (and can be down)."""

    api_url = "http://ui:4200/api"

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.started: list[IngestRequest] = []

    def healthy(self) -> bool:
        return self.up

    def create_ingest_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        self.started.append(IngestRequest.model_validate(parameters["request"]))
        return f"run-{len(self.started)}"


def _quarantined(home: HopperConfig, ledger: Ledger, name: str) -> FileRecord:
    path = home.sources[0].path / "people" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id\nx\n")
    ref = describe_file(path, f"people/{name}", [])
    assert ref is not None
    ledger.record_detected(ref)
    ledger.claim(ref, "run-0")
    outcome = IngestOutcome(
        uri=ref.uri,
        fingerprint=ref.fingerprint,
        dataset="people",
        state=FileState.QUARANTINED,
        reason="column 'id': not int64 | x\nmore",
    )
    ledger.finish(outcome, "run-0")
    record = ledger.latest(ref.uri)
    assert record is not None
    return record


def test_run_replay_dry_run_and_for_real(
    home: HopperConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(sqlite_url(tmp_path / "state"))
    a = _quarantined(home, ledger, "a.csv")
    _quarantined(home, ledger, "b.csv")
    sel = selection([], quarantined=True)

    dry = run_replay(ledger, home, None, sel, dry_run=True)
    assert sorted(Path(f.record.uri).name for f in dry.files) == ["a.csv", "b.csv"]
    assert dry.started == [] and ledger.latest(a.uri).state is FileState.QUARANTINED  # type: ignore[union-attr]
    text = report_markdown(dry, "http://ui:4200")
    assert text.startswith("# Dry run: 2 files would be replayed")
    assert "| quarantined | column 'id': not int64 \\| x |" in text and "more" not in text
    monkeypatch.setattr(replay_module, "REPORT_ROWS", 1)
    assert report_markdown(dry, "http://ui:4200").endswith("… and 1 more")

    with pytest.raises(HopperError, match="does not answer"):
        run_replay(ledger, home, Runs(up=False), sel)
    assert ledger.latest(a.uri).state is FileState.QUARANTINED  # type: ignore[union-attr]

    runs = Runs()
    done = run_replay(ledger, home, runs, sel)
    assert [r.replay for r in runs.started] == [True, True]
    assert sorted(run for _, run in done.started) == ["run-1", "run-2"]
    assert all(f.record.state is FileState.QUARANTINED for f in done.files)  # the state before
    text = report_markdown(done, "http://ui:4200")
    assert text.startswith("# Replayed 2 files")
    assert "| state before | reason | new run |" in text
    assert "[run-1](http://ui:4200/runs/flow-run/run-1)" in text
    assert f"`{a.uri}`" in text


def test_an_empty_report_says_so() -> None:
    assert "No file matched" in report_markdown(ReplayReport(False, []), "http://ui")
