"""Prometheus metrics: what the watcher and the warm worker count, served on ``/metrics``.

Each process keeps its own registry (:data:`REGISTRY`) and serves it on the port that
``hopper.yaml``'s ``metrics:`` block gives it (:func:`serve`). The watcher counts files
detected and dispatched, dispatch retries and alerts, and reports the backlog, read from the
ledger at scrape time in one grouped query. The warm worker runs flows in its own
interpreter, so the flows' single call per outcome or batch (:func:`observe`) lands in the
registry it serves; a plain ``prefect worker`` runs each flow in a fresh process, whose
counts are lost.

What is measured:

- ``hopper_ingest_duration_seconds``: the outcome's own ``seconds`` (read, validate,
  transform, write of one file, retries included).
- ``hopper_drop_to_lake_seconds``: from the file's modification time (the end of the drop;
  an S3 object's ``LastModified``) to the moment the worker has recorded the outcome in the
  ledger (for a batch, the batch's last outcome), for ingested files only. Clock skew
  between the source's clock and the worker's shows here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hopper.errors import TransientError
from hopper.ledger.tables import files
from hopper.models import FileRef, FileState, IngestOutcome

if TYPE_CHECKING:
    from hopper.alerts import AlertPlan
    from hopper.config import MetricsOptions
    from hopper.ledger import FileRecord, Ledger

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

_FILE_LABELS = ("dataset", "source")
_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))
PENDING = tuple(
    s.value for s in (FileState.DETECTED, FileState.DISPATCHED, FileState.QUEUED, FileState.RUNNING)
)

DETECTED = Counter(
    "hopper_files_detected", "File versions newly recorded by the watcher.", _FILE_LABELS,
    registry=REGISTRY,
)  # fmt: skip
DISPATCHED = Counter(
    "hopper_files_dispatched", "File versions sent to Prefect (each send counts).", _FILE_LABELS,
    registry=REGISTRY,
)  # fmt: skip
DISPATCH_RETRIES = Counter(
    "hopper_dispatch_retries",
    "File versions sent again because no flow run was seen for them.",
    _FILE_LABELS,
    registry=REGISTRY,
)
ALERTS = Counter(
    "hopper_alerts_sent", "Alerts sent by the watcher, by kind (file or digest).", ("kind",),
    registry=REGISTRY,
)  # fmt: skip
OUTCOMES = Counter(
    "hopper_files_processed",
    "File versions settled by a worker, by outcome (ingested, quarantined, failed).",
    (*_FILE_LABELS, "outcome"),
    registry=REGISTRY,
)
ROWS_IN = Counter("hopper_rows_in", "Rows read from sources.", _FILE_LABELS, registry=REGISTRY)
ROWS_OUT = Counter("hopper_rows_out", "Rows written to the lake.", _FILE_LABELS, registry=REGISTRY)
BYTES_IN = Counter(
    "hopper_bytes_in", "Bytes of source files settled by a worker.", _FILE_LABELS,
    registry=REGISTRY,
)  # fmt: skip
DURATION = Histogram(
    "hopper_ingest_duration_seconds",
    "Time spent ingesting one file (the outcome's seconds), by outcome.",
    ("dataset", "outcome"),
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
LATENCY = Histogram(
    "hopper_drop_to_lake_seconds",
    "From a file's modification time to its ingested outcome in the ledger.",
    ("dataset",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)


def source_of(uri: str) -> str:
    """The ``source`` label of a file: the kind of place it came from (``file`` or ``s3``)."""
    return uri.split("://", 1)[0] if "://" in uri else "file"


def _labels(ref: FileRef) -> tuple[str, str]:
    return ref.dataset or "unrouted", source_of(ref.uri)


def detected(refs: Iterable[FileRef]) -> None:
    """Count file versions the watcher has just recorded."""
    for ref in refs:
        DETECTED.labels(*_labels(ref)).inc()


def dispatched(records: Iterable[FileRecord]) -> None:
    """Count versions sent to Prefect, and among them those sent before (retries)."""
    for record in records:
        labels = _labels(record.ref)
        DISPATCHED.labels(*labels).inc()
        if record.dispatch_count:
            DISPATCH_RETRIES.labels(*labels).inc()


def alerted(plan: AlertPlan | None) -> None:
    """Count what an alert tick planned: one alert per file, or one digest for many."""
    if plan is not None:
        alerts_sent(len(plan.individual), 1 if plan.digest else 0)


def alerts_sent(files_alerted: int, digests: int) -> None:
    """Count alerts the watcher sent: one per file, or one digest for many."""
    if files_alerted:
        ALERTS.labels("file").inc(files_alerted)
    if digests:
        ALERTS.labels("digest").inc(digests)


def observe(
    outcomes: Iterable[IngestOutcome], refs: Mapping[str, FileRef], now: float | None = None
) -> None:
    """Count a run's outcomes once they are in the ledger (one call per file or batch run).

    Args:
        outcomes: the settled outcomes.
        refs: each outcome's file by URI (for its size and modification time).
        now: when they were recorded (default: now).
    """
    now = time.time() if now is None else now
    for outcome in outcomes:
        ref = refs.get(outcome.uri)
        dataset = outcome.dataset or (ref.dataset if ref else None) or "unrouted"
        labels = (dataset, source_of(outcome.uri))
        state = outcome.state.value
        OUTCOMES.labels(*labels, state).inc()
        ROWS_IN.labels(*labels).inc(outcome.rows_in)
        ROWS_OUT.labels(*labels).inc(outcome.rows_out)
        DURATION.labels(dataset, state).observe(outcome.seconds)
        if ref is not None:
            BYTES_IN.labels(*labels).inc(ref.size)
            if outcome.state is FileState.INGESTED:
                LATENCY.labels(dataset).observe(max(0.0, now - ref.mtime))


def _size_column(dialect: str) -> sa.ColumnElement[int]:
    """A file's size, read from the JSON of its ``ref`` column inside the database."""
    if dialect == "sqlite":  # SQLite has no JSON type: CAST(... AS JSON) would make it a number
        return sa.cast(sa.func.json_extract(files.c.ref, "$.size"), sa.BigInteger)
    return sa.cast(sa.cast(files.c.ref, sa.JSON)["size"].as_string(), sa.BigInteger)


class BacklogCollector(Collector):
    """Backlog gauges per dataset, read from the ledger at scrape time in one grouped query.

    Pending means not yet settled: detected, dispatched, queued or running. A dataset once
    seen (or named in ``datasets``) keeps reporting 0 when its backlog is empty.
    """

    def __init__(self, ledger: Ledger, datasets: Iterable[str] = ()) -> None:
        self.ledger = ledger
        self.known = set(datasets)

    def backlog(self, now: float | None = None) -> dict[str, tuple[int, int, float]]:
        """``dataset → (pending files, pending bytes, age in seconds of the oldest)``."""
        now = time.time() if now is None else now
        size = _size_column(self.ledger.engine.dialect.name)
        query = (
            sa.select(
                files.c.dataset,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(size), 0),
                sa.func.min(files.c.detected_at),
            )
            .where(files.c.state.in_(PENDING))
            .group_by(files.c.dataset)
        )
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = {
            (name or "unrouted"): (int(n), int(nbytes), max(0.0, now - float(oldest)))
            for name, n, nbytes, oldest in rows
        }
        self.known |= set(found)
        return {name: found.get(name, (0, 0, 0.0)) for name in sorted(self.known)}

    def collect(self) -> Iterator[Metric]:
        """The three backlog gauges; none when the ledger cannot be read just now."""
        try:
            backlog = self.backlog()
        except (TransientError, sa.exc.OperationalError) as exc:
            log.warning("metrics: cannot read the backlog from the ledger: %s", exc)
            return
        gauges = (
            GaugeMetricFamily(
                "hopper_backlog_files", "File versions not yet settled.", labels=["dataset"]
            ),
            GaugeMetricFamily(
                "hopper_backlog_bytes", "Bytes of unsettled file versions.", labels=["dataset"]
            ),
            GaugeMetricFamily(
                "hopper_backlog_oldest_seconds",
                "Age of the oldest unsettled file version since detection (0: none).",
                labels=["dataset"],
            ),
        )
        for dataset, values in backlog.items():
            for gauge, value in zip(gauges, values, strict=True):
                gauge.add_metric([dataset], value)
        yield from gauges

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the registry must not query the ledger when this is added."""
        return iter(())


def watch_backlog(ledger: Ledger, datasets: Iterable[str] = ()) -> BacklogCollector:
    """Report ``ledger``'s backlog in :data:`REGISTRY` (the watcher does this once)."""
    collector = BacklogCollector(ledger, datasets)
    REGISTRY.register(collector)
    return collector


def serve(options: MetricsOptions, port: int, what: str) -> str | None:
    """Serve :data:`REGISTRY` on ``options.host:port``; return the URL, or None if not served.

    Off in the options: None. A port already in use logs one warning and the process goes
    on without metrics.
    """
    if not options.enabled:
        return None
    try:
        start_http_server(port, addr=options.host, registry=REGISTRY)
    except OSError as exc:
        log.warning(
            "metrics: the %s cannot listen on %s:%d (%s); carrying on without /metrics "
            "(set metrics.%s_port in hopper.yaml to a free port)",
            what,
            options.host,
            port,
            exc.strerror or exc,
            what,
        )
        return None
    url = metrics_url(options.host, port)
    log.info("metrics: the %s serves %s", what, url)
    return url


def metrics_url(host: str, port: int) -> str:
    """The URL of an endpoint."""
    return f"http://{host}:{port}/metrics"
