"""The local :class:`~hopper.stores.base.Store`: a folder on this machine's file system.

Plain ``os`` and ``shutil`` rather than ``pyarrow.fs.LocalFileSystem``: a name is claimed with
``O_EXCL``, a backup is a hard link, and a file whose name is not UTF-8 (which Arrow cannot
open) can still be copied into the quarantine.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pyarrow as pa

from hopper.stores.base import Store, Writer, walk_files


def temp_path(target: Path) -> Path:
    """A hidden temporary name beside ``target`` (readers skip dot-files)."""
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"


class LocalStore(Store):
    """:class:`Store` on local folders: temp files and renames, ``O_EXCL``, hard links."""

    def write_atomic(self, path: str, write: Writer, content_type: str | None = None) -> None:
        """See :class:`Store` (a hidden temp file beside ``path``, then one rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(target)
        try:
            with pa.OSFile(str(tmp), "wb") as out:
                write(out)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def _output(self, path: str) -> Iterator[pa.NativeFile]:
        target = Path(path)
        try:
            out = pa.OSFile(path, "wb")
        except FileNotFoundError:  # its folder is made on first use, not checked every time
            target.parent.mkdir(parents=True, exist_ok=True)
            out = pa.OSFile(path, "wb")
        try:
            with out:
                yield out
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def open_output(
        self, path: str, content_type: str | None = None
    ) -> AbstractContextManager[pa.NativeFile]:
        """See :class:`Store` (written in place: callers stream to staged paths)."""
        return self._output(path)

    def open_input(self, path: str) -> pa.NativeFile:
        """See :class:`Store`."""
        return pa.OSFile(path, "rb")

    def put_text(self, path: str, text: str) -> None:
        """See :class:`Store`."""
        self.write_atomic(path, lambda out: out.write(text.encode()))

    def read_text(self, path: str) -> str | None:
        """See :class:`Store`."""
        try:
            return Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        """See :class:`Store`."""
        return Path(path).is_file()

    def list_files(self, prefix: str) -> list[str]:
        """See :class:`Store`."""
        folder, _, start = prefix.rpartition("/")
        try:
            entries = [e for e in Path(folder or "/").iterdir() if e.name.startswith(start)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        found: list[str] = []
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                found += [str(p) for p in walk_files(entry)]
            elif entry.is_file():
                found.append(str(entry))
        return found

    def find(self, root: str, name: str, depth: int) -> list[str]:
        """See :class:`Store` (a glob with a fixed name: no walk of the whole tree)."""
        return [str(p) for p in Path(root).glob("*/" * depth + name)]

    def delete(self, path: str) -> None:
        """See :class:`Store`."""
        Path(path).unlink(missing_ok=True)

    def delete_folder(self, folder: str, files: Iterable[str] | None = None) -> None:
        """See :class:`Store` (given its files, and it has no sub-folder: no walk)."""
        if files is not None:
            try:
                for path in files:
                    Path(path).unlink(missing_ok=True)
                os.rmdir(folder)
                return
            except FileNotFoundError:
                return
            except OSError:
                pass  # sub-folders, or more files than said: remove it whole
        shutil.rmtree(folder, ignore_errors=True)

    def prune(self, paths: Iterable[str], stop: str) -> None:
        """See :class:`Store`."""
        top = Path(stop)
        for path in sorted(set(paths), key=len, reverse=True):
            folder = Path(path).parent
            while folder != top and folder.is_relative_to(top):
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty (another source's files), or already gone
                folder = folder.parent

    def copy(self, source: str, target: str) -> None:
        """See :class:`Store` (through a hidden temp file: never half a copy at ``target``)."""
        self.upload(Path(source), target)

    def move(self, source: str, target: str) -> None:
        """See :class:`Store`; a folder removed meanwhile (a concurrent prune) is made again."""
        for attempt in (1, 2, 3):
            try:
                os.replace(source, target)
                return
            except FileNotFoundError:
                if attempt == 3 or not Path(source).exists():
                    raise
            Path(target).parent.mkdir(parents=True, exist_ok=True)  # then try again

    def backup(self, source: str, target: str) -> None:
        """See :class:`Store` (a hard link: no bytes copied; a copy where links fail)."""
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            shutil.copy2(source, target)

    def upload(self, local: Path, target: str) -> None:
        """See :class:`Store`."""
        if local.is_symlink():
            raise ValueError(f"{local}: a symbolic link is never copied")
        dest = Path(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(dest)
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def reaches(self, uri: str) -> bool:
        """See :class:`Store`: local sources are copied from the path the caller holds."""
        return False

    def claim(self, path: str, content: bytes) -> bytes | None:
        """See :class:`Store`."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                return Path(path).read_bytes()
            except OSError:
                return b""
        with os.fdopen(fd, "wb") as claimed:
            claimed.write(content)
        return None

    def prepare(self, root: str) -> None:
        """See :class:`Store`."""
        Path(root).mkdir(parents=True, exist_ok=True)

    def check(self, root: str, what: str) -> None:
        """See :class:`Store` (a folder is made when first written to: nothing to check)."""
