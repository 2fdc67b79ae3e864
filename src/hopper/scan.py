"""Finding the complete files of a local folder by walking it: scans, rescans, stability.

A folder source is watched by the watcher (:mod:`hopper.watch.local` adds watchdog's events
for speed) and rescanned by reconciliation, which runs in a flow and must not need the
watcher: both walk the folder with :class:`FolderScan`. A walk never fails on one path:
every path is a stranger's (a tree deeper than ``PATH_MAX``, a symlink loop, an I/O error, a
folder that vanishes mid-scan, a FIFO, a name in no encoding), so a path that cannot be read
is logged once (:class:`_Reported` remembers, within a bound, what it already said) and
skipped. A file is complete once its size and mtime have stayed the same for
``stable_seconds`` — or at once, for a file a file-system event reported (closed after writing,
moved in, created), when no process holds it open for writing (checked on the opening
that hashes it: :func:`~hopper.files.describe_file`).
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from hopper.config import FolderSource, RoutingRule
from hopper.files import Stat, describe_file, is_stable, shown, within
from hopper.models import FileRef
from hopper.routing import is_ignored

log = logging.getLogger(__name__)

REPORTED_LIMIT = 4096  # unreadable paths remembered (so that each is logged once)
# Errors of the moment (this process short of file handles or memory): the file is retried.
RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})


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


class FolderScan:
    """One folder source found by walking it: nominates candidates, hands out stable files.

    :meth:`scan` (and :meth:`rescan`) nominate every new or changed file; :meth:`poll` checks
    the candidates and returns those that are complete. A subclass may nominate more between
    scans (files into ``_candidates``, folders to list into ``_new_folders``, under ``_lock``)
    and tend to its own machinery at each poll (:meth:`_tend`).
    """

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
        # Candidates a file-system event reported: complete once nobody writes them.
        self._by_event: set[Path] = set()
        self._new_folders: set[str] = set()  # reported by events, listed by the next poll
        self._first_look: dict[Path, Stat] = {}
        self._future: dict[Path, float] = {}  # first seen, for files whose mtime is ahead
        self._real_root: str | None = None
        # Last version handed out per path (str keys: hashing a Path costs more).
        self._known: dict[str, Stat] = {}
        self._folders: dict[str, tuple[int, list[str]]] = {}  # mtime and sub-folders, per folder
        self._rescans = 0
        self._reported = _Reported()

    def _tend(self) -> None:
        """Work of a subclass at each poll, before the candidates are checked (none here)."""

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

    def _inside(self, path: Path, folders: dict[Path, str | None]) -> str | None:
        """The real folder holding ``path`` if it really lies in the source, else None.

        An event can name a file through a link to a folder elsewhere (a folder moved in
        holding such a link): the file is not the source's, and is never opened.

        Args:
            path: the file.
            folders: folders resolved already in this poll (the files of a burst share a
                few): ``path``'s is looked up there, and added.
        """
        folder = path.parent
        if folder not in folders:
            try:
                if self._real_root is None:
                    self._real_root = os.path.realpath(self.root, strict=True)
                real = os.path.realpath(folder, strict=True)
            except (OSError, RuntimeError):
                folders[folder] = None
                return None
            folders[folder] = real if within(real, self._real_root) else None
        return folders[folder]

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
        self._tend()
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
            by_event = set(self._by_event)
            self._by_event.clear()
        ready: list[FileRef] = []
        now = time.time()
        resolved: dict[Path, str | None] = {}
        for path in candidates:
            rel = self._relative(path)
            if rel is None or any(is_ignored(part, self.ignore) for part in Path(rel).parts):
                continue
            real = self._inside(path, resolved)
            if real is None:
                self._first_look.pop(path, None)
                self._reported(str(path), OSError(errno.EXDEV, "reached through a link out"))
                continue
            try:
                linked = self.source.follows(path)
                st = path.stat() if linked else path.lstat()
            except OSError as exc:
                self._first_look.pop(path, None)
                self._future.pop(path, None)
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
            age = now - st.st_mtime
            if age < 0:  # stamped in the future (a skewed clock): count from the first look
                age = now - self._future.setdefault(path, now)
            quiet = self.stable_seconds <= 0 or is_stable(first, stat, age, self.stable_seconds)
            if not quiet and path not in by_event:
                with self._lock:
                    self._candidates.add(path)  # look again on a later poll
                continue
            # Not quiet yet but reported by an event: taken now unless a writer holds it
            # (then it is looked at again on a later poll, as above).
            ref = self._ref(
                path,
                rel,
                st.st_size,
                st.st_mtime,
                linked=linked,
                folder=real,
                unless_written=not quiet,
            )
            if ref is not None:
                self._first_look.pop(path, None)
                self._future.pop(path, None)
                self._known[str(path)] = stat
                ready.append(ref)
        return ready

    def _ref(
        self,
        path: Path,
        rel: str,
        size: int,
        mtime: float,
        *,
        linked: bool,
        folder: str,
        unless_written: bool,
    ) -> FileRef | None:
        try:
            ref = describe_file(
                path,
                rel,
                self.rules,
                follow_symlinks=linked,
                folder=folder,
                unless_written=unless_written,
            )
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
