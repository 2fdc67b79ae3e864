"""The S3 :class:`~hopper.stores.base.Store`: ``s3://bucket/key`` locations.

Two clients, each where it is the right tool:

- ``pyarrow.fs.S3FileSystem`` streams large files out as multipart uploads, part by part in
  bounded memory (:meth:`S3Store.open_output`), and reads, looks up and lists objects.
- boto3 does what Arrow has no equivalent for: a conditional put (``If-None-Match: *``) that
  claims a quarantine name, an upload that is *aborted* on failure (Arrow completes a
  stream's upload when it is closed, even after an error, so it cannot promise an atomic
  write), server-side copies beyond 5 GB that keep the object's content type, and
  single-request deletes and prefix listings.

Both reach the same endpoint and region: the Arrow file system is derived from the boto3
client (:func:`arrow_filesystem`); its credentials come from the same standard AWS chain.
boto3 faults are mapped by :func:`hopper.storage.s3_error`, Arrow's by :func:`arrow_error`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from hopper.errors import HopperError, SourceGoneError, TransientError
from hopper.storage import (
    AWS_ERRORS,
    GONE_CODES,
    MULTIPART_BYTES,
    S3Client,
    check_bucket,
    error_code,
    parse_s3_uri,
    s3_error,
    s3_uri,
)
from hopper.stores.base import Store, Writer

log = logging.getLogger(__name__)

_NAME_TAKEN_OR_NO_CONDITIONS = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "NotImplemented"}
)
_TRANSIENT_HINTS = (
    "NETWORK_CONNECTION",
    "curlCode",
    "connect",
    "timed out",
    "timeout",
    "SLOW_DOWN",
    "SlowDown",
    "THROTTL",
    "Throttl",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_FAILURE",
    "REQUEST_TIMEOUT",
    "response code: 5",
)

_filesystems: dict[tuple[str, str | None], pafs.S3FileSystem] = {}
_filesystems_lock = threading.Lock()


def arrow_filesystem(client: S3Client) -> pafs.S3FileSystem:
    """The Arrow S3 file system for the endpoint and region of a boto3 client (one each).

    An endpoint that is not AWS's own (moto, MinIO) is passed as ``endpoint_override``, with
    its scheme; AWS itself is reached by region. Retries and timeouts match
    :func:`hopper.storage.make_s3_client`'s.
    """
    endpoint = str(client.meta.endpoint_url)
    region = client.meta.region_name
    with _filesystems_lock:
        found = _filesystems.get((endpoint, region))
        if found is None:
            url = urlsplit(endpoint)
            options: dict[str, Any] = {}
            if not (url.hostname or "").endswith(".amazonaws.com"):
                options = {"endpoint_override": url.netloc, "scheme": url.scheme or "https"}
            found = pafs.S3FileSystem(
                region=region,
                connect_timeout=10,
                request_timeout=60,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=5),
                **options,
            )
            _filesystems[(endpoint, region)] = found
    return found


def arrow_error(exc: BaseException, uri: str, action: str) -> HopperError:
    """Translate an Arrow S3 fault about ``uri`` into a Hopper error (to ``raise … from``).

    Arrow reports S3 faults as ``OSError`` with the AWS error in its message: a missing
    object is :class:`SourceGoneError`, throttling, 5xx and network faults are
    :class:`TransientError`, anything else a plain :class:`HopperError`.
    """
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "NoSuchKey" in text or "NoSuchBucket" in text:
        return SourceGoneError(f"{uri}: the object is gone ({action})")
    if any(hint in text for hint in _TRANSIENT_HINTS):
        return TransientError(f"{uri}: S3 {action} failed, will retry ({text.splitlines()[0]})")
    return HopperError(f"{uri}: S3 {action} failed ({text})")


def _key(uri: str) -> str:
    """Arrow's name of an object: ``bucket/key``."""
    bucket, key = parse_s3_uri(uri)
    return f"{bucket}/{key}"


class S3Store(Store):
    """:class:`Store` on S3 (see the module docstring for which client does what)."""

    def __init__(self, s3: S3Client | None) -> None:
        """Wrap a boto3 client from :func:`hopper.storage.make_s3_client`.

        ``None`` makes a store that can only :meth:`prepare` (creating no client); anything
        else it is asked raises ``ValueError``.
        """
        self._s3 = s3
        self._fs: pafs.S3FileSystem | None = None

    @property
    def s3(self) -> S3Client:
        """The boto3 client."""
        if self._s3 is None:
            raise ValueError("an S3 client is needed to reach an s3:// location")
        return self._s3

    @property
    def fs(self) -> pafs.S3FileSystem:
        """The Arrow file system on the boto3 client's endpoint."""
        if self._fs is None:
            self._fs = arrow_filesystem(self.s3)
        return self._fs

    def write_atomic(self, path: str, write: Writer, content_type: str | None = None) -> None:
        """See :class:`Store`: written to a local temp file, then uploaded (aborted on failure).

        A single PUT up to 64 MiB, a multipart upload beyond, which S3 publishes only once it
        completes.
        """
        folder = Path(tempfile.mkdtemp(prefix="hopper-out-"))
        try:
            local = folder / "upload"
            with pa.OSFile(str(local), "wb") as out:
                write(out)
            self._upload(local, path, content_type)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _upload(self, local: Path, path: str, content_type: str | None) -> None:
        bucket, key = parse_s3_uri(path)
        if not key or key.endswith("/"):
            raise ValueError(f"{path}: not an object URI")
        extra = {"ContentType": content_type} if content_type else None
        try:
            self.s3.upload_file(
                str(local),
                bucket,
                key,
                ExtraArgs=extra,
                Config=TransferConfig(multipart_threshold=MULTIPART_BYTES),
            )
        except AWS_ERRORS as exc:
            raise s3_error(exc, path, "write") from exc

    @contextmanager
    def _output(self, path: str, content_type: str | None) -> Iterator[pa.NativeFile]:
        metadata = {"Content-Type": content_type} if content_type else None
        try:
            stream = self.fs.open_output_stream(_key(path), metadata=metadata)
        except OSError as exc:
            raise arrow_error(exc, path, "write") from exc
        try:
            yield stream
            stream.close()  # completes the multipart upload
        except BaseException as exc:
            # Arrow cannot abort an upload: the partial object is completed, then deleted
            # (a killed writer leaves an unfinished upload instead, which nobody can read).
            with contextlib.suppress(OSError):
                stream.close()
            self.delete(path)
            if isinstance(exc, OSError):
                raise arrow_error(exc, path, "write") from exc
            raise

    def open_output(
        self, path: str, content_type: str | None = None
    ) -> AbstractContextManager[pa.NativeFile]:
        """See :class:`Store` (a multipart upload, a part at a time, through Arrow)."""
        return self._output(path, content_type)

    def open_input(self, path: str) -> pa.NativeFile:
        """See :class:`Store` (ranged reads through Arrow)."""
        try:
            return self.fs.open_input_file(_key(path))
        except OSError as exc:
            raise arrow_error(exc, path, "read") from exc

    def put_text(self, path: str, text: str) -> None:
        """See :class:`Store` (one PUT)."""
        bucket, key = parse_s3_uri(path)
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=text.encode(), ContentType="text/plain")
        except AWS_ERRORS as exc:
            raise s3_error(exc, path, "write") from exc

    def read_text(self, path: str) -> str | None:
        """See :class:`Store`."""
        try:
            with self.fs.open_input_stream(_key(path)) as stream:
                return str(stream.read().decode())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise arrow_error(exc, path, "read") from exc

    def exists(self, path: str) -> bool:
        """See :class:`Store`."""
        try:
            info = self.fs.get_file_info(_key(path))
        except OSError as exc:
            raise arrow_error(exc, path, "look up") from exc
        return bool(info.type == pafs.FileType.File)

    def list_files(self, prefix: str) -> list[str]:
        """See :class:`Store` (any key prefix, not only a folder: boto3's listing)."""
        bucket, start = parse_s3_uri(prefix)
        found: list[str] = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start)
            for page in pages:
                found += [s3_uri(bucket, obj["Key"]) for obj in page.get("Contents", [])]
        except AWS_ERRORS as exc:
            raise s3_error(exc, prefix, "list") from exc
        return found

    def find(self, root: str, name: str, depth: int) -> list[str]:
        """See :class:`Store`."""
        base = _key(root).rstrip("/")
        try:
            infos = self.fs.get_file_info(
                pafs.FileSelector(base, recursive=True, allow_not_found=True)
            )
        except OSError as exc:
            raise arrow_error(exc, root, "list") from exc
        bucket = base.split("/", 1)[0]
        return [
            s3_uri(bucket, info.path.split("/", 1)[1])
            for info in infos
            if info.type == pafs.FileType.File
            and info.base_name == name
            and info.path[len(base) + 1 :].count("/") == depth
        ]

    def delete(self, path: str) -> None:
        """See :class:`Store` (one request, whether or not the object exists)."""
        bucket, key = parse_s3_uri(path)
        try:
            self.s3.delete_object(Bucket=bucket, Key=key)
        except AWS_ERRORS as exc:
            raise s3_error(exc, path, "delete") from exc
        log.debug("deleted %s", path)

    def delete_folder(self, folder: str, files: Iterable[str] | None = None) -> None:
        """See :class:`Store`."""
        for uri in self.list_files(f"{folder}/") if files is None else files:
            self.delete(uri)

    def prune(self, paths: Iterable[str], stop: str) -> None:
        """See :class:`Store` (S3 has no folders to leave behind)."""

    def copy(self, source: str, target: str) -> None:
        """See :class:`Store` (server side; multipart beyond 5 GB; the content type is kept)."""
        src_bucket, src_key = parse_s3_uri(source)
        bucket, key = parse_s3_uri(target)
        try:
            self.s3.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key)
        except AWS_ERRORS as exc:
            raise s3_error(exc, source, "copy") from exc

    def move(self, source: str, target: str) -> None:
        """See :class:`Store` (copy, then delete: a kill between leaves both, never neither)."""
        self.copy(source, target)
        self.delete(source)

    def backup(self, source: str, target: str) -> None:
        """See :class:`Store` (a server-side copy)."""
        self.copy(source, target)

    def upload(self, local: Path, target: str) -> None:
        """See :class:`Store`."""
        if local.is_symlink():
            raise ValueError(f"{local}: a symbolic link is never copied")
        self._upload(local, target, None)

    def reaches(self, uri: str) -> bool:
        """See :class:`Store`: S3 objects are copied server side."""
        return uri.startswith("s3://")

    def claim(self, path: str, content: bytes) -> bytes | None:
        """See :class:`Store`: a conditional put (``If-None-Match: *``).

        A store without conditional puts gets a plain look-then-put.
        """
        bucket, key = parse_s3_uri(path)
        try:
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=content, IfNoneMatch="*")
                return None
            except ClientError as exc:
                if error_code(exc) not in _NAME_TAKEN_OR_NO_CONDITIONS:
                    raise
            try:
                return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except ClientError as exc:
                if error_code(exc) not in GONE_CODES:
                    raise
            self.s3.put_object(Bucket=bucket, Key=key, Body=content)  # no conditional puts
            return None
        except AWS_ERRORS as exc:
            raise s3_error(exc, path, "claim") from exc

    def prepare(self, root: str) -> None:
        """See :class:`Store` (buckets are made by their owners, not by Hopper)."""

    def check(self, root: str, what: str) -> None:
        """See :class:`Store` (the bucket is looked up)."""
        check_bucket(root, self.s3, what)
