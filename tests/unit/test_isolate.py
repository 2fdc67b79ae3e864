"""Reader children: a crash, a runaway allocation or a hang ends one call, never the caller."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopper.errors import ContractViolation, ReaderCrashedError, TransientError
from hopper.isolate import Call, Limits, ReaderPool, death_reason

ROOT = Path(__file__).resolve().parents[2]
EASY = Limits(memory_mb=512, cpu_seconds=30)


# --- what the children run (module-level, so they pickle by reference) ----------------------


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def segfault() -> None:
    ctypes.string_at(0)


def allocate(mb: int) -> int:
    block = bytearray(mb << 20)
    return len(block)


_pinned: list[bytes] = []


def retain(mb: int) -> int:
    """Fill the heap with small blocks, free them, keep one above them: the heap stays big."""
    blocks = [bytes(1000) for _ in range(mb * 1000)]
    _pinned.append(bytes(1000))
    del blocks
    return os.getpid()


def small_blocks(mb: int) -> int:
    blocks = [bytes(1000) for _ in range(mb * 1000)]
    return len(blocks)


def spin() -> None:
    while True:
        pass


def hang(seconds: float) -> None:
    time.sleep(seconds)


def reject() -> None:
    raise ContractViolation("bad rows", violations=[{"column": "a", "rows": [1]}])


def flaky() -> None:
    raise ConnectionError("connection reset")


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(a)


def strange() -> None:
    raise Unpicklable(1, 2)


def slow_pid(seconds: float) -> tuple[int, float, float]:
    started = time.time()
    time.sleep(seconds)
    return os.getpid(), started, time.time()


# ---------------------------------------------------------------------------------------------


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReaderPool]:
    monkeypatch.chdir(ROOT)  # the children import this module as tests.unit.test_isolate
    pool = ReaderPool(2)
    yield pool
    pool.close()


def test_a_call_returns_its_result_and_reuses_the_child(pool: ReaderPool) -> None:
    assert pool.call(add, 2, 3, limits=EASY, what="x") == 5
    first = pool.call(pid, limits=EASY, what="x")
    assert first != os.getpid()
    assert pool.call(pid, limits=EASY, what="x") == first


def test_a_segfault_quarantines_the_call_and_a_fresh_child_carries_on(pool: ReaderPool) -> None:
    pool.call(pid, limits=EASY, what="x")
    with pytest.raises(ReaderCrashedError, match=r"file:///a\.json: the reader crashed: SIGSEGV"):
        pool.call(segfault, limits=EASY, what="file:///a.json")
    after = pool.call(pid, limits=EASY, what="x")
    assert after != os.getpid()
    assert pool.call(add, 1, 1, limits=EASY, what="x") == 2
    assert len(pool.pids()) <= pool.size


def test_an_allocation_over_the_limit_fails_in_the_child(pool: ReaderPool) -> None:
    small = Limits(memory_mb=200, cpu_seconds=30)
    with pytest.raises(ReaderCrashedError, match="exceeded the 200 MiB memory limit"):
        pool.call(allocate, 2048, limits=small, what="file:///big.parquet")
    # the limit is per call: the next one may use more
    assert pool.call(allocate, 300, limits=EASY, what="x") == 300 << 20


def test_memory_a_child_kept_from_an_earlier_file_does_not_widen_the_next_limit(
    pool: ReaderPool,
) -> None:
    big = Limits(memory_mb=1024, cpu_seconds=30)
    first = pool.call(retain, 400, limits=big, what="x")
    with pytest.raises(ReaderCrashedError, match="100 MiB memory limit"):
        pool.call(small_blocks, 300, limits=Limits(memory_mb=100, cpu_seconds=30), what="y")
    assert first not in pool.pids()  # the child holding the heap was retired


def test_cpu_time_is_limited(pool: ReaderPool) -> None:
    with pytest.raises(ReaderCrashedError, match="1 s CPU-time limit"):
        pool.call(spin, limits=Limits(memory_mb=100, cpu_seconds=1), what="file:///s.csv")


def test_a_blocked_reader_is_stopped_at_its_deadline(pool: ReaderPool) -> None:
    started = time.monotonic()
    limits = Limits(memory_mb=100, cpu_seconds=30, wall_seconds=1)
    with pytest.raises(ReaderCrashedError, match="took longer than 1 s"):
        pool.call(hang, 60, limits=limits, what="file:///fifo")
    assert time.monotonic() - started < 10


def test_errors_come_back_with_their_kind(pool: ReaderPool) -> None:
    with pytest.raises(ContractViolation) as caught:
        pool.call(reject, limits=EASY, what="x")
    assert caught.value.violations == [{"column": "a", "rows": [1]}]
    with pytest.raises(ConnectionError):
        pool.call(flaky, limits=EASY, what="x")
    with pytest.raises(RuntimeError, match="Unpicklable"):
        pool.call(strange, limits=EASY, what="x")


def test_unpicklable_transient_errors_stay_transient() -> None:
    from hopper.isolate.child import _reply

    class Throttled(TransientError):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a} {b}")

    def throttled() -> None:
        raise Throttled(1, 2)

    kind, value = _reply(throttled, (), EASY)
    assert kind == "text"
    assert value[0] is True


def test_calls_from_two_threads_run_at_once_in_two_children(pool: ReaderPool) -> None:
    results: list[tuple[int, float, float]] = []

    def go() -> None:
        results.append(pool.call(slow_pid, 1.0, limits=EASY, what="x"))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = results
    assert pid_a != pid_b
    assert max(start_a, start_b) < min(end_a, end_b)  # the two calls overlapped


def kind_of(what: str) -> int:
    """One call of a batch: ``what`` says what it does."""
    if what == "crash":
        segfault()
    if what == "reject":
        reject()
    if what == "hog":
        return allocate(2048)
    if what == "hang":
        hang(60)
    return os.getpid()


def test_a_batch_of_calls_gives_each_its_own_outcome_in_order(pool: ReaderPool) -> None:
    kinds = ["ok", "ok", "reject", "crash", "ok", "hog", "ok", "hang", "ok"]
    calls = [
        Call(
            (kind,),
            Limits(memory_mb=200, cpu_seconds=30, wall_seconds=2 if kind == "hang" else None),
            f"file:///{i}-{kind}",
        )
        for i, kind in enumerate(kinds)
    ]
    started = time.monotonic()
    results = list(pool.call_each(kind_of, calls))
    assert [index for index, _, _ in results] == list(range(len(kinds)))
    pids = []
    for (_, result, error), kind in zip(results, kinds, strict=True):
        if kind == "ok":
            assert error is None and isinstance(result, int)
            pids.append(result)
        elif kind == "reject":
            assert isinstance(error, ContractViolation)
        elif kind == "crash":
            assert isinstance(error, ReaderCrashedError) and "SIGSEGV" in str(error)
        elif kind == "hog":
            assert isinstance(error, ReaderCrashedError) and "200 MiB memory limit" in str(error)
        else:
            assert isinstance(error, ReaderCrashedError) and "took longer than 2 s" in str(error)
    # the first two shared a child; the crash, the hog and the hang each cost only their own
    # child, and the calls after them went to a fresh one
    assert pids[0] == pids[1] and len(set(pids)) == 4
    assert time.monotonic() - started < 30
    assert pool.call(add, 1, 2, limits=EASY, what="x") == 3  # the pool is whole again
    assert len(pool.pids()) <= pool.size


def test_a_batch_abandoned_part_way_leaves_no_child_behind(pool: ReaderPool) -> None:
    calls = [Call(("ok",), EASY, f"file:///{i}") for i in range(5)]
    results = pool.call_each(kind_of, calls)
    _, first, _ = next(results)
    results.close()  # the caller stops listening: that child is stopped, not reused
    assert first not in pool.pids()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(first):
        time.sleep(0.05)
    assert not _alive(first)
    assert pool.call(add, 2, 2, limits=EASY, what="x") == 4


def test_a_batch_gives_its_child_back_before_its_last_reply_is_handled(pool: ReaderPool) -> None:
    calls = [Call(("ok",), EASY, f"file:///{i}") for i in range(3)]
    results = pool.call_each(kind_of, calls)
    (_, first, _), (_, second, _) = next(results), next(results)
    assert first == second and first not in pool.pids()  # still reading the batch
    _, last, error = next(results)
    assert error is None and last == first
    assert first in pool.pids()  # idle already, while this caller handles the last reply
    assert next(results, None) is None
    assert pool.pids().count(first) == 1  # given back once, not twice
    assert pool.call(pid, limits=EASY, what="x") == first  # and taken again


def test_a_batch_abandoned_at_its_last_reply_keeps_its_child(pool: ReaderPool) -> None:
    calls = [Call(("ok",), EASY, f"file:///{i}") for i in range(2)]
    results = pool.call_each(kind_of, calls)
    next(results)
    _, child, _ = next(results)
    results.close()  # every reply was read: the child is whole and stays in the pool
    assert pool.pids() == [child]
    assert _alive(child)


def test_children_end_with_the_pool(pool: ReaderPool) -> None:
    pool.warm()
    pids = pool.pids()
    assert len(pids) == 2
    pool.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-signal.SIGSEGV, "the reader crashed: SIGSEGV"),
        (-signal.SIGBUS, "the reader crashed: SIGBUS"),
        (-signal.SIGXCPU, "CPU-time limit"),
        (-signal.SIGKILL, "killed (SIGKILL"),
        (3, "status 3"),
    ],
)
def test_death_reasons_are_words(code: int, words: str) -> None:
    assert words in death_reason(code, Limits(memory_mb=1, cpu_seconds=5))


def test_children_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from hopper.isolate import ReaderPool\n"
        "pool = ReaderPool(2)\n"
        "pool.warm()\n"
        "print(*pool.pids(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
