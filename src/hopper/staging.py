"""Staged outputs, published together: a source's lake files land all at once or not at all.

A source becomes one Parquet file per partition. Written straight into place, a failure part
way (a partition value too long for a folder, a full disk, a child process killed for its
memory) left some partitions of a quarantined file in the lake. So each attempt writes its
files into the staging folder, ``<lake>/_staging/<dataset>/``, under names that start with
the attempt's own, ``<source key>-<attempt>.`` (no folder per attempt: making and removing
one cost more than a small file's conversion). Lake readers skip that folder (pyarrow
datasets, Hive, Spark and Athena ignore names starting with ``_``, and no staged name ends in
``.parquet`` for a ``**/*.parquet`` glob to find). The files are published only once all are
written:

1. a journal (``<attempt>.publish.json``) is written, listing every move: each staged file to
   its lake path, each earlier file of the source it replaces or makes stale to a backup
   beside it (a publish of one file, one atomic rename or copy, needs no journal);
2. the moves are made (renames locally; server-side copies then deletes on S3);
3. the journal is deleted — the commit point — then the backups.

Any failure before the commit point is rolled back from the journal (:func:`rollback`): the
new files are removed and the backups put back, so a replay that fails keeps the earlier
version's outputs. A writer that was killed cannot roll back itself; whoever supervised it
calls :func:`discard_staged`, which finds the source's attempts by their deterministic names
and does the same. Without a journal, staged files are simply deleted. (Versions before this
layout kept each attempt in a folder of that name; both are found and undone alike.)

What is *not* promised: for the moment the moves take (renames, or S3 copies), a reader can
see some partitions of the new version beside others of the old one. Neither a folder nor S3
has a multi-file transaction; a table format (Iceberg) is how to get one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from hopper.stores import Store, Writer, store_for

log = logging.getLogger(__name__)


class Written(list[str]):
    """The lake files a write published (a list of paths), and ``nbytes``, the bytes they hold."""

    def __init__(self, paths: Iterable[str] = (), nbytes: int = 0) -> None:
        super().__init__(paths)
        self.nbytes = nbytes


STAGING = "_staging"
"""The lake's staging folder (its leading ``_`` hides it from readers; no dataset starts so)."""
JOURNAL = "publish.json"


def staging_key(uri: str) -> str:
    """The stable part of a source's attempt names (16 hex digits of its URI's hash)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def staging_root(lake: str, dataset: str) -> str:
    """``<lake>/_staging/<dataset>``: where the dataset's attempts stage their files (pure)."""
    return "/".join([lake.rstrip("/"), STAGING, dataset])


class Stage:
    """One attempt at writing one source's outputs: staged files, then :meth:`publish`.

    Its files are ``<attempt>.<n>.staged`` (and, while publishing several, the journal and
    backups) in the dataset's staging folder, where ``attempt`` is
    ``<staging root>/<source key>-<time>-<random>``. Nothing is created until the first
    :meth:`write`. On any failure call :meth:`discard` (idempotent): before publishing it
    deletes the staged files; during publishing it rolls the lake back.
    """

    def __init__(self, lake: str, dataset: str, uri: str, s3: Any = None) -> None:
        """Prepare an attempt for the source ``uri`` of ``dataset`` in ``lake``.

        Args:
            lake: the lake, a folder or an ``s3://`` location.
            dataset: the dataset name (first folder under the lake).
            uri: the source's URI (names the attempt, see :func:`discard_staged`).
            s3: an S3 client, for an ``s3://`` lake.
        """
        self.lake = lake.rstrip("/")
        self.dataset = dataset
        self.uri = uri
        self.store = store_for(lake, s3)
        attempt = f"{int(time.time())}-{uuid.uuid4().hex[:12]}"  # when: see sweep_staging
        self.attempt = f"{staging_root(lake, dataset)}/{staging_key(uri)}-{attempt}"
        self.moves: list[tuple[str, str]] = []
        self.sizes: dict[str, int] = {}  # staged file → bytes written to it

    def add(self, target: str) -> str:
        """Register a lake file to be published; returns where to write it meanwhile."""
        staged = f"{self.attempt}.{len(self.moves)}.staged"
        self.moves.append((staged, target))
        return staged

    def write(self, target: str, write: Writer, content_type: str | None = None) -> None:
        """Stage the future content of the lake file ``target`` (``write`` writes it)."""
        staged = self.add(target)
        with self.store.open_output(staged, content_type) as out:
            write(out)
            self.sizes[staged] = out.tell()

    def wrote(self, staged: str, nbytes: int) -> None:
        """Note the size of a staged file written by the caller (see :meth:`add`)."""
        self.sizes[staged] = nbytes

    @property
    def nbytes(self) -> int:
        """Bytes written to the staged files so far."""
        return sum(self.sizes.values())

    def publish(self, existing: Iterable[str]) -> Written:
        """Move the staged files into place, replacing the source's earlier outputs.

        Args:
            existing: the source's files in the lake now (every earlier partition file);
                those no new file replaces are removed (stale partitions).

        Returns:
            The lake files written, in the order they were added, and their bytes.

        Raises:
            Whatever the store raises; the lake is then rolled back (or, if that fails too,
            left for :func:`discard_staged`).
        """
        targets = [target for _, target in self.moves]
        earlier = set(existing)
        entries: list[dict[str, Any]] = [
            {"staged": staged, "target": target, "had_old": target in earlier}
            for staged, target in self.moves
        ]
        entries += [
            {"staged": None, "target": path, "had_old": True}
            for path in sorted(earlier - set(targets))
        ]
        for index, entry in enumerate(entries):
            entry["backup"] = f"{self.attempt}.{index}.backup"
        if len(entries) == 1 and entries[0]["staged"] is not None:
            # One file replacing (or adding) one: a single atomic step, nothing to roll back.
            try:
                self.store.move(entries[0]["staged"], entries[0]["target"])
            except BaseException:
                self.discard()
                raise
            return Written(targets, self.nbytes)
        journal = f"{self.attempt}.{JOURNAL}"
        try:
            self.store.put_text(journal, json.dumps({"uri": self.uri, "entries": entries}))
            for entry in entries:
                if entry["had_old"]:
                    self.store.backup(entry["target"], entry["backup"])
                if entry["staged"] is not None:
                    self.store.move(entry["staged"], entry["target"])
                else:
                    log.info("removing stale output %s of %s", entry["target"], self.uri)
                    self.store.delete(entry["target"])
            self.store.delete(journal)  # the commit point: from here on, nothing is undone
        except BaseException:
            self.discard()
            raise
        try:
            for entry in entries:
                if entry["had_old"]:
                    self.store.delete(entry["backup"])
        except Exception as exc:  # published already; leftovers are hidden and swept later
            log.warning("%s: backups of %s not removed: %s", self.uri, self.attempt, exc)
        return Written(targets, self.nbytes)

    def discard(self) -> None:
        """Undo this attempt: roll back a publish in progress, delete the staged files."""
        try:
            rollback(self.store, self.attempt, f"{self.lake}/{self.dataset}")
        except Exception as exc:  # the caller's own error matters more; leave it to a sweep
            log.error(
                "%s: could not clean up staged files %s.* (%s); discard_staged will",
                self.uri,
                self.attempt,
                exc,
            )


def rollback(store: Store, attempt: str, dataset_root: str) -> None:
    """Undo one attempt: restore from its journal if publishing began, then delete its files.

    Per journal entry: a backup that exists is moved back over the lake file (whatever the
    lake file is now); else a lake file that had no earlier version is ours and is deleted;
    else it was not touched yet. Safe to repeat after being interrupted itself.

    Args:
        store: the lake's store.
        attempt: the attempt's name, ``<staging root>/<source key>-<time>-<random>``.
        dataset_root: ``<lake>/<dataset>`` (empty folders are pruned up to it).
    """
    for journal in (f"{attempt}.{JOURNAL}", f"{attempt}/{JOURNAL}"):  # this layout, older
        text = store.read_text(journal)
        if text is None:
            continue
        entries = json.loads(text)["entries"]
        for entry in reversed(entries):
            if entry["had_old"]:
                if store.exists(entry["backup"]):
                    store.move(entry["backup"], entry["target"])
            elif entry["staged"] is not None:
                store.delete(entry["target"])
        store.prune([e["target"] for e in entries], dataset_root)
        log.warning("rolled back the partial publish of %s", json.loads(text)["uri"])
        store.delete(journal)
    remove_attempt(store, attempt)


def remove_attempt(store: Store, attempt: str, staged: Iterable[str] | None = None) -> None:
    """Delete an attempt's files (its staged files, backups and journal) without undoing.

    Args:
        store: the lake's store.
        attempt: the attempt's name (see :func:`rollback`).
        staged: its files, if the caller knows them all (no listing then).
    """
    if staged is None:
        root, _, name = attempt.rpartition("/")
        # with a journal's temp file, if its writer died writing it (``.<name>.….tmp``)
        staged = store.list_files(f"{attempt}.") + store.list_files(f"{root}/.{name}.")
        store.delete_folder(attempt)  # an attempt of the older layout, in a folder
    for path in staged:
        store.delete(path)


def attempt_of(staged: str) -> str:
    """The attempt a staged file belongs to (pure; either layout)."""
    folder, _, name = staged.rpartition("/")
    if name.count(".") >= 2:  # <attempt>.<n>.staged
        return f"{folder}/{name.split('.')[0]}"
    return folder.removesuffix("/new")  # <attempt>/<n>.staged or <attempt>/new/<n>.staged


def attempts(store: Store, root: str, key: str) -> list[str]:
    """The attempts under ``root`` whose names start with ``key-`` (either layout)."""
    prefix = f"{root}/{key}-"
    return sorted(
        {
            prefix + path[len(prefix) :].split("/")[0].split(".")[0]
            for path in store.list_files(prefix)
        }
    )


def discard_staged(lake: str, dataset: str, uri: str, s3: Any = None) -> None:
    """Remove what a dead writer of one source left: staged files, and any half-publish.

    Call it after a process that was writing ``uri``'s outputs died (killed for its memory or
    time, or crashed). Every attempt of that source in that dataset is rolled back (see
    :func:`rollback`) and its files removed. Idempotent; nothing there is fine.

    Args:
        lake: the lake, a folder or an ``s3://`` location (``HopperConfig.lake``).
        dataset: the dataset the source was being written to.
        uri: the source's URI (the same string the writer was given).
        s3: an S3 client, for an ``s3://`` lake (None for a local one).

    Raises:
        OSError / TransientError / HopperError: the lake could not be cleaned (retry later:
            nothing readers see depends on it, except a half-publish being undone).
    """
    store = store_for(lake, s3)
    root = staging_root(lake, dataset)
    for attempt in attempts(store, root, staging_key(uri)):
        log.info("%s: discarding staged outputs %s", uri, attempt)
        rollback(store, attempt, f"{lake.rstrip('/')}/{dataset}")


SWEEP_AFTER_SECONDS = 24 * 3600.0
"""Age after which an attempt is taken as left by a writer that died (see below)."""


def sweep_staging(lake: str, s3: Any = None, older_than: float = SWEEP_AFTER_SECONDS) -> int:
    """Remove attempts older than ``older_than`` seconds, whoever left them.

    :func:`discard_staged` cleans up after a reader that died while its worker lived; a
    worker or a host that died with it leaves its staged files behind (hidden from readers,
    but taking space). Each attempt's name carries when it began; one older than any attempt
    can run is rolled back (a half publish is undone) and deleted. Attempts without a time
    in their name (written before it was there) are left alone.

    Returns:
        How many attempts were removed.
    """
    store = store_for(lake, s3)
    root = f"{lake.rstrip('/')}/{STAGING}"
    cutoff = time.time() - older_than
    old: set[tuple[str, str]] = set()
    for path in store.list_files(f"{root}/"):
        parts = path[len(root) + 1 :].split("/")
        if len(parts) < 2:
            continue
        # a file, a journal's temp file (.<attempt>.…), or a folder of the older layout
        dataset, attempt = parts[0], parts[1].lstrip(".").split(".")[0]
        stamp = attempt.split("-")[1] if attempt.count("-") >= 2 else ""
        if stamp.isdigit() and int(stamp) < cutoff:
            old.add((dataset, attempt))
    for dataset, attempt in sorted(old):
        log.warning("removing staged files %s/%s left by a writer that died", dataset, attempt)
        rollback(store, f"{root}/{dataset}/{attempt}", f"{lake.rstrip('/')}/{dataset}")
    return len(old)
