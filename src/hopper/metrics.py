"""Prometheus metrics: what the watcher and the warm worker count, served on ``/metrics``.

Each process keeps its own registry (:data:`REGISTRY`) and serves it on the port that
``hopper.yaml``'s ``metrics:`` block gives it (:func:`serve`). The watcher counts files
detected and dispatched, dispatch retries and alerts, and reports the backlog, read from the
ledger at scrape time in one grouped query. The warm worker runs flows in its own
interpreter, so the flows' single call per outcome or batch (:func:`observe`) lands in the
registry it serves; a plain ``prefect worker`` runs each flow in a fresh process, whose
counts are lost. For S3 sources the watcher also counts the SQS messages it receives and
deletes (per queue name, never the full URL), and reports each listing cursor's age
(:class:`ListingAgeCollector`).

What is measured:

- ``hopper_ingest_duration_seconds``: the outcome's own ``seconds`` (read, validate,
  transform, write of one file, retries included).
- ``hopper_drop_to_lake_seconds``: from the file's modification time (the end of the drop;
  an S3 object's ``LastModified``) to the moment the worker has recorded the outcome in the
  ledger (for a batch, the batch's last outcome), for ingested files only. Clock skew
  between the source's clock and the worker's shows here.
- ``hopper_sqs_messages_received`` / ``hopper_sqs_messages_deleted``: every message one
  ``ReceiveMessage`` call returned (unreadable ones included), and every message SQS
  confirmed deleted (after its refs were recorded, or at once if it named nothing to ingest).
  The difference is what is in flight or left for the dead-letter queue.
- ``hopper_s3_listing_cursor_age_seconds``: seconds since the end of the last complete
  listing whose finds the daemon has since recorded, so the cursor holds everything that
  listing saw. Absent until a source's first such listing; growing past a few
  ``listing_seconds`` means listings fail or the daemon cannot record what they find.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

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
BYTES_OUT = Counter(
    "hopper_bytes_out", "Parquet bytes written to the lake (staged, for a table lake).",
    _FILE_LABELS, registry=REGISTRY,
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
SQS_RECEIVED = Counter(
    "hopper_sqs_messages_received",
    "SQS messages received by the watcher for an S3 source (unreadable ones included).",
    ("queue", "source"),
    registry=REGISTRY,
)
SQS_DELETED = Counter(
    "hopper_sqs_messages_deleted",
    "SQS messages the watcher deleted (recorded, or naming nothing to ingest).",
    ("queue", "source"),
    registry=REGISTRY,
)


def source_of(uri: str) -> str:
    """The ``source`` label of a file: the kind of place it came from (``file`` or ``s3``)."""
    return uri.split("://", 1)[0] if "://" in uri else "file"


def _labels(ref: FileRef) -> tuple[str, str]:
    return ref.dataset or "unrouted", source_of(ref.uri)


_Totals = Tally[tuple[Counter, tuple[str, ...]]]
"""Amounts to add, by counter and label values."""
_Samples = dict[tuple[Histogram, tuple[str, ...]], list[float]]
"""Values to observe, by histogram and label values."""


def _add(totals: _Totals) -> None:
    """Add each summed amount to its counter: one label lookup per counter and label set (a
    batch's thousands of files share a few sets), not one per file."""
    for (counter, labels), amount in totals.items():
        counter.labels(*labels).inc(amount)


def _observe(samples: _Samples) -> None:
    """Observe each value in its histogram, looking each label set up once."""
    for (histogram, labels), values in samples.items():
        child = histogram.labels(*labels)
        for value in values:
            child.observe(value)


def detected(refs: Iterable[FileRef]) -> None:
    """Count file versions the watcher has just recorded."""
    _add(Tally((DETECTED, _labels(ref)) for ref in refs))


def dispatched(records: Iterable[FileRecord]) -> None:
    """Count versions sent to Prefect, and among them those sent before (retries)."""
    totals: _Totals = Tally()
    for record in records:
        labels = _labels(record.ref)
        totals[DISPATCHED, labels] += 1
        if record.dispatch_count:
            totals[DISPATCH_RETRIES, labels] += 1
    _add(totals)


def queue_name(queue_url: str) -> str:
    """The ``queue`` label: the last path segment of a queue URL, i.e. the queue's name.

    Only the path is read, so nothing of a URL's user info or query string reaches a label.
    """
    return urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1] or "unknown"


def sqs_received(queue_url: str, root: str, count: int) -> None:
    """Count messages one ``ReceiveMessage`` call returned for the source at ``root``."""
    if count:
        SQS_RECEIVED.labels(queue_name(queue_url), source_of(root)).inc(count)


def sqs_deleted(queue_url: str, root: str, count: int) -> None:
    """Count messages SQS confirmed deleted for the source at ``root``."""
    if count:
        SQS_DELETED.labels(queue_name(queue_url), source_of(root)).inc(count)


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

    The counts are summed per label set first (see :func:`_add`).

    Args:
        outcomes: the settled outcomes.
        refs: each outcome's file by URI (for its size and modification time).
        now: when they were recorded (default: now).
    """
    now = time.time() if now is None else now
    totals: _Totals = Tally()
    samples: _Samples = {}
    for outcome in outcomes:
        ref = refs.get(outcome.uri)
        dataset = outcome.dataset or (ref.dataset if ref else None) or "unrouted"
        labels = (dataset, source_of(outcome.uri))
        state = outcome.state.value
        totals[OUTCOMES, (*labels, state)] += 1
        totals[ROWS_IN, labels] += outcome.rows_in
        totals[ROWS_OUT, labels] += outcome.rows_out
        totals[BYTES_OUT, labels] += outcome.bytes_out
        samples.setdefault((DURATION, (dataset, state)), []).append(outcome.seconds)
        if ref is not None:
            totals[BYTES_IN, labels] += ref.size
            if outcome.state is FileState.INGESTED:
                samples.setdefault((LATENCY, (dataset,)), []).append(max(0.0, now - ref.mtime))
    _add(totals)
    _observe(samples)


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


class ListingAgeCollector(Collector):
    """The age of each S3 listing cursor, computed at scrape time from when it was confirmed.

    The listing reports the wall-clock time a complete listing ended once its finds are part
    of the cursor (:func:`listing_confirmed`); the age is taken at scrape time, so a listing
    that stops completing shows as a gauge that keeps growing, without a timer thread.
    Labels: ``source`` (``s3``, as :func:`source_of` says) and ``root``
    (``s3://bucket/prefix/``), since one watcher may list several prefixes.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()  # written by the daemon, read by the HTTP thread
        self._confirmed: dict[str, float] = {}

    def confirmed(self, root: str, at: float) -> None:
        """A listing of ``root`` that ended at ``at`` (epoch seconds) is now in the cursor."""
        with self._lock:
            self._confirmed[root] = max(at, self._confirmed.get(root, at))

    def ages(self) -> dict[str, float]:
        """``root → seconds`` since its last confirmed listing ended."""
        now = self.clock()
        with self._lock:
            confirmed = dict(self._confirmed)
        return {root: max(0.0, now - at) for root, at in sorted(confirmed.items())}

    def collect(self) -> Iterator[Metric]:
        """One gauge, a sample per listed root (none before a root's first listing)."""
        gauge = GaugeMetricFamily(
            "hopper_s3_listing_cursor_age_seconds",
            "Seconds since the last complete S3 listing whose finds are in the cursor.",
            labels=["source", "root"],
        )
        for root, age in self.ages().items():
            gauge.add_metric([source_of(root), root], age)
        yield gauge

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the samples come and go with the sources."""
        return iter(())


LISTING_AGE = ListingAgeCollector()
REGISTRY.register(LISTING_AGE)


def listing_confirmed(root: str, at: float) -> None:
    """Record that a listing of ``root`` ending at ``at`` (epoch seconds) is in its cursor."""
    LISTING_AGE.confirmed(root, at)


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
