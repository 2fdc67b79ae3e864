"""Real processes for integration tests: `hopper up` (Prefect server, worker, watcher).

One `hopper up` is started per test session in a temporary Hopper home, on a free port, and
stopped at the end; tests talk to it only through files, the CLI and Prefect's API.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Running]:
    """`hopper up` in a temporary home; started after moto so its worker has AWS settings."""
    root = tmp_path_factory.mktemp("home")
    config = make_home(
        root,
        {"people": CONTRACT, "events": EVENTS_CONTRACT, "big": BIG_CONTRACT},
        extra=ALERT_POLICY,
    )
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
    try:
        wait_for(
            lambda: "Hopper is up." in log.read_text() or proc.poll() is not None,
            180,
            "hopper up to be ready",
        )
        assert proc.poll() is None, f"hopper up exited early:\n{log.read_text()}"
        yield running
    finally:
        running.stop()
        webhook.close()
