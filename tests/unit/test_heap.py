"""hopper.heap: what a process loaded to start is set aside, its garbage collected first."""

from __future__ import annotations

import subprocess
import sys

# Run in a process of its own: freezing the test process's heap would outlive the test.
SCRIPT = """
import gc, weakref
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a  # garbage only a collection frees: a cycle
dead = weakref.ref(a)
del a, b
kept = [Node() for _ in range(1000)]
before = gc.get_freeze_count()
from hopper.heap import set_aside_startup
set_aside_startup()
assert dead() is None, "the cycle was set aside instead of collected"
assert gc.get_freeze_count() >= before + 1000, gc.get_freeze_count()
later = Node(); later.me = later; gone = weakref.ref(later); del later
gc.collect()
assert gone() is None, "objects made afterwards are still collected"
print("ok")
"""


def test_startup_objects_are_set_aside_after_one_collection_and_later_ones_still_collected() -> (
    None
):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
