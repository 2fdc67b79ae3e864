"""Moves paired in constant time (:mod:`hopper.watch.inotify`): the grouper alone, then a
real observer on a real folder."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent
from watchdog.observers.inotify_move_event_grouper import PathedInotifyEvent

from hopper.watch.inotify import MoveGrouper, observer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")


def _event(kind: int, name: str, cookie: int = 0) -> PathedInotifyEvent:
    path = f"/inbox/{name}".encode()
    return PathedInotifyEvent(InotifyEvent(1, kind, cookie, name.encode()), path)


def _moved_from(name: str, cookie: int) -> PathedInotifyEvent:
    return _event(InotifyConstants.IN_MOVED_FROM, name, cookie)


def _moved_to(name: str, cookie: int) -> PathedInotifyEvent:
    return _event(InotifyConstants.IN_MOVED_TO, name, cookie)


def _closed(name: str) -> PathedInotifyEvent:
    return _event(InotifyConstants.IN_CLOSE_WRITE, name)


def _names(event: object) -> object:
    if isinstance(event, PathedInotifyEvent):  # a named tuple: asked first
        return event.path.decode().rsplit("/", 1)[1]
    assert isinstance(event, tuple)  # a pair
    return tuple(_names(e) for e in event)


def test_events_without_a_move_from_come_out_at_once_in_order() -> None:
    grouper = MoveGrouper()
    for event in (_closed("a"), _moved_to("b", 7), _closed("c")):
        grouper.put_event(event)
    began = time.monotonic()
    assert [_names(grouper.read_event()) for _ in range(3)] == ["a", "b", "c"]
    assert time.monotonic() - began < grouper.delay  # nothing was held


def test_a_move_inside_the_tree_comes_out_as_one_pair_in_the_move_tos_place() -> None:
    grouper = MoveGrouper()
    grouper.put_event(_moved_from(".a.part", 5))
    grouper.put_event(_closed("b"))
    assert grouper.get_queued_moved_from_event(5) is not None
    assert grouper.get_queued_moved_from_event(6) is None
    grouper.put_event(_moved_to("a", 5))
    assert grouper.get_queued_moved_from_event(5) is None  # taken by its pair
    began = time.monotonic()
    assert _names(grouper.read_event()) == "b"
    assert _names(grouper.read_event()) == (".a.part", "a")
    assert time.monotonic() - began < grouper.delay  # the paired move-from held nothing up


def test_a_lone_move_from_waits_its_delay_then_comes_out_alone_holding_the_rest() -> None:
    grouper = MoveGrouper()
    grouper.put_event(_moved_from("gone", 9))
    grouper.put_event(_closed("after"))
    began = time.monotonic()
    assert _names(grouper.read_event()) == "gone"
    assert time.monotonic() - began >= grouper.delay * 0.9
    assert _names(grouper.read_event()) == "after"
    grouper.put_event(_moved_to("late", 9))  # its move-from already left: a plain move-to
    assert _names(grouper.read_event()) == "late"


def test_a_move_to_arriving_while_the_reader_waits_on_its_move_from_pairs_them() -> None:
    grouper = MoveGrouper()
    grouper.put_event(_moved_from("x.tmp", 3))
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(_names(grouper.read_event())))
    reader.start()
    time.sleep(0.05)
    grouper.put_event(_moved_to("x", 3))
    reader.join(timeout=5)
    assert got == [("x.tmp", "x")]


def test_moves_sharing_a_cookie_pair_oldest_first() -> None:
    grouper = MoveGrouper()
    grouper.put_event(_moved_from("first", 4))
    grouper.put_event(_moved_from("second", 4))
    grouper.put_event(_moved_to("one", 4))
    grouper.put_event(_moved_to("two", 4))
    assert [_names(grouper.read_event()) for _ in range(2)] == [
        ("first", "one"),
        ("second", "two"),
    ]


def test_discarded_and_closed() -> None:
    grouper = MoveGrouper()
    grouper.put_event(_moved_from("a", 1))
    grouper.put_event(_closed("b"))
    grouper.discard_pending_events()
    assert grouper.get_queued_moved_from_event(1) is None
    waiting: list[object] = []
    reader = threading.Thread(target=lambda: waiting.append(grouper.read_event()))
    reader.start()
    time.sleep(0.05)
    grouper.close()  # wakes a reader that waits on an empty queue
    reader.join(timeout=5)
    assert waiting == [None]
    grouper.put_event(_closed("c"))
    assert grouper.read_event() is None


def test_a_long_queue_of_moves_in_is_paired_without_searching_it() -> None:
    """60,000 moves from outside, queued before any is read: each put is one dict lookup.

    watchdog's own grouper searches the whole queue twice per move-to; it would take
    minutes here, and this a fraction of a second.
    """
    grouper = MoveGrouper()
    count = 60_000
    for i in range(count):
        grouper.put_event(_moved_to(f"f{i}", 1_000 + i))
    grouper.put_event(_moved_from("inner.tmp", 1))
    grouper.put_event(_moved_to("inner", 1))
    names = [_names(grouper.read_event()) for _ in range(count + 1)]
    assert names[0] == "f0" and names[count - 1] == f"f{count - 1}"
    assert names[-1] == ("inner.tmp", "inner")


class _Collect(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: list[FileSystemEvent] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        with self.lock:
            self.events.append(event)


def _wait_for(handler: _Collect, want: int, timeout: float = 20.0) -> list[FileSystemEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with handler.lock:
            if len(handler.events) >= want:
                return list(handler.events)
        time.sleep(0.05)
    return list(handler.events)


def test_the_observer_reports_a_burst_moved_in_and_a_rename_inside(tmp_path: Path) -> None:
    staging, inbox = tmp_path / "staging", tmp_path / "inbox"
    staging.mkdir()
    (inbox / "sales").mkdir(parents=True)
    count = 3_000
    for i in range(count):
        (staging / f"f{i:05d}.csv").write_text("x\n1\n")
    handler = _Collect()
    watcher = observer()
    watcher.schedule(
        handler,
        str(inbox),
        recursive=True,
        event_filter=[FileMovedEvent, FileClosedEvent, FileCreatedEvent],
    )
    watcher.start()
    try:
        # one process renaming them all, as fast as the kernel lets it
        subprocess.run(
            [
                "find",
                str(staging),
                "-type",
                "f",
                "-exec",
                "mv",
                "-t",
                str(inbox / "sales"),
                "{}",
                "+",
            ],
            check=True,
        )
        part = inbox / "sales" / "late.csv.part"
        part.write_text("x\n2\n")
        os.rename(part, inbox / "sales" / "late.csv")
        events = _wait_for(
            handler, count + 3
        )  # the burst, the part's creation and close, its rename
    finally:
        watcher.stop()
        watcher.join(timeout=5)
    # moved in from outside the watch: watchdog reports each as created
    created = {
        os.path.basename(os.fsdecode(e.src_path)) for e in events if e.event_type == "created"
    }
    assert {f"f{i:05d}.csv" for i in range(count)} <= created
    moved = [e for e in events if isinstance(e, FileMovedEvent)]
    renamed = [e for e in moved if os.fsdecode(e.dest_path).endswith("late.csv")]
    assert len(renamed) == 1
    assert os.fsdecode(renamed[0].src_path).endswith("late.csv.part")  # paired, not two events
