"""Source clean-up after ingestion: a source's ``after_ingest: keep | delete | archive``.

Once a version's output is committed and the ledger says ``ingested``, a source that does
not keep its files deletes it, or archives it to ``<archive>/<dataset>/<YYYY-MM-DD>/<file>``
(the day it was ingested; S3 objects by a server-side copy, then a delete). Quarantined and
failed files are never touched. The watcher runs :meth:`Cleaner.tick` on a clock of its own:
it asks the ledger for ingested versions not cleaned up yet and settles each one, so a
crash between the output and the clean-up is finished by the next tick.

Every step is safe to repeat:

- A source is touched only while it still *is* the ingested version (same size and mtime
  locally, same ETag on S3); a file changed since is a new version of its own and is left
  alone (``changed``).
- An archive name is claimed before anything moves, with a ``<file>.source.json`` beside it
  naming the source and version (written once, atomically: ``O_EXCL`` or a conditional
  put). A name held by another source or version gives the copy a version id, as quarantine
  names do (:func:`~hopper.sink.quarantine.versioned_name`). So a repeated clean-up finds its
  own name again: a copy already there means the move happened (only the delete of an
  interrupted copy-then-delete may remain), no copy and no source means there is nothing
  left to archive (``gone``).
- The outcome is recorded once, with its history row (:meth:`~hopper.ledger.Ledger.
  mark_cleaned`).

An archived or deleted file is never ingested twice: the archive may not lie inside a
watched source (:meth:`~hopper.config.HopperConfig.archive_problem`), and the watcher sees
only close-writes and moves *into* its folders. :func:`bring_back` is replay's side: an
archived file is moved back to where it was (same name, same bytes, same mtime: the same
version, the same lineage and output path), replayed, then archived again; a deleted one
cannot be replayed, and says so. An archived S3 object comes back to its key the same way,
so the flow run reads only under its source, as for a first ingestion: by a server-side copy
(S3 gives a copy of a single-part object the same ETag, and the archive's copy is made by the
same transfer, so the identity survives the round trip), or, in a versioned bucket, by
removing the delete marker the archive's delete left, which makes the very version current
again. A copy that S3 gives another identity would be a new version: it is undone, and the
replay refused, saying how to ingest it anew.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from hopper.config import DATASET_NAME, FolderSource, HopperConfig, S3Source
from hopper.errors import HopperError, SourceGoneError, TransientError
from hopper.ledger import FileRecord, Ledger
from hopper.models import FileRef, file_uri, path_of_file_uri
from hopper.sink.quarantine import safe_name, same_version, versioned_name
from hopper.stores import LocalStore, Store, join, store_for

log = logging.getLogger(__name__)

CLAIM_SUFFIX = ".source.json"
"""Beside each archived copy: which source and version it is (and the name's claim)."""

Source = FolderSource | S3Source
S3For = Callable[[Source | None], Any]
"""The S3 client for a source (None: for the archive itself)."""


class Look(StrEnum):
    """What is at a source's place now, compared with an ingested version."""

    SAME = "same"  # still that version
    CHANGED = "changed"  # another version (or a symbolic link): not ours to touch
    GONE = "gone"  # nothing there


# -------------------------------------------------------------------------- pure decisions


def source_prefix(spec: Source) -> str:
    """The URI prefix of everything a source holds."""
    if isinstance(spec, FolderSource):
        return file_uri(spec.path.resolve()).rstrip("/") + "/"
    return spec.root


def cleaning_sources(config: HopperConfig) -> dict[str, Source]:
    """URI prefix → source, for the sources that do not keep their files."""
    return {source_prefix(s): s for s in config.sources if s.after_ingest != "keep"}


def source_of(config: HopperConfig, uri: str) -> Source | None:
    """The first configured source that holds ``uri``, or None."""
    for spec in config.sources:
        if uri.startswith(source_prefix(spec)):
            return spec
    return None


def archive_folder(archive: str, dataset: str | None, when: datetime) -> str:
    """``<archive>/<dataset>/<YYYY-MM-DD>``; anything but a dataset name is ``_unrouted``."""
    folder = dataset if dataset and DATASET_NAME.fullmatch(dataset) else "_unrouted"
    return join(archive, folder, when.strftime("%Y-%m-%d"))


def ingested_day(record: FileRecord) -> datetime:
    """When the version was ingested (its last move), which names its archive folder.

    Stable while the clean-up is pending (settling it is not a move), so a clean-up
    repeated after a crash, even past midnight, finds the same folder.
    """
    return datetime.fromtimestamp(record.updated_at, UTC)


def compare(ref: FileRef, size: int, mtime: float, etag: str | None = None) -> Look:
    """Whether what is at the source (its size, mtime, ETag) is still the version ``ref``."""
    if ref.etag is not None:
        same = etag is not None and etag.strip('"') == ref.etag.strip('"')
    else:
        same = size == ref.size and mtime == ref.mtime
    return Look.SAME if same else Look.CHANGED


def as_uri(location: str) -> str:
    """A store location as a URI (``s3://`` as is, a local path as ``file://``)."""
    return location if "://" in location else file_uri(location)


def replay_refusal(record: FileRecord) -> str | None:
    """Why a cleaned-up version cannot be replayed from anywhere, or None if it can."""
    if record.cleaned_at is None or record.cleanup not in ("deleted", "gone"):
        return None
    day = datetime.fromtimestamp(record.cleaned_at, UTC).strftime("%Y-%m-%d")
    if record.cleanup == "deleted":
        return (
            f"{record.uri}: the source was deleted after ingestion on {day} by "
            "after_ingest: delete; it cannot be replayed. Drop the file again to ingest it anew"
        )
    return (
        f"{record.uri}: the source was already gone when its clean-up came on {day} (no "
        "archived copy); it cannot be replayed. Drop the file again to ingest it anew"
    )


# ------------------------------------------------------------------------ the source side


def look(ref: FileRef, s3: Any) -> Look:
    """What is at ``ref``'s place now (a local file is looked at, never through a link)."""
    if ref.is_local:
        try:
            st = os.lstat(ref.local_path())
        except FileNotFoundError:
            return Look.GONE
        if not stat.S_ISREG(st.st_mode):
            return Look.CHANGED  # a link (or anything else) is left where it is
        return compare(ref, st.st_size, st.st_mtime)
    from hopper.storage import AWS_ERRORS, GONE_CODES, error_code, parse_s3_uri, s3_error

    bucket, key = parse_s3_uri(ref.uri)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except AWS_ERRORS as exc:
        if getattr(exc, "response", None) is not None and error_code(exc) in GONE_CODES:
            return Look.GONE
        raise s3_error(exc, ref.uri, "look up") from exc
    if ref.version_id and head.get("VersionId") not in (None, ref.version_id):
        return Look.CHANGED
    return compare(ref, int(head.get("ContentLength", 0)), 0.0, head.get("ETag"))


def _source_location(ref: FileRef) -> str:
    return str(ref.local_path()) if ref.is_local else ref.uri


def remove(ref: FileRef, s3: Any) -> None:
    """Delete the source of ``ref`` (a missing one is fine)."""
    store_for(ref.uri, s3).delete(_source_location(ref))


def put_in(ref: FileRef, target: str, archive: Store, s3: Any) -> None:
    """Move the source of ``ref`` to ``target`` in the archive (``archive``'s store).

    Within one kind of place it is the store's move: one rename locally (a copy that keeps
    the mtime across file systems), a server-side copy then a delete on S3. From a folder to
    S3 it is an upload, then the file is removed. The source is removed only once the copy
    is whole.
    """
    source = store_for(ref.uri, s3)
    location = _source_location(ref)
    if type(source) is type(archive):
        try:
            archive.move(location, target)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            archive.upload(Path(location), target)
            shutil.copystat(location, target)
    else:
        archive.upload(ref.local_path(), target)
    source.delete(location)


# ------------------------------------------------------------------------------- clean-up


class Cleaner:
    """Settles the clean-up of ingested versions of the sources that do not keep files.

    Args:
        config: the Hopper home's configuration (resolved).
        ledger: the ledger.
        s3_for: the S3 client for a source, or (None) for the archive; made lazily.
    """

    def __init__(self, config: HopperConfig, ledger: Ledger, s3_for: S3For) -> None:
        self.config = config
        self.ledger = ledger
        self.s3_for = s3_for
        self.prefixes = cleaning_sources(config)

    @property
    def active(self) -> bool:
        """Whether any source cleans up (otherwise the clock has nothing to do)."""
        return bool(self.prefixes)

    def tick(self, limit: int = 500) -> int:
        """Clean up the ingested versions due; return how many were settled.

        A version whose clean-up fails (a transient fault, a permission) is logged and
        tried again at the next tick; the others go on.
        """
        settled = 0
        for record in self.ledger.cleanup_due(list(self.prefixes), limit=limit):
            try:
                settled += self.clean(record)
            except TransientError:
                raise
            except (OSError, HopperError, ValueError) as exc:
                log.warning("%s: clean-up failed (%s); trying again later", record.uri, exc)
        return settled

    def clean(self, record: FileRecord) -> bool:
        """Delete or archive one ingested version's source, and record it; True if settled."""
        spec = source_of(self.config, record.uri)
        if spec is None or spec.after_ingest == "keep":
            return False
        if record.outcome and record.outcome.get("staged"):
            return False  # not committed to its table (cannot be ingested so; be safe)
        s3 = self.s3_for(spec)
        if spec.after_ingest == "delete":
            return self._delete(record, s3)
        return self._archive(record, s3)

    def _delete(self, record: FileRecord, s3: Any) -> bool:
        found = look(record.ref, s3)
        if found is Look.CHANGED:
            return self._leave(record, Look.CHANGED)
        if found is Look.SAME:
            remove(record.ref, s3)
        log.info("deleted %s after ingestion (after_ingest: delete)", record.uri)
        detail = {"found_gone": True} if found is Look.GONE else None
        return self.ledger.mark_cleaned(record.uri, record.fingerprint, "deleted", detail=detail)

    def _archive(self, record: FileRecord, s3: Any) -> bool:
        # An S3 source's objects are copied server side, through the source's own client.
        store = store_for(self.config.archive, s3 if not record.ref.is_local else self.s3_for(None))
        target = self._claim_name(record, store)
        found = look(record.ref, s3)
        if store.exists(target):  # ours: moved before, perhaps not recorded (or not deleted)
            if found is Look.SAME:
                remove(record.ref, s3)
        elif found is Look.SAME:
            put_in(record.ref, target, store, s3)
        else:
            store.delete(target + CLAIM_SUFFIX)  # nothing of ours to archive: free the name
            return self._leave(record, found)
        log.info("archived %s to %s", record.uri, target)
        return self.ledger.mark_cleaned(
            record.uri, record.fingerprint, "archived", archived_uri=as_uri(target)
        )

    def _claim_name(self, record: FileRecord, store: Store) -> str:
        """The archive location of this version, its name claimed (see the module docstring)."""
        ref = record.ref
        folder = archive_folder(
            self.config.archive, record.dataset or ref.dataset, ingested_day(record)
        )
        claim = {
            "uri": ref.uri,
            "fingerprint": ref.fingerprint,
            "dataset": record.dataset or ref.dataset,
            "size": ref.size,
            "mtime": ref.mtime,
            "ingested_at": ingested_day(record).isoformat(),
        }
        name = safe_name(ref.name)
        for candidate in (name, versioned_name(name, ref.uri, ref.fingerprint)):
            held = store.claim(join(folder, candidate + CLAIM_SUFFIX), json.dumps(claim).encode())
            if held is None or same_version(held, claim):
                return join(folder, candidate)
        raise OSError(f"archive names {name!r} and its versioned name are both held in {folder}")

    def _leave(self, record: FileRecord, found: Look) -> bool:
        why = "it changed since (a new version)" if found is Look.CHANGED else "it is gone"
        log.info("%s left as it is: %s", record.uri, why)
        return self.ledger.mark_cleaned(record.uri, record.fingerprint, found.value)


def lazy_clients(config: HopperConfig) -> S3For:
    """The S3 client of each S3 source (its own endpoint and region) and of the archive.

    Made on first use (:class:`~hopper.lazy_s3.LazyS3Client`): a home with only folders and
    a local archive never makes one.
    """
    from hopper.lazy_s3 import LazyS3Client

    archive = LazyS3Client(config.s3.endpoint_url, config.s3.region)
    clients: dict[int, Any] = {}

    def s3_for(spec: Source | None) -> Any:
        if not isinstance(spec, S3Source):
            return archive
        if id(spec) not in clients:
            clients[id(spec)] = LazyS3Client(
                spec.endpoint_url or config.s3.endpoint_url, spec.region or config.s3.region
            )
        return clients[id(spec)]

    return s3_for


# -------------------------------------------------------------------------------- replay


def bring_back(record: FileRecord, config: HopperConfig, s3_for: S3For) -> None:
    """Put an archived version back where it was, for a replay (see the module docstring).

    Nothing to do for a version not cleaned up, or whose source is there again.

    Raises:
        SourceGoneError: the source was deleted (or gone) after ingestion, or its archived
            copy is missing; the message says which, when, and what to do.
        HopperError: an S3 object cannot come back as the same version (see
            :func:`_restore_object`).
    """
    refusal = replay_refusal(record)
    if refusal:
        raise SourceGoneError(refusal)
    if record.cleanup != "archived" or not record.archived_uri:
        return
    ref = record.ref
    spec = source_of(config, ref.uri)
    s3 = s3_for(spec)
    if look(ref, s3) is not Look.GONE:
        return  # something is there (the file, or a new version): replay takes it as it is
    archived = record.archived_uri
    location = str(path_of_file_uri(archived)) if archived.startswith("file://") else archived
    # An S3 source's objects were archived through the source's own client (server side).
    store = store_for(location, s3_for(None) if ref.is_local else s3)
    if not store.exists(location):
        raise SourceGoneError(
            f"{ref.uri}: the source is gone and its archived copy {archived} is missing; it "
            "cannot be replayed. Drop the file again to ingest it anew"
        )
    if not ref.is_local:
        _restore_object(ref, location, store, s3)
        store.delete(location + CLAIM_SUFFIX)  # archived again under the replay's day
        log.info("restored %s from %s for its replay", ref.uri, archived)
        return
    path = ref.local_path()
    if isinstance(store, LocalStore):
        try:
            store.move(location, str(path))  # a rename: the same bytes and mtime
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            store.upload(Path(location), str(path))
            shutil.copystat(location, path)
            store.delete(location)
    else:
        _download(store, location, path, ref.mtime)
    store.delete(location + CLAIM_SUFFIX)  # archived again under the replay's day
    log.info("restored %s from %s for its replay", ref.uri, archived)


def _download(store: Store, location: str, path: Path, mtime: float) -> None:
    """Copy an archived S3 object to ``path`` (through a hidden temp file), mtime restored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.restore.tmp"
    try:
        with store.open_input(location) as source, tmp.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        os.utime(tmp, ns=(round(mtime * 1e9), round(mtime * 1e9)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    store.delete(location)


def _restore_object(ref: FileRef, location: str, store: Store, s3: Any) -> None:
    """Put an archived S3 object back at its key as the same version, or refuse.

    Raises:
        HopperError: S3 gave the copy another ETag or version id (an object uploaded in
            parts of another size, or a versioned bucket whose version has expired): it
            would be a new version, so the copy is undone and the archived one stays.
    """
    if not store.reaches(ref.uri):  # an archive in a folder (hopper.yaml changed since)
        raise HopperError(
            f"{ref.uri}: archived to {location}, not to S3, so it cannot be copied back "
            "server side; copy it back by hand and replay again"
        )
    if not _undelete(ref, s3):
        store.copy(location, ref.uri)
        if look(ref, s3) is not Look.SAME:
            store.delete(ref.uri)
            raise HopperError(
                f"{ref.uri}: copied back from {location}, S3 gave it another ETag or version "
                "id than the ingested version's (an upload in parts of another size, or a "
                "versioned bucket), so it would be a new version; the copy was undone and the "
                f"archived one stays. To ingest it as a new version: aws s3 cp {location} "
                f"{ref.uri}"
            )
    store.delete(location)


def _undelete(ref: FileRef, s3: Any) -> bool:
    """In a versioned bucket, make ``ref``'s version current again; True if it now is.

    The archive's delete only put a delete marker over the version. Removing the markers
    above it restores the very version (same ETag and version id), provided nothing was
    written to the key since and the version has not expired.
    """
    if not ref.version_id:
        return False
    from hopper.storage import AWS_ERRORS, parse_s3_uri, s3_error

    bucket, key = parse_s3_uri(ref.uri)
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            versions += [v for v in page.get("Versions", []) if v["Key"] == key]
            markers += [m for m in page.get("DeleteMarkers", []) if m["Key"] == key]
        ours = [v for v in versions if v["VersionId"] == ref.version_id]
        if not ours or any(v["LastModified"] > ours[0]["LastModified"] for v in versions):
            return False
        for marker in markers:
            if marker["LastModified"] >= ours[0]["LastModified"]:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])
    except AWS_ERRORS as exc:
        raise s3_error(exc, ref.uri, "restore") from exc
    return look(ref, s3) is Look.SAME
