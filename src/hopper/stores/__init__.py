"""Where Hopper puts files: one :class:`Store` interface, a local and an S3 implementation.

:func:`store_for` is the one place that tells an ``s3://`` location from a local folder; the
policy above (:mod:`hopper.sink`, :mod:`hopper.staging`) only ever holds a :class:`Store`.
The S3 implementation (and boto3 with it) is imported only when an ``s3://`` location is
used, so local-only readers never pay for it.
"""

from __future__ import annotations

from typing import Any

from hopper.stores.base import Store, Writer, join
from hopper.stores.local import LocalStore

__all__ = ["LocalStore", "Store", "Writer", "join", "store_for"]


def store_for(location: str, s3: Any = None) -> Store:
    """The :class:`Store` of a location: ``s3://…`` (reached with ``s3``) or a local folder.

    Args:
        location: a lake or quarantine location, or anything under one.
        s3: a boto3 client from :func:`hopper.storage.make_s3_client`, for ``s3://``
            locations (it may be made lazily, see :class:`hopper.lazy_s3.LazyS3Client`).
    """
    if location.startswith("s3://"):
        from hopper.stores.s3 import S3Store

        return S3Store(s3)
    return LocalStore()
