"""The listing's durable cursor: every key handed out, with the ETag it had, saved as JSON.

Why a key → ETag map rather than a "last key" or a LastModified high-water mark is told in
:class:`~hopper.watch.s3.listing.S3Listing`. Saving is atomic (temporary file, fsync,
rename); a cursor that cannot be read costs one re-delivery, never a file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hopper.storage import s3_uri

log = logging.getLogger(__name__)

CURSOR_VERSION = 1


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
