"""The scale-out benchmark: a burst with one warm worker, then with two, on PostgreSQL.

A `hopper up` whose Prefect server and ledger live in two fresh PostgreSQL databases (on
127.0.0.1:5432) takes a burst with its own worker; a second ``hopper worker`` joins the pool
and an equal burst follows. For each burst the CPU used by every role (Prefect server,
workers, watcher, PostgreSQL) and by the machine as a whole is recorded, which tells where
the ceiling is: a role near a full core is the bottleneck, a machine near 100 % means more
workers on this machine cannot help — they belong on other machines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import cases
from bench.procs import (
    HopperUp,
    Profile,
    descendants,
    proc_times,
    processes_named,
    start_hopper,
    terminate,
)

log = logging.getLogger(__name__)

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATASETS = ["bench_scale_1", "bench_scale_2"]


@contextlib.contextmanager
def postgres_databases() -> Iterator[tuple[str, str]]:
    """Two fresh databases: Prefect's (with ``pg_trgm``) and the ledger's; dropped afterwards.

    Yields:
        ``(PREFECT_API_DATABASE_CONNECTION_URL, HOPPER_LEDGER_URL)``.

    Raises:
        RuntimeError: no PostgreSQL answers on 127.0.0.1:5432.
    """
    import psycopg

    suffix = uuid.uuid4().hex[:6]
    prefect_db, ledger_db = f"hopper_bench_prefect_{suffix}", f"hopper_bench_ledger_{suffix}"
    try:
        admin = psycopg.connect(ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"no PostgreSQL on 127.0.0.1:5432 ({exc})") from exc
    with admin:
        for name in (prefect_db, ledger_db):
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = ADMIN.rsplit("/", 1)[0]
        with psycopg.connect(f"{url}/{prefect_db}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        yield (
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{prefect_db}",
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{ledger_db}",
        )
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            for name in (prefect_db, ledger_db):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine_busy_seconds() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def machine_steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests while this machine wanted them (steal).

    Counted as busy by :func:`machine_busy_seconds`: on a shared virtual machine it is how
    much slower everything measured here ran, Hopper and its baselines alike.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on the machine (the ledger's and Prefect's backends)."""
    return processes_named("postgres")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds used so far by each of ``pids`` that still runs."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            out[pid] = proc_times(pid)[0]
    return out


class CpuProbe:
    """CPU used by each role (and by the machine) between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids_by_role: Callable[[], dict[str, list[int]]]) -> None:
        self.pids_by_role = pids_by_role
        self._before: dict[str, dict[int, float]] = {}
        self._machine = (0.0, 0.0)
        self._steal = 0.0
        self._began = 0.0

    def start(self) -> None:
        """Take the first reading (just before the burst's files are moved in)."""
        self._before = {role: cpu_seconds(pids) for role, pids in self.pids_by_role().items()}
        self._machine = machine_busy_seconds()
        self._steal = machine_steal_seconds()
        self._began = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """``cpu_cores`` (role → average cores busy), ``machine_busy_percent`` and, of that,
        ``machine_steal_percent`` since start."""
        wall = time.monotonic() - self._began
        busy, total = machine_busy_seconds()
        cores: dict[str, float] = {}
        for role, pids in self.pids_by_role().items():
            after = cpu_seconds(pids)
            before = self._before.get(role, {})
            used = sum(after[p] - before.get(p, 0.0) for p in after)
            cores[role] = round(used / wall, 2) if wall > 0 else 0.0
        spent = max(total - self._machine[1], 1e-9)
        return {
            "cpu_cores": cores,
            "machine_busy_percent": round(100 * (busy - self._machine[0]) / spent, 1),
            "machine_steal_percent": round(
                100 * (machine_steal_seconds() - self._steal) / spent, 1
            ),
        }


def roles(up: HopperUp, extra_workers: list[int]) -> Callable[[], dict[str, list[int]]]:
    """A function listing the PIDs of each role of ``up`` (plus extra workers) right now.

    ``readers`` are the workers' reader processes: a part of ``workers``, named apart so that
    the conversion's CPU can be told from the runs' bookkeeping.
    """

    def read() -> dict[str, list[int]]:
        children = up.state()["children"]

        def tree(pid: int) -> list[int]:
            return [pid, *descendants(pid)]

        roots = [int(children["worker"]), *extra_workers]
        readers = [pid for root in roots for pid in descendants(root)]
        return {
            "server": tree(int(children["server"])),
            "workers": [*roots, *readers],
            "readers": readers,
            "watcher": tree(int(children["watcher"])),
            "postgres": postgres_pids(),
        }

    return read


@contextlib.contextmanager
def second_worker(up: HopperUp, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """One more warm worker on the `hopper` pool, as `hopper worker` on another machine."""
    log_path = up.root / "worker-2.log"
    proc = start_hopper(["worker", "--pool", "hopper", "--limit", "4"], env, log_path)
    try:
        deadline = time.monotonic() + 120
        while "serving pool" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the second worker did not start; see {log_path}")
            time.sleep(0.25)
        yield proc
    finally:
        terminate(proc, signal.SIGINT, timeout=30)


def scaleout(work: Path, files: int, timeout: float) -> dict[str, Any]:
    """Burst of ``files`` with one worker, then with two, server and ledger on PostgreSQL."""
    with postgres_databases() as (prefect_url, ledger_url):
        profile = Profile(
            "PostgreSQL server and ledger",
            env=(
                ("PREFECT_API_DATABASE_CONNECTION_URL", prefect_url),
                ("HOPPER_LEDGER_URL", ledger_url),
            ),
        )
        with HopperUp(work / "home-postgres", DATASETS, profile) as up:
            log.info("scale-out: burst of %d with one worker", files)
            one = cases.burst(
                up,
                DATASETS[0],
                files,
                work / "staging-scale-1",
                timeout,
                prefix="one",
                probe=CpuProbe(roles(up, [])),
            )
            env = up.cli_env() | {
                "HOPPER_LEDGER_URL": ledger_url,
                "PREFECT_WORKER_QUERY_SECONDS": "0.5",
                "HOPPER_LOG_LEVEL": "INFO",
            }
            with second_worker(up, env) as worker:
                log.info("scale-out: burst of %d with two workers", files)
                two = cases.burst(
                    up,
                    DATASETS[1],
                    files,
                    work / "staging-scale-2",
                    timeout,
                    prefix="two",
                    probe=CpuProbe(roles(up, [worker.pid])),
                )
    ratio = two["files_per_s"] / one["files_per_s"] if one["files_per_s"] else 0.0
    return {"files": files, "one_worker": one, "two_workers": two, "ratio": round(ratio, 2)}


def ceiling(run: dict[str, Any]) -> str:
    """Where the time goes in a burst, in words: the busiest role and the machine's load."""
    cores = run["cpu_cores"]
    role = max((r for r in cores if r != "readers"), key=cores.get)
    steal = run.get("machine_steal_percent")
    stolen = f" ({steal:.0f} % stolen by the hypervisor)" if steal else ""
    return (
        f"machine {run['machine_busy_percent']:.0f} % busy{stolen}; {role} {cores[role]:.2f} cores "
        f"(server {cores['server']:.2f}, workers {cores['workers']:.2f} "
        f"of which readers {cores.get('readers', 0.0):.2f}, "
        f"watcher {cores['watcher']:.2f}, postgres {cores['postgres']:.2f})"
    )
