"""A real moto server for integration tests, and the AWS CLI as the user's client.

One ``moto_server`` process is started per test session on a free port of 127.0.0.1 and
stopped at the end. Tests reach it the way users reach S3: with the real ``aws`` CLI
(:meth:`MotoServer.aws`) and with clients from :mod:`hopper.storage`. Nothing is patched.

Use it from a test module with (import the module only for type checking: pytest must load
it as a plugin first, to rewrite its asserts)::

    if TYPE_CHECKING:
        from tests.moto_server import MotoServer

    pytest_plugins = ["tests.moto_server"]

    def test_x(moto: MotoServer) -> None:
        bucket = moto.bucket()
        moto.aws("s3", "cp", str(path), f"s3://{bucket}/incoming/sales/a.csv")

Dummy credentials and ``AWS_DEFAULT_REGION=us-east-1`` are set in this process's environment
for the whole session (and restored after), so boto3 never looks at a developer's real
profile; :attr:`MotoServer.env` holds the same for subprocesses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hopper.storage import S3Client, SqsClient, make_s3_client, make_sqs_client

BIN = Path(sys.executable).parent
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_PAGER": "",
}
DROPPED_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class MotoServer:
    """A running moto server.

    Attributes:
        endpoint: its URL, e.g. ``http://127.0.0.1:50123`` (S3 and SQS share it).
        env: environment for subprocesses: dummy credentials, region, no user profile.
        proc: the server process.
    """

    endpoint: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path
    _clients: dict[str, Any] = field(default_factory=dict)

    wait_until = staticmethod(wait_until)

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real AWS CLI against this server (``aws --endpoint-url … ARGS``)."""
        result = subprocess.run(
            [str(BIN / "aws"), "--endpoint-url", self.endpoint, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def aws_json(self, *args: str) -> Any:
        """Run the AWS CLI with ``--output json``; its parsed output (None if empty)."""
        out = self.aws(*args, "--output", "json").stdout.strip()
        return json.loads(out) if out else None

    @property
    def s3(self) -> S3Client:
        """A Hopper S3 client for this server (made once)."""
        if "s3" not in self._clients:
            self._clients["s3"] = make_s3_client(self.endpoint)
        return self._clients["s3"]

    @property
    def sqs(self) -> SqsClient:
        """A Hopper SQS client for this server (made once)."""
        if "sqs" not in self._clients:
            self._clients["sqs"] = make_sqs_client(self.endpoint)
        return self._clients["sqs"]

    def bucket(self, stem: str = "landing") -> str:
        """Create a bucket with a unique name (with the CLI) and return its name."""
        name = unique(stem)
        self.aws("s3", "mb", f"s3://{name}")
        return name

    def queue(self, stem: str = "queue", attributes: dict[str, str] | None = None) -> str:
        """Create an SQS queue with a unique name (with the CLI); return its URL."""
        args = ["sqs", "create-queue", "--queue-name", unique(stem)]
        if attributes:
            args += ["--attributes", json.dumps(attributes)]
        return str(self.aws_json(*args)["QueueUrl"])

    def queue_arn(self, queue_url: str) -> str:
        """The ARN of a queue."""
        attrs = self.aws_json(
            "sqs", "get-queue-attributes", "--queue-url", queue_url, "--attribute-names", "QueueArn"
        )
        return str(attrs["Attributes"]["QueueArn"])

    def queue_depth(self, queue_url: str) -> int:
        """Messages in a queue, visible or in flight (SQS's approximate counts)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )


def unique(stem: str) -> str:
    """``stem-<8 hex>``: bucket and queue names that never clash between tests."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def _answers(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """Start ``moto_server -H 127.0.0.1 -p <free port>`` for the session; stop it at the end."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV} | AWS_ENV
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    with pytest.MonkeyPatch.context() as patch:
        for name in DROPPED_ENV:
            patch.delenv(name, raising=False)
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        try:
            wait_until(
                lambda: proc.poll() is not None or _answers(endpoint), 30, "moto server to listen"
            )
            assert proc.poll() is None, f"moto_server exited early:\n{log.read_text()}"
            yield MotoServer(endpoint, env, proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
