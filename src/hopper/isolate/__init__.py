"""Untrusted parsing runs in child processes, so a crash or a runaway allocation hurts one file.

Everything that decodes a user's bytes (CSV, JSON and Parquet readers, decompressors, Arrow's
casts) can crash the process it runs in (a segfault in a native reader) or try to allocate
terabytes (a Parquet footer that lies). Hopper runs that work in long-lived child processes
of the worker, one file at a time each, under ``setrlimit`` limits set per file from its
dataset's contract: address space (``max_memory_mb`` above what the child already maps) and
CPU time (``max_seconds``), plus a wall-clock deadline kept by the parent. A child that dies
or runs out of memory ends :meth:`ReaderPool.call` with :class:`~hopper.errors.
ReaderCrashedError` (terminal: the file is quarantined with that reason) and is replaced by a
fresh child; the other files of a batch go to the other children. Small files can be sent
several at once (:meth:`ReaderPool.call_each`), each still under its own limits and with its
own reply: a child that dies costs the file it was on, and the ones it had not begun go to a
fresh child. A pool of children is also how one worker uses more than one core: a warm
worker's flow threads share one interpreter.

Children are plain ``python -m hopper.isolate.child`` processes speaking length-prefixed pickles
over their standard input and output (never ``fork`` of a threaded worker). They exit when
their input closes or their parent dies. Only the parent's own code is ever sent to them:
the pickles are the protocol between two Hopper processes, never user data.

The package: :mod:`~hopper.isolate.protocol` (the limits of a call and the wire format, shared
by both sides), :mod:`~hopper.isolate.pool` (the worker's side) and
:mod:`~hopper.isolate.child` (the child's side).
"""

from hopper.isolate.pool import Call, ReaderPool, death_reason, shared_pool
from hopper.isolate.protocol import Limits

__all__ = ["Call", "Limits", "ReaderPool", "death_reason", "shared_pool"]
