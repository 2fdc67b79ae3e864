"""Source clean-up under a real `hopper up` with ``after_ingest: archive`` on its inbox.

Ingested files really leave the inbox for ``archive/<dataset>/<day>/``; a rejected file
stays; rescans and a restarted watcher ingest nothing twice; a clean-up whose watcher was
killed is finished by the next one; ``hopper replay`` of an archived file brings it back,
lands it again in the same output, and archives it again.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.data import small_csv
from bench.procs import HopperUp, Profile, hopper_cli

from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileState, file_uri

pytestmark = [pytest.mark.integration]

DATASET = "archived"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HopperUp]:
    profile = Profile(
        "cleanup",
        extra_yaml=(
            "sources:\n  - path: inbox\n    after_ingest: archive\nwatch:\n  rescan_seconds: 2\n"
        ),
    )
    with HopperUp(tmp_path_factory.mktemp("cleanup"), [DATASET], profile) as running:
        yield running


def _drop(up: HopperUp, name: str, content: bytes) -> Path:
    staged = up.root / "staging" / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(content)
    target = up.inbox(DATASET) / name
    os.replace(staged, target)  # a move-in, as a careful producer does
    return target


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _archived(up: HopperUp) -> dict[str, Path]:
    root = up.root / "archive" / DATASET
    found = root.rglob("*.csv") if root.exists() else iter(())
    return {p.name: p for p in found}


@pytest.fixture
def ledger(up: HopperUp) -> Iterator[Ledger]:
    """The home's ledger, read by the test (closed after it, so nothing writes it later)."""
    opened = Ledger(sqlite_url(up.root / ".hopper"))
    yield opened
    opened.close()


def _ingestions(ledger: Ledger, uri: str) -> int:
    return sum(h["event"] == "ingested" for h in ledger.history(uri))


def test_ingested_files_are_archived_once_and_rejected_ones_stay(
    up: HopperUp, ledger: Ledger
) -> None:
    names = [f"f{i}.csv" for i in range(3)]
    paths = [_drop(up, name, small_csv(i)) for i, name in enumerate(names)]
    bad = _drop(up, "bad.csv", b"nothing,like,the,contract\n1,2,3,4\n")
    _wait(lambda: set(_archived(up)) >= set(names), 120, "three archived files")
    assert not any(p.exists() for p in paths)
    for i, name in enumerate(names):
        assert _archived(up)[name].read_bytes() == small_csv(i)
    _wait(
        lambda: ledger.latest(file_uri(bad)) and ledger.latest(file_uri(bad)).state.is_final,
        60,
        "bad",
    )  # type: ignore[union-attr]
    time.sleep(8)  # rescans pass (every 2 s) and clean-up ticks (every 5 s)
    assert bad.exists(), "a quarantined file stays where it is"
    assert "bad.csv" not in _archived(up)
    for path in paths:
        record = ledger.latest(file_uri(path))
        assert record is not None and record.cleanup == "archived"
        assert record.archived_uri == _archived(up)[path.name].as_uri()
        assert len(ledger.versions(file_uri(path))) == 1
        assert _ingestions(ledger, file_uri(path)) == 1
        events = [h["event"] for h in ledger.history(file_uri(path))]
        assert events.count("archived") == 1
    assert len(list(up.lake(DATASET).rglob("*.parquet"))) == 3


def test_a_killed_watcher_finishes_the_clean_up_and_ingests_nothing_twice(
    up: HopperUp, ledger: Ledger
) -> None:
    path = _drop(up, "late.csv", small_csv(10))
    uri = file_uri(path)
    _wait(
        lambda: (r := ledger.latest(uri)) is not None and r.state is FileState.INGESTED,
        120,
        "late.csv ingested",
    )
    watcher = int(up.state()["children"]["watcher"])
    os.kill(watcher, signal.SIGKILL)  # whatever it was doing, the clean-up included
    _wait(lambda: "late.csv" in _archived(up), 120, "late.csv archived by the next watcher")
    _wait(lambda: ledger.latest(uri).cleanup == "archived", 30, "the ledger")  # type: ignore[union-attr]
    assert not path.exists()
    assert _ingestions(ledger, uri) == 1 and len(ledger.versions(uri)) == 1
    assert [h["event"] for h in ledger.history(uri)].count("archived") == 1


def test_a_replay_of_an_archived_file_lands_again_from_the_archive(
    up: HopperUp, ledger: Ledger
) -> None:
    path = up.inbox(DATASET) / "f0.csv"
    uri = file_uri(path)
    _wait(lambda: "f0.csv" in _archived(up), 120, "f0.csv archived")
    lake_before = sorted(p.name for p in up.lake(DATASET).rglob("*.parquet"))
    result = hopper_cli("replay", str(path), "--wait", env=up.cli_env(), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ingestions(ledger, uri) == 2
    _wait(lambda: not path.exists() and "f0.csv" in _archived(up), 60, "f0.csv archived again")
    assert _archived(up)["f0.csv"].read_bytes() == small_csv(0)
    assert sorted(p.name for p in up.lake(DATASET).rglob("*.parquet")) == lake_before
    assert len(ledger.versions(uri)) == 1
    claim = _archived(up)["f0.csv"].with_name("f0.csv.source.json")
    assert json.loads(claim.read_text())["uri"] == uri
