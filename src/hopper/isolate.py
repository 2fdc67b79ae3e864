"""Untrusted parsing runs in child processes, so a crash or a runaway allocation hurts one file.

Everything that decodes a user's bytes (CSV, JSON and Parquet readers, decompressors, Arrow's
casts) can crash the process it runs in (a segfault in a native reader) or try to allocate
terabytes (a Parquet footer that lies). Hopper runs that work in long-lived child processes
of the worker, one file at a time each, under ``setrlimit`` limits set per file from its
dataset's contract: address space (``max_memory_mb`` above what the child already maps) and
CPU time (``max_seconds``), plus a wall-clock deadline kept by the parent. A child that dies
or runs out of memory ends :meth:`ReaderPool.call` with :class:`~hopper.errors.
ReaderCrashedError` (terminal: the file is quarantined with that reason) and is replaced by a
fresh child; the other files of a batch go to the other children. A pool of children is also
how one worker uses more than one core: a warm worker's flow threads share one interpreter.

Children are plain ``python -m hopper.isolate`` processes speaking length-prefixed pickles
over their standard input and output (never ``fork`` of a threaded worker). They exit when
their input closes or their parent dies. Only the parent's own code is ever sent to them:
the pickles are the protocol between two Hopper processes, never user data.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from hopper.errors import ReaderCrashedError, TransientError, is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")

_HEADER = struct.Struct("!Q")
_MAX_MESSAGE = 1 << 30  # a reply larger than this is a broken child, not an outcome
# A child whose address space grew by more than this over its idle size retires after its
# reply: memory it freed but kept mapped would be reused unseen by the next file's limit.
# (Its allocator returns large blocks at once; this is the net for whatever else holds on.)
_RECYCLE_GROWTH = 256 << 20


@dataclass(frozen=True)
class Limits:
    """What one file's reader may use.

    Attributes:
        memory_mb: address space the child may map on top of what it maps when idle (MiB).
        cpu_seconds: CPU time the file may take (the kernel sends SIGXCPU past it).
        wall_seconds: wall-clock time before the parent kills the child (a reader blocked
            on I/O uses no CPU); by default twice the CPU time plus a minute.
    """

    memory_mb: float
    cpu_seconds: float
    wall_seconds: float | None = None

    @property
    def deadline_seconds(self) -> float:
        """The wall-clock deadline the parent enforces."""
        return self.wall_seconds or self.cpu_seconds * 2 + 60


class _Died(Exception):
    """A child ended without a reply; ``reason`` says how, in words for a reason file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def death_reason(returncode: int, limits: Limits, *, killed_for_time: bool = False) -> str:
    """Why a child ended, from its exit status (pure; negative = killed by that signal)."""
    if killed_for_time:
        return f"the reader took longer than {limits.deadline_seconds:g} s and was stopped"
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU:
            return f"the reader exceeded its {limits.cpu_seconds:g} s CPU-time limit (max_seconds)"
        if sig == signal.SIGKILL:
            return "the reader was killed (SIGKILL; the system may have run out of memory)"
        if sig == signal.SIGABRT:  # Arrow aborts on some failed allocations
            return (
                f"the reader crashed: SIGABRT (it may have hit its {limits.memory_mb:g} MiB "
                "memory limit, max_memory_mb)"
            )
        return f"the reader crashed: {name}"
    return f"the reader exited unexpectedly with status {returncode}"


# Allocators that reserve address space up front (mimalloc's arenas, glibc's 64 MiB heap per
# thread) let a reader use that reserve without the address-space limit noticing: measured,
# a reader limited to 8 MiB read a 36 MB CSV whole. Children use Arrow's system allocator
# with one glibc arena, and blocks over 256 KiB mapped on their own and unmapped when freed:
# a child's address space then follows what it uses (measured: 100 small files left it
# within 22 MiB of its idle size, where a heap kept 150 MiB of free blocks mapped, which
# the next file could have used unseen). Conversion speed is within noise of mimalloc's.
_CHILD_ENV = {
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(256 << 10),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 20),
    "MALLOC_TOP_PAD_": str(16 << 20),
}


class _Child:
    """One child process and its pipes (used by one thread at a time)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hopper.isolate"],
            env={**os.environ, **_CHILD_ENV},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's log lines go where the worker's go
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.files = 0
        self.retiring = False  # said with its last reply: it exits, it takes no more files

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, payload: bytes, limits: Limits) -> tuple[str, Any]:
        """Send one request and wait for its reply; raises :class:`_Died` if none comes."""
        try:
            self.stdin.write(_HEADER.pack(len(payload)) + payload)
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died(self._ended(limits)) from None
        deadline = time.monotonic() + limits.deadline_seconds
        header = self._read(_HEADER.size, deadline, limits)
        (size,) = _HEADER.unpack(header)
        if size > _MAX_MESSAGE:
            self.kill()
            raise _Died(f"the reader sent a malformed reply ({size} bytes)")
        kind, value, self.retiring = pickle.loads(self._read(size, deadline, limits))
        self.files += 1
        return kind, value

    def _read(self, size: int, deadline: float, limits: Limits) -> bytes:
        fd = self.stdout.fileno()
        chunks: list[bytes] = []
        got = 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise _Died(death_reason(-9, limits, killed_for_time=True))
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, min(size - got, 1 << 20))
            if not chunk:
                raise _Died(self._ended(limits))
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _ended(self, limits: Limits) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode or -9
        return death_reason(code, limits)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    def close(self) -> None:
        """Ask the child to exit (its input closes), then make sure it has."""
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(OSError):
            self.stdout.close()


class ReaderPool:
    """Up to ``size`` child processes that run functions under per-call limits.

    Thread-safe: each calling thread takes an idle child (starting one if fewer than
    ``size`` exist, else waiting for one), so ``size`` threads read ``size`` files at once.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._idle: list[_Child] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    def call(self, func: Callable[..., T], *args: Any, limits: Limits, what: str) -> T:
        """Run ``func(*args)`` in a child under ``limits`` and return its result.

        ``func`` must be a module-level function of Hopper (it is pickled by reference);
        ``args`` and the result must pickle.

        Args:
            func: the function to run.
            *args: its arguments.
            limits: what the call may use.
            what: the file the call is about, for messages (its URI).

        Raises:
            ReaderCrashedError: the child died, ran out of memory or time (terminal).
            Whatever ``func`` raised, re-raised here (a transient error stays transient).
        """
        payload = pickle.dumps((func, args, limits), protocol=pickle.HIGHEST_PROTOCOL)
        child = self._acquire()
        keep = False
        try:
            kind, value = child.call(payload, limits)
            keep = not child.retiring
        except _Died as died:
            log.error("%s: %s (reader process %d)", what, died.reason, child.pid)
            raise ReaderCrashedError(f"{what}: {died.reason}") from None
        finally:
            self._release(child, keep)
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        if kind == "memory":
            raise ReaderCrashedError(
                f"{what}: the reader exceeded the {limits.memory_mb:g} MiB memory limit "
                f"(max_memory_mb): {value}"
            )
        if kind == "raise":
            raise value
        transient, type_name, text = value
        if transient:
            raise TransientError(f"{type_name}: {text}")
        raise RuntimeError(f"{type_name}: {text}")

    def warm(self) -> None:
        """Start every child now, so the first files do not wait for Python to start."""
        with self._cond:
            while self._count < self.size and not self._closed:
                self._idle.append(_Child())
                self._count += 1

    def pids(self) -> list[int]:
        """Process ids of the idle children (for tests and status)."""
        with self._cond:
            return [c.pid for c in self._idle]

    def close(self) -> None:
        """Stop every idle child; children still busy are stopped when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for child in idle:
            child.close()

    def _acquire(self) -> _Child:
        with self._cond:
            while True:
                while self._idle:
                    child = self._idle.pop()
                    if child.alive():
                        return child
                    child.kill()
                    self._count -= 1
                if self._count < self.size:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return _Child()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, child: _Child, keep: bool) -> None:
        with self._cond:
            if keep and not self._closed:
                self._idle.append(child)
                self._cond.notify()
                return
            self._count -= 1
            self._cond.notify()
        if keep:
            child.close()
        else:
            child.kill()


_pool: ReaderPool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> ReaderPool:
    """The process's reader pool (``HOPPER_READERS`` children, default one per core)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from hopper.settings import HopperSettings

            size = HopperSettings().readers or os.cpu_count() or 1
            _pool = ReaderPool(size)
        return _pool


# --- the child side -------------------------------------------------------------------------


def _die_with_parent() -> None:
    """End this child soon after its parent dies, even in the middle of a file.

    Not ``PR_SET_PDEATHSIG``: Linux sends that when the *thread* that started the child
    ends, and readers are started from short-lived threads of the worker.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _mapped_bytes() -> int:
    """Address space this process maps now (VmSize)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


_MEMORY_WORDS = (
    "out of memory",
    "malloc of size",
    "cannot allocate memory",
    "failed to launch worker thread",
    "can't start new thread",
)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether an error is an allocation refused by the address-space limit, in disguise.

    Under ``RLIMIT_AS`` a failed allocation reaches Python as ``MemoryError``, but also as an
    Arrow error ("malloc of size … failed", "Failed to launch worker thread") or an
    ``OSError`` with ``ENOMEM``.
    """
    if isinstance(exc, MemoryError):  # includes pyarrow's ArrowMemoryError
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    text = str(exc).lower()
    return any(word in text for word in _MEMORY_WORDS)


def _warm_up() -> None:
    """Start Arrow's thread pools before any limit, so their stacks are not counted in it."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    table = pa_csv.read_csv(pa.BufferReader(b"a,b\n1,x\n"))
    pa_json.read_json(pa.BufferReader(b'{"a": 1}\n'))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    pq.read_table(pa.BufferReader(sink.getvalue()))


def _apply(limits: Limits) -> None:
    """Limit address space and CPU time for the next call (soft limits; hard ones untouched)."""
    _, hard_as = resource.getrlimit(resource.RLIMIT_AS)
    want = _mapped_bytes() + int(limits.memory_mb * (1 << 20))
    if hard_as != resource.RLIM_INFINITY:
        want = min(want, hard_as)
    resource.setrlimit(resource.RLIMIT_AS, (want, hard_as))
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = used.ru_utime + used.ru_stime
    _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    soft_cpu = int(cpu + limits.cpu_seconds) + 1
    if hard_cpu != resource.RLIM_INFINITY:
        soft_cpu = min(soft_cpu, hard_cpu)
    resource.setrlimit(resource.RLIMIT_CPU, (soft_cpu, hard_cpu))


def _lift() -> None:
    for which in (resource.RLIMIT_AS, resource.RLIMIT_CPU):
        _, hard = resource.getrlimit(which)
        resource.setrlimit(which, (hard, hard))


def _reply(func: Callable[..., Any], args: tuple[Any, ...], limits: Limits) -> tuple[str, Any]:
    """Run one request under its limits and describe the result as a picklable reply."""
    _apply(limits)
    try:
        return "ok", func(*args)
    except Exception as exc:
        if _out_of_memory(exc):
            return "memory", (str(exc).splitlines() or ["allocation refused"])[0][:300]
        try:
            pickle.loads(pickle.dumps(exc))  # the parent must be able to raise it again
            return "raise", exc
        except Exception:
            return "text", (is_transient(exc), type(exc).__name__, str(exc))
    finally:
        _lift()


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main() -> None:
    """Serve requests from the parent until its pipe closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker; it stops us
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by a library goes to the log, not into the protocol
    requests = sys.stdin.buffer
    from hopper.settings import HopperSettings

    logging.basicConfig(
        level=HopperSettings().log_level.upper(),
        format="%(asctime)s %(levelname)s reader[%(process)d] %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # imported, never run, here
    _warm_up()
    idle = _mapped_bytes()
    while True:
        header = _read_exact(requests, _HEADER.size)
        if header is None:
            return
        body = _read_exact(requests, _HEADER.unpack(header)[0])
        if body is None:
            return
        func, args, limits = pickle.loads(body)
        kind, value = _reply(func, args, limits)
        # Out of memory, or holding memory the next file's limit would not see: retire.
        retire = kind == "memory" or _mapped_bytes() - idle > _RECYCLE_GROWTH
        try:
            data = pickle.dumps((kind, value, retire), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result is a bug, reported as such
            data = pickle.dumps(("text", (False, type(exc).__name__, str(exc)), retire))
        replies.write(_HEADER.pack(len(data)) + data)
        replies.flush()
        if retire:
            return


if __name__ == "__main__":
    main()
