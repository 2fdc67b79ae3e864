"""Finding S3 objects through their event notifications, read from SQS.

A background thread receives (waiting longer after each failure in a row, :class:`Backoff`)
and parses; the daemon's loop polls what arrived and acknowledges it once recorded, which
deletes the messages. The listing reconciles what notifications missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from hopper import metrics
from hopper.config import RoutingRule, S3Source
from hopper.errors import ConfigError, SourceGoneError
from hopper.models import FileRef
from hopper.storage import AWS_ERRORS, S3Client, SqsClient, s3_error, s3_uri
from hopper.watch.s3.listing import S3Listing
from hopper.watch.s3.notifications import ObjectEvent, PoisonMessage, parse_notification
from hopper.watch.s3.refs import (
    dedupe_refs,
    normalize_etag,
    normalize_version,
    object_ref,
    relative_key,
)

log = logging.getLogger(__name__)


class Backoff:
    """How long to wait after consecutive failures: 1 s, 2 s, 4 s, … up to ``cap`` seconds.

    Kept apart from the receiving loop so the schedule is read (and tested) in one place.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure in a row; return the seconds to wait before trying again."""
        self.failures += 1
        return min(self.cap, self.base * 2.0**self.failures)

    def succeeded(self) -> None:
        """A call worked: the next failure waits the shortest delay again."""
        self.failures = 0


@dataclass
class _Received:
    """A received SQS message that names objects, waiting to be polled and acknowledged."""

    receipt: str
    message_id: str
    refs: list[FileRef]


STOP_WAIT_SECONDS = 1.0
"""How long :meth:`SqsNotifications.stop` waits for the receiving thread to end."""


class SqsNotifications:
    """Reads S3 event notifications from SQS, reconciled by a periodic listing.

    A background thread long-polls the queue (``wait_seconds``, up to 20) and parses each
    message into refs, so :meth:`poll` never blocks the daemon: it only drains what arrived.
    The thread stops receiving while ``max_buffered`` messages wait for :meth:`ack`, so
    messages are not left to outlive their visibility timeout in memory (keep the queue's
    visibility timeout well above the daemon's loop time; 30 s or more).

    Messages are deleted only in :meth:`ack`, after the daemon recorded their refs; messages
    with nothing to record (``s3:TestEvent``, removals, objects outside the prefix) are
    deleted as soon as they are read. A message that cannot be parsed is logged once and left
    alone, so the queue's redrive policy moves it to the dead-letter queue.
    """

    def __init__(
        self,
        source: S3Source,
        sqs_client: SqsClient,
        s3_client: S3Client,
        rules: list[RoutingRule],
        ignore: list[str],
        listing: S3Listing,
        *,
        wait_seconds: int = 20,
        max_buffered: int = 100,
    ) -> None:
        if not source.queue_url:
            raise ConfigError(f"{source.root}: notifications need a queue_url")
        self.source = source
        self.queue_url: str = source.queue_url
        self.sqs = sqs_client
        self.s3 = s3_client
        self.rules = rules
        self.ignore = ignore
        self.listing = listing
        self.wait_seconds = max(0, min(20, wait_seconds))
        self.max_buffered = max_buffered
        self._lock = threading.Lock()
        self._buffer: list[_Received] = []
        self._inflight: list[_Received] = []  # polled, not yet acknowledged
        self._poison_seen: deque[str] = deque(maxlen=10_000)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def root(self) -> str:
        """``s3://bucket/prefix``, for log lines."""
        return self.source.root

    def start(self) -> None:
        """Start the receiving thread."""
        self.listing.start()
        # A fresh event per thread: one still in the poll of an earlier start, which stop()
        # did not wait for, ends with its poll instead of receiving on beside this one.
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._receive_loop,
            args=(self._stopping,),
            name=f"sqs {self.queue_url}",
            daemon=True,
        )
        self._thread.start()
        log.info("watching %s through notifications from %s", self.root, self.queue_url)

    def stop(self) -> None:
        """Stop receiving and save the cursor, without waiting out a long poll in flight.

        The receiving thread ends when its poll returns (it is a daemon thread: it does not
        hold the process up). Messages received but not acknowledged, by then or by that
        poll, become visible again after their visibility timeout and are delivered on the
        next start: a stop loses none, and does not wait up to 20 s for the queue.
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT_SECONDS)
            self._thread = None
        self.listing.stop()

    def scan(self) -> int:
        """Run the reconciliation listing now; return how many objects it saw."""
        return self.listing.scan()

    def poll(self) -> list[FileRef]:
        """Refs from notifications received since the last poll, plus the listing's."""
        with self._lock:
            received, self._buffer = self._buffer, []
            self._inflight.extend(received)
        refs = [ref for message in received for ref in message.refs]
        return dedupe_refs([*refs, *self.listing.poll()])

    def ack(self) -> None:
        """The daemon recorded the last poll's refs: delete their messages, save the cursor."""
        with self._lock:
            done, self._inflight = self._inflight, []
        self._delete([(m.message_id, m.receipt) for m in done])
        self.listing.mark_seen(ref for message in done for ref in message.refs)
        self.listing.ack()

    def pending(self) -> int:
        """How many received messages wait for :meth:`poll` or :meth:`ack`."""
        with self._lock:
            return len(self._buffer) + len(self._inflight)

    def _receive_loop(self, stopping: threading.Event) -> None:
        backoff = Backoff()
        while not stopping.is_set():
            if self.pending() >= self.max_buffered:
                stopping.wait(0.1)
                continue
            try:
                self.receive_once()
                backoff.succeeded()
            except AWS_ERRORS as exc:
                delay = backoff.failed()
                log.warning(
                    "receiving from %s for %s failed (%s); retrying in %.1fs",
                    self.queue_url,
                    self.root,
                    s3_error(exc, self.queue_url, "receive"),
                    delay,
                )
                stopping.wait(delay)
            except Exception:  # a bug must not silently end the thread, nor spin
                log.exception(
                    "unexpected error receiving from %s for %s", self.queue_url, self.root
                )
                stopping.wait(5.0)

    def receive_once(self, wait_seconds: int | None = None) -> int:
        """One ``ReceiveMessage`` call; buffer what names objects. Returns messages received.

        Raises:
            botocore errors: the caller (the receiving thread) backs off and retries.
        """
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds if wait_seconds is None else wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = response.get("Messages", [])
        metrics.sqs_received(self.queue_url, self.root, len(messages))
        useless: list[tuple[str, str]] = []
        for message in messages:
            received = self._handle(message)
            if received is None:
                continue
            if received.refs:
                with self._lock:
                    self._buffer.append(received)
            else:
                useless.append((received.message_id, received.receipt))
        self._delete(useless)
        return len(messages)

    def _handle(self, message: dict[str, Any]) -> _Received | None:
        """Parse one message; None for poison (left for the dead-letter queue)."""
        message_id = str(message.get("MessageId", "?"))
        receipt = str(message.get("ReceiptHandle", ""))
        try:
            notification = parse_notification(str(message.get("Body", "")))
        except PoisonMessage as exc:
            if message_id not in self._poison_seen:
                self._poison_seen.append(message_id)
                count = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
                log.error(
                    "unreadable message %s on %s for %s (received %s times): %s; leaving it "
                    "for the dead-letter queue",
                    message_id,
                    self.queue_url,
                    self.root,
                    count,
                    exc,
                )
            return None
        if notification.test_event:
            log.info("test event %s on %s for %s: consumed", message_id, self.queue_url, self.root)
        refs: list[FileRef] = []
        for event in notification.events:
            ref = self._event_ref(event)
            if ref is not None:
                refs.append(ref)
        return _Received(receipt, message_id, dedupe_refs(refs))

    def _event_ref(self, event: ObjectEvent) -> FileRef | None:
        uri = s3_uri(event.bucket, event.key)
        if event.bucket != self.source.bucket:
            log.debug("notification about %s ignored: not bucket %s", uri, self.source.bucket)
            return None
        size, etag, version, mtime = event.size, event.etag, event.version_id, event.event_time
        needs_head = size is None or etag is None or (version is None and self.listing.versioned())
        if needs_head and relative_key(event.key, self.source) is not None:
            try:
                head = self.s3.head_object(Bucket=event.bucket, Key=event.key)
            except AWS_ERRORS as exc:
                error = s3_error(exc, uri, "head")
                if isinstance(error, SourceGoneError):
                    log.info("%s was deleted before its notification was read", uri)
                    return None
                log.warning("cannot read %s (%s); using the notification's details", uri, error)
            else:
                size = int(head.get("ContentLength", size or 0))
                etag = normalize_etag(head.get("ETag")) or etag
                version = normalize_version(head.get("VersionId")) or version
                modified = head.get("LastModified")
                mtime = modified.timestamp() if modified is not None else mtime
        ref = object_ref(
            self.source,
            event.key,
            size=size or 0,
            mtime=mtime if mtime is not None else time.time(),
            etag=etag,
            version_id=version,
            rules=self.rules,
            ignore=self.ignore,
        )
        if ref is None:
            log.debug("notification about %s ignored: outside %s or ignored name", uri, self.root)
        return ref

    def _delete(self, messages: list[tuple[str, str]]) -> None:
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": receipt} for i, (_, receipt) in enumerate(batch)
            ]
            try:
                result = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except AWS_ERRORS as exc:
                log.warning(
                    "cannot delete %d messages from %s for %s (%s); they will be delivered again",
                    len(batch),
                    self.queue_url,
                    self.root,
                    exc,
                )
                continue
            failures = result.get("Failed", [])
            metrics.sqs_deleted(self.queue_url, self.root, len(batch) - len(failures))
            for failed in failures:
                message_id = batch[int(failed["Id"])][0]
                log.warning(
                    "cannot delete message %s from %s for %s (%s); it will be delivered again",
                    message_id,
                    self.queue_url,
                    self.root,
                    failed.get("Code"),
                )
