"""``hopper up``: one command that runs everything on embedded defaults, and supervises it.

Children: a Prefect server on SQLite (unless one already answers), a process worker on the
Hopper work pool, and the watcher. Each runs in its own process group, so a stop signal
reaches its grandchildren (uvicorn, flow-run processes) too; each is also told by the kernel
to stop if ``hopper up`` itself dies. ``prefect worker`` ignores SIGTERM, so everything is
stopped with SIGINT, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import httpx

from hopper.config import HopperConfig
from hopper.errors import HopperError
from hopper.settings import HopperSettings

log = logging.getLogger(__name__)

STATE_FILE = "up.json"


def recorded_api_url(state_dir: Path) -> str | None:
    """The Prefect API of the `hopper up` running for this home, if one is.

    Read from ``<state_dir>/up.json``, which `hopper up` writes once it is up and removes on
    exit; a file left by one that died (its PID gone, or now another program's) is ignored.
    """
    try:
        state = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
        pid, url = int(state["pid"]), str(state["api_url"])
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    is_up = "up" in args and any(a == "hopper" or a.endswith("/hopper") for a in args)
    return url if is_up else None


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def prefect_executable() -> str:
    """The ``prefect`` console script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "prefect"
    return str(candidate) if candidate.exists() else "prefect"


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers ``/health`` at ``api_url``."""
    try:
        return httpx.get(api_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Child:
    """A supervised process."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    _log_file: IO[bytes] | None = None

    def start(self, cwd: Path) -> None:
        """Start (or restart) the process in its own session."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT if self._log_file else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.debug("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.cmd))

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def close_log(self) -> None:
        """Close the child's log file."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's log file."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts Hopper's processes, restarts the ones that die, and stops them all on a signal."""

    def __init__(self, config: HopperConfig, settings: HopperSettings, port: int) -> None:
        self.config = config
        self.settings = settings
        self.port = port
        self.stopping = threading.Event()
        self.children: list[Child] = []
        self.logs = config.state_dir / "logs"
        self.api_url = ""
        self.started_server = False

    # -- environment ------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """Environment shared by every child: one Prefect home and API, one Hopper config."""
        env = dict(os.environ)
        env.setdefault("PREFECT_HOME", str(self.config.state_dir / "prefect"))
        env["PREFECT_API_URL"] = self.api_url
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["PREFECT_CLI_PROMPT"] = "false"
        env["HOPPER_CONFIG"] = str(self.config.path)
        env["HOPPER_PROJECT_DIR"] = str(self.settings.project_dir)
        return env

    # -- steps ------------------------------------------------------------------------

    def ensure_server(self) -> str:
        """Reuse a Prefect server that answers, or start one on SQLite; return its API URL."""
        configured = os.environ.get("PREFECT_API_URL")
        if configured and api_healthy(configured):
            log.info("reusing the Prefect server at %s", configured)
            self.api_url = configured
            return configured
        host = self.settings.host
        self.api_url = f"http://{host}:{self.port}/api"
        if api_healthy(self.api_url):
            log.info("reusing the Prefect server already running at %s", self.api_url)
            return self.api_url
        # Prefect's server, with SQLite writes that wait for the lock (hopper.prefect_server)
        server_cmd = [sys.executable, "-m", "hopper.prefect_server"]
        server = Child(
            "server",
            [*server_cmd, "--host", host, "--port", str(self.port)],
            self.base_env(),
            self.logs / "server.log",
        )
        log.info(
            "starting a Prefect server on %s (SQLite in %s)",
            self.api_url,
            server.env["PREFECT_HOME"],
        )
        server.start(self.settings.project_dir)
        self.children.append(server)
        self.started_server = True
        deadline = time.monotonic() + self.settings.server_start_timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if api_healthy(self.api_url):
                return self.api_url
            if not server.alive():
                raise HopperError(
                    f"the Prefect server exited while starting (port {self.port} in use?). "
                    f"Last lines of {server.log_path}:\n{server.tail()}"
                )
            time.sleep(0.5)
        raise HopperError(
            f"the Prefect server did not answer {self.api_url}/health within "
            f"{self.settings.server_start_timeout:.0f}s; see {server.log_path}"
        )

    def deploy(self) -> None:
        """Create the work pool and apply prefect.yaml against the server."""
        from hopper.deploy import deploy

        os.environ.update({k: v for k, v in self.base_env().items() if k.startswith("PREFECT_")})
        log.info("deploying %s", self.settings.project_dir / "prefect.yaml")
        removed = deploy(self.settings.project_dir, self.config, self.base_env())
        if removed:
            log.info("removed %d stale automation(s)", len(removed))

    def start_workers(self) -> None:
        """Start the Prefect worker and the watcher."""
        env = self.base_env()
        worker_env = {
            **env,
            "PREFECT_WORKER_QUERY_SECONDS": str(self.settings.worker_poll_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        }
        if self.settings.worker == "warm":
            worker_cmd = [sys.executable, "-m", "hopper", "worker", "--pool", self.config.work_pool]
        else:
            worker_cmd = [prefect_executable(), "worker", "start", "--pool", self.config.work_pool]
            worker_cmd += ["--type", "process"]
        worker = Child(
            "worker",
            [*worker_cmd, "--limit", str(self.settings.worker_limit)],
            worker_env,
            self.logs / "worker.log",
        )
        self.watcher_ready.unlink(missing_ok=True)
        watch_cmd = [sys.executable, "-m", "hopper", "watch", "--config", str(self.config.path)]
        watcher = Child(
            "watcher",
            [*watch_cmd, "--ready-file", str(self.watcher_ready)],
            env,
            self.logs / "watcher.log",
        )
        for child in (worker, watcher):
            log.info("starting the %s (log: %s)", child.name, child.log_path)
            child.start(self.settings.project_dir)
            self.children.append(child)

    # -- lifecycle ----------------------------------------------------------------------

    def run(self, on_ready: Callable[[Supervisor], None]) -> int:
        """Start everything, call ``on_ready``, supervise until stopped; return an exit code."""
        try:
            self.ensure_server()
            if self.stopping.is_set():
                return 0
            self.deploy()
            self.start_workers()
            self.write_state()
            self.wait_until_serving()
            if self.stopping.is_set():
                return 0
            on_ready(self)
            return self._supervise()
        finally:
            self.shutdown()

    @property
    def watcher_ready(self) -> Path:
        """Written by the watcher once it watches every source (``hopper watch --ready-file``)."""
        return self.config.state_dir / "watcher.ready"

    def wait_until_serving(self, timeout: float = 60.0) -> bool:
        """Wait until the watcher watches and a worker has polled the pool since we began.

        A file dropped earlier is not lost (the watcher's startup scan records it), but it
        waits for them; so "Hopper is up." is said only once both serve. Returns False, with a
        warning naming what is missing, if that takes longer than ``timeout`` seconds.
        """
        from hopper.prefect_api import PrefectAPI

        began = datetime.now(UTC) - timedelta(seconds=5)  # clock skew with the server
        deadline = time.monotonic() + timeout
        watching = polled = False
        api = PrefectAPI()  # the API of deploy(): PREFECT_API_URL is this server's
        try:
            while not self.stopping.is_set():
                watching = watching or self.watcher_ready.exists()
                polled = polled or api.worker_polled_since(self.config.work_pool, began)
                if watching and polled:
                    return True
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            api.close()
        missing = [what for what, ok in (("watcher", watching), ("worker", polled)) if not ok]
        if missing and not self.stopping.is_set():
            log.warning(
                "the %s did not report ready within %.0fs; carrying on (see %s)",
                " and the ".join(missing),
                timeout,
                self.logs,
            )
        return False

    @property
    def state_file(self) -> Path:
        """``<state_dir>/up.json``: the API URL and the PIDs of the running processes."""
        return self.config.state_dir / STATE_FILE

    def write_state(self) -> None:
        """Record what runs, for `hopper status` and for people who need to find a PID."""
        state = {
            "pid": os.getpid(),
            "api_url": self.api_url,
            "children": {c.name: c.proc.pid for c in self.children if c.proc is not None},
        }
        self.state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")

    def _supervise(self) -> int:
        while not self.stopping.wait(0.5):
            for child in self.children:
                if child.alive():
                    continue
                code = child.proc.returncode if child.proc else None
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > 5:
                    log.error(
                        "%s keeps dying (exit %s); giving up:\n%s", child.name, code, child.tail()
                    )
                    return 1
                log.warning("%s exited (code %s); restarting it", child.name, code)
                child.close_log()
                child.start(self.settings.project_dir)
                self.write_state()
        return 0

    def stop(self) -> None:
        """Ask :meth:`run` to stop (safe from a signal handler)."""
        self.stopping.set()

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop every child: the watcher and the worker first, then the server.

        The server goes last so that a worker finishing a run can still report its final
        state and events. Each group gets SIGINT (to each child's process group), then
        SIGKILL after ``grace`` seconds.
        """
        server = [c for c in self.children if c.name == "server"]
        clients = [c for c in reversed(self.children) if c.name != "server"]
        for group in (clients, server):
            self._stop(group, grace)
        self.children.clear()
        self.state_file.unlink(missing_ok=True)

    def _stop(self, children: list[Child], grace: float) -> None:
        for child in children:
            if child.alive():
                log.info("stopping the %s", child.name)
                child.signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for child in children:
            while child.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if child.alive():
                log.warning("%s did not stop within %.0fs; killing it", child.name, grace)
                child.signal(signal.SIGKILL)
                if child.proc is not None:
                    child.proc.wait(timeout=5)
            # The group may still hold grandchildren (a flow run); leave none behind.
            child.signal(signal.SIGKILL)
            child.close_log()
