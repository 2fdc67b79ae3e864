"""Contract transforms that inject faults into real flow runs (imported by the worker).

A dataset contract names one of these with `transform: "tests.integration.faults:…"`; the
worker runs flows from the project folder, so this module is importable there.
"""

from __future__ import annotations

import pyarrow as pa

from hopper.errors import TransientError

_calls = {"flaky": 0}


def flaky_once(table: pa.Table) -> pa.Table:
    """Fail like a network hiccup on the first call in a process, then pass the rows on."""
    _calls["flaky"] += 1
    if _calls["flaky"] == 1:
        raise TransientError("injected transient fault (connection reset)")
    return table


def always_transient(table: pa.Table) -> pa.Table:
    """A fault that never clears: retries run out and the run fails."""
    raise TransientError("injected transient fault that never clears")


def slow(table: pa.Table) -> pa.Table:
    """Take a few seconds, so a test can kill the worker in the middle of the run."""
    import time

    time.sleep(6)
    return table


def crash_on_666(table: pa.Table) -> pa.Table:
    """Crash the process (a segfault, as a native reader might) on a file with id 666."""
    import ctypes

    import pyarrow.compute as pc

    if "id" in table.column_names and pc.any(pc.equal(table["id"], 666)).as_py():
        ctypes.string_at(0)
    return table
