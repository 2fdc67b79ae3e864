"""No path in the inbox stops the local watcher, and a file in any name is found faithfully.

Real folders and a real watchdog observer: trees deeper than ``PATH_MAX`` or than Python's
recursion limit, link loops, FIFOs, sockets and devices, names in Latin-1, with newlines,
``%``, only spaces, or at the 255-byte limit. Each time the scan and the event path must keep
working, a normal file beside must still be found, and an unreadable path is logged once.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopper.config import FolderSource
from hopper.files import describe_file
from hopper.models import FileRef
from hopper.watch.local import LocalFolder

IGNORE = [".*", "*.tmp", "*.part", "~*"]
LOG = "hopper.scan"  # where the walk logs what it skips


def _bytes_path(folder: Path, name: bytes) -> Path:
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def _deep_tree(top: Path, levels: int, name: str) -> None:
    """``levels`` nested folders under ``top``, made relative to a descriptor (like ``mkdir -p``
    in a loop of ``cd``), so that the whole path may exceed ``PATH_MAX``."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        bottom = os.open("bottom.csv", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(bottom, b"x\n1\n")
        os.close(bottom)
    finally:
        os.close(fd)


def _remove_tree(top: Path) -> None:
    """Remove ``top`` without recursion or long paths (``shutil.rmtree`` recurses)."""
    flags = os.O_RDONLY | os.O_DIRECTORY
    names: list[str] = []
    fd = os.open(top, flags)
    while True:
        with os.scandir(fd) as listing:
            entries = list(listing)
        sub = next((e.name for e in entries if e.is_dir(follow_symlinks=False)), None)
        if sub is not None:
            inner = os.open(sub, flags, dir_fd=fd)
            os.close(fd)
            fd, names = inner, [*names, sub]
            continue
        for entry in entries:
            os.unlink(entry.name, dir_fd=fd)
        if not names:
            os.close(fd)
            break
        parent = os.open("..", flags, dir_fd=fd)
        os.close(fd)
        fd = parent
        os.rmdir(names.pop(), dir_fd=fd)
    os.rmdir(top)


def _age(path: Path) -> None:
    past = time.time() - 60
    os.utime(path, (past, past))


def _poll_until(folder: LocalFolder, want: set[str], timeout: float = 10.0) -> list[FileRef]:
    found: list[FileRef] = []
    deadline = time.monotonic() + timeout
    while not want <= {r.name for r in found} and time.monotonic() < deadline:
        found += folder.poll()
        time.sleep(0.05)
    return found


def _skips(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping ")]


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "inbox"
    (root / "sales").mkdir(parents=True)
    yield root
    _remove_tree(root)


def test_scan_survives_a_tree_deeper_than_path_max(
    inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _deep_tree(inbox / "sales", levels=50, name="d" * 100)  # about 5,050 bytes of path
    (inbox / "sales" / "ok.csv").write_text("x\n1\n")
    _age(inbox / "sales" / "ok.csv")
    folder = LocalFolder(FolderSource(path=inbox), [], ignore=IGNORE, stable_seconds=0)
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert folder.scan() >= 1
        assert [r.name for r in folder.poll()] == ["ok.csv"]
        for _ in range(12):  # quick rescans and a full one
            folder.rescan()
            assert folder.poll() == []
    skips = _skips(caplog)
    assert len(skips) == 1 and "too long" in skips[0]  # once, not once per rescan


def test_events_survive_a_tree_deeper_than_path_max(inbox: Path) -> None:
    folder = LocalFolder(FolderSource(path=inbox), [], ignore=IGNORE, stable_seconds=0.1)
    folder.start()
    try:
        _deep_tree(inbox / "sales", levels=50, name="e" * 100)
        time.sleep(0.5)  # let the observer chew on the new folders
        assert folder.poll() == [] or True  # the bottom file is beyond reach: not required
        (inbox / "sales" / "beside.csv").write_text("x\n1\n")
        shallow = inbox / "sales" / ("e" * 100) / ("e" * 100) / "shallow.csv"
        shallow.write_text("x\n2\n")
        refs = _poll_until(folder, {"beside.csv", "shallow.csv"})  # events only: no scan
        assert {"beside.csv", "shallow.csv"} <= {r.name for r in refs}
        assert folder._observer_alive()
    finally:
        folder.stop()


def test_a_tree_deeper_than_the_recursion_limit_is_scanned(inbox: Path) -> None:
    _deep_tree(inbox / "sales", levels=1500, name="f")  # short names: under PATH_MAX
    (inbox / "sales" / "ok.csv").write_text("x\n1\n")
    folder = LocalFolder(FolderSource(path=inbox), [], ignore=IGNORE, stable_seconds=0)
    assert folder.scan() == 2  # the file at the bottom too
    assert sorted(r.name for r in folder.poll()) == ["bottom.csv", "ok.csv"]
    folder.start()  # watchdog's own walk recurses and fails here: rescans take over
    try:
        (inbox / "sales" / "later.csv").write_text("x\n3\n")
        assert "later.csv" in {r.name for r in _poll_until(folder, {"later.csv"})}
    finally:
        folder.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_tree_deeper_than_the_recursion_limit_made_while_watching(inbox: Path) -> None:
    folder = LocalFolder(FolderSource(path=inbox), [], ignore=IGNORE, stable_seconds=0.1)
    folder.start()
    try:
        _deep_tree(inbox / "sales", levels=1100, name="g")  # watchdog's own walks recurse
        (inbox / "sales" / "after.csv").write_text("x\n1\n")
        found: set[str] = set()
        deadline = time.monotonic() + 30
        while not {"after.csv", "bottom.csv"} <= found and time.monotonic() < deadline:
            folder.rescan()  # as the daemon does: watchdog may lag far behind such a tree
            found |= {r.name for r in folder.poll()}
            time.sleep(0.1)
        assert {"after.csv", "bottom.csv"} <= found
    finally:
        folder.stop()


def test_a_stopped_observer_is_restarted_and_its_gap_scanned(inbox: Path) -> None:
    folder = LocalFolder(FolderSource(path=inbox), [], ignore=IGNORE, stable_seconds=0.1)
    folder.start()
    try:
        observer = folder._observer
        assert observer is not None
        observer.stop()
        observer.join(5)
        (inbox / "sales" / "missed.csv").write_text("x\n1\n")  # no observer to see it
        refs = _poll_until(folder, {"missed.csv"})
        assert [r.name for r in refs] == ["missed.csv"]
        assert folder._observer_alive()
        (inbox / "sales" / "next.csv").write_text("x\n2\n")  # events flow again
        assert [r.name for r in _poll_until(folder, {"next.csv"})] == ["next.csv"]
    finally:
        folder.stop()


NAMES = {
    "latin-1": b"caf\xe9.csv",
    "newline": b"two\nlines.csv",
    "spaces-only": b"   ",
    "percent": b"100%25 %41%2F.csv",
    "backslash": b"a\\b.csv",
    "query-fragment": b"a?b#c.csv",
    "max-length": b"n" * 251 + b".csv",  # NAME_MAX: 255 bytes
    "utf8": "日本語.csv".encode(),
    "leading-dash": b"-rf.csv",
    "invalid-utf8-only": b"\xff\xfe",
}


def _special_files(folder: Path) -> list[str]:
    """A FIFO, a socket and (as root) a device, and link loops; their names."""
    os.mkfifo(folder / "fifo.csv")
    made = ["fifo.csv"]
    cwd = os.getcwd()
    os.chdir(folder)  # a socket's path is limited to ~108 bytes: bind it relatively
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind("sock.csv")
        sock.close()
        made.append("sock.csv")
    finally:
        os.chdir(cwd)
    if os.geteuid() == 0:
        os.mknod(folder / "dev.csv", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        made.append("dev.csv")
    (folder / "loop-a.csv").symlink_to(folder / "loop-b.csv")
    (folder / "loop-b.csv").symlink_to(folder / "loop-a.csv")
    (folder / "self.csv").symlink_to(folder / "self.csv")
    (folder / "loopdir").symlink_to(folder)
    return made


@pytest.mark.parametrize("follow", [False, True])
def test_every_name_is_found_under_a_uri_that_leads_back_to_it(
    inbox: Path, follow: bool, caplog: pytest.LogCaptureFixture
) -> None:
    sales = inbox / "sales"
    for raw in NAMES.values():
        path = _bytes_path(sales, raw)
        path.write_bytes(b"x\n1\n")
        _age(path)
    _special_files(sales)
    odd_folder = _bytes_path(inbox, b"dossier-\xe9t\xe9")
    odd_folder.mkdir()
    (odd_folder / "inside.csv").write_text("x\n1\n")
    _age(odd_folder / "inside.csv")
    source = FolderSource(path=inbox, follow_symlinks=follow)
    folder = LocalFolder(source, [], ignore=IGNORE, stable_seconds=0)
    with caplog.at_level(logging.WARNING, logger=LOG):
        folder.scan()
        refs = folder.poll()
        for _ in range(11):
            folder.rescan()
            assert folder.poll() == []
    got = {os.fsencode(r.local_path()) for r in refs}
    want = {os.fsencode(_bytes_path(sales, raw)) for raw in NAMES.values()}
    assert got == want | {os.fsencode(odd_folder / "inside.csv")}
    for ref in refs:
        assert ref.local_path().read_bytes() == b"x\n1\n"
        ref.name.encode("utf-8")  # always storable text
    assert {r.dataset for r in refs} == {"sales", None}  # the Latin-1 folder names no dataset
    assert len(_skips(caplog)) <= 3  # loops, at most once each


def test_a_latin1_named_csv_is_detected_by_events_with_a_faithful_uri(inbox: Path) -> None:
    folder = LocalFolder(FolderSource(path=inbox), [], ignore=IGNORE, stable_seconds=0.1)
    folder.start()
    try:
        os.mkfifo(inbox / "sales" / "fifo.csv")  # an event for it, never a read
        path = _bytes_path(inbox / "sales", b"caf\xe9.csv")
        path.write_bytes(b"x\n1\n")
        refs = _poll_until(folder, {"caf\\xe9.csv"})
        assert [r.name for r in refs] == ["caf\\xe9.csv"]
        (ref,) = refs
        assert ref.uri.endswith("/sales/caf%E9.csv") and ref.dataset == "sales"
        assert ref.local_path().exists() and ref.local_path() == path
    finally:
        folder.stop()


def test_describing_a_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "swapped.csv"
    os.mkfifo(fifo)
    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(describe_file(fifo, "x/swapped.csv", [])), daemon=True
    )
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert result == [None]


def test_a_link_is_not_read_through_unless_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.csv"
    target.write_text("x\n1\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with pytest.raises(OSError):
        describe_file(link, "x/link.csv", [], follow_symlinks=False)
    ref = describe_file(link, "x/link.csv", [], follow_symlinks=True)
    assert ref is not None and ref.local_path() == link
