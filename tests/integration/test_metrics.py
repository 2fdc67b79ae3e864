"""Prometheus metrics from a real `hopper up`: the counters add up to the ledger's counts.

A `hopper up` of its own with ``metrics:`` enabled on two free ports. A burst of small good
files and a few bad ones lands in two datasets; then both endpoints are scraped over HTTP
until the worker's counters have caught up with the ledger, and must equal it exactly: per
dataset, files ingested and quarantined, rows out, one latency per ingested file; the
watcher's files detected, and a backlog of 0 once everything is settled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.data import small_csv, write_small_files
from bench.procs import HopperUp, Profile, free_port
from prometheus_client.parser import text_string_to_metric_families

from hopper.ledger import Ledger, sqlite_url

pytestmark = pytest.mark.integration

GOOD = {"m_sales": 100, "m_stock": 20}
BAD = {"m_sales": 2, "m_stock": 1}
BAD_CSV = b"id,amount,city,day\nnot-a-number,12.5,Paris,2024-01-01\n"
WATCHER_PORT, WORKER_PORT = free_port(), free_port()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HopperUp]:
    """A `hopper up` serving /metrics from its watcher and its worker."""
    profile = Profile(
        "metrics",
        extra_yaml=(
            "metrics:\n  enabled: true\n"
            f"  watcher_port: {WATCHER_PORT}\n  worker_port: {WORKER_PORT}\n"
        ),
    )
    with HopperUp(tmp_path_factory.mktemp("metrics"), list(GOOD), profile) as running:
        yield running


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of one endpoint: ``(name, sorted labels) → value``."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 if absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def settled(root: Path) -> dict[str, dict[str, int]]:
    """The ledger's files per dataset and state."""
    ledger = Ledger(sqlite_url(root / ".hopper"))
    try:
        return {dataset: ledger.dataset_day(dataset, 0.0) for dataset in GOOD}
    finally:
        ledger.close()


def test_counters_add_up_to_the_ledger(up: HopperUp) -> None:
    rows_out = {}
    for dataset, count in GOOD.items():
        write_small_files(up.inbox(dataset), count, prefix=dataset)
        rows_out[dataset] = sum(small_csv(i).count(b"\n") - 1 for i in range(count))
        for i in range(BAD[dataset]):
            (up.inbox(dataset) / f"bad-{i}.csv").write_bytes(BAD_CSV)

    expected = {d: {"ingested": GOOD[d], "quarantined": BAD[d]} for d in GOOD}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ledger = settled(up.root)
        worker = scrape(WORKER_PORT)
        done = all(
            ledger[d] == expected[d]
            and all(
                sample(worker, "hopper_files_processed_total", dataset=d, source="file", outcome=o)
                == n
                for o, n in expected[d].items()
            )
            for d in GOOD
        )
        if done:
            break
        time.sleep(2)
    assert ledger == expected

    watcher = scrape(WATCHER_PORT)
    for dataset in GOOD:
        labels = {"dataset": dataset, "source": "file"}
        for outcome, n in expected[dataset].items():
            got = sample(worker, "hopper_files_processed_total", **labels, outcome=outcome)
            assert got == n, (dataset, outcome)
        assert sample(worker, "hopper_files_processed_total", **labels, outcome="failed") == 0
        assert sample(worker, "hopper_rows_out_total", **labels) == rows_out[dataset]
        assert sample(worker, "hopper_bytes_in_total", **labels) > 0
        lake_bytes = sum(p.stat().st_size for p in up.lake(dataset).rglob("*.parquet"))
        assert sample(worker, "hopper_bytes_out_total", **labels) == lake_bytes > 0
        latencies = sample(worker, "hopper_drop_to_lake_seconds_count", dataset=dataset)
        assert latencies == GOOD[dataset]
        total = GOOD[dataset] + BAD[dataset]
        assert sample(watcher, "hopper_files_detected_total", **labels) == total
        assert sample(watcher, "hopper_files_dispatched_total", **labels) >= total
        assert ("hopper_backlog_files", (("dataset", dataset),)) in watcher
        assert sample(watcher, "hopper_backlog_files", dataset=dataset) == 0
        assert sample(watcher, "hopper_backlog_bytes", dataset=dataset) == 0

    log = up.log_path.read_text()  # `hopper up` names both endpoints beside the Prefect UI
    assert f"http://127.0.0.1:{WATCHER_PORT}/metrics" in log
    assert f"http://127.0.0.1:{WORKER_PORT}/metrics" in log
