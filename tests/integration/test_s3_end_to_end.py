"""S3 in, S3 out: objects uploaded with the AWS CLI land as Parquet in an S3 lake, once each.

A watcher for an S3 home (notifications via SQS under incoming/, listing under listed/) runs
against the session's Prefect server; the session's worker runs the flows, using the home's
config carried in each request. moto in server mode stands in for AWS.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from tests.conftest import CONTRACT, make_home
from tests.integration.conftest import Running, hopper, wait_for

if TYPE_CHECKING:
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration

PEOPLE = "id,full name,score\n1,Ada Lovelace,9.5\n2,Alan Turing,NA\n"
EVENTS_CONTRACT = "name: events\nformat: jsonl\ncolumns:\n  - name: id\n    type: int64\n"


@dataclass
class S3Home:
    config: Path
    landing: str
    lake: str
    quarantine: str
    moto: MotoServer
    tmp: Path

    def upload(self, key: str, text: str) -> None:
        local = self.tmp / key.replace("/", "_")
        local.write_text(text)
        self.moto.aws("s3", "cp", "--quiet", str(local), f"s3://{self.landing}/{key}")

    def lake_keys(self, dataset: str) -> list[str]:
        listed = self.moto.s3.list_objects_v2(Bucket=self.lake, Prefix=f"{dataset}/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def read(self, key: str) -> pq.ParquetFile:
        body = self.moto.s3.get_object(Bucket=self.lake, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body))


@pytest.fixture(scope="module")
def s3_home(
    moto: MotoServer, up: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Home]:
    tmp = tmp_path_factory.mktemp("s3home")
    landing, lake, quarantine = moto.bucket("landing"), moto.bucket("lake"), moto.bucket("quar")
    queue = moto.queue("notify", {"VisibilityTimeout": "10"})
    moto.aws(
        "s3api", "put-bucket-notification-configuration", "--bucket", landing,
        "--notification-configuration", json.dumps({"QueueConfigurations": [{
            "QueueArn": moto.queue_arn(queue),
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
        }]}),
    )  # fmt: skip
    extra = (
        f"s3:\n  endpoint_url: {moto.endpoint}\nlake: s3://{lake}\nquarantine: s3://{quarantine}\n"
    )
    config = make_home(tmp, {"people": CONTRACT, "events": EVENTS_CONTRACT}, extra=extra)
    text = config.read_text().replace(
        "sources:\n  - path: inbox\n",
        "sources:\n"
        f"  - {{type: s3, bucket: {landing}, prefix: incoming, mode: notifications,"
        f" queue_url: '{queue}', listing_seconds: 5}}\n"
        f"  - {{type: s3, bucket: {landing}, prefix: listed, listing_seconds: 2}}\n",
    )
    config.write_text(text)
    env = {**os.environ, **moto.env, "PREFECT_API_URL": up.api_url, "HOPPER_LOG_LEVEL": "INFO"}
    log = (tmp / "watch.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hopper", "watch", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield S3Home(config, landing, lake, quarantine, moto, tmp)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def test_notified_uploads_land_in_the_s3_lake(s3_home: S3Home) -> None:
    s3_home.upload("incoming/people/a.csv", PEOPLE)
    s3_home.upload("incoming/events/e.jsonl", '{"id": 1}\n{"id": 2}\n{"id": 3}\n')
    (key,) = wait_for(lambda: s3_home.lake_keys("people"), 120, "a.csv in s3://lake/people/")
    assert key.startswith("people/a-") and key.endswith(".parquet")
    table = s3_home.read(key)
    assert table.column("id").to_pylist() == [1, 2]
    assert table.column("score").to_pylist() == [9.5, None]
    assert (
        table.column("_source_uri").to_pylist()
        == [f"s3://{s3_home.landing}/incoming/people/a.csv"] * 2
    )
    (events_key,) = wait_for(lambda: s3_home.lake_keys("events"), 120, "e.jsonl in the lake")
    assert s3_home.read(events_key).column("id").to_pylist() == [1, 2, 3]


def test_listing_mode_and_bad_file_to_s3_quarantine(s3_home: S3Home) -> None:
    s3_home.upload("listed/people/b.csv", PEOPLE)
    s3_home.upload("listed/people/bad.csv", "id,full name,score\nx,y,z\n")
    wait_for(
        lambda: [k for k in s3_home.lake_keys("people") if k.startswith("people/b-")],
        120,
        "b.csv (listing mode) in the lake",
    )

    def reason_keys() -> list[str]:
        listed = s3_home.moto.s3.list_objects_v2(Bucket=s3_home.quarantine, Prefix="people/")
        return [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".error.json")]

    (reason_key,) = wait_for(reason_keys, 120, "bad.csv in the S3 quarantine")
    body = s3_home.moto.s3.get_object(Bucket=s3_home.quarantine, Key=reason_key)["Body"].read()
    reason = json.loads(body)
    assert "id" in reason["reason"] and reason["replay"].startswith("hopper replay s3://")


def test_each_object_is_ingested_exactly_once(s3_home: S3Home) -> None:
    wait_for(lambda: s3_home.lake_keys("people"), 120, "people outputs")
    status = hopper("status", "--json", "--config", str(s3_home.config))
    assert status.returncode == 0, status.stderr
    people = json.loads(status.stdout)["datasets"]["people"]
    assert people["ingested"] == len([k for k in s3_home.lake_keys("people")])
    history = hopper(
        "status", f"s3://{s3_home.landing}/incoming/people/a.csv", "--json",
        "--config", str(s3_home.config),
    )  # fmt: skip
    events = [h["event"] for h in json.loads(history.stdout)["history"]]
    assert events.count("ingested") == 1 and events.count("detected") == 1


def test_missing_bucket_is_one_clear_line(moto: MotoServer, tmp_path: Path) -> None:
    config = make_home(tmp_path, extra=f"s3:\n  endpoint_url: {moto.endpoint}\n")
    config.write_text(
        config.read_text().replace(
            "sources:\n  - path: inbox\n", "sources:\n  - {type: s3, bucket: no-such-bucket}\n"
        )
    )
    result = hopper("watch", "--config", str(config), env={**moto.env}, timeout=60)
    assert result.returncode == 2
    assert "no-such-bucket" in result.stderr and len(result.stderr.strip().splitlines()) == 1
