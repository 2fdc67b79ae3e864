"""The local folder source, on a real folder with a real watchdog observer."""

import os
import time
from pathlib import Path
from typing import Any

import pytest

from hopper.config import FolderSource
from hopper.files import Stat, describe_file, is_stable
from hopper.models import FileRef
from hopper.watch.local import LocalFolder

IGNORE = [".*", "*.tmp", "*.part", "~*"]


def _poll_until(folder: LocalFolder, want: int, timeout: float = 10.0) -> list[FileRef]:
    found: list[FileRef] = []
    deadline = time.monotonic() + timeout
    while len(found) < want and time.monotonic() < deadline:
        found += folder.poll()
        time.sleep(0.05)
    return found


def test_is_stable_rule() -> None:
    a = Stat(10, 1)
    assert is_stable(a, Stat(10, 1), mtime_age=1.0, stable_seconds=0.5)
    assert not is_stable(None, a, 1.0, 0.5)
    assert not is_stable(a, Stat(11, 2), 1.0, 0.5)
    assert not is_stable(a, a, 0.1, 0.5)


def test_detects_closed_and_moved_in_files_once(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0.2)
    folder.start()
    try:
        (root / "sales").mkdir(parents=True)
        (root / "sales" / "a.csv").write_text("x\n1\n")
        staged = tmp_path / "b.csv"
        staged.write_text("x\n2\n")
        os.rename(staged, root / "sales" / "b.csv")
        (root / "sales" / "c.csv.part").write_text("partial")
        (root / "sales" / ".hidden.csv").write_text("hidden")
        refs = _poll_until(folder, 2)
        assert sorted(r.name for r in refs) == ["a.csv", "b.csv"]
        assert {r.dataset for r in refs} == {"sales"}
        assert all(r.sha256 and r.uri.startswith("file://") for r in refs)
        time.sleep(0.5)
        assert folder.poll() == []  # nothing handed out twice
    finally:
        folder.stop()


def test_scan_finds_files_that_existed_before_start(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "orders").mkdir(parents=True)
    (root / "orders" / "old.csv").write_text("x\n1\n")
    past = time.time() - 60
    os.utime(root / "orders" / "old.csv", (past, past))
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0.2)
    assert folder.scan() == 1
    refs = _poll_until(folder, 1)
    assert [r.name for r in refs] == ["old.csv"]


def test_growing_file_is_not_complete_until_it_stops(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "logs").mkdir(parents=True)
    path = root / "logs" / "grow.csv"
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0.5)
    with path.open("w") as fh:
        for i in range(6):
            fh.write(f"{i}\n")
            fh.flush()
            folder.scan()
            assert folder.poll() == []
            time.sleep(0.1)
    refs = _poll_until(folder, 1)
    assert len(refs) == 1 and refs[0].size == path.stat().st_size


def test_changed_file_is_a_new_version(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "d").mkdir(parents=True)
    path = root / "d" / "f.csv"
    path.write_text("x\n1\n")
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0.1)
    folder.scan()
    (first,) = _poll_until(folder, 1)
    path.write_text("x\n1\n2\n")
    folder.scan()
    (second,) = _poll_until(folder, 1)
    assert first.uri == second.uri and first.fingerprint != second.fingerprint


def test_files_in_a_new_folder_are_found_without_a_rescan(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0.1)
    folder.start()
    try:
        for i in range(3):
            (root / f"ds{i}").mkdir()
            (root / f"ds{i}" / "f.csv").write_text("x\n1\n")
        refs = _poll_until(folder, 3, timeout=5)
        assert sorted(r.dataset for r in refs) == ["ds0", "ds1", "ds2"]  # type: ignore[type-var]
    finally:
        folder.stop()


def test_quick_rescans_skip_unchanged_folders_but_find_new_files(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    for d in ("a", "b"):
        (root / d).mkdir(parents=True)
        (root / d / "old.csv").write_text("x\n1\n")
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0)
    assert folder.scan() == 2
    assert len(folder.poll()) == 2
    assert folder.rescan() == 0  # nothing changed: no folder listed again
    (root / "b" / "new.csv").write_text("x\n2\n")
    assert folder.rescan() == 2  # only folder b (its mtime changed) was listed
    assert [r.name for r in folder.poll()] == ["new.csv"]


def test_symlinks_are_followed_only_when_asked_and_only_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "orders").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "shared" / "real.csv").write_text("x\n1\n")
    outside = tmp_path / "secret.csv"
    outside.write_text("x\n2\n")
    (root / "orders" / "inside.csv").symlink_to(root / "shared" / "real.csv")
    (root / "orders" / "outside.csv").symlink_to(outside)
    (root / "orders" / "dangling.csv").symlink_to(tmp_path / "missing.csv")
    past = time.time() - 60
    for path in (root / "shared" / "real.csv", outside):
        os.utime(path, (past, past))

    def found(follow: bool) -> list[str]:
        source = FolderSource(path=root, follow_symlinks=follow)
        folder = LocalFolder(source, [], ignore=IGNORE, stable_seconds=0)
        folder.scan()
        return sorted(r.name for r in folder.poll())

    assert found(follow=False) == ["real.csv"]  # links ignored by default
    assert found(follow=True) == ["inside.csv", "real.csv"]  # never the one pointing out


def test_a_file_stamped_in_the_future_lands_once_stable(tmp_path: Path) -> None:
    from hopper.scan import FolderScan

    root = tmp_path / "inbox"
    (root / "sales").mkdir(parents=True)
    late = root / "sales" / "from-2100.csv"
    late.write_text("x\n1\n")
    os.utime(late, (4102444800, 4102444800))  # 2100-01-01: a skewed clock
    folder = FolderScan(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0.2)
    folder.scan()
    found: list[FileRef] = []
    deadline = time.monotonic() + 5
    while not found and time.monotonic() < deadline:
        found = folder.poll()
        time.sleep(0.05)
    assert [r.name for r in found] == ["from-2100.csv"]


def test_a_file_reached_through_a_link_out_of_the_source_is_never_read(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.csv").write_text("x\n1\n")
    (root / "sales").mkdir(parents=True)
    (root / "sales" / "ok.csv").write_text("x\n2\n")
    (root / "sales" / "out").symlink_to(outside, target_is_directory=True)
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=0)
    folder.scan()
    # an event naming the file through the link (as a folder moved in with such a link gives)
    folder._candidates.add(root / "sales" / "out" / "secret.csv")
    found = folder.poll()
    assert [r.name for r in found] == ["ok.csv"]
    assert all("elsewhere" not in r.uri for r in found)


def test_a_file_still_open_for_writing_is_not_described_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("x\n1\n")

    def described(target: Path, **kwargs: Any) -> FileRef | None:
        return describe_file(target, "sales/f.csv", [], unless_written=True, **kwargs)

    assert described(path) is not None
    with path.open("a") as fh:
        fh.write("2\n")
        fh.flush()
        assert described(path) is None  # a writer holds it: looked at again later
        assert describe_file(path, "sales/f.csv", []) is not None  # unless not asked
    ref = described(path)
    assert ref is not None and ref.size == len("x\n1\n2\n") and ref.sha256
    (tmp_path / "link.csv").symlink_to(path)
    with pytest.raises(OSError):  # a link is not read through unless asked
        described(tmp_path / "link.csv", follow_symlinks=False)
    assert described(tmp_path / "link.csv", follow_symlinks=True) is not None
    os.mkfifo(tmp_path / "fifo.csv")
    assert described(tmp_path / "fifo.csv") is None  # answers at once, never blocks
    with pytest.raises(FileNotFoundError):
        described(tmp_path / "missing.csv")


def test_a_file_its_writer_finished_skips_the_stability_wait(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "sales").mkdir(parents=True)
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=60)
    folder.start()
    try:
        (root / "sales" / "a.csv").write_text("x\n1\n")  # closed after writing
        staged = tmp_path / "b.csv"
        staged.write_text("x\n2\n")
        os.rename(staged, root / "sales" / "b.csv")  # moved in
        held = (root / "sales" / "c.csv").open("w")  # another writer keeps it open
        held.write("x\n")
        held.flush()
        with (root / "sales" / "c.csv").open("a") as fh:
            fh.write("3\n")  # this writer closes: a close-write event, yet c is still written
        refs = _poll_until(folder, 3, timeout=3)
        assert sorted(r.name for r in refs) == ["a.csv", "b.csv"]  # not 60 s later
        held.close()
        (late,) = _poll_until(folder, 1, timeout=3)
        assert late.name == "c.csv" and late.size == len("x\n3\n")
    finally:
        folder.stop()


def test_a_file_event_wakes_the_loop_that_waits_on_it(tmp_path: Path) -> None:
    import threading

    root = tmp_path / "inbox"
    (root / "sales").mkdir(parents=True)
    wake = threading.Event()
    folder = LocalFolder(FolderSource(path=root), [], ignore=IGNORE, stable_seconds=60, wake=wake)
    folder.start()
    try:
        assert not wake.wait(0.3)  # nothing happened: nothing wakes it
        (root / "sales" / "a.csv").write_text("x\n1\n")
        assert wake.wait(5)
        assert [r.name for r in _poll_until(folder, 1, timeout=3)] == ["a.csv"]  # not in 60 s
    finally:
        folder.stop()
