"""SqsNotifications against a real moto server: bucket → S3 event notification → SQS → refs.

Bucket, queue, dead-letter queue and notification configuration are made with the AWS CLI,
as docs/s3.md tells users to; files are uploaded with ``aws s3 cp``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hopper.config import S3Source, WatchOptions
from hopper.models import FileRef
from hopper.watch.s3 import S3Listing, SqsNotifications

if TYPE_CHECKING:  # the fixture module is loaded as a plugin, so that pytest rewrites it
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration

IGNORE = WatchOptions().ignore
VISIBILITY = 2  # seconds; short so that redelivery and the dead-letter queue are quick


@dataclass
class Wired:
    """A bucket whose ObjectCreated notifications under incoming/ go to a queue with a DLQ."""

    moto: MotoServer
    bucket: str
    queue_url: str
    dlq_url: str
    tmp: Path

    def upload(self, key: str, text: str) -> None:
        local = self.tmp / key.replace("/", "_")
        local.write_text(text)
        self.moto.aws("s3", "cp", "--quiet", str(local), f"s3://{self.bucket}/{key}")

    def source(self, *, listing_seconds: float = 3600, name: str = "cursor") -> SqsNotifications:
        source = S3Source(
            bucket=self.bucket,
            prefix="incoming/",
            mode="notifications",
            queue_url=self.queue_url,
            endpoint_url=self.moto.endpoint,
            listing_seconds=listing_seconds,
        )
        listing = S3Listing(source, self.moto.s3, [], IGNORE, self.tmp / f"{name}.json")
        return SqsNotifications(
            source, self.moto.sqs, self.moto.s3, [], IGNORE, listing, wait_seconds=1
        )

    def etag(self, key: str) -> str:
        return str(self.moto.s3.head_object(Bucket=self.bucket, Key=key)["ETag"]).strip('"')


@pytest.fixture
def wired(moto: MotoServer, tmp_path: Path) -> Wired:
    bucket = moto.bucket()
    dlq = moto.queue("dlq")
    redrive = {"deadLetterTargetArn": moto.queue_arn(dlq), "maxReceiveCount": "2"}
    queue = moto.queue(
        "notify", {"VisibilityTimeout": str(VISIBILITY), "RedrivePolicy": json.dumps(redrive)}
    )
    config = {
        "QueueConfigurations": [
            {
                "QueueArn": moto.queue_arn(queue),
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
            }
        ]
    }
    moto.aws(
        "s3api", "put-bucket-notification-configuration", "--bucket", bucket,
        "--notification-configuration", json.dumps(config),
    )  # fmt: skip
    return Wired(moto, bucket, queue, dlq, tmp_path)


@pytest.fixture
def running(wired: Wired) -> Iterator[SqsNotifications]:
    source = wired.source()
    source.start()
    try:
        yield source
    finally:
        source.stop()


def poll_until(source: SqsNotifications, count: int, timeout: float = 15) -> list[FileRef]:
    """Poll (acknowledging nothing) until refs for ``count`` distinct URIs arrived."""
    refs: list[FileRef] = []
    deadline = time.monotonic() + timeout
    while len({ref.uri for ref in refs}) < count:
        assert time.monotonic() < deadline, f"only {refs} after {timeout}s"
        refs.extend(source.poll())
        time.sleep(0.1)
    return refs


def test_uploads_become_refs_and_messages_are_deleted_only_on_ack(
    wired: Wired, running: SqsNotifications
) -> None:
    # Long enough that a slow machine cannot see a message redelivered (and, at its second
    # receive, moved to the dead-letter queue) before the ack this test is about.
    wired.moto.sqs.set_queue_attributes(
        QueueUrl=wired.queue_url, Attributes={"VisibilityTimeout": "60"}
    )
    assert running.poll() == []  # the startup listing: the bucket is still empty
    running.ack()
    wired.upload("incoming/sales/my file+1.csv", "id\n1\n")
    wired.upload("incoming/events/e.jsonl", '{"id": 1}\n{"id": 2}\n')
    wired.upload("incoming/sales/.hidden.csv", "id\n1\n")  # notified, but ignored
    wired.upload("outside/sales/a.csv", "id\n1\n")  # filtered out by the notification config

    refs = {ref.uri: ref for ref in poll_until(running, 2)}
    b = wired.bucket
    assert set(refs) == {
        f"s3://{b}/incoming/sales/my file+1.csv",
        f"s3://{b}/incoming/events/e.jsonl",
    }
    plus = refs[f"s3://{b}/incoming/sales/my file+1.csv"]
    assert (plus.dataset, plus.size) == ("sales", 5)
    assert plus.etag == wired.etag("incoming/sales/my file+1.csv")
    assert refs[f"s3://{b}/incoming/events/e.jsonl"].dataset == "events"

    assert wired.moto.queue_depth(wired.queue_url) >= 2, "not deleted before ack"
    running.ack()
    wired.moto.wait_until(
        lambda: wired.moto.queue_depth(wired.queue_url) == 0, 10, "the queue to drain after ack"
    )
    assert wired.moto.queue_depth(wired.dlq_url) == 0, "the test event was consumed, not dead"


def test_a_redelivered_notification_is_yielded_again_without_harm(wired: Wired) -> None:
    source = wired.source()
    assert source.poll() == []  # the startup listing, before anything was uploaded
    source.ack()
    wired.upload("incoming/sales/a.csv", "id\n1\n")
    body = wired.moto.wait_until(lambda: record_body(wired), 10, "the S3 notification")
    source.start()  # receives the original once its visibility timeout has passed
    try:
        (first,) = {ref.uri: ref for ref in poll_until(source, 1)}.values()
        source.ack()
        wired.moto.aws(
            "sqs", "send-message", "--queue-url", wired.queue_url, "--message-body", body
        )
        (second,) = {ref.uri: ref for ref in poll_until(source, 1)}.values()
        source.ack()
    finally:
        source.stop()
    assert (second.uri, second.fingerprint) == (first.uri, first.fingerprint)
    assert first.etag == wired.etag("incoming/sales/a.csv")
    wired.moto.wait_until(
        lambda: wired.moto.queue_depth(wired.queue_url) == 0, 10, "the queue to drain"
    )
    assert wired.moto.queue_depth(wired.dlq_url) == 0


def record_body(wired: Wired) -> str | None:
    """Receive (without deleting) until the S3 event message shows; return its body."""
    out = wired.moto.aws_json(
        "sqs", "receive-message", "--queue-url", wired.queue_url, "--max-number-of-messages", "10"
    )
    for message in (out or {}).get("Messages", []):
        if "Records" in message["Body"]:
            return str(message["Body"])
    return None


def test_a_poison_message_is_left_for_the_dead_letter_queue(
    wired: Wired, running: SqsNotifications, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hopper.watch.s3.sqs")
    wired.moto.aws(
        "sqs", "send-message", "--queue-url", wired.queue_url, "--message-body", "not json {"
    )

    def dead() -> list[str]:
        assert running.poll() == []
        running.ack()
        out = wired.moto.sqs.receive_message(QueueUrl=wired.dlq_url, MaxNumberOfMessages=10)
        return [m["Body"] for m in out.get("Messages", [])]

    assert wired.moto.wait_until(dead, 20, "the poison message in the DLQ") == ["not json {"]
    errors = [r.getMessage() for r in caplog.records if "unreadable message" in r.getMessage()]
    assert len(errors) == 1, errors  # logged once, although received twice
    assert wired.queue_url in errors[0]


def test_reconciliation_finds_files_when_notifications_are_off(wired: Wired) -> None:
    wired.moto.aws(
        "s3api", "put-bucket-notification-configuration", "--bucket", wired.bucket,
        "--notification-configuration", "{}",
    )  # fmt: skip
    wired.upload("incoming/sales/late.csv", "id\n1\n")
    source = wired.source(listing_seconds=0.5)
    source.start()
    try:
        refs = poll_until(source, 1)
        source.ack()
    finally:
        source.stop()
    assert [ref.uri for ref in refs] == [f"s3://{wired.bucket}/incoming/sales/late.csv"]
    assert refs[0].etag == wired.etag("incoming/sales/late.csv")
    assert wired.moto.queue_depth(wired.queue_url) == 0


def test_a_multipart_upload_is_yielded_as_one_version(
    wired: Wired, running: SqsNotifications
) -> None:
    assert running.poll() == []
    running.ack()
    local = wired.tmp / "big.csv"
    local.write_bytes(b"id\n" + b"1\n" * 5_000_000)  # 10 MB: the CLI uploads it in parts
    key = "incoming/big/big.csv"
    wired.moto.aws("s3", "cp", "--quiet", str(local), f"s3://{wired.bucket}/{key}")
    refs = poll_until(running, 1)
    time.sleep(1.5)  # let the second notification (Put + CompleteMultipartUpload) arrive
    refs += running.poll()
    running.ack()
    assert {(ref.uri, ref.fingerprint) for ref in refs} == {
        (f"s3://{wired.bucket}/{key}", f"etag:{wired.etag(key)}")
    }
    assert wired.etag(key).endswith("-2")
    wired.moto.wait_until(
        lambda: wired.moto.queue_depth(wired.queue_url) == 0, 10, "the queue to drain"
    )


def test_stop_does_not_wait_out_a_long_poll_and_a_restart_loses_nothing(wired: Wired) -> None:
    source = wired.source()
    source.wait_seconds = 20  # as in production: each receive may hold 20 s
    source.start()
    time.sleep(1.0)  # its first long poll is under way (the bucket's test event consumed)
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 3  # not the 20 s the poll may take
    wired.upload("incoming/sales/late.csv", "id\n1\n")  # may reach the abandoned poll
    again = wired.source()  # a restart: whatever the old poll took comes back in time
    again.start()
    try:
        (ref,) = poll_until(again, 1, timeout=VISIBILITY + 20)
        assert ref.uri.endswith("incoming/sales/late.csv")
    finally:
        again.stop()
