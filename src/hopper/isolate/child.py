"""The reader child's side: serve calls from the worker, each under its own limits.

Run as ``python -m hopper.isolate.child`` by :class:`~hopper.isolate.pool.ReaderPool`. Before
each call the child limits its address space (``RLIMIT_AS``: ``max_memory_mb`` above what it
maps when idle) and its CPU time (``RLIMIT_CPU``), and lifts both after; an allocation the
limit refuses comes back as a ``memory`` reply, however the library disguised it. It ends
when its input closes, when its parent dies, or after a reply that says it retires.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from hopper.errors import is_transient
from hopper.isolate.protocol import HEADER, RECYCLE_GROWTH, Limits


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


_PAGE = os.sysconf("SC_PAGE_SIZE")
_statm: int | None = None  # /proc/self/statm, opened once: each file reads it twice


def _mapped_bytes() -> int:
    """Address space this process maps now (VmSize)."""
    global _statm
    if _statm is None:
        _statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    return int(os.pread(_statm, 128, 0).split()[0]) * _PAGE


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
    """Start Arrow's thread pools before any limit, so their stacks are not counted in it,
    and import the ingestion code, so the first file does not wait for it."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    table = pa_csv.read_csv(pa.BufferReader(b"a,b\n1,x\n"))
    pa_json.read_json(pa.BufferReader(b'{"a": 1}\n'))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    pq.read_table(pa.BufferReader(sink.getvalue()))
    import hopper.ingest  # noqa: F401  (what requests name: loaded now, not on the first file)


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
    """Serve requests from the parent until its pipe closes: one reply per call, in order."""
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
        header = _read_exact(requests, HEADER.size)
        if header is None:
            return
        body = _read_exact(requests, HEADER.unpack(header)[0])
        if body is None:
            return
        func, calls = pickle.loads(body)
        for args, limits in calls:
            kind, value = _reply(func, args, limits)
            # Out of memory, or holding memory the next file's limit would not see: retire.
            retire = kind == "memory" or _mapped_bytes() - idle > RECYCLE_GROWTH
            try:
                data = pickle.dumps((kind, value, retire), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # an unpicklable result is a bug, reported as such
                data = pickle.dumps(("text", (False, type(exc).__name__, str(exc)), retire))
            replies.write(HEADER.pack(len(data)) + data)
            replies.flush()
            if retire:  # the calls not begun go to another child
                return


if __name__ == "__main__":
    main()
