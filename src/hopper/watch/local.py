"""Local folders: watchdog events for speed, periodic scans for certainty.

watchdog's inotify backend reports close-write (``FileClosedEvent``) and move-in
(``FileMovedEvent``); the observer is told to deliver only those (plus creations, for
platforms without close-write), which keeps a large burst from overflowing the kernel queue.
Events only nominate *candidates*: a file is complete once its size and mtime have stayed
the same for ``stable_seconds``. A full scan at start and every ``rescan_seconds`` catches
whatever the events missed.

Nothing in the inbox may stop the watcher. Every path is a stranger's: a tree deeper than
``PATH_MAX``, a symlink loop, an I/O error, a folder that vanishes mid-scan, a FIFO, a name in
no encoding. A path that cannot be read is logged once (:class:`_Reported` remembers, within a
bound, what it already said) and skipped; the observer's threads only record paths, and one
that dies anyway (watchdog's own walks recurse) is restarted, with a full scan to cover the gap.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat as stat_
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from hopper.config import FolderSource, RoutingRule
from hopper.models import FileRef, file_uri
from hopper.routing import is_ignored, route

log = logging.getLogger(__name__)

HASH_LIMIT = 64 * 1024 * 1024  # hash contents up to this size; larger files use size+mtime
REPORTED_LIMIT = 4096  # unreadable paths remembered (so that each is logged once)
RESTART_DELAYS = (1.0, 300.0)  # first and longest wait before restarting a dead observer
# Errors of the moment (this process short of file handles or memory): the file is retried.
RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})


class Stat(NamedTuple):
    """What the stability check compares between two looks at a file."""

    size: int
    mtime_ns: int


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's contents."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shown(path: str | os.PathLike[str]) -> str:
    """A path as it appears in log lines: its ``file://`` URI (one line, any bytes)."""
    return file_uri(os.path.abspath(path))


class _Reported:
    """The unreadable paths already logged, so that each is logged once, not every rescan.

    Bounded (least recently seen forgotten first): a hostile tree cannot grow it without limit,
    at worst a forgotten path is logged again. Thread-safe.
    """

    def __init__(self, limit: int = REPORTED_LIMIT) -> None:
        self._limit = limit
        self._seen: OrderedDict[tuple[str, int | None], None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, path: str, exc: OSError) -> None:
        """Log that ``path`` is skipped because of ``exc``, unless already said."""
        key = (path, exc.errno)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return
            self._seen[key] = None
            if len(self._seen) > self._limit:
                self._seen.popitem(last=False)
        log.warning("skipping %s: %s", shown(path), exc.strerror or exc)


def is_stable(first: Stat | None, second: Stat, mtime_age: float, stable_seconds: float) -> bool:
    """Pure completeness rule: unchanged between two looks and untouched for a while."""
    return first is not None and first == second and mtime_age >= stable_seconds


def describe_file(
    path: Path, relative: str, rules: list[RoutingRule], *, follow_symlinks: bool = True
) -> FileRef | None:
    """A ``FileRef`` for a local file, or None if it changed while being hashed or is not one.

    The file is opened once, without blocking (a FIFO swapped in after the check would
    otherwise hang the watcher until a writer came) and, unless ``follow_symlinks``, without
    following a link; what is hashed is what was opened.

    Args:
        path: the file.
        relative: its path relative to the watched root (for routing).
        rules: explicit routing rules.
        follow_symlinks: whether ``path`` may be a symbolic link to read through.

    Raises:
        OSError: the file cannot be opened or read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        before = os.fstat(fd)
        if not stat_.S_ISREG(before.st_mode):
            return None  # a FIFO, socket or device: never read
        digest: str | None = None
        if before.st_size <= HASH_LIMIT:
            hasher = hashlib.sha256()
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                hasher.update(chunk)
            digest = hasher.hexdigest()
        after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        return None
    return FileRef(
        uri=file_uri(path.parent.resolve() / path.name),  # a followed link keeps its name
        size=after.st_size,
        mtime=after.st_mtime,
        dataset=route(relative, rules),
        sha256=digest,
    )


def relative_to_source(path: Path, sources: list[FolderSource]) -> str | None:
    """``path`` relative to the first configured folder that contains it, or None."""
    resolved = path.resolve()
    for source in sources:
        try:
            return resolved.relative_to(source.path.resolve()).as_posix()
        except ValueError:
            continue
    return None


class _Nominator(FileSystemEventHandler):
    """Turns watchdog events into candidate paths and new folders (thread-safe sets).

    It touches no file: whatever a path is, recording it cannot fail, so the observer's
    thread cannot die here. New folders are listed later, by :meth:`LocalFolder.poll`.
    """

    def __init__(self, candidates: set[Path], folders: set[str], lock: threading.Lock) -> None:
        self._candidates = candidates
        self._folders = folders
        self._lock = lock

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            moved = isinstance(event, FileMovedEvent | DirMovedEvent)
            path = os.fsdecode(event.dest_path if moved else event.src_path)
            with self._lock:
                if event.is_directory:
                    self._folders.add(path)  # its files may predate its watch: list it
                else:
                    self._candidates.add(Path(path))
        except Exception:  # pragma: no cover - a bug here must not end the observer
            log.exception("cannot record the watchdog event %r", event)


class LocalFolder:
    """One watched folder: nominates candidates and turns stable ones into ``FileRef``s."""

    def __init__(
        self,
        source: FolderSource,
        rules: list[RoutingRule],
        *,
        ignore: list[str],
        stable_seconds: float,
    ) -> None:
        self.source = source
        self.root = source.path
        self.recursive = source.recursive
        self.rules = rules
        self.ignore = ignore
        self.stable_seconds = stable_seconds
        self._lock = threading.Lock()
        self._candidates: set[Path] = set()
        self._new_folders: set[str] = set()  # reported by events, listed by the next poll
        self._first_look: dict[Path, Stat] = {}
        # Last version handed out per path (str keys: hashing a Path costs more).
        self._known: dict[str, Stat] = {}
        self._folders: dict[str, tuple[int, list[str]]] = {}  # mtime and sub-folders, per folder
        self._rescans = 0
        self._reported = _Reported()
        self._watching = False
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._restart_at = 0.0
        self._restart_delay = RESTART_DELAYS[0]

    def start(self) -> None:
        """Create the folder if needed and start the watchdog observer.

        If the observer cannot start (no inotify watches left, say), the folder is still
        watched by its rescans, and :meth:`poll` tries the observer again later.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self._watching = True
        self._start_observer()
        log.info("watching %s", self.root)

    def _start_observer(self) -> None:
        # watchdog warns, with the whole watch table in the message, each time a new folder's
        # watch already exists; in a deep tree that is megabytes of log for nothing.
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
        observer = Observer()
        try:
            observer.schedule(
                _Nominator(self._candidates, self._new_folders, self._lock),
                str(self.root),
                recursive=self.recursive,
                event_filter=[
                    FileClosedEvent,
                    FileMovedEvent,
                    FileCreatedEvent,
                    DirCreatedEvent,
                    DirMovedEvent,
                ],
            )
            observer.daemon = True
            observer.start()
        except Exception as exc:  # e.g. no inotify watches left, or
            # watchdog's recursive walk (RecursionError) in a tree a thousand folders deep.
            log.warning(
                "cannot watch %s for events (%r); finding its files by rescans until it can",
                shown(self.root),
                exc,
            )
            self._observer = None
            try:
                observer.stop()
            except Exception:  # it never ran
                log.debug("stopping the failed observer of %s", shown(self.root))
            return
        self._observer = observer

    def _observer_alive(self) -> bool:
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        if not all(emitter.is_alive() for emitter in observer.emitters):
            return False
        # The inotify observer reads the kernel's events in a thread of its own.
        reader = getattr(observer, "_inotify_fd", None)
        return not isinstance(reader, threading.Thread) or reader.is_alive()

    def _keep_observing(self) -> None:
        """Restart a dead observer (with a growing delay) and scan for what it missed."""
        if not self._watching or self._observer_alive():
            if self._watching and time.monotonic() > self._restart_at + RESTART_DELAYS[1]:
                self._restart_delay = RESTART_DELAYS[0]  # healthy for long: forgive
            return
        now = time.monotonic()
        if now < self._restart_at:
            return
        self._restart_at = now + self._restart_delay
        self._restart_delay = min(self._restart_delay * 2, RESTART_DELAYS[1])
        log.warning(
            "the file-event observer of %s stopped; restarting it and scanning the folder",
            shown(self.root),
        )
        self._stop_observer()
        self._start_observer()
        self._scan(quick=False)

    def stop(self) -> None:
        """Stop the observer."""
        self._watching = False
        self._stop_observer()

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=5)
            except Exception as exc:  # a dead observer may fail to stop: it is gone anyway
                log.debug("stopping the observer of %s: %r", shown(self.root), exc)

    def scan(self) -> int:
        """Nominate every new or changed file under the root; return how many files exist.

        One ``lstat`` per file (from ``os.scandir``), compared with the version last handed
        out: tracking 100,000 files costs a fraction of a second.
        """
        return self._scan(quick=False)

    def rescan(self) -> int:
        """The periodic reconciliation: quick most times, a full :meth:`scan` every tenth.

        A quick rescan lists only folders whose mtime changed (a file was added, removed or
        renamed in them), so an idle watcher tracking many files stays nearly free; files
        changed in place are reported by close-write events, and by the full rescans.
        """
        self._rescans += 1
        return self._scan(quick=self._rescans % 10 != 0)

    def _scan(self, *, quick: bool, top: str | None = None) -> int:
        seen = 0
        changed: list[Path] = []
        walk = self._walk(str(self.root), quick) if top is None else self._walk(top, new=True)
        for path, stat in walk:
            seen += 1
            if self._known.get(path) != stat:
                changed.append(Path(path))
        with self._lock:
            self._candidates.update(changed)
        return seen

    def _walk(
        self, top: str, quick: bool = False, *, new: bool = False
    ) -> Iterator[tuple[str, Stat]]:
        """The files under ``top`` with their stat, depth first, never failing on one path.

        A stack, not recursion: a tree a thousand folders deep is a valid tree. A folder or
        entry that cannot be read (too long a path, a link loop, an I/O error, no permission)
        is reported once and skipped; one that vanished meanwhile is skipped silently.

        With ``new`` (a folder an event reported), sub-folders already listed are left to
        their own events and to the rescans: ``mkdir -p`` of a deep chain reports every level,
        and walking each level's whole subtree again would cost the square of the depth.
        """
        stack = [top]
        while stack:
            folder = stack.pop()
            if new and folder != top and folder in self._folders:
                continue
            try:
                mtime = os.lstat(folder).st_mtime_ns
                cached = self._folders.get(folder)
                if quick and cached is not None and cached[0] == mtime:
                    stack.extend(reversed(cached[1]))  # unchanged: only sub-folders hold news
                    continue
                with os.scandir(folder) as listing:
                    entries = list(listing)
            except OSError as exc:
                self._folders.pop(folder, None)
                if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                    self._reported(folder, exc)
                continue
            subfolders: list[str] = []
            self._folders[folder] = (mtime, subfolders)
            for entry in entries:
                if is_ignored(entry.name, self.ignore):
                    continue
                found = self._entry(entry)
                if found is None:
                    continue
                if isinstance(found, Stat):
                    yield entry.path, found
                elif self.recursive:
                    subfolders.append(entry.path)
            stack.extend(reversed(subfolders))

    def _entry(self, entry: os.DirEntry[str]) -> Stat | bool | None:
        """An entry's ``Stat`` if it is a file to track, True for a folder, else None."""
        try:
            if entry.is_dir(follow_symlinks=False):
                return True
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
            elif entry.is_symlink() and self.source.follows(Path(entry.path)):
                st = entry.stat()  # the target's: its changes are the file's
            else:
                return None  # FIFO, socket, device, or a link not followed
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):  # vanished while scanning: no news
                self._reported(entry.path, exc)
            return None
        return Stat(st.st_size, st.st_mtime_ns)

    def _relative(self, path: Path) -> str | None:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return None

    def poll(self) -> list[FileRef]:
        """Check the candidates; return references to the files that are now complete.

        Also lists the folders that events reported as new (their files may have been
        written before the folder was watched) and restarts the observer if it died.
        """
        self._keep_observing()
        with self._lock:
            folders = set(self._new_folders)
            self._new_folders.clear()
        if self.recursive:
            for folder in sorted(folders, key=len):  # parents first: they list their children
                rel = self._relative(Path(folder))
                if rel is not None and not any(
                    is_ignored(part, self.ignore) for part in Path(rel).parts
                ):
                    self._scan(quick=False, top=folder)
        with self._lock:
            candidates = set(self._candidates)  # the handler holds this very set: copy, clear
            self._candidates.clear()
        ready: list[FileRef] = []
        now = time.time()
        for path in candidates:
            rel = self._relative(path)
            if rel is None or any(is_ignored(part, self.ignore) for part in Path(rel).parts):
                continue
            try:
                linked = self.source.follows(path)
                st = path.stat() if linked else path.lstat()
            except OSError as exc:
                self._first_look.pop(path, None)
                if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                    self._reported(str(path), exc)
                continue
            if not stat_.S_ISREG(st.st_mode):
                continue  # a folder, FIFO, socket, device, or a link not followed
            stat = Stat(st.st_size, st.st_mtime_ns)
            if self._known.get(str(path)) == stat:
                continue  # already handed out this exact version
            first = self._first_look.get(path)
            self._first_look[path] = stat
            if self.stable_seconds > 0 and not is_stable(
                first, stat, now - st.st_mtime, self.stable_seconds
            ):
                with self._lock:
                    self._candidates.add(path)  # look again on a later poll
                continue
            ref = self._ref(path, rel, st.st_size, st.st_mtime, linked=linked)
            if ref is not None:
                self._first_look.pop(path, None)
                self._known[str(path)] = stat
                ready.append(ref)
        return ready

    def _ref(
        self, path: Path, rel: str, size: int, mtime: float, *, linked: bool
    ) -> FileRef | None:
        try:
            ref = describe_file(path, rel, self.rules, follow_symlinks=linked)
        except RuntimeError as exc:  # a link loop in the folders above the file
            self._reported(str(path), OSError(errno.ELOOP, str(exc)))
            return None
        except OSError as exc:
            self._reported(str(path), exc)
            if exc.errno not in RETRY_ERRNOS:
                # Unreadable as it is (no permission, an I/O error): trying again at every
                # poll would only spin. Not handed out, so each full rescan nominates it again.
                return None
            ref = None
        if ref is None or ref.size != size or ref.mtime != mtime:
            with self._lock:
                self._candidates.add(path)  # short of resources, or changed while hashing
            return None
        return ref

    def ack(self) -> None:
        """Nothing to acknowledge: a local file stays where it is."""

    def pending(self) -> int:
        """How many candidates wait for their stability check."""
        with self._lock:
            return len(self._candidates)
