"""S3 as a source of ``FileRef``s: a durable listing, and SQS notifications reconciled by it.

S3 never shows a partial object (a PUT or multipart upload becomes visible only once complete),
so unlike local folders there is no stability check: an object seen is an object ready.

Two sources share :class:`~hopper.watch.local.LocalFolder`'s interface (``start``, ``stop``,
``scan``, ``poll``, ``root``) plus ``ack``, which the daemon calls once it has recorded every
ref of the last ``poll`` in the ledger; only then is progress made durable (the listing's
cursor is saved, SQS messages are deleted). A crash between ``poll`` and ``ack`` therefore
re-delivers, never loses; the ledger's ``(uri, fingerprint)`` key absorbs the duplicates.

- :class:`S3Listing` lists the prefix every ``listing_seconds`` and yields objects it has not
  yet handed out, remembering them in a cursor file.
- :class:`SqsNotifications` turns S3 event notifications into refs as they arrive, and runs an
  :class:`S3Listing` as reconciliation: notifications are at-least-once and can be lost (a
  queue purged, a notification configuration removed), a file must not be.

One module per idea:

- :mod:`.refs`: which keys a source watches, and an object's ``FileRef`` (pure);
- :mod:`.notifications`: parsing S3 event notifications (pure);
- :mod:`.cursor`: the listing's durable cursor;
- :mod:`.listing`: :class:`S3Listing`;
- :mod:`.sqs`: :class:`SqsNotifications`;
- :mod:`.check`: :func:`check_s3_source`, the startup check.
"""

from __future__ import annotations

from hopper.config import S3Source
from hopper.watch.s3.check import check_s3_source
from hopper.watch.s3.cursor import CURSOR_VERSION, ListingCursor, load_cursor, save_cursor
from hopper.watch.s3.listing import S3Listing, bucket_is_versioned
from hopper.watch.s3.notifications import (
    Notification,
    ObjectEvent,
    PoisonMessage,
    parse_notification,
)
from hopper.watch.s3.refs import (
    dedupe_refs,
    normalize_etag,
    normalize_version,
    object_ref,
    relative_key,
)
from hopper.watch.s3.sqs import SqsNotifications

__all__ = [
    "CURSOR_VERSION",
    "ListingCursor",
    "Notification",
    "ObjectEvent",
    "PoisonMessage",
    "S3Listing",
    "S3Source",
    "SqsNotifications",
    "bucket_is_versioned",
    "check_s3_source",
    "dedupe_refs",
    "load_cursor",
    "normalize_etag",
    "normalize_version",
    "object_ref",
    "parse_notification",
    "relative_key",
    "save_cursor",
]
