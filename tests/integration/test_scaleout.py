"""Scale-out on one machine: the topology of docs/deploy.md, with a worker and a watcher lost.

A Prefect server on PostgreSQL, the ledger on PostgreSQL, two warm workers on the `hopper`
pool, two watchers consuming one SQS queue fed by S3 notifications (moto in server mode), the
lake on S3. 1,000 objects are uploaded (moto's S3 takes about 15 notified uploads a second, so
the upload alone is a minute; `python -m bench --only scaleout` runs 2,000 per burst); once half
are in and the first worker is running a flow, that worker and the first watcher are killed
with SIGKILL. Every object must still end in the lake exactly once, the lost worker's run
must show as Crashed in Prefect, and the queue must drain.

Runs against the PostgreSQL on 127.0.0.1:5432 in databases created for the test; skipped
(with the reason) only where no PostgreSQL answers.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow.parquet as pq
import pytest

from hopper.ledger import Ledger
from hopper.models import FileState
from tests.conftest import make_home
from tests.integration.conftest import CLICKS_CONTRACT, free_port, hopper, wait_for

if TYPE_CHECKING:
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration

FILES = 1000
ROWS = 3


@pytest.fixture(scope="module")
def databases() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases: Prefect's (with pg_trgm) and the ledger's."""
    pytest.importorskip("psycopg")
    from bench.scaleout import postgres_databases

    try:
        with postgres_databases() as urls:
            yield urls
    except RuntimeError as exc:  # raised before yielding: no PostgreSQL answers
        pytest.skip(str(exc))


@dataclass
class Processes:
    """Processes started by the test, each in its own session, stopped at the end."""

    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def tail(self, name: str, lines: int = 30) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _running_runs(api_url: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}, "limit": 50}
    response = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=10)
    response.raise_for_status()
    return list(response.json())


def _run_state(api_url: str, run_id: str) -> str:
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10)
    response.raise_for_status()
    return str(response.json()["state"]["type"])


def _lake_keys(moto: MotoServer, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in moto.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="clicks/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_two_workers_two_watchers_lose_one_of_each_and_land_every_file_once(
    moto: MotoServer, databases: tuple[str, str], tmp_path: Path
) -> None:
    prefect_db, ledger_url = databases
    landing, lake, quarantine = moto.bucket("landing"), moto.bucket("lake"), moto.bucket("quar")
    queue = moto.queue("scale", {"VisibilityTimeout": "10"})
    moto.aws(
        "s3api", "put-bucket-notification-configuration", "--bucket", landing,
        "--notification-configuration", json.dumps({"QueueConfigurations": [{
            "QueueArn": moto.queue_arn(queue), "Events": ["s3:ObjectCreated:*"],
        }]}),
    )  # fmt: skip
    extra = (
        f"s3:\n  endpoint_url: {moto.endpoint}\nlake: s3://{lake}\nquarantine: s3://{quarantine}\n"
    )
    config = make_home(tmp_path, {"clicks": CLICKS_CONTRACT}, extra=extra)
    config.write_text(
        config.read_text()
        .replace(
            "sources:\n  - path: inbox\n",
            f"sources:\n  - {{type: s3, bucket: {landing}, mode: notifications,"
            f" queue_url: '{queue}', listing_seconds: 30}}\n",
        )
        .replace("watch:\n", "watch:\n  batch_max_files: 100\n")
    )
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOPPER_"))}
    env |= moto.env | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "HOPPER_CONFIG": str(config),
        "HOPPER_LEDGER_URL": ledger_url,
        "HOPPER_LEASE_SECONDS": "10",
        "HOPPER_LOG_LEVEL": "INFO",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        server_env = env | {"PREFECT_API_DATABASE_CONNECTION_URL": prefect_db}
        server = procs.start(
            "server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            server_env,
        )  # fmt: skip
        wait_for(lambda: server.poll() is not None or _healthy(api_url), 240, "the Prefect server")
        assert server.poll() is None, procs.tail("server")
        deployed = hopper("deploy", "--config", str(config), env=env, timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        for name in ("worker-1", "worker-2"):
            cmd = [sys.executable, "-m", "hopper", "worker", "--pool", "hopper", "--limit", "4"]
            procs.start(name, cmd, env)
        for name in ("watcher-1", "watcher-2"):
            procs.start(
                name, [sys.executable, "-m", "hopper", "watch", "--config", str(config)], env
            )

        def upload(i: int) -> None:
            rows = "".join(
                json.dumps({"id": i * ROWS + k, "page": f"/p/{i}"}) + "\n" for k in range(ROWS)
            )
            moto.s3.put_object(Bucket=landing, Key=f"clicks/{i:05d}.jsonl", Body=rows.encode())

        ledger = Ledger(ledger_url)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(FILES // 2)))
            # Halfway: wait until the first worker is in the middle of a run, then lose it
            # and the first watcher, as a machine lost would.
            victim = procs.procs["worker-1"].pid

            def in_flight() -> str | None:
                """A run of the first worker whose files are claimed and not done yet (a run still
                Running in Prefect may have finished its files: killing it would test nothing)."""
                claimed = {r.flow_run_id for r in ledger.records(states=[FileState.RUNNING])}
                return next(
                    (
                        r["id"]
                        for r in _running_runs(api_url)
                        if str(r.get("infrastructure_pid") or "").endswith(f":{victim}")
                        and r["id"] in claimed
                    ),
                    None,
                )

            lost_run = wait_for(in_flight, 180, "the first worker to run a flow with files in hand")
            procs.kill("worker-1")
            procs.kill("watcher-1")
            list(pool.map(upload, range(FILES // 2, FILES)))

        def landed() -> bool:
            counts = Counter(r.state.value for r in ledger.records())
            return counts.get("ingested", 0) >= FILES or bool(
                counts.get("quarantined") or counts.get("failed")
            )

        try:
            wait_for(landed, 480, f"{FILES} files ingested")
        except AssertionError:
            counts = Counter(r.state.value for r in ledger.records())
            raise AssertionError(
                f"ledger: {dict(counts)}\nworker-2:\n{procs.tail('worker-2')}\n"
                f"watcher-2:\n{procs.tail('watcher-2')}"
            ) from None

        records = ledger.records()
        assert len(records) == FILES
        assert Counter(r.state.value for r in records) == {"ingested": FILES}
        # Exactly once in the lake: one object per source, every row present once.
        keys = _lake_keys(moto, lake)
        assert len(keys) == FILES, f"{len(keys)} objects in the lake for {FILES} files"

        def read(key: str) -> list[int]:
            body = moto.s3.get_object(Bucket=lake, Key=key)["Body"].read()
            return list(pq.read_table(io.BytesIO(body)).column("id").to_pylist())

        with ThreadPoolExecutor(8) as pool:
            ids = [i for chunk in pool.map(read, keys) for i in chunk]
        assert len(ids) == FILES * ROWS and set(ids) == set(range(FILES * ROWS))

        # The kill really hit work in flight: the lost run's files were taken back and sent
        # again, and Prefect shows that run as Crashed rather than running forever.
        requeued = [
            h
            for r in records
            for h in ledger.history(r.uri)
            if h["event"] == "requeued" and lost_run in json.dumps(h)
        ]
        assert requeued, "no file of the lost worker's run was sent again"
        assert _run_state(api_url, lost_run) == "CRASHED"
        # Messages the lost watcher held come back and are consumed: nothing stranded.
        wait_for(lambda: moto.queue_depth(queue) == 0, 60, "the SQS queue to drain")
        assert procs.procs["worker-2"].poll() is None, procs.tail("worker-2")
        assert procs.procs["watcher-2"].poll() is None, procs.tail("watcher-2")
        ledger.close()
    finally:
        procs.stop_all()


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
