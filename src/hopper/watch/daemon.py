"""The watcher daemon: detect → record in the ledger → emit an event → confirm the flow run.

A file counts as dispatched only once Prefect shows a flow run for it. Prefect's event client
drops events silently while the server is unreachable, and an automation can fail to create a
run under load; so every dispatched-but-unconfirmed file is re-emitted after
``confirm_seconds`` until a run exists. The flow's claim in the ledger makes a duplicate run
harmless (it sees the file settled and skips), and output paths are deterministic.

Every duty of the loop runs on a clock of its own (:class:`Every`) and, when it needs the
Prefect server, checks the server itself: detecting (and so acknowledging S3 sources, which
saves their cursors), rescanning, dispatching, confirming, reviving lost runs, sending held
alerts and cleaning up ingested sources (:mod:`hopper.cleanup`). None waits for another to
have found work. A watcher restarted after a crash, when every file is already dispatched,
has nothing to dispatch — and must still revive the runs the crash lost, send the alerts it
held and finish the clean-ups it left.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from hopper import events, metrics
from hopper.alerts import AlertDispatcher
from hopper.batching import batch_size, cut_batches, is_full
from hopper.cleanup import Cleaner, lazy_clients, source_prefix
from hopper.config import FolderSource, HopperConfig, S3Source
from hopper.errors import TransientError
from hopper.ledger import FileRecord, Ledger
from hopper.models import FileRef, FileState, IngestRequest
from hopper.prefect_api import RunState
from hopper.reconcile import RevivalPolicy, revive_lost
from hopper.replay import batch_of
from hopper.watch.local import LocalFolder

log = logging.getLogger(__name__)


BATCH_WAIT = 1.0  # seconds a burst's first files may wait for the rest of their batch
DISPATCH_READ = 5000  # due versions read from the ledger per dispatch
REVIVE_SECONDS = 5.0  # longest period of the revival clock (a quarter of the lease if shorter)
ALERT_SECONDS = 2.0  # period of the alert clock (holds and digest windows are in seconds)
CLEANUP_SECONDS = 5.0  # period of the source clean-up clock (after_ingest: delete | archive)
GATHER_SECONDS = 0.02  # after a file-system event, how long events gather before a step


def _size(record: FileRecord) -> int:
    return record.ref.size


class Every:
    """A periodic duty's clock: due at once, then every ``seconds`` (monotonic time)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.next = 0.0

    def due(self, now: float) -> bool:
        """Whether the duty is due at ``now``; if so, the next time is ``seconds`` later."""
        if now < self.next:
            return False
        self.next = now + self.seconds
        return True


class Orchestrator(Protocol):
    """What the daemon needs from Prefect (a real :class:`~hopper.prefect_api.PrefectAPI`)."""

    def healthy(self) -> bool: ...

    def runs_for_files(
        self,
        versions: set[tuple[str, str]],
        since: datetime,
        by_dispatch: dict[str, list[tuple[str, str]]] | None = None,
    ) -> dict[tuple[str, str], str]: ...

    def run_states(self, flow_run_ids: set[str]) -> dict[str, RunState]: ...

    def mark_crashed(self, flow_run_id: str, message: str) -> None: ...


class Source(Protocol):
    """What the daemon needs from a source (local folder, S3 listing, SQS notifications)."""

    @property
    def root(self) -> Any: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def scan(self) -> int: ...

    def poll(self) -> list[FileRef]: ...

    def ack(self) -> None: ...


def _cursor_path(config: HopperConfig, source: S3Source) -> Path:
    digest = hashlib.sha256(source.prefix.encode()).hexdigest()[:8]
    return config.state_dir / "s3" / f"{source.bucket}-{digest}.json"


def build_sources(config: HopperConfig, wake: threading.Event | None = None) -> list[Source]:
    """One source object per configured source (S3 clients created here, once each).

    ``wake`` is set by the local folders' file-system events (see :meth:`Watcher.run`).
    """
    sources: list[Source] = []
    for spec in config.sources:
        if isinstance(spec, FolderSource):
            sources.append(
                LocalFolder(
                    spec,
                    config.routing,
                    ignore=config.watch.ignore,
                    stable_seconds=config.watch.stable_seconds,
                    wake=wake,
                )
            )
            continue
        from hopper.storage import make_s3_client, make_sqs_client
        from hopper.watch.s3 import S3Listing, SqsNotifications

        endpoint = spec.endpoint_url or config.s3.endpoint_url
        region = spec.region or config.s3.region
        s3 = make_s3_client(endpoint, region)
        listing = S3Listing(
            spec, s3, config.routing, config.watch.ignore, _cursor_path(config, spec)
        )
        if spec.mode == "listing":
            sources.append(listing)
        else:
            sqs = make_sqs_client(endpoint, region)
            sources.append(
                SqsNotifications(spec, sqs, s3, config.routing, config.watch.ignore, listing)
            )
    return sources


def check_sources(config: HopperConfig) -> None:
    """Fail fast, with one clear line, if a source, the lake or the quarantine is unreachable."""
    for spec in config.sources:
        if isinstance(spec, S3Source):
            from hopper.storage import make_s3_client, make_sqs_client
            from hopper.watch.s3 import check_s3_source

            endpoint = spec.endpoint_url or config.s3.endpoint_url
            region = spec.region or config.s3.region
            sqs = make_sqs_client(endpoint, region) if spec.mode == "notifications" else None
            check_s3_source(spec, make_s3_client(endpoint, region), sqs)
    from hopper.lazy_s3 import LazyS3Client
    from hopper.stores import store_for

    s3 = LazyS3Client(config.s3.endpoint_url, config.s3.region)  # made only for an S3 place
    for what, location in (("lake", config.lake.path), ("quarantine", config.quarantine)):
        store_for(location, s3).check(location, what)


class Watcher:
    """Runs the detect/record/dispatch/confirm loop until stopped."""

    def __init__(
        self,
        config: HopperConfig,
        ledger: Ledger,
        orchestrator: Orchestrator,
        emit: events.Emitter = events.emit,
        *,
        poll_seconds: float = 0.2,
        confirm_poll_seconds: float = 2.0,
        lease_seconds: float = 60.0,
        ui_url: str = "",
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.orchestrator = orchestrator
        self.emit = emit
        self.poll_seconds = poll_seconds
        self.confirm_poll_seconds = confirm_poll_seconds
        self.lease_seconds = lease_seconds
        self.news = threading.Event()  # a file-system event: step now, not at the next tick
        self.sources = build_sources(config, self.news)
        # What this watcher sends: only its own sources' files. Watchers sharing a ledger
        # (each machine its own hopper.yaml) would otherwise send each other's files with
        # their own hopper.yaml, which does not cover them, and the run would refuse them.
        self.prefixes = sorted({source_prefix(s) for s in config.sources})
        self.alerts = AlertDispatcher(ledger, config.alert_policy, emit, ui_url)
        self.policy = RevivalPolicy(lease_seconds=lease_seconds)
        self.cleaner = Cleaner(config, ledger, lazy_clients(config))
        self.stopping = threading.Event()
        self._server_up: bool | None = None
        self._holding_since: float | None = None
        self._burst_sent = 0  # files the current burst has dispatched so far (see _batch_for)
        self._more_due = False  # the last dispatch left due files unread: dispatch again
        watch = config.watch
        self.clocks = {
            "rescan": Every(watch.rescan_seconds),
            "dispatch": Every(confirm_poll_seconds),
            "confirm": Every(confirm_poll_seconds),
            "revive": Every(min(REVIVE_SECONDS, lease_seconds / 4)),
            "alerts": Every(ALERT_SECONDS),
            "cleanup": Every(CLEANUP_SECONDS),
        }
        self.clocks["rescan"].next = time.monotonic() + watch.rescan_seconds  # just scanned

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self.stopping.set()
        self.news.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Watch until :meth:`stop` is called; call ``on_ready`` once every source is watched."""
        for source in self.sources:
            source.start()
            log.info("startup scan of %s: %d files", source.root, source.scan())
        if on_ready is not None:
            on_ready()
        try:
            while not self.stopping.is_set():
                self.step()
                if self.news.wait(self.poll_seconds):
                    self.news.clear()
                    # A burst's events come in a stream: gather a few before the next step.
                    self.stopping.wait(GATHER_SECONDS)
        finally:
            for source in self.sources:
                source.stop()
            log.info("watcher stopped")

    def step(self) -> None:
        """One pass of the loop: detect, then every duty whose clock is due.

        A duty that meets a transient fault (the ledger locked, the server gone mid-call)
        logs it and waits for its next tick; the others still run.
        """
        new = self._duty("detect", self.detect) or []
        now = time.monotonic()
        clocks = self.clocks
        if clocks["rescan"].due(now):
            for source in self.sources:
                if isinstance(source, LocalFolder):  # S3 sources list on their own
                    source.rescan()
        # Idle, the ledger is asked only every few seconds.
        again = self._more_due or self._holding_since is not None
        if clocks["dispatch"].due(now) or new or again:
            self._duty("dispatch", self.dispatch)
        if clocks["confirm"].due(now):
            self._duty("confirm", self.confirm)
        if clocks["revive"].due(now):
            self._duty("revive", self.revive)
        if clocks["alerts"].due(now) and self._alerts_pending() and self.server_up():
            metrics.alerted(self._duty("alerts", self.alerts.tick))
        if self.cleaner.active and clocks["cleanup"].due(now):
            self._duty("cleanup", self.cleaner.tick)

    def _duty(self, name: str, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except TransientError as exc:
            log.warning("%s: %s; trying again at its next tick", name, exc)
            return None

    def _alerts_pending(self) -> bool:
        try:
            return bool(self.ledger.pending_alerts())
        except TransientError as exc:
            log.warning("alerts: %s; trying again at their next tick", exc)
            return False

    def detect(self) -> list[FileRef]:
        """Record every newly complete file version; return the new ones."""
        new: list[FileRef] = []
        for source in self.sources:
            refs = source.poll()
            for start in range(0, len(refs), 1000):  # a burst is recorded in few transactions
                recorded = self.ledger.record_many(refs[start : start + 1000])
                _log_detected(recorded)
                new += recorded
                metrics.detected(recorded)
            source.ack()  # every ref is in the ledger now: the source may forget them
        return new

    def server_up(self) -> bool:
        """Check the Prefect server, logging only when its reachability changes."""
        up = self.orchestrator.healthy()
        if up != self._server_up:
            if up:
                log.info("Prefect server reachable: dispatching")
            else:
                log.warning("Prefect server unreachable: files stay pending in the ledger")
            self._server_up = up
        return up

    def dispatch(self) -> int:
        """Emit events for versions due for (re)dispatch, if the server is up.

        A file due alone gets its own ``ingest-file`` run (named after it); files due
        together are grouped into ``ingest-batch`` runs of at most ``max_batch_bytes`` bytes
        and as many files as the burst calls for, ``batch_max_files`` at most
        (:func:`hopper.batching.batch_size`, :func:`hopper.batching.cut_batches`).
        """
        watch = self.config.watch
        self._more_due = False
        pending = sum(s.pending() for s in self.sources if isinstance(s, LocalFolder))
        count: int | None = None  # due versions, where counted
        if pending:  # a burst still being checked: is a batch full yet? (counted, not read)
            count = self.ledger.due_count(watch.confirm_seconds, prefixes=self.prefixes)
            if not count:
                return 0
            # Its first files go at once, so that its first run starts while the rest is
            # checked; then only full batches go.
            if self._burst_sent and self._filling_batch(count, self._batch_for(count + pending)):
                return 0
        else:  # a lone file, or the end of a burst: nothing to wait for
            self._holding_since = None
        due = self.ledger.due_for_dispatch(
            watch.confirm_seconds, limit=DISPATCH_READ, prefixes=self.prefixes
        )
        if not due:
            if not pending:
                self._burst_sent = 0  # the burst is over
            return 0
        if not self.server_up():
            return 0
        waiting = len(due)
        if waiting == DISPATCH_READ:  # more are due than were read: count them all
            if count is None:
                count = self.ledger.due_count(watch.confirm_seconds, prefixes=self.prefixes)
            waiting = max(count, waiting)
        self._more_due = waiting > len(due)  # the rest is read at the next step
        size = self._batch_for(waiting + pending)
        for record in due:
            if record.dispatch_count:
                log.warning(
                    "no flow run seen for %s after %d dispatch(es); emitting again",
                    record.uri,
                    record.dispatch_count,
                )
        batches = cut_batches(due, _size, size, watch.max_batch_bytes)
        last = batches[-1]
        if (
            (pending or self._more_due)
            and len(batches) > 1
            and not is_full([_size(r) for r in last], size, watch.max_batch_bytes)
        ):
            # the rest of the burst fills it; held at most BATCH_WAIT, as any batch
            batches.pop()
            self._holding_since = time.monotonic()
        for batch in batches:
            self._dispatch(batch)
        sent = sum(len(batch) for batch in batches)
        self._burst_sent += sent
        return sent

    def _batch_for(self, waiting: int) -> int:
        """How many files a batch holds, with ``waiting`` files of a burst not yet sent.

        The burst's files already sent count too (:func:`hopper.batching.batch_size` sizes
        batches by the whole burst): as a burst drains, its last batches are not cut ever
        smaller, each an extra run to pay for.
        """
        return batch_size(self._burst_sent + waiting, self.config.watch.batch_max_files)

    def _filling_batch(self, count: int, size: int) -> bool:
        """Whether to hold due files a moment because more of a burst is still being checked.

        During a burst the stability checks finish a few hundred files at a time; sending each
        handful as its own batch would start many small runs. While others are still being
        checked, the ``count`` files due are held until a batch of ``size`` files is full,
        for at most ``BATCH_WAIT`` seconds (files are counted, not read, so a batch full by
        bytes alone waits that long too).
        """
        if count >= size:
            self._holding_since = None
            return False
        now = time.monotonic()
        if self._holding_since is None:
            self._holding_since = now
        if now - self._holding_since >= BATCH_WAIT:
            self._holding_since = None
            return False
        return True

    def _dispatch(self, due: list[FileRecord]) -> None:
        dispatch_id = uuid.uuid4().hex
        config_path = str(self.config.path) if self.config.path else None
        # Taken in the ledger first: a watcher sharing the ledger cannot send them as well.
        # Should the event be lost, the version is due again after confirm_seconds.
        records = self.ledger.take_for_dispatch(due, dispatch_id)
        if not records:
            return
        if len(records) == 1:
            request = IngestRequest(
                ref=records[0].ref, dispatch_id=dispatch_id, config_path=config_path
            )
            event: events.HopperEvent = events.detected_event(request)
        else:
            event = events.batch_event(batch_of(records, dispatch_id, self.config))
            log.info("dispatching %d files as one batch", len(records))
        if not self.emit(event):
            log.warning("could not emit the event for %d file(s); will retry", len(records))
            return
        metrics.dispatched(records)

    def confirm(self) -> int:
        """Look up flow runs for dispatched versions; mark the found ones queued."""
        pending = self.ledger.awaiting_runs(limit=50_000)  # a whole burst, not one batch
        if not pending:
            return 0
        oldest = min(r.dispatched_at or time.time() for r in pending)
        since = datetime.fromtimestamp(oldest, UTC) - timedelta(seconds=5)
        versions = {(r.uri, r.fingerprint) for r in pending}
        by_dispatch: dict[str, list[tuple[str, str]]] = {}
        for r in pending:
            if r.dispatch_id:
                by_dispatch.setdefault(r.dispatch_id, []).append((r.uri, r.fingerprint))
        try:
            found = self.orchestrator.runs_for_files(versions, since, by_dispatch)
        except Exception as exc:  # server hiccup: try again on the next round
            log.warning("could not confirm flow runs yet: %s", exc)
            return 0
        self.ledger.mark_queued_many([(uri, fp, run_id) for (uri, fp), run_id in found.items()])
        return len(found)

    def revive(self) -> int:
        """Send again the files whose run died or whose worker was lost.

        A worker can fail to submit a run (e.g. the server answers 503 under load) and mark
        it Crashed before the flow ever claimed its files; a worker can also die mid-run, and
        its run's lease on its files then expires (:class:`~hopper.ledger.Lease`). Such
        files are requeued at once, rather than wait for the reconcile deployment, and go
        out with the next dispatch in batches like a fresh burst; the dead run is marked
        Crashed. What is dead and when to give up is decided by
        :func:`hopper.reconcile.revive_lost`, shared with reconciliation. Returns how many
        files are due again.
        """
        now = time.time()
        confirm, lease = self.config.watch.confirm_seconds, self.lease_seconds
        candidates = self.ledger.records(
            states=[FileState.QUEUED, FileState.RUNNING], before=now - min(confirm, lease)
        )  # not every queued file of a burst, every few seconds: only the old ones
        old = [
            r
            for r in candidates
            if r.flow_run_id
            and now - r.updated_at > (lease if r.state == FileState.RUNNING else confirm)
        ]
        if not old or not self.server_up():  # its own check: whatever dispatch() last saw
            return 0
        try:
            revival = revive_lost(self.ledger, self.orchestrator, old, self.policy, now)
        except TransientError:
            raise
        except Exception as exc:  # server hiccup: next round
            log.warning("could not read run states yet: %s", exc)
            return 0
        return len(revival.requeued)


DETECTED_ONE_BY_ONE = 20
"""Up to this many files recorded at once are logged one by one; more, as a tally per dataset."""


def _log_detected(recorded: list[FileRef]) -> None:
    """Log newly recorded files: each by name, or a burst's tally (each name then at DEBUG).

    Every file is in the ledger either way (``hopper status FILE`` tells its story); a burst
    of thousands would otherwise cost the watcher a log line each.
    """
    one_by_one = len(recorded) <= DETECTED_ONE_BY_ONE
    level = logging.INFO if one_by_one else logging.DEBUG
    if log.isEnabledFor(level):
        for ref in recorded:
            log.log(level, "detected %s (dataset %s)", ref.uri, ref.dataset or "?")
    if not one_by_one:
        tally = Counter(ref.dataset or "?" for ref in recorded)
        log.info(
            "detected %d files (%s)",
            len(recorded),
            ", ".join(f"{dataset}: {n}" for dataset, n in sorted(tally.items())),
        )
