"""S3 as a source of ``FileRef``s: a durable listing, and SQS notifications reconciled by it.

S3 never shows a partial object (a PUT or multipart upload becomes visible only once complete),
so unlike local folders there is no stability check: an object seen is an object ready.

Two sources share :class:`~hopper.watch.local.LocalFolder`'s interface (``start``, ``stop``,
``scan``, ``poll``, ``root``) plus ``ack``, which the daemon calls once it has recorded every
ref of the last ``poll`` in the ledger; only then is progress made durable (the listing's
cursor is saved, SQS messages are deleted). A crash between ``poll`` and ``ack`` therefore
re-delivers, never loses; the ledger's ``(uri, fingerprint)`` key absorbs the duplicates.

- :class:`S3Listing` lists the prefix every ``listing_seconds`` and yields objects it has not
  yet handed out, remembering them in a cursor file.
- :class:`SqsNotifications` turns S3 event notifications into refs as they arrive, and runs an
  :class:`S3Listing` as reconciliation: notifications are at-least-once and can be lost (a
  queue purged, a notification configuration removed), a file must not be.

The pure parts (notification parsing, key → ``FileRef``, the cursor diff) are functions of
their own, tested without a server.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from hopper.config import RoutingRule, S3Source
from hopper.errors import ConfigError, SourceGoneError
from hopper.models import FileRef
from hopper.routing import is_ignored, route
from hopper.storage import (
    S3Client,
    SqsClient,
    endpoint_of,
    error_code,
    is_transient_aws,
    parse_s3_uri,
    s3_error,
    s3_uri,
)

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
_AWS_FAULTS = (ClientError, BotoCoreError, ConnectionError, TimeoutError)


def normalize_etag(etag: str | None) -> str | None:
    """An ETag without its surrounding quotes (listings quote it, notifications do not)."""
    return etag.strip('"') if etag else None


def normalize_version(version_id: str | None) -> str | None:
    """None for unversioned objects (S3 reports those as the string ``"null"``)."""
    return None if not version_id or version_id == "null" else version_id


def relative_key(key: str, source: S3Source) -> str | None:
    """``key`` relative to the source's prefix, or None if the source does not watch it.

    Folder markers (keys ending in ``/``), keys outside the prefix, ignored names (any path
    part matching an ignore glob is checked by the caller) and, when not recursive, keys in
    sub-folders are not watched.
    """
    if not key.startswith(source.prefix) or key.endswith("/"):
        return None
    relative = key[len(source.prefix) :]
    if not relative or (not source.recursive and "/" in relative):
        return None
    return relative


def object_ref(
    source: S3Source,
    key: str,
    *,
    size: int,
    mtime: float,
    etag: str | None,
    version_id: str | None,
    rules: list[RoutingRule],
    ignore: list[str],
) -> FileRef | None:
    """The ``FileRef`` of an S3 object, or None if the source does not watch that key.

    Args:
        source: the watched bucket and prefix.
        key: the object key, decoded (never percent-encoded).
        size: size in bytes.
        mtime: LastModified (or the notification's eventTime), seconds since the epoch.
        etag: the object's ETag, quoted or not.
        version_id: the version id in a versioned bucket.
        rules: explicit routing rules, matched against the key relative to the prefix.
        ignore: file-name globs never ingested, matched against each path part.
    """
    relative = relative_key(key, source)
    if relative is None:
        return None
    if any(is_ignored(part, ignore) for part in PurePosixPath(relative).parts):
        return None
    return FileRef(
        uri=s3_uri(source.bucket, key),
        size=size,
        mtime=mtime,
        dataset=route(relative, rules),
        etag=normalize_etag(etag),
        version_id=normalize_version(version_id),
    )


def dedupe_refs(refs: Iterable[FileRef]) -> list[FileRef]:
    """Refs in order, each ``(uri, fingerprint)`` once (Put + CompleteMultipartUpload…)."""
    seen: set[tuple[str, str]] = set()
    unique: list[FileRef] = []
    for ref in refs:
        identity = (ref.uri, ref.fingerprint)
        if identity not in seen:
            seen.add(identity)
            unique.append(ref)
    return unique


class PoisonMessage(ValueError):
    """An SQS message that is not an S3 event notification Hopper can understand."""


@dataclass(frozen=True)
class ObjectEvent:
    """One ``ObjectCreated:*`` record of an S3 event notification."""

    bucket: str
    key: str  # decoded with unquote_plus
    size: int | None
    etag: str | None
    version_id: str | None
    event_time: float | None
    event_name: str


@dataclass(frozen=True)
class Notification:
    """What one SQS message says.

    Attributes:
        events: the object-creation records (possibly several, possibly none).
        test_event: S3's ``s3:TestEvent``, sent when a notification configuration is saved.
        skipped: records about anything but object creation (removals, restores…).
    """

    events: tuple[ObjectEvent, ...] = ()
    test_event: bool = False
    skipped: int = 0


def parse_notification(body: str) -> Notification:
    """Parse an SQS message body holding an S3 event notification, raw or wrapped by SNS.

    Keys in notifications are URL-encoded with ``quote_plus`` (``incoming%2Fmy+file.csv``);
    they are returned decoded (``incoming/my file.csv``).

    Raises:
        PoisonMessage: the body is not JSON, not an S3 notification, or a record lacks its
            bucket or key.
    """
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise PoisonMessage(f"not JSON ({exc})") from None
    if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
        message = data["Message"]
        if not isinstance(message, str):
            raise PoisonMessage("SNS envelope whose Message is not a string")
        return parse_notification(message)
    if not isinstance(data, dict):
        raise PoisonMessage(f"JSON {type(data).__name__}, not an object")
    if data.get("Event") == "s3:TestEvent":
        return Notification(test_event=True)
    if isinstance(data.get("Type"), str) and "Records" not in data:
        return Notification(skipped=1)  # other SNS messages (subscription confirmations…)
    records = data.get("Records")
    if not isinstance(records, list):
        raise PoisonMessage("no 'Records' list: not an S3 event notification")
    events: list[ObjectEvent] = []
    skipped = 0
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise PoisonMessage(f"record {index} is not an object")
        name = str(record.get("eventName", ""))
        if not name.startswith("ObjectCreated:"):
            skipped += 1
            continue
        events.append(_object_event(record, index, name))
    return Notification(events=tuple(events), skipped=skipped)


def _object_event(record: dict[str, Any], index: int, name: str) -> ObjectEvent:
    s3 = _mapping(record.get("s3"))
    bucket, obj = _mapping(s3.get("bucket")), _mapping(s3.get("object"))
    bucket_name, raw_key = bucket.get("name"), obj.get("key")
    if not isinstance(bucket_name, str) or not bucket_name:
        raise PoisonMessage(f"record {index} has no s3.bucket.name")
    if not isinstance(raw_key, str) or not raw_key:
        raise PoisonMessage(f"record {index} has no s3.object.key")
    size = obj.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise PoisonMessage(f"record {index} has an invalid s3.object.size {size!r}")
    etag, version = obj.get("eTag"), obj.get("versionId")
    return ObjectEvent(
        bucket=bucket_name,
        key=unquote_plus(raw_key),
        size=size,
        etag=normalize_etag(etag) if isinstance(etag, str) else None,
        version_id=normalize_version(version) if isinstance(version, str) else None,
        event_time=_epoch(record.get("eventTime")),
        event_name=name,
    )


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- the cursor


@dataclass
class ListingCursor:
    """What a listing has handed out: every watched key with the ETag last delivered.

    Attributes:
        bucket: the bucket listed.
        prefix: the prefix listed.
        objects: key → ETag (unquoted) of each object delivered and acknowledged.
    """

    bucket: str
    prefix: str
    objects: dict[str, str] = field(default_factory=dict)

    def is_new(self, key: str, etag: str | None) -> bool:
        """Whether ``key`` has never been delivered with this ETag (new or changed object)."""
        return etag is None or self.objects.get(key) != etag

    def forget_missing(self, listed: Iterable[str]) -> int:
        """Drop keys a *complete* listing no longer shows (deleted objects); return how many."""
        present = set(listed)
        gone = [key for key in self.objects if key not in present]
        for key in gone:
            del self.objects[key]
        return len(gone)

    def to_json(self) -> str:
        """The cursor file's text."""
        return json.dumps(
            {
                "version": CURSOR_VERSION,
                "bucket": self.bucket,
                "prefix": self.prefix,
                "objects": self.objects,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ListingCursor:
        """Parse a cursor file.

        Raises:
            ValueError: the text is not a cursor.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != CURSOR_VERSION:
            raise ValueError("not a Hopper S3 listing cursor (version 1)")
        objects = data.get("objects")
        if not isinstance(objects, dict):
            raise ValueError("cursor has no 'objects' map")
        return cls(
            str(data.get("bucket")),
            str(data.get("prefix")),
            {str(k): str(v) for k, v in objects.items()},
        )


def load_cursor(path: Path, bucket: str, prefix: str) -> ListingCursor:
    """The cursor saved at ``path``; an empty one if missing, unreadable or for another root.

    An unreadable cursor costs one re-delivery of every object (the ledger drops them as
    already seen), never a lost file, so it is logged and replaced rather than fatal.
    """
    root = s3_uri(bucket, prefix)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ListingCursor(bucket, prefix)
    try:
        cursor = ListingCursor.from_json(text)
    except ValueError as exc:
        log.warning("ignoring unreadable cursor %s of %s (%s); relisting all", path, root, exc)
        return ListingCursor(bucket, prefix)
    if (cursor.bucket, cursor.prefix) != (bucket, prefix):
        log.warning(
            "cursor %s is for %s, not %s; starting afresh",
            path,
            s3_uri(cursor.bucket, cursor.prefix),
            root,
        )
        return ListingCursor(bucket, prefix)
    return cursor


def save_cursor(path: Path, cursor: ListingCursor) -> None:
    """Write the cursor atomically: a temporary file beside it, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(cursor.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def bucket_is_versioned(s3_client: S3Client, bucket: str) -> bool:
    """Whether versioning was ever turned on (Enabled or Suspended); False if unknowable."""
    try:
        status = s3_client.get_bucket_versioning(Bucket=bucket).get("Status")
    except _AWS_FAULTS as exc:
        log.warning("cannot read versioning of s3://%s (%s); assuming unversioned", bucket, exc)
        return False
    return status in ("Enabled", "Suspended")


# --------------------------------------------------------------------------- listing


class S3Listing:
    """Lists a prefix periodically and hands out objects not handed out before.

    Cursor design: the cursor is a map of every watched key to the ETag last delivered and
    acknowledged, saved as JSON at ``cursor_path``. Each listing is compared key by key, so an
    object is found wherever its key sorts and whatever its LastModified says — a
    "start after the last key" cursor misses keys that sort earlier, and a LastModified
    high-water mark misses long uploads (S3 stamps an object with the time its upload
    *started*, so a slow multipart upload appears with a time older than objects already
    seen). A changed object (same key, new ETag) is delivered again as a new version; a
    complete listing drops keys that are gone, so the cursor holds what exists, not history.

    The price: a full listing every period (1 request per 1,000 keys) and about 100 bytes per
    object in memory and on disk — comfortable up to around a million objects per source;
    beyond that, narrow the prefix or lengthen ``listing_seconds`` and rely on notifications.
    The ETag alone identifies content: in a versioned bucket, re-uploading identical bytes
    makes a new version the listing does not deliver (notifications do).
    """

    def __init__(
        self,
        source: S3Source,
        s3_client: S3Client,
        rules: list[RoutingRule],
        ignore: list[str],
        cursor_path: Path,
    ) -> None:
        self.source = source
        self.s3 = s3_client
        self.rules = rules
        self.ignore = ignore
        self.cursor_path = cursor_path
        self.cursor = load_cursor(cursor_path, source.bucket, source.prefix)
        self._pending: dict[str, FileRef] = {}  # found by scan(), not yet polled
        self._delivered: dict[str, str] = {}  # polled, not yet acknowledged: key → etag
        self._dirty = False  # changes not yet saved
        self._save_due = False  # save at the next ack, not lazily
        self._saved_at = time.monotonic()
        self._next_scan = 0.0  # the first poll() lists at once
        self._versioned: bool | None = None

    @property
    def root(self) -> str:
        """``s3://bucket/prefix``, for log lines."""
        return self.source.root

    def start(self) -> None:
        """Nothing to start: listings run from :meth:`poll`; logged for symmetry."""
        log.info("watching %s by listing every %.0fs", self.root, self.source.listing_seconds)

    def stop(self) -> None:
        """Save progress acknowledged since the last save."""
        if self._dirty:
            self._save()

    def versioned(self) -> bool:
        """Whether the bucket keeps versions (asked once, then remembered)."""
        if self._versioned is None:
            self._versioned = bucket_is_versioned(self.s3, self.source.bucket)
        return self._versioned

    def scan(self) -> int:
        """List the prefix now and queue new or changed objects for :meth:`poll`.

        A listing that fails part-way keeps what it found and forgets nothing; the next one
        starts over. Faults are logged, not raised, so a flaky endpoint cannot stop the daemon.

        Returns:
            How many watched objects the listing saw (like a local scan's file count).
        """
        self._next_scan = time.monotonic() + self.source.listing_seconds
        listed: list[str] = []
        new = 0
        try:
            for key, ref in self._list():
                listed.append(key)
                if self._is_known(key, ref.etag):
                    continue
                full = self._with_version(ref)
                if full is not None:
                    self._pending[key] = full
                    new += 1
        except _AWS_FAULTS as exc:
            error = s3_error(exc, self.root, "list")
            log.warning("listing %s stopped after %d objects: %s", self.root, len(listed), error)
            return len(listed)
        present = set(listed)
        gone = self.cursor.forget_missing(present)
        for key in [k for k in self._pending if k not in present]:
            del self._pending[key]
        if gone:
            self._dirty = self._save_due = True  # saved at the next ack
        log.log(
            logging.INFO if new or gone else logging.DEBUG,
            "listed %s: %d objects, %d new or changed, %d gone",
            self.root,
            len(listed),
            new,
            gone,
        )
        return len(listed)

    def _is_known(self, key: str, etag: str | None) -> bool:
        if key in self._delivered:
            return self._delivered[key] == etag
        pending = self._pending.get(key)
        if pending is not None and pending.etag == etag:
            return True
        return not self.cursor.is_new(key, etag)

    def _list(self) -> Iterator[tuple[str, FileRef]]:
        args: dict[str, str] = {"Bucket": self.source.bucket, "Prefix": self.source.prefix}
        if not self.source.recursive:
            args["Delimiter"] = "/"
        for page in self.s3.get_paginator("list_objects_v2").paginate(**args):
            for obj in page.get("Contents", []):
                ref = object_ref(
                    self.source,
                    obj["Key"],
                    size=int(obj.get("Size", 0)),
                    mtime=obj["LastModified"].timestamp(),
                    etag=obj.get("ETag"),
                    version_id=None,
                    rules=self.rules,
                    ignore=self.ignore,
                )
                if ref is not None:
                    yield obj["Key"], ref

    def _with_version(self, ref: FileRef) -> FileRef | None:
        """Add the version id in a versioned bucket, as notifications carry it (same fingerprint).

        Returns None if the object vanished since it was listed.
        """
        if not self.versioned():
            return ref
        _, key = parse_s3_uri(ref.uri)
        try:
            head = self.s3.head_object(Bucket=self.source.bucket, Key=key)
        except _AWS_FAULTS as exc:
            error = s3_error(exc, ref.uri, "head")
            if isinstance(error, SourceGoneError):
                return None
            log.warning("cannot read the version of %s (%s); delivering without", ref.uri, error)
            return ref
        return ref.model_copy(
            update={
                "size": int(head.get("ContentLength", ref.size)),
                "etag": normalize_etag(head.get("ETag")) or ref.etag,
                "version_id": normalize_version(head.get("VersionId")),
            }
        )

    def poll(self) -> list[FileRef]:
        """Refs of new or changed objects; lists first if ``listing_seconds`` have passed."""
        if time.monotonic() >= self._next_scan:
            self.scan()
        refs = list(self._pending.values())
        for key, ref in self._pending.items():
            self._delivered[key] = ref.etag or ""
        self._pending.clear()
        return refs

    def mark_seen(self, refs: Iterable[FileRef]) -> None:
        """Remember refs delivered by another path (notifications) so listings skip them.

        Saved lazily (at the next :meth:`ack` after ``listing_seconds``, or at :meth:`stop`):
        losing these marks costs a re-delivery, never a file.
        """
        prefix = s3_uri(self.source.bucket, "")
        for ref in refs:
            if ref.etag and ref.uri.startswith(prefix):
                key = ref.uri[len(prefix) :]
                if self.cursor.objects.get(key) != ref.etag:
                    self.cursor.objects[key] = ref.etag
                    self._dirty = True

    def ack(self) -> None:
        """The daemon recorded the last poll's refs: make them part of the saved cursor."""
        if self._delivered:
            self.cursor.objects.update(self._delivered)
            self._delivered.clear()
            self._save_due = True
        lazy_due = time.monotonic() - self._saved_at >= self.source.listing_seconds
        if self._save_due or (self._dirty and lazy_due):
            self._save()

    def _save(self) -> None:
        try:
            save_cursor(self.cursor_path, self.cursor)
        except OSError as exc:
            log.error("cannot save cursor %s of %s: %s", self.cursor_path, self.root, exc)
            return
        self._dirty = self._save_due = False
        self._saved_at = time.monotonic()


# --------------------------------------------------------------------------- notifications


@dataclass
class _Received:
    """A received SQS message that names objects, waiting to be polled and acknowledged."""

    receipt: str
    message_id: str
    refs: list[FileRef]


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
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._receive_loop, name=f"sqs {self.queue_url}", daemon=True
        )
        self._thread.start()
        log.info("watching %s through notifications from %s", self.root, self.queue_url)

    def stop(self) -> None:
        """Stop receiving (waits for the current long poll to end) and save the cursor.

        Messages received but not acknowledged become visible again after their visibility
        timeout and are delivered on the next start.
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.wait_seconds + 10)
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

    def _receive_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self.pending() >= self.max_buffered:
                self._stopping.wait(0.1)
                continue
            try:
                self.receive_once()
                failures = 0
            except _AWS_FAULTS as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning(
                    "receiving from %s for %s failed (%s); retrying in %.1fs",
                    self.queue_url,
                    self.root,
                    s3_error(exc, self.queue_url, "receive"),
                    delay,
                )
                self._stopping.wait(delay)
            except Exception:  # a bug must not silently end the thread, nor spin
                log.exception(
                    "unexpected error receiving from %s for %s", self.queue_url, self.root
                )
                self._stopping.wait(5.0)

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
            except _AWS_FAULTS as exc:
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
            except _AWS_FAULTS as exc:
                log.warning(
                    "cannot delete %d messages from %s for %s (%s); they will be delivered again",
                    len(batch),
                    self.queue_url,
                    self.root,
                    exc,
                )
                continue
            for failed in result.get("Failed", []):
                message_id = batch[int(failed["Id"])][0]
                log.warning(
                    "cannot delete message %s from %s for %s (%s); it will be delivered again",
                    message_id,
                    self.queue_url,
                    self.root,
                    failed.get("Code"),
                )


# --------------------------------------------------------------------------- startup check


def check_s3_source(
    source: S3Source, s3_client: S3Client, sqs_client: SqsClient | None = None
) -> None:
    """Fail fast, with one clear line, if the bucket or the queue is missing or unreadable.

    Args:
        source: the configured source.
        s3_client: client for the source's endpoint.
        sqs_client: client for the queue (needed in notifications mode).

    Raises:
        ConfigError: naming the missing or unreadable bucket or queue and the endpoint.
        TransientError: the endpoint cannot be reached, throttles or fails (5xx).
    """
    where = endpoint_of(s3_client)
    try:
        s3_client.head_bucket(Bucket=source.bucket)
        s3_client.list_objects_v2(Bucket=source.bucket, Prefix=source.prefix, MaxKeys=1)
    except _AWS_FAULTS as exc:
        if is_transient_aws(exc) or not isinstance(exc, ClientError):
            raise s3_error(exc, source.root, "check") from exc
        code = _bucket_code(exc)
        raise ConfigError(
            f"S3 bucket {source.bucket!r} does not exist or is not readable at {where} ({code})"
        ) from None
    if source.mode != "notifications":
        return
    if sqs_client is None:
        raise ConfigError(f"{source.root}: notifications mode needs an SQS client")
    where = endpoint_of(sqs_client)
    try:
        sqs_client.get_queue_attributes(QueueUrl=source.queue_url, AttributeNames=["QueueArn"])
    except _AWS_FAULTS as exc:
        if is_transient_aws(exc) or not isinstance(exc, ClientError):
            raise s3_error(exc, str(source.queue_url), "check") from exc
        raise ConfigError(
            f"SQS queue {source.queue_url!r} does not exist or is not readable at {where} "
            f"({_queue_code(exc)})"
        ) from None


def _bucket_code(exc: ClientError) -> str:
    code = error_code(exc)
    return {"404": "NoSuchBucket", "403": "AccessDenied"}.get(code, code or "error")


def _queue_code(exc: ClientError) -> str:
    query_code = exc.response.get("Error", {}).get("QueryErrorCode")
    return str(query_code or error_code(exc) or "error")
