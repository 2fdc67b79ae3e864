"""watchdog's inotify observer, with moves paired in constant time.

watchdog pairs a folder's ``IN_MOVED_FROM`` and ``IN_MOVED_TO`` events (a rename inside the
watched tree) in a queue it searches from the oldest event for every ``IN_MOVED_TO``, twice,
whether or not a move-from with that cookie is queued at all. When files are moved into the
inbox faster than the observer hands events on (a burst: 8,000 files renamed in 0.2 s), the
queue holds thousands of events and each search walks them all: measured, 8,000 files took
6 s of a core to come through, 16,000 files 16 s — growing with the square of the burst.

:class:`MoveGrouper` keeps the same queue semantics (a move-from waits up to half a second
for its move-to, and a pair comes out as one event in the move-to's place) with the queued
move-froms indexed by cookie, so a move-to costs the same however long the queue. It plugs
into watchdog's own classes (:class:`Observer`); on a platform without inotify, or should
those classes change, watchdog's default observer is used instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

from watchdog.observers import Observer as DefaultObserver
from watchdog.observers.inotify_move_event_grouper import (
    GroupedInotifyEvent,
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)

__all__ = ["MoveGrouper", "observer"]

log = logging.getLogger(__name__)


class _Queued:
    """One event in the queue; ``live`` turns False when its move-to takes it (a pair)."""

    __slots__ = ("at", "delayed", "event", "live")

    def __init__(self, event: GroupedInotifyEvent, at: float, delayed: bool) -> None:
        self.event = event
        self.at = at
        self.delayed = delayed
        self.live = True


class MoveGrouper(InotifyMoveEventGrouper):
    """A drop-in for watchdog's ``InotifyMoveEventGrouper``: same events, same order.

    An ``IN_MOVED_FROM`` is held up to :attr:`delay` seconds for its ``IN_MOVED_TO``; if that
    comes, the two leave the queue together, as a pair, in the move-to's place; otherwise
    the move-from leaves alone. Every other event leaves in arrival order, never held
    behind a move-from longer than its delay. Thread-safe: inotify's reader puts, the
    emitter's thread reads.
    """

    def __init__(self) -> None:  # not super(): watchdog's queue is what this replaces
        self._events: deque[_Queued] = deque()
        self._moved_from: dict[int, deque[_Queued]] = {}  # cookie → queued move-froms
        self._ready = threading.Condition(threading.Lock())
        self._closed = False

    def put_event(self, event: PathedInotifyEvent) -> None:
        """Queue ``event``; a move-to whose move-from is queued replaces it as a pair."""
        inotify = event.ev
        with self._ready:
            grouped: GroupedInotifyEvent = event
            if inotify.is_moved_to:
                source = self._take_moved_from(inotify.cookie)
                if source is not None:
                    source.live = False
                    grouped = (source.event, event)  # type: ignore[assignment]
            queued = _Queued(grouped, time.monotonic(), delayed=inotify.is_moved_from)
            if inotify.is_moved_from:
                self._moved_from.setdefault(inotify.cookie, deque()).append(queued)
            self._events.append(queued)
            self._ready.notify()

    def _take_moved_from(self, cookie: int) -> _Queued | None:
        waiting = self._moved_from.get(cookie)
        if not waiting:
            return None
        source = waiting.popleft()
        if not waiting:
            del self._moved_from[cookie]
        return source

    def read_event(self) -> GroupedInotifyEvent | None:
        """The next event (blocking), or None once closed."""
        with self._ready:
            while True:
                queue = self._events
                while queue and not queue[0].live:
                    queue.popleft()
                if self._closed:
                    return None
                if not queue:
                    self._ready.wait()
                    continue
                head = queue[0]
                if head.delayed:
                    left = head.at + self.delay - time.monotonic()
                    if left > 0:  # its move-to may still come: woken by any put
                        self._ready.wait(left)
                        continue
                    self._take_moved_from(head.event.ev.cookie)  # type: ignore[union-attr]
                queue.popleft()
                return head.event

    def get_queued_moved_from_event(self, cookie: int) -> PathedInotifyEvent | None:
        """The queued move-from with ``cookie``, left in the queue, or None."""
        with self._ready:
            waiting = self._moved_from.get(cookie)
            return waiting[0].event if waiting else None  # type: ignore[return-value]

    def discard_pending_events(self) -> None:
        """Forget every queued event (after the kernel's queue overflowed)."""
        with self._ready:
            self._events.clear()
            self._moved_from.clear()

    def close(self) -> None:
        """Make every :meth:`read_event`, waiting or to come, return None."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()


def _inotify_observer() -> type[Any] | None:
    """watchdog's inotify observer class, made to use :class:`MoveGrouper`; None if it cannot
    be (no inotify here, or watchdog's classes are not the ones this was written for)."""
    try:
        from watchdog.observers.inotify import (
            InotifyEmitter,
            InotifyObserver,
            InotifyWatchGroup,
        )
    except ImportError:  # not Linux
        return None
    if "_move_event_grouper" not in {f.name for f in fields(InotifyWatchGroup)}:
        log.warning("watchdog's inotify classes changed: using its own move grouper")
        return None

    @dataclass
    class WatchGroup(InotifyWatchGroup):
        _move_event_grouper: InotifyMoveEventGrouper = field(
            default_factory=MoveGrouper, init=False
        )

    class Emitter(InotifyEmitter):
        def on_thread_start(self) -> None:  # as watchdog's, with the group above
            self._inotify = WatchGroup(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    class Observer(InotifyObserver):
        def __init__(self) -> None:
            super().__init__()
            self._emitter_class = Emitter  # emitters are made by schedule(), after this

    return Observer


_OBSERVER = _inotify_observer()


def observer() -> Any:
    """A new, unstarted observer: inotify's with :class:`MoveGrouper` where it can be."""
    return _OBSERVER() if _OBSERVER is not None else DefaultObserver()
