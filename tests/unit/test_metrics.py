"""hopper.metrics: counters from outcomes, the backlog from one ledger query, a busy port."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from hopper import metrics
from hopper.config import MetricsOptions
from hopper.ledger import FileRecord, Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome


def _ref(name: str, dataset: str = "sales", size: int = 100, mtime: float = 1000.0) -> FileRef:
    return FileRef(uri=f"file:///in/{dataset}/{name}", size=size, mtime=mtime, dataset=dataset)


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(sqlite_url(tmp_path))
    yield book
    book.close()


def test_observe_counts_outcomes_rows_bytes_and_latency() -> None:
    ok, bad = _ref("ok.csv", "m_observe", size=300), _ref("bad.csv", "m_observe", size=50)
    outcomes = [
        IngestOutcome.of(
            ok, FileState.INGESTED, rows_in=10, rows_out=9, bytes_out=700, seconds=0.2
        ),
        IngestOutcome.of(bad, FileState.QUARANTINED, rows_in=4, seconds=0.1),
    ]
    labels = {"dataset": "m_observe", "source": "file"}
    metrics.observe(outcomes, {ok.uri: ok, bad.uri: bad}, now=1012.0)
    assert _value("hopper_files_processed_total", **labels, outcome="ingested") == 1
    assert _value("hopper_files_processed_total", **labels, outcome="quarantined") == 1
    assert _value("hopper_rows_in_total", **labels) == 14
    assert _value("hopper_rows_out_total", **labels) == 9
    assert _value("hopper_bytes_in_total", **labels) == 350
    assert _value("hopper_bytes_out_total", **labels) == 700
    # only the ingested file's latency, from its mtime: 12 s
    assert _value("hopper_drop_to_lake_seconds_count", dataset="m_observe") == 1
    assert _value("hopper_drop_to_lake_seconds_sum", dataset="m_observe") == 12.0
    assert (
        _value("hopper_ingest_duration_seconds_count", dataset="m_observe", outcome="quarantined")
        == 1
    )


def test_observe_sums_a_batch_per_label_set_exactly_as_file_by_file() -> None:
    a = [_ref(f"a{i}.csv", "m_sum_a", size=10 + i, mtime=1000.0 + i) for i in range(3)]
    b = [_ref(f"b{i}.csv", "m_sum_b", size=5) for i in range(2)]
    outcomes = [
        *(
            IngestOutcome.of(r, FileState.INGESTED, rows_in=4, rows_out=3, bytes_out=7, seconds=0.5)
            for r in a
        ),
        *(IngestOutcome.of(r, FileState.QUARANTINED, rows_in=2, seconds=2.0) for r in b),
        IngestOutcome.of(_ref("gone.csv", "m_sum_a"), FileState.FAILED, seconds=0.0),
    ]
    metrics.observe(outcomes, {r.uri: r for r in [*a, *b]}, now=1010.0)
    in_a = {"dataset": "m_sum_a", "source": "file"}
    in_b = {"dataset": "m_sum_b", "source": "file"}
    assert _value("hopper_files_processed_total", **in_a, outcome="ingested") == 3
    assert _value("hopper_files_processed_total", **in_a, outcome="failed") == 1
    assert _value("hopper_files_processed_total", **in_b, outcome="quarantined") == 2
    assert (_value("hopper_rows_in_total", **in_a), _value("hopper_rows_in_total", **in_b)) == (
        12,
        4,
    )
    assert _value("hopper_rows_out_total", **in_a) == 9
    assert _value("hopper_bytes_out_total", **in_a) == 21
    # the file without a ref (not in the mapping) adds no bytes in and no latency
    assert (_value("hopper_bytes_in_total", **in_a), _value("hopper_bytes_in_total", **in_b)) == (
        33,
        10,
    )
    assert _value("hopper_drop_to_lake_seconds_count", dataset="m_sum_a") == 3
    assert _value("hopper_drop_to_lake_seconds_sum", dataset="m_sum_a") == 10 + 9 + 8
    duration = {"dataset": "m_sum_b", "outcome": "quarantined"}
    assert _value("hopper_ingest_duration_seconds_count", **duration) == 2
    assert _value("hopper_ingest_duration_seconds_bucket", **duration, le="1.0") == 0
    assert _value("hopper_ingest_duration_seconds_bucket", **duration, le="2.5") == 2


def _record(ref: FileRef, dispatch_count: int) -> FileRecord:
    return FileRecord(
        ref.uri, ref.fingerprint, ref.dataset, FileState.DISPATCHED, ref, "d", 1.0,
        dispatch_count, None, None, None, 1.0, 1.0,
    )  # fmt: skip


def test_detected_dispatched_retries_and_alerts() -> None:
    ref = _ref("a.csv", "m_watch")
    metrics.detected([ref])
    metrics.dispatched([_record(ref, 0)])
    metrics.dispatched([_record(ref, 1)])  # sent before, no run seen: a retry
    other = _ref("b.csv", "m_watch_2")
    metrics.detected([other, other])
    metrics.dispatched([_record(other, 0), _record(other, 2), _record(ref, 0)])
    metrics.alerts_sent(2, 1)
    metrics.alerted(None)  # the alert duty met a transient fault
    labels = {"dataset": "m_watch", "source": "file"}
    assert _value("hopper_files_detected_total", **labels) == 1
    assert _value("hopper_files_dispatched_total", **labels) == 3
    assert _value("hopper_dispatch_retries_total", **labels) == 1
    labels_2 = {"dataset": "m_watch_2", "source": "file"}
    assert _value("hopper_files_detected_total", **labels_2) == 2
    assert _value("hopper_files_dispatched_total", **labels_2) == 2
    assert _value("hopper_dispatch_retries_total", **labels_2) == 1
    assert _value("hopper_alerts_sent_total", kind="file") >= 2
    assert _value("hopper_alerts_sent_total", kind="digest") >= 1


def test_backlog_groups_pending_files_and_keeps_zeroes(ledger: Ledger) -> None:
    refs = [_ref("a.csv", size=10), _ref("b.csv", size=30), _ref("c.csv", "orders", size=5)]
    ledger.record_many(refs)
    collector = metrics.BacklogCollector(ledger, ["empty"])
    backlog = collector.backlog(now=ledger.get(refs[0].uri, refs[0].fingerprint).detected_at + 7)  # type: ignore[union-attr]
    assert backlog["sales"][:2] == (2, 40)
    assert backlog["sales"][2] == pytest.approx(7, abs=1)
    assert backlog["orders"][:2] == (1, 5)
    assert backlog["empty"] == (0, 0, 0.0)
    ledger.finish(IngestOutcome.of(refs[2], FileState.QUARANTINED, reason="bad"), None)
    assert collector.backlog()["orders"] == (0, 0, 0.0)  # settled, still reported

    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("hopper_backlog_files", {"dataset": "sales"}) == 2
    assert registry.get_sample_value("hopper_backlog_bytes", {"dataset": "orders"}) == 0


def test_serve_on_a_busy_port_warns_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        options = MetricsOptions(enabled=True, watcher_port=port)
        with caplog.at_level(logging.WARNING, logger="hopper.metrics"):
            assert metrics.serve(options, port, "watcher") is None
    assert "cannot listen" in caplog.text and str(port) in caplog.text


def test_serve_is_off_unless_enabled() -> None:
    assert metrics.serve(MetricsOptions(), 9461, "watcher") is None


def test_the_shipped_scrape_config_targets_the_default_ports() -> None:
    doc = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "prometheus.yml").read_text())
    targets = {t for c in doc["scrape_configs"][0]["static_configs"] for t in c["targets"]}
    d = MetricsOptions()
    assert targets == {f"{d.host}:{d.watcher_port}", f"{d.host}:{d.worker_port}"}


def test_the_dashboard_queries_only_metrics_hopper_serves(ledger: Ledger) -> None:
    path = Path(__file__).parents[2] / "deploy" / "grafana" / "hopper-dashboard.json"
    exprs = [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"]]
    queried = {name for e in exprs for name in re.findall(r"\bhopper_[a-z0-9_]+", e)}
    registry = CollectorRegistry()
    registry.register(metrics.BacklogCollector(ledger, ["sales"]))
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    served = {
        family.name + suffix
        for reg in (metrics.REGISTRY, registry)  # families even before any sample
        for family in reg.collect()
        for suffix in suffixes.get(family.type, [""])
    }
    assert queried and queried <= served, queried - served
