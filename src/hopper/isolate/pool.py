"""The worker's side: a pool of reader children, each reading one file at a time.

See :mod:`hopper.isolate` for why. A thread that needs a file read takes an idle child
(starting one if the pool is not full), sends the call, and waits for the reply under the
call's wall-clock deadline; a child that dies, times out or answers nonsense is killed and
replaced, and the call ends with :class:`~hopper.errors.ReaderCrashedError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, NamedTuple, TypeVar

from hopper.errors import ReaderCrashedError, TransientError
from hopper.isolate.protocol import HEADER, MAX_MESSAGE, Limits

log = logging.getLogger(__name__)

T = TypeVar("T")


class Call(NamedTuple):
    """One call of :meth:`ReaderPool.call_each`: its arguments, limits, and what it reads."""

    args: tuple[Any, ...]
    limits: Limits
    what: str  # the file the call is about, for messages (its URI)


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
            [sys.executable, "-m", "hopper.isolate.child"],
            env={**os.environ, **_CHILD_ENV},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's log lines go where the worker's go
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.retiring = False  # said with its last reply: it exits, it takes no more files

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, payload: bytes, limits: Limits) -> None:
        """Send one request (one or several calls); raises :class:`_Died` if it cannot."""
        try:
            self.stdin.write(HEADER.pack(len(payload)) + payload)
            self.stdin.flush()
        except OSError:  # a broken pipe: it died
            raise _Died(self._ended(limits)) from None

    def receive(self, limits: Limits) -> tuple[str, Any]:
        """Wait for the reply to the next call, within its deadline; raises :class:`_Died`."""
        deadline = time.monotonic() + limits.deadline_seconds
        header = self._read(HEADER.size, deadline, limits)
        (size,) = HEADER.unpack(header)
        if size > MAX_MESSAGE:
            self.kill()
            raise _Died(f"the reader sent a malformed reply ({size} bytes)")
        kind, value, self.retiring = pickle.loads(self._read(size, deadline, limits))
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
        ((_, result, error),) = self.call_each(func, [Call(args, limits, what)])
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    def call_each(
        self, func: Callable[..., T], calls: Sequence[Call]
    ) -> Iterator[tuple[int, T | None, BaseException | None]]:
        """Run ``func(*call.args)`` for each call, in order, several per message to one child.

        Yields ``(index, result, error)`` for each call as its reply comes: ``error`` is what
        :meth:`call` would raise for it, else None. Each call keeps its own limits and
        deadline, exactly as if made alone; the child starts on the next call while the
        caller handles this one. A child that dies, or retires after a call, takes no more:
        the calls it had not begun go to another child, so one bad file costs only itself.
        Abandoning the iterator part way stops the child that was working on the rest.
        """
        start = 0
        while start < len(calls):
            todo = calls[start:]
            payload = pickle.dumps(
                (func, [(c.args, c.limits) for c in todo]), protocol=pickle.HIGHEST_PROTOCOL
            )
            child: _Child | None = self._acquire()
            resume = len(calls)
            try:
                for offset, call in enumerate(todo):
                    index = start + offset
                    assert child is not None
                    try:
                        if offset == 0:
                            child.send(payload, call.limits)
                        kind, value = child.receive(call.limits)
                    except _Died as died:
                        log.error("%s: %s (reader process %d)", call.what, died.reason, child.pid)
                        resume = index + 1
                        yield index, None, ReaderCrashedError(f"{call.what}: {died.reason}")
                        break
                    result, error = _result(kind, value, call)
                    if offset == len(todo) - 1 or child.retiring:
                        # Every reply read: the child is idle (or exiting), so it goes back
                        # before the caller handles this last reply; another thread's files
                        # need not wait for that.
                        resume = index + 1
                        self._release(child, keep=not child.retiring)
                        child = None
                        yield index, result, error
                        break
                    yield index, result, error
            finally:
                if child is not None:  # died, or abandoned part way: never reused
                    self._release(child, keep=False)
            start = resume

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


def _result(kind: str, value: Any, call: Call) -> tuple[Any, BaseException | None]:
    """A child's reply as ``(result, error)``: the error is what the caller is to raise."""
    if kind == "ok":
        return value, None
    if kind == "memory":
        return None, ReaderCrashedError(
            f"{call.what}: the reader exceeded the {call.limits.memory_mb:g} MiB memory limit "
            f"(max_memory_mb): {value}"
        )
    if kind == "raise":
        return None, value
    transient, type_name, text = value
    if transient:
        return None, TransientError(f"{type_name}: {text}")
    return None, RuntimeError(f"{type_name}: {text}")


_pool: ReaderPool | None = None
_pool_lock = threading.Lock()


def shared_pool(size: int = 0) -> ReaderPool:
    """The process's reader pool, made on first call with ``size`` children (0: one per core).

    Later calls return the same pool whatever their ``size``: the process that serves flows
    makes it first, with the ``readers`` setting it was started with (see
    :attr:`hopper.home.Home.readers`).
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ReaderPool(size or os.cpu_count() or 1)
        return _pool
