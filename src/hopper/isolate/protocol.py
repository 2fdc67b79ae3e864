"""What the worker and its reader children share: the limits of one call, the wire format.

A request is ``(function, [(arguments, limits), …])``: one or several calls of one function,
each under its own limits. Each call gets its own reply ``(kind, value, retiring)``, in order,
as soon as it is done. Every message is pickled and sent with an 8-byte length in front.
Only Hopper's own code is ever pickled: the protocol runs between two Hopper processes,
never on user data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!Q")
MAX_MESSAGE = 1 << 30  # a reply larger than this is a broken child, not an outcome
# A child whose address space grew by more than this over its idle size retires after its
# reply: memory it freed but kept mapped would be reused unseen by the next file's limit.
# (Its allocator returns large blocks at once; this is the net for whatever else holds on.)
RECYCLE_GROWTH = 256 << 20


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
