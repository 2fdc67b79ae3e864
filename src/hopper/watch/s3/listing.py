"""Finding S3 objects by listing a prefix periodically against a durable cursor.

The listing is a source on its own (``mode: listing``) and the reconciliation behind
notifications (``mode: notifications``): notifications can be lost, a file must not be.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from hopper import metrics
from hopper.config import RoutingRule, S3Source
from hopper.errors import SourceGoneError
from hopper.models import FileRef
from hopper.storage import AWS_ERRORS, S3Client, parse_s3_uri, s3_error, s3_uri
from hopper.watch.s3.cursor import load_cursor, save_cursor
from hopper.watch.s3.refs import normalize_etag, normalize_version, object_ref

log = logging.getLogger(__name__)


def bucket_is_versioned(s3_client: S3Client, bucket: str) -> bool:
    """Whether versioning was ever turned on (Enabled or Suspended); False if unknowable."""
    try:
        status = s3_client.get_bucket_versioning(Bucket=bucket).get("Status")
    except AWS_ERRORS as exc:
        log.warning("cannot read versioning of s3://%s (%s); assuming unversioned", bucket, exc)
        return False
    return status in ("Enabled", "Suspended")


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
        self._listed_at: float | None = None  # end of a complete listing not yet acknowledged
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
        except AWS_ERRORS as exc:
            error = s3_error(exc, self.root, "list")
            log.warning("listing %s stopped after %d objects: %s", self.root, len(listed), error)
            return len(listed)
        present = set(listed)
        gone = self.cursor.forget_missing(present)
        for key in [k for k in self._pending if k not in present]:
            del self._pending[key]
        if gone:
            self._dirty = self._save_due = True  # saved at the next ack
        self._listed_at = time.time()
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
        except AWS_ERRORS as exc:
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
        # The cursor now holds everything the last complete listing found, once those finds
        # were polled and whatever had to be saved is saved: only then is its age reset.
        if self._listed_at is not None and not self._pending and not self._save_due:
            metrics.listing_confirmed(self.root, self._listed_at)
            self._listed_at = None

    def _save(self) -> None:
        try:
            save_cursor(self.cursor_path, self.cursor)
        except OSError as exc:
            log.error("cannot save cursor %s of %s: %s", self.cursor_path, self.root, exc)
            return
        self._dirty = self._save_due = False
        self._saved_at = time.monotonic()
