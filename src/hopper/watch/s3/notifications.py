"""S3 event notifications, as SQS delivers them, parsed into what they say.

Pure parsing, no I/O: a message body (raw S3 JSON or wrapped in an SNS envelope) becomes a
:class:`Notification` of object-creation records, S3's ``s3:TestEvent``, or a count of
records about anything else; anything unreadable raises :class:`PoisonMessage`. Keys arrive
URL-encoded with ``quote_plus`` (moto encodes the slash too) and leave decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from hopper.watch.s3.refs import normalize_etag, normalize_version


class PoisonMessage(ValueError):
    """An SQS message that is not an S3 event notification Hopper can understand."""


@dataclass(frozen=True)
class ObjectEvent:
    """One ``ObjectCreated:*`` record of an S3 event notification."""

    bucket: str
    key: str  # decoded with unquote_plus
    size: int | None
    etag: str | None
    version_id: str | None
    event_time: float | None
    event_name: str


@dataclass(frozen=True)
class Notification:
    """What one SQS message says.

    Attributes:
        events: the object-creation records (possibly several, possibly none).
        test_event: S3's ``s3:TestEvent``, sent when a notification configuration is saved.
        skipped: records about anything but object creation (removals, restores…).
    """

    events: tuple[ObjectEvent, ...] = ()
    test_event: bool = False
    skipped: int = 0


def parse_notification(body: str) -> Notification:
    """Parse an SQS message body holding an S3 event notification, raw or wrapped by SNS.

    Keys in notifications are URL-encoded with ``quote_plus`` (``incoming%2Fmy+file.csv``);
    they are returned decoded (``incoming/my file.csv``).

    Raises:
        PoisonMessage: the body is not JSON, not an S3 notification, or a record lacks its
            bucket or key.
    """
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise PoisonMessage(f"not JSON ({exc})") from None
    if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
        message = data["Message"]
        if not isinstance(message, str):
            raise PoisonMessage("SNS envelope whose Message is not a string")
        return parse_notification(message)
    if not isinstance(data, dict):
        raise PoisonMessage(f"JSON {type(data).__name__}, not an object")
    if data.get("Event") == "s3:TestEvent":
        return Notification(test_event=True)
    if isinstance(data.get("Type"), str) and "Records" not in data:
        return Notification(skipped=1)  # other SNS messages (subscription confirmations…)
    records = data.get("Records")
    if not isinstance(records, list):
        raise PoisonMessage("no 'Records' list: not an S3 event notification")
    events: list[ObjectEvent] = []
    skipped = 0
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise PoisonMessage(f"record {index} is not an object")
        name = str(record.get("eventName", ""))
        if not name.startswith("ObjectCreated:"):
            skipped += 1
            continue
        events.append(_object_event(record, index, name))
    return Notification(events=tuple(events), skipped=skipped)


def _object_event(record: dict[str, Any], index: int, name: str) -> ObjectEvent:
    s3 = _mapping(record.get("s3"))
    bucket, obj = _mapping(s3.get("bucket")), _mapping(s3.get("object"))
    bucket_name, raw_key = bucket.get("name"), obj.get("key")
    if not isinstance(bucket_name, str) or not bucket_name:
        raise PoisonMessage(f"record {index} has no s3.bucket.name")
    if not isinstance(raw_key, str) or not raw_key:
        raise PoisonMessage(f"record {index} has no s3.object.key")
    size = obj.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise PoisonMessage(f"record {index} has an invalid s3.object.size {size!r}")
    etag, version = obj.get("eTag"), obj.get("versionId")
    return ObjectEvent(
        bucket=bucket_name,
        key=unquote_plus(raw_key),
        size=size,
        etag=normalize_etag(etag) if isinstance(etag, str) else None,
        version_id=normalize_version(version) if isinstance(version, str) else None,
        event_time=_epoch(record.get("eventTime")),
        event_name=name,
    )


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
