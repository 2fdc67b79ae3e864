"""Pure parts of the S3 source: notification parsing, key → FileRef, the source model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from hopper.config import RoutingRule, S3Source, WatchOptions
from hopper.watch.s3.notifications import PoisonMessage, parse_notification
from hopper.watch.s3.refs import dedupe_refs, object_ref, relative_key

IGNORE = WatchOptions().ignore


def record(key: str, name: str = "ObjectCreated:Put", **obj: Any) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": "2024-05-01T12:00:00.500Z",
        "eventName": name,
        "s3": {
            "bucket": {"name": "landing", "arn": "arn:aws:s3:::landing"},
            "object": {"key": key, "size": 12, "eTag": "abc123", **obj},
        },
    }


def body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def test_keys_are_decoded_with_unquote_plus() -> None:
    (event,) = parse_notification(body(record("incoming%2Fsales%2Fmy+file%2B1%25.csv"))).events
    assert event.key == "incoming/sales/my file+1%.csv"
    assert (event.bucket, event.size, event.etag) == ("landing", 12, "abc123")
    assert event.event_time == 1714564800.5
    assert event.event_name == "ObjectCreated:Put"


def test_test_event_is_recognised() -> None:
    message = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "landing"}
    parsed = parse_notification(json.dumps(message))
    assert parsed.test_event and parsed.events == ()


def test_sns_wrapped_notifications_are_unwrapped() -> None:
    wrapped = {"Type": "Notification", "MessageId": "1", "Message": body(record("a%2Fb.csv"))}
    (event,) = parse_notification(json.dumps(wrapped)).events
    assert event.key == "a/b.csv"
    confirmation = {"Type": "SubscriptionConfirmation", "Message": "confirm me"}
    assert parse_notification(json.dumps(confirmation)).skipped == 1


def test_only_object_creation_records_count() -> None:
    parsed = parse_notification(
        body(
            record("a.csv", "ObjectRemoved:Delete"),
            record("b.csv", "ObjectCreated:CompleteMultipartUpload", versionId="v1"),
        )
    )
    assert parsed.skipped == 1
    assert [(e.key, e.version_id) for e in parsed.events] == [("b.csv", "v1")]


@pytest.mark.parametrize(
    "text",
    [
        "not json {",
        "[1, 2]",
        '"a string"',
        json.dumps({"hello": "world"}),
        json.dumps({"Records": "nope"}),
        json.dumps({"Records": [42]}),
        body({"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "a.csv"}}}),
        body(record("")),
        body(record("a.csv", size=-1)),
        json.dumps({"Type": "Notification", "Message": {"Records": []}}),
        json.dumps({"Type": "Notification", "Message": "garbage"}),
    ],
)
def test_garbage_is_poison(text: str) -> None:
    with pytest.raises(PoisonMessage):
        parse_notification(text)


def source(**options: Any) -> S3Source:
    return S3Source.model_validate({"bucket": "landing", "prefix": "incoming", **options})


def test_source_model_normalises_the_prefix_and_requires_a_queue_for_notifications() -> None:
    assert source().prefix == "incoming/"
    assert source(prefix="/incoming/").prefix == "incoming/"
    assert source(prefix="").prefix == ""
    assert source().root == "s3://landing/incoming/"
    with pytest.raises(ValidationError, match="queue_url"):
        source(mode="notifications")
    assert source(mode="notifications", queue_url="http://q").queue_url == "http://q"
    with pytest.raises(ValidationError, match="bare bucket name"):
        S3Source(bucket="s3://landing/incoming")
    with pytest.raises(ValidationError, match="extra"):
        source(queue="typo")


def test_relative_key_skips_folder_markers_and_other_prefixes() -> None:
    s = source()
    assert relative_key("incoming/sales/a.csv", s) == "sales/a.csv"
    assert relative_key("incoming/sales/", s) is None
    assert relative_key("incomingx/sales/a.csv", s) is None
    assert relative_key("other/a.csv", s) is None
    assert relative_key("incoming/sales/a.csv", source(recursive=False)) is None
    assert relative_key("incoming/a.csv", source(recursive=False)) == "a.csv"


def test_object_ref_routes_and_ignores() -> None:
    def ref(key: str, rules: list[RoutingRule] | None = None) -> Any:
        return object_ref(
            source(),
            key,
            size=3,
            mtime=1.5,
            etag='"abc"',
            version_id="null",
            rules=rules or [],
            ignore=IGNORE,
        )

    made = ref("incoming/sales/2024/my file.csv")
    assert made.uri == "s3://landing/incoming/sales/2024/my file.csv"
    assert (made.dataset, made.etag, made.version_id, made.size) == ("sales", "abc", None, 3)
    assert made.fingerprint == "etag:abc"
    assert ref("incoming/top.csv").dataset is None
    assert ref(
        "incoming/x/orders.csv", [RoutingRule(glob="x/*.csv", dataset="orders")]
    ).dataset == ("orders")
    for ignored in ("incoming/sales/.a.csv", "incoming/sales/a.csv.part", "incoming/.tmp/s/a.csv"):
        assert ref(ignored) is None


def test_dedupe_keeps_one_ref_per_uri_and_fingerprint() -> None:
    def ref(etag: str, version: str | None = None) -> Any:
        return object_ref(
            source(),
            "incoming/s/a.csv",
            size=1,
            mtime=0,
            etag=etag,
            version_id=version,
            rules=[],
            ignore=[],
        )

    put, complete, newer, versioned = ref('"e1"'), ref("e1"), ref("e2"), ref("e2", "v2")
    assert dedupe_refs([put, complete, newer, versioned, newer]) == [put, newer, versioned]
