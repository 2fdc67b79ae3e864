"""An S3 client made on its first use, for code that may or may not reach S3.

Whether a run needs S3 depends on the file and on where the lake, the quarantine and the
archive are; a :class:`LazyS3Client` lets nobody decide that in advance. Importing this module
loads no boto3: :func:`hopper.storage.make_s3_client`, and boto3 with it, is imported when the
client is first used, so a process that only meets local folders (a reader writing to a local
lake, a watcher of folders) never loads it.
"""

from __future__ import annotations

import threading
from typing import Any


class LazyS3Client:
    """A boto3 S3 client made on its first use (by any thread, once), then used as is."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        """Remember how to make the client (see :func:`hopper.storage.make_s3_client`)."""
        self._args = (endpoint_url, region)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 client (made now if it was not yet)."""
        with self._lock:
            if self._client is None:
                from hopper.storage import make_s3_client

                self._client = make_s3_client(*self._args)
            return self._client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not yet initialised (copy, pickle): no client for those
            raise AttributeError(name)
        return getattr(self.client, name)
