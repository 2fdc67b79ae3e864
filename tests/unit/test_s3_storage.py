"""Pure parts of hopper.storage: URIs, local names, and how AWS faults map to Hopper errors."""

from __future__ import annotations

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from hopper.errors import HopperError, SourceGoneError, TransientError, is_transient
from hopper.storage import local_name, parse_s3_uri, s3_error


def test_parse_s3_uri_keeps_the_key_verbatim() -> None:
    assert parse_s3_uri("s3://landing/incoming/a b+c%20#?.csv") == (
        "landing",
        "incoming/a b+c%20#?.csv",
    )
    assert parse_s3_uri("s3://landing") == ("landing", "")
    assert parse_s3_uri("s3://landing/") == ("landing", "")
    for bad in ("file:///tmp/a.csv", "s3:///key", "landing/key"):
        with pytest.raises(ValueError):
            parse_s3_uri(bad)


def test_local_name_keeps_the_suffixes() -> None:
    assert local_name("incoming/sales/my file.csv.gz") == "my file.csv.gz"
    long = local_name("x/" + "é" * 300 + ".jsonl.zst", limit=100)
    assert long.endswith(".jsonl.zst") and len(long.encode()) <= 100
    assert local_name("") == "object"


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (client_error("NoSuchKey", 404), SourceGoneError),
        (client_error("404", 404), SourceGoneError),
        (client_error("NoSuchBucket", 404), SourceGoneError),
        (client_error("PreconditionFailed", 412), SourceGoneError),
        (client_error("SlowDown", 503), TransientError),
        (client_error("InternalError", 500), TransientError),
        (client_error("Whatever", 502), TransientError),
        (client_error("ThrottlingException", 400), TransientError),
        (EndpointConnectionError(endpoint_url="http://x"), TransientError),
        (ReadTimeoutError(endpoint_url="http://x"), TransientError),
        (ConnectionResetError(104, "reset"), TransientError),
    ],
)
def test_s3_faults_map_to_hopper_errors(fault: Exception, kind: type[HopperError]) -> None:
    error = s3_error(fault, "s3://b/k.csv", "read")
    assert type(error) is kind
    assert str(error).startswith("s3://b/k.csv: ")
    assert is_transient(error) == (kind is TransientError)


def test_gone_and_denied_messages() -> None:
    gone = s3_error(client_error("NoSuchKey", 404), "s3://b/k", "read")
    assert str(gone) == "s3://b/k: the object is gone (deleted before it could be read)"
    denied = s3_error(client_error("AccessDenied", 403), "s3://b/k", "read")
    assert type(denied) is HopperError and "AccessDenied" in str(denied)


def test_upload_failures_are_unwrapped() -> None:
    try:
        try:
            raise client_error("SlowDown", 503)
        except ClientError:
            raise S3UploadFailedError("Failed to upload") from None
    except S3UploadFailedError as exc:
        wrapped = exc
    assert type(s3_error(wrapped, "s3://b/k", "write")) is TransientError
