"""What Hopper knows about one local file, for the watcher, the flows and the CLI alike.

The ground floor of file knowledge: how a file is described (:func:`describe_file`: its
``FileRef``, hashed as opened, never through a FIFO), which source holds it
(:func:`relative_to_source`, :func:`is_watched`), how it is shown in a log line, and the
command that replays it. It imports neither the watcher (nor watchdog) nor the flows, so the
flow path, ``hopper replay`` and reconciliation use it without them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import stat as stat_
from pathlib import Path
from typing import NamedTuple

from hopper.config import FolderSource, HopperConfig, RoutingRule, S3Source
from hopper.models import FileRef, file_uri
from hopper.routing import route

HASH_LIMIT = 64 * 1024 * 1024  # hash contents up to this size; larger files use size+mtime


class Stat(NamedTuple):
    """What the stability check compares between two looks at a file."""

    size: int
    mtime_ns: int


def shown(path: str | os.PathLike[str]) -> str:
    """A path as it appears in log lines: its ``file://`` URI (one line, any bytes)."""
    return file_uri(os.path.abspath(path))


def is_stable(first: Stat | None, second: Stat, mtime_age: float, stable_seconds: float) -> bool:
    """Pure completeness rule: unchanged between two looks and untouched for a while."""
    return first is not None and first == second and mtime_age >= stable_seconds


def _no_writer_on(fd: int) -> bool:
    """Whether no process holds the regular file open as ``fd`` for writing (False: unknown).

    Linux grants a read lease on a file only while nobody has it open for writing, so taking
    one and dropping it at once answers without scanning every process's open files. Only
    the file's owner (or a process with ``CAP_LEASE``) may take a lease, and not every file
    system grants them: then the answer is False and the caller waits as for any file.
    """
    lease = getattr(fcntl, "F_SETLEASE", None)
    if lease is None:
        return False
    try:
        fcntl.fcntl(fd, lease, fcntl.F_RDLCK)
        fcntl.fcntl(fd, lease, fcntl.F_UNLCK)
        return True
    except OSError:  # EAGAIN: open for writing somewhere; EACCES: not ours; EINVAL: no leases
        return False


def describe_file(
    path: Path,
    relative: str,
    rules: list[RoutingRule],
    *,
    follow_symlinks: bool = True,
    folder: str | None = None,
    unless_written: bool = False,
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
        folder: ``path``'s folder, resolved already (by a caller that resolves many).
        unless_written: None, not a reference, if a process may hold the file open for
            writing (see :func:`_no_writer_on`): checked on the same opening as the hash.

    Raises:
        OSError: the file cannot be opened or read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    try:
        before = os.fstat(fd)
        if not stat_.S_ISREG(before.st_mode):
            return None  # a FIFO, socket or device: never read
        if unless_written and not _no_writer_on(fd):
            return None
        digest: str | None = None
        if before.st_size <= HASH_LIMIT:
            hasher = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                hasher.update(chunk)
            digest = hasher.hexdigest()
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        return None
    return FileRef(
        # a followed link keeps its name
        uri=file_uri(Path(folder or path.parent.resolve()) / path.name),
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


def is_watched(config: HopperConfig, ref: FileRef, resolved: dict[str, str] | None = None) -> bool:
    """Whether ``ref`` lies under one of the configured sources (flows read nothing else).

    A local path counts if its folder, resolved, lies in a source. Its last component is not
    resolved: a file swapped for a link after detection is the fetch's to refuse (it is
    quarantined, saying so), not a file outside every source. An S3 object counts if a
    source watches its bucket and prefix.

    Args:
        config: the home's configuration.
        ref: the file.
        resolved: folders already resolved (as text), kept by a caller that checks many
            files at once (the files of one batch share their folders).
    """
    if ref.is_local:
        path = ref.local_path()
        if path.name in ("", ".", ".."):
            return False
        cache = {} if resolved is None else resolved

        def real(folder: Path) -> str:
            key = str(folder)
            found = cache.get(key)
            if found is None:
                found = cache[key] = str(folder.resolve())
            return found

        try:
            where = os.path.join(real(path.parent), path.name)
            return any(within(where, real(s.path)) for s in config.folders)
        except (OSError, RuntimeError):  # a folder too deep to resolve, or a loop
            return False
    bucket, _, key = ref.uri.removeprefix("s3://").partition("/")
    return any(
        isinstance(s, S3Source) and s.bucket == bucket and key.startswith(s.prefix)
        for s in config.sources
    )


def within(path: str, folder: str) -> bool:
    """Whether the absolute, resolved ``path`` is ``folder`` or lies under it (pure)."""
    return path == folder or path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


def replay_target(ref: FileRef) -> str:
    """How a replay names a file: its path, else its URI.

    An S3 object, or a local path that is not UTF-8 text (a Latin-1 name), is named by its
    URI, which ``hopper replay`` and the ``hopper-replay`` deployment take as well and which
    stays one line of text.
    """
    if ref.is_local:
        path = str(ref.local_path())
        if path.isprintable() and not any("\udc80" <= ch <= "\udcff" for ch in path):
            return path
    return ref.uri


def replay_command(ref: FileRef) -> str:
    """The exact command that re-runs a file after its problem is fixed."""
    return f"hopper replay {shlex.quote(replay_target(ref))}"
