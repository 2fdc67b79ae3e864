"""Real processes for the benchmarks: `hopper up` in a temporary home, and /proc sampling.

`hopper up` is started the way ``tests/integration/conftest.py`` starts it: a subprocess in
a fresh Hopper home, on a free port, with no ``PREFECT_*``/``HOPPER_*`` variables inherited,
ready once "Hopper is up." appears in its output. It is stopped with SIGTERM, and anything
of its process tree still alive afterwards is killed by PID (checked against the process's
start time, so a recycled PID is never hit).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from bench.data import contract_yaml

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc


def proc_times(pid: int) -> tuple[float, int]:
    """``(CPU seconds used, start time in clock ticks)`` of a process, from /proc/<pid>/stat.

    Raises:
        ProcessLookupError: the process is gone.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessLookupError(pid) from exc
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    utime, stime, starttime = int(fields[11]), int(fields[12]), int(fields[19])
    return (utime + stime) / CLOCK_TICKS, starttime


def proc_memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process in bytes; empty if it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def children_map() -> dict[int, list[int]]:
    """Parent PID → child PIDs for every process on the machine."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, …)."""
    tree = children_map()
    found: list[int] = []
    todo = list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def cmdline(pid: int) -> str:
    """A process's command line, or ``""`` if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


class PeakRSS:
    """Samples the peak RSS of a process and its descendants in a background thread.

    Reads ``VmHWM`` (the kernel's own high-water mark) of each descendant every
    ``interval`` seconds, so a peak between two samples is still seen; only a process that
    peaks and exits within one interval can be missed. The root process itself (a warm
    worker runs flows in-process) is sampled by ``VmRSS``: its high-water mark would include
    whatever it did before the measurement started. A descendant whose RSS passes
    ``cap`` bytes is killed (and :attr:`capped` set), so a runaway run cannot exhaust memory.
    """

    def __init__(self, root_pid: int, interval: float = 0.05, cap: int | None = None) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.cap = cap
        self.capped: tuple[int, int] | None = None
        self.peaks: dict[int, int] = {}
        self.commands: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in [self.root_pid, *descendants(self.root_pid)]:
                mem = proc_memory(pid)
                rss = mem.get("VmRSS", 0)
                peak = rss if pid == self.root_pid else max(mem.get("VmHWM", 0), rss)
                if peak > self.peaks.get(pid, 0):
                    self.peaks[pid] = peak
                    self.commands.setdefault(pid, cmdline(pid)[:200])
                if self.cap and peak > self.cap and self.capped is None:
                    # Protect the machine (and whoever else uses it) from a runaway flow run.
                    log.warning("pid %d passed %d MiB; killing it", pid, self.cap >> 20)
                    self.capped = (pid, peak)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def peak(self) -> tuple[int, str]:
        """``(peak bytes, command line)`` of the descendant that used the most memory."""
        if not self.peaks:
            return 0, ""
        pid = max(self.peaks, key=self.peaks.__getitem__)
        return self.peaks[pid], self.commands.get(pid, "")


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``PREFECT_*``/``HOPPER_*``, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOPPER_"))}
    env.update(overrides or {})
    return env


@dataclass(frozen=True)
class Profile:
    """How a Hopper under test is configured: extra hopper.yaml text and environment.

    The baseline (one flow run per file, process worker) and the candidate are both profiles;
    when they are equal one `hopper up` serves both, otherwise each gets its own.
    """

    name: str
    extra_yaml: str = ""
    env: tuple[tuple[str, str], ...] = ()
    lake_yaml: str = "lake: lake\n"

    def same_setup(self, other: Profile) -> bool:
        """Whether ``other`` would start an identical Hopper."""
        mine = (self.extra_yaml, self.env, self.lake_yaml)
        return mine == (other.extra_yaml, other.env, other.lake_yaml)


def make_home(
    root: Path, datasets: list[str], extra_yaml: str = "", lake_yaml: str = "lake: lake\n"
) -> Path:
    """Write a Hopper home as ``hopper init`` does, with one contract per dataset.

    The ``hopper.yaml`` is the one ``hopper init`` writes, so the figures are those a new
    user gets; ``lake_yaml`` then ``extra_yaml`` are laid over it (mappings merged key by
    key, anything else replaced: a ``sources:`` list replaces the folder ``inbox``).

    Returns:
        The path of ``hopper.yaml``.
    """
    import yaml

    from hopper.cli.home import home_yaml

    (root / "datasets").mkdir(parents=True, exist_ok=True)
    for name in datasets:
        (root / "datasets" / f"{name}.yaml").write_text(contract_yaml(name), encoding="utf-8")
        (root / "inbox" / name).mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(home_yaml())
    for layer in (lake_yaml, extra_yaml):
        doc = _overlay(doc, yaml.safe_load(layer) or {})
    config = root / "hopper.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return config


def _overlay(base: Any, layer: Any) -> Any:
    """``layer`` laid over ``base``: mappings merged key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(layer, dict):
        return {**base, **{k: _overlay(base.get(k), v) for k, v in layer.items()}}
    return layer


def hopper_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hopper ARGS`` and return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "hopper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )


def start_hopper(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[str]:
    """Start ``python -m hopper ARGS`` in the repository, its output going to ``log_path``."""
    with log_path.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hopper", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
        )


def terminate(proc: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    """Send ``sig`` to a process we started; SIGKILL it if it has not exited in ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored signal %d for %.0fs; killing it", proc.pid, sig, timeout)
            proc.kill()
            proc.wait(timeout=10)


def kill_leftovers(tree: dict[int, int]) -> list[int]:
    """SIGKILL the processes of ``tree`` (PID → start time) that are still the same process."""
    killed = []
    for pid, started in tree.items():
        try:
            if proc_times(pid)[1] != started:
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
    return killed


# --------------------------------------------------------------------------- hopper up


class Supervised:
    """Something started with :meth:`start` and stopped with :meth:`stop`, as a context
    manager: a failed start stops what it had started before the error goes on."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_sessions(procs: Iterable[subprocess.Popen[Any]], grace: float = 20) -> None:
    """SIGINT each process's session (started with ``start_new_session``), then SIGKILL
    whatever has not exited within ``grace`` seconds."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def processes_named(comm: str) -> list[int]:
    """Every process on the machine whose command name is ``comm`` (e.g. ``postgres``)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(entry.path, "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
    return pids


@dataclass
class HopperUp(Supervised):
    """A `hopper up` in its own temporary home; use as a context manager."""

    root: Path
    datasets: list[str]
    profile: Profile = field(default_factory=lambda: Profile("as shipped"))
    start_timeout: float = 240.0
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    started_in: float = 0.0
    _tree: dict[int, int] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        """The home's hopper.yaml."""
        return self.root / "hopper.yaml"

    @property
    def log_path(self) -> Path:
        """Where `hopper up` writes its own output."""
        return self.root / "up.log"

    def inbox(self, dataset: str) -> Path:
        """The inbox folder of ``dataset``."""
        return self.root / "inbox" / dataset

    def lake(self, dataset: str) -> Path:
        """The lake folder of ``dataset``."""
        return self.root / "lake" / dataset

    def quarantine(self, dataset: str) -> Path:
        """The quarantine folder of ``dataset``."""
        return self.root / "quarantine" / dataset

    def state(self) -> dict[str, Any]:
        """``.hopper/up.json``: API URL and the PIDs of the supervised processes."""
        state: dict[str, Any] = json.loads((self.root / ".hopper" / "up.json").read_text())
        return state

    @property
    def api_url(self) -> str:
        """The Prefect API this Hopper uses."""
        return f"http://127.0.0.1:{self.port}/api"

    def cli_env(self) -> dict[str, str]:
        """Environment for `hopper` commands run against this home."""
        return clean_env(
            {
                **dict(self.profile.env),  # e.g. the ledger URL of a PostgreSQL profile
                "PREFECT_API_URL": self.api_url,
                "PREFECT_HOME": str(self.root / ".hopper" / "prefect"),
                "HOPPER_CONFIG": str(self.config),
            }
        )

    def start(self) -> None:
        """Write the home, start `hopper up` and wait for "Hopper is up."."""
        make_home(self.root, self.datasets, self.profile.extra_yaml, self.profile.lake_yaml)
        self.port = self.port or free_port()
        env = clean_env({"HOPPER_LOG_LEVEL": "INFO", **dict(self.profile.env)})
        log.info(
            "starting hopper up (%s) in %s on port %d", self.profile.name, self.root, self.port
        )
        began = time.monotonic()
        self.proc = start_hopper(
            ["up", "--config", str(self.config), "--port", str(self.port)], env, self.log_path
        )
        deadline = began + self.start_timeout
        while time.monotonic() < deadline:
            if "Hopper is up." in self.log_path.read_text(errors="replace"):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"hopper up exited early:\n{self._tail()}")
            time.sleep(0.25)
        else:
            raise RuntimeError(f"hopper up not ready after {self.start_timeout:.0f}s")
        self.started_in = time.monotonic() - began
        log.info("hopper up is ready after %.1fs (%s)", self.started_in, self.api_url)

    def worker_pid(self) -> int:
        """PID of the Prefect worker (its children are the flow-run processes)."""
        return int(self.state()["children"]["worker"])

    def _tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _snapshot_tree(self) -> None:
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                self._tree[pid] = proc_times(pid)[1]

    def stop(self) -> None:
        """SIGTERM `hopper up`, then kill whatever of its process tree is left."""
        if self.proc is None:
            return
        self._snapshot_tree()
        log.info("stopping hopper up (pid %d)", self.proc.pid)
        terminate(self.proc, signal.SIGTERM, timeout=60)
        time.sleep(0.5)
        killed = kill_leftovers(self._tree)
        if killed:
            log.warning("killed %d process(es) left behind by hopper up: %s", len(killed), killed)
        self.proc = None


@contextlib.contextmanager
def watcher_process(config: Path, api_url: str, log_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate ``hopper watch`` for ``config``, dispatching to the server at ``api_url``."""
    env = clean_env(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(config.parent / ".hopper" / "prefect"),
            "HOPPER_LOG_LEVEL": "INFO",
        }
    )
    proc = start_hopper(["watch", "--config", str(config)], env, log_path)
    try:
        yield proc
    finally:
        terminate(proc, signal.SIGTERM, timeout=20)
