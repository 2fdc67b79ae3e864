"""The Iceberg table lake under a real `hopper up`: bursts, a killed worker, a new version.

A `hopper up` of its own with ``lake.format: iceberg`` (the embedded SQLite catalog at
``.hopper/catalog.db``), a short lease and batches of 100. The table is read the way a user
reads it, with pyiceberg from the catalog file; the ledger says what Hopper recorded.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.data import write_small_files
from bench.procs import HopperUp, Profile, hopper_cli
from pyiceberg.catalog import load_catalog

from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileState
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration]

DATASET = "tbl"
LEASE = 10.0
ICEBERG = "lake:\n  path: lake\n  format: iceberg\n"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HopperUp]:
    profile = Profile(
        "iceberg",
        extra_yaml="watch:\n  batch_max_files: 100\n",
        env=(("HOPPER_LEASE_SECONDS", str(LEASE)),),
        lake_yaml=ICEBERG,
    )
    with HopperUp(tmp_path_factory.mktemp("tables"), [DATASET], profile) as running:
        yield running


def _table(up: HopperUp) -> Any:
    uri = f"sqlite:///{up.root / '.hopper' / 'catalog.db'}"
    return load_catalog("hopper", type="sql", uri=uri).load_table(f"hopper.{DATASET}")


def _ingested(up: HopperUp) -> int:
    ledger = Ledger(sqlite_url(up.root / ".hopper"))
    try:
        return sum(r.state is FileState.INGESTED for r in ledger.records(dataset=DATASET))
    finally:
        ledger.close()


def _rows_of(paths: list[Path]) -> dict[str, int]:
    """Data rows per source URI, from the files themselves."""
    return {p.as_uri(): len(p.read_bytes().splitlines()) - 1 for p in paths}


def _burst(up: HopperUp, tmp: Path, count: int, prefix: str) -> list[Path]:
    paths = write_small_files(tmp / prefix, count, prefix, seed=11)
    inbox = up.inbox(DATASET)
    for path in paths:
        os.replace(path, inbox / path.name)
    return [inbox / p.name for p in paths]


def _per_source(table: Any) -> Counter[str]:
    scan = table.scan(selected_fields=("_source_uri",))
    return Counter(scan.to_arrow()["_source_uri"].to_pylist())


def test_a_burst_lands_exactly_once_in_a_handful_of_data_files(
    up: HopperUp, tmp_path: Path
) -> None:
    paths = _burst(up, tmp_path, 300, "a")
    wait_for(lambda: _ingested(up) >= 300, 180, "300 files ingested")
    table = _table(up)
    assert _per_source(table) == Counter(_rows_of(paths))
    appends = [s for s in table.snapshots() if s.summary.operation.value == "append"]
    files = table.inspect.files().num_rows
    assert files <= len(appends) <= 30  # a batch is one append of one data file
    assert not list((up.root / "lake" / "_staging").rglob("*.staged"))


def test_a_worker_killed_mid_burst_loses_and_duplicates_nothing(
    up: HopperUp, tmp_path: Path
) -> None:
    before = _ingested(up)
    paths = _burst(up, tmp_path, 300, "k")
    wait_for(lambda: _ingested(up) >= before + 60, 120, "a fifth of the burst")
    os.kill(up.worker_pid(), signal.SIGKILL)  # `hopper up` starts another
    wait_for(lambda: _ingested(up) >= before + 300, LEASE + 180, "the whole burst")
    counts = _per_source(_table(up))
    expected = _rows_of(paths)
    assert {uri: counts[uri] for uri in expected} == expected


def test_a_new_version_replaces_its_rows_atomically(up: HopperUp, tmp_path: Path) -> None:
    (path,) = _burst(up, tmp_path, 1, "v")
    wait_for(lambda: _per_source(_table(up))[path.as_uri()], 60, "the first version")
    table = _table(up)
    old_snapshot = table.current_snapshot().snapshot_id
    old_total = table.scan().to_arrow().num_rows
    old_rows = _rows_of([path])[path.as_uri()]
    seen: set[int] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.add(_table(up).scan(selected_fields=("_source_uri",)).to_arrow().num_rows)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    staged = tmp_path / "v2.csv"
    staged.write_bytes(path.read_bytes() + b"999999,1.00,Oslo,2024-01-01\n")
    os.replace(staged, path)  # a new version of the same file, one more row
    try:
        wait_for(
            lambda: _per_source(_table(up))[path.as_uri()] == old_rows + 1,
            60,
            "the new version",
        )
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join(timeout=30)
    assert seen <= {old_total, old_total + 1}, seen  # the old rows or the new, never both
    back = _table(up).scan(snapshot_id=old_snapshot, selected_fields=("_source_uri",))
    assert Counter(back.to_arrow()["_source_uri"].to_pylist())[path.as_uri()] == old_rows


def test_replay_waits_and_names_the_snapshot_it_made(up: HopperUp) -> None:
    path = sorted(up.inbox(DATASET).glob("a-*.csv"))[0]
    before = _table(up).current_snapshot().snapshot_id
    done = hopper_cli(
        "replay", str(path), "--wait", "--timeout", "90",
        env={**up.cli_env(), "COLUMNS": "200"}, timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    table = _table(up)
    after = table.current_snapshot().snapshot_id
    assert after != before
    assert f"hopper.{DATASET}@{after}" in done.stdout
    assert _per_source(table)[path.as_uri()] == _rows_of([path])[path.as_uri()]
