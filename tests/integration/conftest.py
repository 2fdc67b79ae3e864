"""Real processes for integration tests: `hopper up` (Prefect server, worker, watcher).

One `hopper up` is started per test session in a temporary Hopper home, on a free port, and
stopped at the end, where the fixture checks that it left no process behind and freed its
port; tests talk to it only through files, the CLI and Prefect's API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from bench.procs import descendants

from tests.conftest import CONTRACT, make_home

if TYPE_CHECKING:
    from tests.moto_server import MotoServer

EVENTS_CONTRACT = """\
name: events
format: jsonl
columns:
  - name: id
    type: int64
    nullable: false
  - name: kind
    type: string
    allowed: [click, view]
  - name: value
    type: float64
"""

CLICKS_CONTRACT = """\
name: clicks
format: jsonl
columns:
  - name: id
    type: int64
    nullable: false
  - name: page
    type: string
"""
"""The JSON-lines dataset of the scale-out tests (one id and one page per line)."""

BIG_CONTRACT = """\
name: big
format: csv
columns:
  - name: id
    type: int64
    nullable: false
  - name: city
    type: string
  - name: amount
    type: float64
  - name: qty
    type: int64
"""


class WebhookReceiver:
    """A local HTTP endpoint standing in for a team's webhook (Slack, Teams, …)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                try:
                    received.append(json.loads(body))
                except ValueError:
                    received.append({"raw": body.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def about(self, text: str) -> list[dict[str, Any]]:
        """Alerts whose subject or body mention ``text``."""
        return [r for r in self.received if text in json.dumps(r)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


ALERT_POLICY = """\
alert_policy:
  hold_seconds: 8
  max_hold_seconds: 300
  digest_threshold: 10
  digest_window_minutes: 1
"""


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def postgres_database(stem: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL at 127.0.0.1:5432, dropped afterwards.

    Yields its SQLAlchemy URL (psycopg). Skips the test, with the reason, where no
    PostgreSQL answers.
    """
    import uuid

    psycopg = pytest.importorskip("psycopg")
    name = f"{stem}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({exc})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def hopper(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the hopper CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "hopper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@dataclass
class Running:
    """A running `hopper up` and the home it serves."""

    root: Path
    config: Path
    api_url: str
    proc: subprocess.Popen[str]
    log: Path
    webhook: WebhookReceiver

    @property
    def env(self) -> dict[str, str]:
        return {
            "PREFECT_API_URL": self.api_url,
            "HOPPER_CONFIG": str(self.config),
            "HOPPER_ALERTS_WEBHOOK_URL": self.webhook.url,
        }

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / ".hopper" / "up.json").read_text())

    def lake_files(self, dataset: str) -> list[Path]:
        return sorted((self.root / "lake" / dataset).rglob("*.parquet"))

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def stop_leaving_nothing(self, timeout: float = 40) -> None:
        """Stop `hopper up`; fail if a process of its tree outlives it or the port stays taken.

        The tree (server, worker, watcher and their descendants, the worker's warm reader
        processes among them) is collected before the stop, since a process left behind is
        no longer `hopper up`'s descendant once its parent is gone. Leftovers are killed
        before the assertion, so a failure does not outlive the session either.
        """
        children = self.state()["children"]
        assert set(children) == {"server", "worker", "watcher"}
        tree = process_tree(self.proc.pid)
        assert set(children.values()) <= set(tree), "the children are not in the tree"
        try:
            code = self.stop(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + 10  # a moment for the last ones to be reaped
        left = {pid: p for pid, p in tree.items() if p.alive()}
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            left = {pid: p for pid, p in left.items() if p.alive()}
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        assert code == 0, f"hopper up did not stop cleanly (exit {code}):\n{_tail(self.log)}"
        assert not left, "still running after hopper up stopped: " + "; ".join(
            f"{pid} {p.cmdline}" for pid, p in left.items()
        )
        port = int(self.api_url.rsplit(":", 1)[1].split("/")[0])
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # fails while anything still listens on it
            sock.listen()


@dataclass(frozen=True)
class Proc:
    """A process seen in /proc; its start time tells it apart from a later one of its pid."""

    pid: int
    started: str
    cmdline: str

    def alive(self) -> bool:
        """Whether this very process still runs (a zombie or a reused pid does not count)."""
        stat = _stat(self.pid)
        return stat is not None and stat[19] == self.started and stat[0] != "Z"


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_tree(root: int) -> dict[int, Proc]:
    """``root`` and all its descendants, by pid."""
    tree = {}
    for pid in [root, *descendants(root)]:
        stat = _stat(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if stat is not None:
            tree[pid] = Proc(pid, stat[19], cmdline.strip())
    return tree


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def hopper_up(root: Path, config: Path, start_timeout: float = 180) -> Iterator[Running]:
    """`hopper up` for ``config`` on a free port, with a webhook receiver for its alerts.

    Stopped on leaving, where it must leave no process behind and free its port.
    """
    webhook = WebhookReceiver()
    port = free_port()
    log = root / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOPPER_"))}
    env["HOPPER_LOG_LEVEL"] = "INFO"
    env["HOPPER_ALERTS_WEBHOOK_URL"] = webhook.url
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hopper", "up", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    running = Running(root, config, f"http://127.0.0.1:{port}/api", proc, log, webhook)
    ready = False
    try:
        wait_for(
            lambda: "Hopper is up." in log.read_text() or proc.poll() is not None,
            start_timeout,
            "hopper up to be ready",
        )
        assert proc.poll() is None, f"hopper up exited early:\n{log.read_text()}"
        ready = True
        yield running
    finally:
        try:
            if ready:  # an assertion here shows as an error of the last test using it
                running.stop_leaving_nothing()
            else:
                running.stop()
        finally:
            webhook.close()


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Running]:
    """`hopper up` in a temporary home; started after moto so its worker has AWS settings."""
    root = tmp_path_factory.mktemp("home")
    config = make_home(
        root,
        {"people": CONTRACT, "events": EVENTS_CONTRACT, "big": BIG_CONTRACT},
        extra=ALERT_POLICY,
    )
    with hopper_up(root, config) as running:
        yield running
