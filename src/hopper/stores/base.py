"""The one interface to a place where Hopper puts files: a local folder or an S3 prefix.

Outputs, their staging folders and quarantine copies all go through :class:`Store`, so the
policy above it (:mod:`hopper.sink`: names, partitions, quarantine; :mod:`hopper.staging`:
all-or-nothing publishes) is written once and never asks where it is writing. The
differences between places live in the implementations only: an atomic write is a rename
locally and a completed upload on S3; a name is claimed with ``O_EXCL`` locally and with a
conditional put on S3; a cheap backup is a hard link locally and a server-side copy on S3.

Locations are strings: an absolute path, or an ``s3://bucket/key`` URI. :func:`join` builds
them the same way for both, so a location is a pure function of its parts.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pyarrow as pa

Writer = Callable[[pa.NativeFile], None]
"""Writes a file's bytes to the stream it is given (e.g. ``pq.write_table(table, stream)``)."""


def join(first: str, *parts: str) -> str:
    """Join location parts with ``/``, keeping the first part's root (``/`` or ``s3://``)."""
    return "/".join([first.rstrip("/"), *(p.strip("/") for p in parts if p)])


class Store(ABC):
    """Files at locations (paths or URIs) of one kind of place; see the module docstring.

    Every method takes full locations. Faults are Hopper's: on S3, throttling and network
    faults raise :class:`~hopper.errors.TransientError`, a missing source
    :class:`~hopper.errors.SourceGoneError`; locally, ``OSError`` as Python raises it.
    """

    @abstractmethod
    def write_atomic(self, path: str, write: Writer, content_type: str | None = None) -> None:
        """Write a whole file: readers see all of it at ``path``, or what was there before.

        Args:
            path: the file's location (an existing file is replaced).
            write: called once with a stream to write the content to.
            content_type: a MIME type, kept where the place records one (S3).
        """

    @abstractmethod
    def open_output(
        self, path: str, content_type: str | None = None
    ) -> AbstractContextManager[pa.NativeFile]:
        """A stream to a new file at ``path``, for content too large to hold (stream-write).

        Leaving the block normally finishes the file; leaving it by an exception removes it.
        A process killed in the block can leave part of a file at ``path`` (or, on S3, an
        unfinished upload nobody can read): stream only to paths readers skip, such as a
        staging folder, and publish with :meth:`move`.
        """

    @abstractmethod
    def open_input(self, path: str) -> pa.NativeFile:
        """A seekable file to read (Parquet needs its footer first); close it when done."""

    @abstractmethod
    def put_text(self, path: str, text: str) -> None:
        """Write a small UTF-8 text file atomically."""

    @abstractmethod
    def read_text(self, path: str) -> str | None:
        """A small UTF-8 text file's content, or None if there is no such file."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a file is at ``path``."""

    @abstractmethod
    def list_files(self, prefix: str) -> list[str]:
        """Every file whose location starts with ``prefix`` (a folder ends with ``/``)."""

    @abstractmethod
    def find(self, root: str, name: str, depth: int) -> list[str]:
        """The files named ``name`` exactly ``depth`` folders below ``root``."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove a file (a missing one is fine)."""

    @abstractmethod
    def delete_folder(self, folder: str, files: Iterable[str] | None = None) -> None:
        """Remove a folder and everything in it.

        Args:
            folder: the folder.
            files: if given, every file in it (spares a listing where listing costs).
        """

    @abstractmethod
    def prune(self, paths: Iterable[str], stop: str) -> None:
        """Remove the folders above ``paths`` left empty, up to (not including) ``stop``."""

    @abstractmethod
    def copy(self, source: str, target: str) -> None:
        """Copy a file of this store to ``target``, replacing it (see :meth:`reaches`).

        Raises:
            SourceGoneError: on S3, the source object is gone.
        """

    @abstractmethod
    def move(self, source: str, target: str) -> None:
        """Put ``source`` at ``target``, replacing what is there; ``source`` is gone after.

        Locally one rename; on S3 a copy then a delete (a kill between leaves both).
        """

    @abstractmethod
    def backup(self, source: str, target: str) -> None:
        """Make ``target`` a copy of ``source`` (which stays), as cheaply as the place allows.

        Only for files that are replaced, never modified in place (lake files): locally
        it is a hard link.
        """

    @abstractmethod
    def upload(self, local: Path, target: str) -> None:
        """Copy a local file's bytes to ``target`` (never through a symbolic link)."""

    @abstractmethod
    def reaches(self, uri: str) -> bool:
        """Whether :meth:`copy` can read ``uri`` where it is (an S3 object, for S3)."""

    @abstractmethod
    def claim(self, path: str, content: bytes) -> bytes | None:
        """Create ``path`` with ``content`` unless a file is there already.

        The check and the creation are one step (``O_EXCL``; a conditional put on S3), so
        two writers never both succeed.

        Returns:
            None if this call created the file, else the content of the file that holds the
            name (empty if it could not be read).
        """

    @abstractmethod
    def prepare(self, root: str) -> None:
        """Make ``root`` ready to receive files (create the folder; nothing on S3)."""

    @abstractmethod
    def check(self, root: str, what: str) -> None:
        """Fail with one clear line if ``root`` cannot be reached.

        Raises:
            ConfigError: naming ``root`` and ``what`` it is for (lake, quarantine).
        """


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder`` (no symbolic link followed), in no particular order."""
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            yield Path(dirpath) / name
