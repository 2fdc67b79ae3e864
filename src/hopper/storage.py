"""AWS plumbing: S3 and SQS clients, ``s3://`` URIs, S3 faults mapped to ours, and fetching.

Ingestion works on local files (pyarrow's readers pick the format from the file name), so an
S3 object is first streamed to a temporary file named after its key (:func:`fetch_to_local`).
Writing is not here: outputs and quarantine copies go through :mod:`hopper.stores`.

boto3 clients are created here and nowhere else (:func:`make_s3_client`,
:func:`make_sqs_client`) and handed to the code that needs them. Credentials always come from
the standard AWS chain (environment, shared config, instance or container role), never from
``hopper.yaml``.

Every botocore fault is translated by :func:`s3_error`: throttling, 5xx and broken
connections become :class:`~hopper.errors.TransientError` (retry), a missing object becomes
:class:`~hopper.errors.SourceGoneError` (quarantine, no retry).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from hopper.errors import HopperError, SourceGoneError, TransientError, UnreadableFileError
from hopper.models import path_of_file_uri

log = logging.getLogger(__name__)

S3Client = Any  # boto3 clients are generated at run time; no stubs are installed
SqsClient = Any

CHUNK_BYTES = 1 << 20  # read S3 bodies 1 MiB at a time
MULTIPART_BYTES = 64 * 1024 * 1024  # uploads larger than this go multipart
_UNSAFE_LOCAL = re.compile(r"[\x00-\x1f\x7f\\/]")

GONE_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion", "NoSuchBucket"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "AWS.SimpleQueueService.ServiceUnavailable",
    }
)
_TRANSIENT_IO = (
    BotoConnectionError,  # endpoint unreachable, connection closed or reset, connect timeout
    HTTPClientError,
    ReadTimeoutError,
    IncompleteReadError,
    ResponseStreamingError,
    ConnectionError,
    TimeoutError,
)
AWS_ERRORS: tuple[type[Exception], ...] = (
    ClientError,  # the service answered with an error (NoSuchKey, SlowDown, AccessDenied…)
    BotoCoreError,  # no answer: endpoint unreachable, timeouts, bad credentials, …
    S3UploadFailedError,  # boto3's transfer manager wrapping one of those
    ConnectionError,
    TimeoutError,
)
"""What an S3 or SQS call raises when it fails: catch this, then map it with :func:`s3_error`."""


def make_s3_client(endpoint_url: str | None = None, region: str | None = None) -> S3Client:
    """The one place S3 clients are made.

    Args:
        endpoint_url: an S3-compatible endpoint (moto, MinIO, …). None lets botocore use
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` or the real AWS endpoint.
        region: AWS region; None means the AWS chain (``AWS_DEFAULT_REGION``, profile).

    Returns:
        A boto3 S3 client with standard-mode retries and bounded timeouts. Credentials come
        from the AWS credential chain only.
    """
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=_client_config()
    )


def make_sqs_client(endpoint_url: str | None = None, region: str | None = None) -> SqsClient:
    """The one place SQS clients are made.

    Args:
        endpoint_url: an SQS-compatible endpoint; None lets botocore use
            ``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL`` or the real AWS endpoint.
        region: AWS region; None means the AWS chain.

    Returns:
        A boto3 SQS client. Its read timeout exceeds the longest SQS long poll (20 s).
    """
    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoint_url, region_name=region, config=_client_config()
    )


def _client_config() -> Config:
    return Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=20,
    )


def endpoint_of(client: Any) -> str:
    """The endpoint a boto3 client talks to, for error messages."""
    return str(getattr(getattr(client, "meta", None), "endpoint_url", "") or "AWS")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``.

    The key is taken verbatim (Hopper's S3 URIs are not percent-encoded), so keys holding
    ``?``, ``#`` or ``%`` survive. The key is empty for ``s3://bucket`` or ``s3://bucket/``.

    Raises:
        ValueError: if ``uri`` is not an ``s3://`` URI with a bucket.
    """
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket name")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``, key not percent-encoded."""
    return f"s3://{bucket}/{key}"


def error_code(exc: ClientError) -> str:
    """The service's error code of a botocore ``ClientError`` (``NoSuchKey``, ``SlowDown``…)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_transient_aws(exc: BaseException) -> bool:
    """Whether a botocore fault may go away by itself (throttling, 5xx, network)."""
    if isinstance(exc, ClientError):
        status = _http_status(exc)
        return error_code(exc) in _TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(exc, _TRANSIENT_IO)


def s3_error(exc: BaseException, uri: str, action: str) -> HopperError:
    """Translate a botocore fault about ``uri`` into a Hopper error (to ``raise … from exc``).

    Args:
        exc: what boto3 raised.
        uri: the object or prefix concerned, named in the message.
        action: what was being done, e.g. ``"read"``.

    Returns:
        :class:`SourceGoneError` for a missing object, version or bucket;
        :class:`TransientError` for throttling, 5xx, timeouts and connection faults; a plain
        :class:`HopperError` (neither retried nor quarantined: it needs a human) otherwise,
        e.g. for ``AccessDenied``.
    """
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        exc = exc.__context__  # boto3's transfer manager wraps the real fault
    if isinstance(exc, ClientError):
        code = error_code(exc) or str(_http_status(exc))
        if code == "NoSuchBucket":
            return SourceGoneError(f"{uri}: the bucket is gone (NoSuchBucket during {action})")
        if code in GONE_CODES:
            return SourceGoneError(f"{uri}: the object is gone (deleted before it could be read)")
        if code == "PreconditionFailed":
            return SourceGoneError(
                f"{uri}: the object changed before it could be read; "
                "the newer version is ingested on its own"
            )
        if is_transient_aws(exc):
            return TransientError(f"{uri}: S3 {action} failed, will retry ({code})")
        return HopperError(f"{uri}: S3 {action} failed ({code}: {exc})")
    if is_transient_aws(exc) or isinstance(exc, S3UploadFailedError):
        return TransientError(f"{uri}: S3 {action} failed, will retry ({exc})")
    if isinstance(exc, BotoCoreError):
        return HopperError(f"{uri}: S3 {action} failed ({exc})")
    return HopperError(f"{uri}: {action} failed ({exc})")


def local_name(key: str, limit: int = 200) -> str:
    """A local file name for an S3 key: its basename, keeping the suffixes if too long.

    Format detection works by extension (``.csv``, ``.jsonl.gz``…), so the suffixes are
    what must survive. Backslashes, NUL and other control characters become ``_``, and a
    basename of ``.`` or ``..`` becomes ``object``: the name stays inside its temp folder.
    """
    name = _UNSAFE_LOCAL.sub("_", PurePosixPath(key).name)
    if name in ("", ".", ".."):
        name = "object"
    if len(name.encode()) <= limit:
        return name
    suffix = "".join(PurePosixPath(name).suffixes[-2:])[:40]
    stem = name[: len(name) - len(suffix)].encode()[: limit - len(suffix.encode())]
    return stem.decode(errors="ignore") + suffix


def _lmode(path: Path) -> int:
    """The mode of ``path`` itself (a link is not followed); 0 where ``Path.is_file`` would
    say False (missing, not a folder on the way, a loop); other errors propagate."""
    try:
        return os.lstat(path).st_mode
    except ValueError:  # a NUL in the name
        return 0
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return 0
        raise


def _is_text(path: str) -> bool:
    """Whether a path is valid UTF-8 text (no undecodable bytes kept as surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _temp_folder(prefix: str, tmp_dir: Path | None) -> Path:
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_dir))


@contextmanager
def fetch_to_local(
    uri: str,
    s3_client: S3Client | None,
    tmp_dir: Path | None = None,
    *,
    etag: str | None = None,
    version_id: str | None = None,
    follow: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """A local path holding the file at ``uri`` for the duration of the ``with`` block.

    For ``file://`` URIs (or plain paths) this is the file itself. For ``s3://`` the object
    is streamed in 1 MiB chunks (never whole in memory) to a temporary folder, under the
    key's own base name so format detection by extension works, and removed on exit.

    Args:
        uri: ``file:///abs/path`` or ``s3://bucket/key``.
        s3_client: a client from :func:`make_s3_client` (unused for local files).
        tmp_dir: where to put the temporary copy (created if needed; default: the system
            temp folder).
        etag: if given, read only this version of the content (``If-Match``).
        version_id: if given, read this object version (versioned buckets).
        follow: for a local symbolic link, whether its source follows it (see
            :meth:`~hopper.config.FolderSource.follows`); other links are never read.

    Raises:
        SourceGoneError: the file or object no longer exists (or changed, with ``etag``).
        UnreadableFileError: the local file is a symbolic link its source does not follow.
        TransientError: throttling, 5xx, timeouts, connection faults.
    """
    if not uri.startswith("s3://"):
        path = path_of_file_uri(uri) if uri.startswith("file://") else Path(uri)
        mode = _lmode(path)
        if stat.S_ISLNK(mode) and follow is not None and follow(path):
            path = path.resolve(strict=True)  # a link its source follows (inside the source)
            mode = _lmode(path)
        if stat.S_ISLNK(mode):  # swapped in after detection: never read through it
            raise UnreadableFileError(
                f"{uri}: is a symbolic link; links are not followed. Fix: copy the file "
                "itself into the inbox"
            )
        if not stat.S_ISREG(mode):
            raise SourceGoneError(f"{uri}: the file is gone (deleted before it could be read)")
        if _is_text(str(path)):
            yield path
            return
        # Arrow opens only paths that are UTF-8 text: a name in other bytes (Latin-1) is read
        # through a hard link with a text name (a copy across file systems).
        folder = _temp_folder("hopper-", tmp_dir)
        try:
            text_name = os.fsencode(path.name).decode("utf-8", errors="replace")
            alias = folder / local_name(text_name.replace("\ufffd", "_"))
            try:
                os.link(path, alias)
            except OSError:
                shutil.copyfile(path, alias)
            yield alias
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if s3_client is None:
        raise ValueError(f"{uri}: an S3 client is needed to read it")
    bucket, key = parse_s3_uri(uri)
    folder = _temp_folder("hopper-", tmp_dir)
    try:
        target = folder / local_name(key)
        args: dict[str, str] = {"Bucket": bucket, "Key": key}
        if etag:
            bare = etag.strip('"')
            args["IfMatch"] = f'"{bare}"'
        if version_id:
            args["VersionId"] = version_id
        try:
            body = s3_client.get_object(**args)["Body"]
            with target.open("wb") as out:
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    out.write(chunk)
        except AWS_ERRORS as exc:
            raise s3_error(exc, uri, "read") from exc
        log.debug("fetched %s to %s (%d bytes)", uri, target, target.stat().st_size)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_bucket(location: str, s3_client: S3Client, what: str) -> None:
    """Fail with one clear line if the bucket of an ``s3://`` location cannot be reached.

    Raises:
        ConfigError: naming the bucket and what it is for (lake, quarantine).
    """
    from hopper.errors import ConfigError

    bucket, _ = parse_s3_uri(location if location.count("/") > 2 else location + "/")
    try:
        s3_client.head_bucket(Bucket=bucket)
    except AWS_ERRORS as exc:
        code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        raise ConfigError(
            f"S3 bucket {bucket!r} for the {what} does not exist or is not reachable at "
            f"{endpoint_of(s3_client)} ({code})"
        ) from None
