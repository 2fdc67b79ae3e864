"""Which keys an S3 source watches, and the ``FileRef`` of an object there.

Shared by both ways of finding objects (:mod:`.listing`, :mod:`.sqs`), so a listed object and
a notified one get the same ref — the same URI, dataset and fingerprint — and the ledger sees
one file. Pure functions, tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from hopper.config import RoutingRule, S3Source
from hopper.models import FileRef
from hopper.routing import is_ignored, route
from hopper.storage import s3_uri


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
