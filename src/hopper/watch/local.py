"""Local folders: watchdog events for speed, periodic scans for certainty.

watchdog's inotify backend reports close-write (``FileClosedEvent``) and move-in
(``FileMovedEvent``); the observer is told to deliver only those (plus creations, for
platforms without close-write), which keeps a large burst from overflowing the kernel queue.
Events only nominate *candidates* for :class:`~hopper.scan.FolderScan`'s completeness check:
a file an event reported (closed after writing, moved in, created) is complete as soon as no
process holds it open for writing, without waiting out ``stable_seconds``; the full scan at
start and every ``rescan_seconds`` catches whatever the events missed (those files wait).

Nothing in the inbox may stop the watcher: the observer's threads only record paths, and one
that dies anyway (watchdog's own walks recurse) is restarted, with a full scan to cover the gap.
This module and :mod:`hopper.watch.inotify` are the only ones that import watchdog.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from hopper.config import FolderSource, RoutingRule
from hopper.files import shown
from hopper.scan import FolderScan
from hopper.watch.inotify import observer as new_observer

__all__ = ["LocalFolder"]

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 300.0)  # first and longest wait before restarting a dead observer


class _Nominator(FileSystemEventHandler):
    """Turns watchdog events into candidate paths and new folders (thread-safe sets).

    It touches no file: whatever a path is, recording it cannot fail, so the observer's
    thread cannot die here. New folders are listed later, by :meth:`LocalFolder.poll`.
    """

    def __init__(
        self,
        candidates: set[Path],
        by_event: set[Path],
        folders: set[str],
        lock: threading.Lock,
        wake: threading.Event | None,
    ) -> None:
        self._candidates = candidates
        self._by_event = by_event
        self._folders = folders
        self._lock = lock
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            moved = isinstance(event, FileMovedEvent | DirMovedEvent)
            path = os.fsdecode(event.dest_path if moved else event.src_path)
            with self._lock:
                if event.is_directory:
                    self._folders.add(path)  # its files may predate its watch: list it
                else:
                    self._candidates.add(Path(path))
                    self._by_event.add(Path(path))  # complete once nobody writes it
            if self._wake is not None:
                self._wake.set()  # the watcher looks at once, not at its next tick
        except Exception:  # pragma: no cover - a bug here must not end the observer
            log.exception("cannot record the watchdog event %r", event)


class LocalFolder(FolderScan):
    """One watched folder: watchdog's events nominate candidates between the scans."""

    def __init__(
        self,
        source: FolderSource,
        rules: list[RoutingRule],
        *,
        ignore: list[str],
        stable_seconds: float,
        wake: threading.Event | None = None,
    ) -> None:
        """``wake`` is set at every file-system event, for a loop that waits on it."""
        super().__init__(source, rules, ignore=ignore, stable_seconds=stable_seconds)
        self._wake = wake
        self._watching = False
        self._observer: Any = None  # a watchdog observer
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
        observer = new_observer()
        try:
            observer.schedule(
                _Nominator(
                    self._candidates, self._by_event, self._new_folders, self._lock, self._wake
                ),
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

    def _tend(self) -> None:
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
