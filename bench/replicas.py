"""Prefect beyond one server process: two API replicas and one services process, on Redis.

The topology of docs/deploy.md ("Two API replicas and services apart"), started on one
machine for the tests and the benchmark:

- Prefect's database on PostgreSQL, migrated once (``prefect server database upgrade``)
  before any server starts, so two replicas never race to migrate it;
- Redis (``prefect-redis``) for the messaging broker, the event cache, causal ordering,
  concurrency leases and Docket: an event one replica receives reaches the services process
  (triggers, actions, the event persister) and every replica's event stream;
- two API replicas, ``prefect server start --no-services``, each on its own port;
- one services process, ``prefect server services start``.

The replicas start one after the other: a replica registers Prefect's block types when it
starts, and two registering at once into an empty database collide on a unique key (seen:
``uq_block_type__slug``), which stops one of them. Once the first answers, the others and
any restart only find the rows there.

Each role runs in a session of its own; :meth:`PrefectReplicas.kill` SIGKILLs one replica as a
machine lost would, :meth:`PrefectReplicas.restart` brings it back on the same port.

Redis is shared with whatever else uses the machine's server: the topology claims a numbered
database that is empty (``SET … NX`` on a claim key), names its Docket after itself, and
empties that database when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cases
from bench.data import write_small_files
from bench.procs import (
    REPO,
    Supervised,
    clean_env,
    descendants,
    free_port,
    make_home,
    processes_named,
    stop_sessions,
)
from bench.scaleout import CpuProbe, postgres_databases, postgres_pids
from hopper.up import api_healthy

log = logging.getLogger(__name__)

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
CLAIM_KEY = "hopper:topology-claim"
REDIS_DATABASES = range(1, 16)  # Redis's default 16 databases, leaving 0 to others


@contextlib.contextmanager
def redis_database() -> Iterator[int]:
    """A Redis database number that held nothing, claimed for this topology; emptied after.

    Raises:
        RuntimeError: no Redis answers on 127.0.0.1:6379, or every database is in use.
    """
    import redis

    claim = uuid.uuid4().hex
    chosen: int | None = None
    for number in REDIS_DATABASES:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_timeout=3)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, claim, nx=True):
                chosen = number
                break
        except redis.RedisError as exc:
            raise RuntimeError(f"no Redis on {REDIS_HOST}:{REDIS_PORT} ({exc})") from exc
        finally:
            client.close()
    if chosen is None:
        raise RuntimeError(f"every Redis database 1–15 on {REDIS_HOST}:{REDIS_PORT} is in use")
    try:
        yield chosen
    finally:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=chosen, socket_timeout=10)
        try:
            if client.get(CLAIM_KEY) == claim.encode():
                client.flushdb()
        finally:
            client.close()


def redis_settings(database: int, name: str) -> dict[str, str]:
    """The Prefect settings that put a server's shared state on Redis database ``database``.

    Every server process of one deployment (API replicas and services) must have the same.
    """
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{database}"
    return {
        # prefect-redis publishes in batches of 5 or every 10 s: a lone event (one file
        # dropped) would wait up to 10 s before any automation saw it. One at a time.
        "PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE": "1",
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": REDIS_HOST,
        "PREFECT_REDIS_MESSAGING_PORT": str(REDIS_PORT),
        "PREFECT_REDIS_MESSAGING_DB": str(database),
        "PREFECT_SERVER_DOCKET_URL": url,
        "PREFECT_SERVER_DOCKET_NAME": name,
    }


@dataclass
class PrefectReplicas(Supervised):
    """Two (or more) API replicas and one services process sharing PostgreSQL and Redis.

    Use as a context manager; :attr:`api_urls` lists the replicas' API URLs in order.
    """

    logs: Path
    database_url: str
    redis_db: int | None
    env: dict[str, str]
    replicas: int = 2
    apart: bool = True  # False: one server process running its own services, no Redis
    start_timeout: float = 240.0
    ports: list[int] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_index: dict[str, int] = field(default_factory=dict)

    @property
    def api_urls(self) -> list[str]:
        """Each replica's API URL (``http://127.0.0.1:<port>/api``), in order."""
        return [f"http://127.0.0.1:{port}/api" for port in self.ports]

    @property
    def server_env(self) -> dict[str, str]:
        """The environment of every server process: database, Redis, no telemetry."""
        shared = {}
        if self.redis_db is not None:
            name = f"hopper-{self.redis_db}-{self.ports[0] if self.ports else 0}"
            shared = redis_settings(self.redis_db, name)
        return (
            self.env
            | shared
            | {
                "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
                "PREFECT_UI_ENABLED": "false",
            }
        )

    def replica_name(self, index: int) -> str:
        return f"replica-{'abcdefgh'[index]}"

    def start(self) -> None:
        """Migrate the database, then start the services process and every replica."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ports = [free_port() for _ in range(self.replicas)]
        env = self.server_env
        began = time.monotonic()
        upgrade = subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=env,
            capture_output=True,
            text=True,
            timeout=self.start_timeout,
            check=False,
        )
        if upgrade.returncode != 0:
            raise RuntimeError(f"prefect server database upgrade failed:\n{upgrade.stderr[-2000:]}")
        log.info("replicas: database migrated in %.1fs", time.monotonic() - began)
        if self.apart:
            self._start("services", ["server", "services", "start"])
        for index in range(self.replicas):  # one at a time: see the module's note
            self.start_replica(index)
            self.wait_healthy(index)
        log.info("replicas: %s up after %.1fs", ", ".join(self.api_urls), time.monotonic() - began)

    def start_replica(self, index: int) -> None:
        """Start (or start again) replica ``index`` on its port, without services."""
        port = str(self.ports[index])
        services = ["--no-services"] if self.apart else []
        args = ["server", "start", *services, "--host", "127.0.0.1", "--port", port]
        self._start(self.replica_name(index), args)

    def wait_healthy(self, index: int) -> None:
        """Block until replica ``index`` answers, or raise with the tail of its log."""
        name = self.replica_name(index)
        deadline = time.monotonic() + self.start_timeout
        while not api_healthy(self.api_urls[index]):
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.tail(name)}")
            time.sleep(0.25)

    def kill(self, index: int) -> None:
        """SIGKILL replica ``index`` and everything it started, as a lost machine would."""
        self.kill_role(self.replica_name(index))

    def restart(self, index: int) -> None:
        """Start replica ``index`` again on the same port and wait until it answers."""
        self.start_replica(index)
        self.wait_healthy(index)

    def kill_role(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def start_services(self) -> None:
        """Start the services process again (after :meth:`kill_role` of ``services``)."""
        self._start("services", ["server", "services", "start"])

    def pids(self) -> dict[str, list[int]]:
        """Each server role's live PIDs (with their children), for CPU accounting."""
        return {
            name: [proc.pid, *descendants(proc.pid)]
            for name, proc in self.procs.items()
            if proc.poll() is None
        }

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}-{self._log_index.get(name, 0)}.log"

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(text[-lines:])

    def _start(self, name: str, args: list[str]) -> None:
        self._log_index[name] = self._log_index.get(name, -1) + 1
        with self.log_path(name).open("wb") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                env=self.server_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """SIGINT every role, then SIGKILL what has not exited within 20 s."""
        stop_sessions(self.procs.values())


# --------------------------------------------------------------------------- clients


@dataclass
class Fleet:
    """Hopper's own processes (workers, watchers), each in a session of its own."""

    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        """Start ``python -m hopper ARGS`` as ``name``, its output in ``<logs>/<name>.log``."""
        with (self.logs / f"{name}.log").open("wb") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "hopper", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )

    def wait_for_line(self, name: str, text: str, timeout: float = 120) -> None:
        """Block until ``text`` appears in ``name``'s log, or raise with its tail."""
        deadline = time.monotonic() + timeout
        while text not in (self.logs / f"{name}.log").read_text(errors="replace"):
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not say {text!r}:\n{self.tail(name)}")
            time.sleep(0.25)

    def tail(self, name: str, lines: int = 25) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def pids(self, prefix: str) -> list[int]:
        """The live PIDs (with children) of the processes whose name starts with ``prefix``."""
        return [
            pid
            for name, proc in self.procs.items()
            if name.startswith(prefix) and proc.poll() is None
            for pid in (proc.pid, *descendants(proc.pid))
        ]

    def stop(self) -> None:
        """SIGINT every process, then SIGKILL what has not exited within 20 s."""
        stop_sessions(self.procs.values())


# --------------------------------------------------------------------------- benchmark

DATASET = "bench_replicas"
WATCHERS = ("a", "b")


def redis_pids() -> list[int]:
    """Every Redis server process on the machine."""
    return processes_named("redis-server")


def topology_burst(work: Path, files: int, timeout: float, *, apart: bool) -> dict[str, Any]:
    """A burst of ``files`` through two watchers and two workers, on one topology.

    ``apart``: two API replicas without services and one services process, on Redis; each
    watcher and worker talks to one replica (watcher and worker ``a`` to the first, ``b`` to
    the second). Otherwise one Prefect server process (services inside, in-memory messaging)
    that every client talks to. Both on fresh PostgreSQL databases (Prefect's and the
    ledger's), with homes made by ``hopper init``; half the files go to each watcher's inbox.
    """
    label = "two replicas + services" if apart else "one server process"
    root = work / ("replicas" if apart else "single")
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    lake, quarantine = root / "lake", root / "quarantine"
    shared = f"lake: {lake}\nquarantine: {quarantine}\n"
    configs = {name: make_home(root / name, [DATASET], extra_yaml=shared) for name in WATCHERS}
    with contextlib.ExitStack() as stack:
        prefect_db, ledger_url = stack.enter_context(postgres_databases())
        redis_db = stack.enter_context(redis_database()) if apart else None
        base = clean_env(
            {
                "PREFECT_HOME": str(root / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "HOPPER_LEDGER_URL": ledger_url,
                "HOPPER_LOG_LEVEL": "INFO",
            }
        )
        servers = PrefectReplicas(
            logs, prefect_db, redis_db, base, replicas=2 if apart else 1, apart=apart
        )
        stack.enter_context(servers)
        urls = servers.api_urls
        env = {
            name: base
            | {"PREFECT_API_URL": urls[i % len(urls)], "HOPPER_CONFIG": str(configs[name])}
            for i, name in enumerate(WATCHERS)
        }
        deployed = subprocess.run(
            [sys.executable, "-m", "hopper", "deploy", "--config", str(configs["a"])],
            env=env["a"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            check=False,
        )
        if deployed.returncode != 0:
            raise RuntimeError(f"hopper deploy failed:\n{deployed.stderr[-2000:]}")
        fleet = Fleet(logs)
        stack.callback(fleet.stop)
        for name in WATCHERS:
            fleet.start(f"worker-{name}", ["worker", "--pool", "hopper"], env[name])
            fleet.start(f"watcher-{name}", ["watch", "--config", str(configs[name])], env[name])
        for name in WATCHERS:
            fleet.wait_for_line(f"worker-{name}", "serving pool")
            fleet.wait_for_line(f"watcher-{name}", "startup scan")
        staging = root / "staging"
        paths = write_small_files(staging, files, "r", seed=3)

        def roles() -> dict[str, list[int]]:
            found = {name: pids for name, pids in servers.pids().items()}
            found |= {"workers": fleet.pids("worker-"), "watchers": fleet.pids("watcher-")}
            return found | {"postgres": postgres_pids(), "redis": redis_pids()}

        probe = CpuProbe(roles)
        log.info("replicas: %s: burst of %d", label, files)
        probe.start()
        started = time.monotonic()
        for i, path in enumerate(paths):
            os.replace(path, root / WATCHERS[i % 2] / "inbox" / DATASET / path.name)
        landed, bad, seconds = cases.settle(
            lambda: len(cases.lake_outputs(lake / DATASET)),
            lambda: len(cases.quarantined(quarantine / DATASET)),
            files,
            started,
            timeout,
            f"replicas: {label}",
        )
        cpu = probe.stop()
        names = cases.lake_outputs(lake / DATASET)
        per_source = Counter(cases.source_stem(n) for n in names)
        return {
            "topology": label,
            "files": files,
            "landed": landed,
            "quarantined": bad,
            "seconds": round(seconds, 2),
            "files_per_s": landed / seconds if seconds > 0 else 0.0,
            "exactly_once": landed == files and len(per_source) == files and bad == 0,
            **cpu,
        }


def replicas_bench(work: Path, files: int, timeout: float) -> dict[str, Any]:
    """The same burst on one Prefect server process, then on two replicas + services."""
    single = topology_burst(work, files, timeout, apart=False)
    apart = topology_burst(work, files, timeout, apart=True)
    ratio = apart["files_per_s"] / single["files_per_s"] if single["files_per_s"] else 0.0
    return {"files": files, "single": single, "apart": apart, "ratio": round(ratio, 2)}


def server_cores(run: dict[str, Any]) -> float:
    """Cores used by Prefect's own processes (every replica and the services)."""
    cores: dict[str, float] = run["cpu_cores"]
    return round(sum(v for k, v in cores.items() if k.startswith(("replica-", "services"))), 2)


def describe(run: dict[str, Any]) -> str:
    """Where the CPU went in one topology's burst, in words."""
    cores = run["cpu_cores"]
    parts = ", ".join(f"{role} {value:.2f}" for role, value in sorted(cores.items()))
    return f"machine {run['machine_busy_percent']:.0f} % busy; cores: {parts}"
