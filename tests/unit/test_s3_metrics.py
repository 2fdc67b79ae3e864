"""S3 source metrics: SQS messages received and deleted, and the listing cursor's age.

The real :class:`S3Listing` and :class:`SqsNotifications` run against moto's in-process S3
and SQS (``mock_aws``), so the counters are checked where the watcher really receives and
deletes. The registry is process-wide: every check compares before and after, on a bucket
and a queue whose names are unique to the test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from hopper import metrics
from hopper.config import S3Source, WatchOptions
from hopper.storage import S3Client, SqsClient, make_s3_client, make_sqs_client
from hopper.watch.s3 import S3Listing, SqsNotifications

IGNORE = WatchOptions().ignore
RECEIVED = "hopper_sqs_messages_received_total"
DELETED = "hopper_sqs_messages_deleted_total"
AGE = "hopper_s3_listing_cursor_age_seconds"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process S3 and SQS, with dummy credentials and no user profile."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: None) -> S3Client:
    return make_s3_client()


@pytest.fixture
def sqs(aws: None) -> SqsClient:
    return make_sqs_client()


def _unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def _bucket(s3: S3Client, *keys: str) -> str:
    name = _unique("metrics")
    s3.create_bucket(Bucket=name)
    for key in keys:
        s3.put_object(Bucket=name, Key=key, Body=b"a,b\n1,2\n")
    return name


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _created(bucket: str, key: str) -> str:
    record = {
        "eventName": "ObjectCreated:Put",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 8, "eTag": "e1"}},
    }
    return json.dumps({"Records": [record]})


def _listing(source: S3Source, s3: S3Client, tmp_path: Path) -> S3Listing:
    return S3Listing(source, s3, [], IGNORE, tmp_path / "cursor.json")


def test_queue_label_is_the_queue_name_only() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/landing-events"
    assert metrics.queue_name(url) == "landing-events"
    assert metrics.queue_name("https://user:secret@sqs.local/1/q/?X-Amz-Signature=s") == "q"
    assert metrics.queue_name("") == "unknown"


def test_sqs_messages_received_and_deleted_are_counted(
    s3: S3Client, sqs: SqsClient, tmp_path: Path
) -> None:
    bucket = _bucket(s3)
    queue = _unique("events")
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    bodies = [
        _created(bucket, "incoming/sales/a.csv"),
        _created(bucket, "incoming/sales/b.csv"),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}),
        "not json {",  # poison: received, never deleted (left for the dead-letter queue)
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    source = S3Source(bucket=bucket, prefix="incoming/", mode="notifications", queue_url=url)
    watcher = SqsNotifications(source, sqs, s3, [], IGNORE, _listing(source, s3, tmp_path))
    labels = {"queue": queue, "source": "s3"}
    received, deleted = _value(RECEIVED, **labels), _value(DELETED, **labels)

    got = 0
    for _ in range(10):  # SQS may hand out fewer than asked in one call
        got += watcher.receive_once(wait_seconds=0)
        if got >= len(bodies):
            break
    assert got == len(bodies)
    assert _value(RECEIVED, **labels) - received == 4
    assert _value(DELETED, **labels) - deleted == 1  # the test event names nothing: gone at once

    refs = watcher.poll()
    assert sorted(ref.uri for ref in refs) == [
        f"s3://{bucket}/incoming/sales/a.csv",
        f"s3://{bucket}/incoming/sales/b.csv",
    ]
    assert _value(DELETED, **labels) - deleted == 1  # polled, not yet recorded: kept
    watcher.ack()
    assert _value(DELETED, **labels) - deleted == 3
    assert _value(RECEIVED, **labels) - received == 4
    assert metrics.REGISTRY.get_sample_value(RECEIVED, {"queue": url, "source": "s3"}) is None


def test_listing_cursor_age_is_reset_by_an_acknowledged_listing_and_grows_after(
    s3: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(s3, "incoming/sales/a.csv", "incoming/sales/b.csv")
    source = S3Source(bucket=bucket, prefix="incoming/")
    listing = _listing(source, s3, tmp_path)
    labels = {"source": "s3", "root": source.root}

    assert listing.scan() == 2
    assert metrics.REGISTRY.get_sample_value(AGE, labels) is None  # found, not yet recorded
    assert len(listing.poll()) == 2
    listing.ack()
    age = metrics.REGISTRY.get_sample_value(AGE, labels)
    assert age is not None and 0.0 <= age < 5.0

    later = time.time() + 120.0
    monkeypatch.setattr(metrics.LISTING_AGE, "clock", lambda: later)
    assert 120.0 <= _value(AGE, **labels) < 125.0

    # A listing that fails part-way confirms nothing: the age keeps growing.
    for key in ("incoming/sales/a.csv", "incoming/sales/b.csv"):
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    listing.scan()
    assert listing.poll() == []
    listing.ack()
    assert _value(AGE, **labels) >= 120.0

    # A complete listing, even one finding nothing new, brings it back down once acknowledged.
    s3.create_bucket(Bucket=bucket)
    listing.scan()
    listing.poll()
    listing.ack()
    monkeypatch.setattr(metrics.LISTING_AGE, "clock", time.time)
    assert 0.0 <= _value(AGE, **labels) < 5.0
