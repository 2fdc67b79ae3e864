"""The startup check of an S3 source: its bucket, prefix and queue exist and can be read.

Run by ``hopper watch`` before anything else, so a typo in ``hopper.yaml`` is one clear line
naming the bucket or queue and the endpoint, not a stream of retried faults later.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from hopper.config import S3Source
from hopper.errors import ConfigError
from hopper.storage import (
    AWS_ERRORS,
    S3Client,
    SqsClient,
    endpoint_of,
    error_code,
    is_transient_aws,
    s3_error,
)


def check_s3_source(
    source: S3Source, s3_client: S3Client, sqs_client: SqsClient | None = None
) -> None:
    """Fail fast, with one clear line, if the bucket or the queue is missing or unreadable.

    Args:
        source: the configured source.
        s3_client: client for the source's endpoint.
        sqs_client: client for the queue (needed in notifications mode).

    Raises:
        ConfigError: naming the missing or unreadable bucket or queue and the endpoint.
        TransientError: the endpoint cannot be reached, throttles or fails (5xx).
    """
    where = endpoint_of(s3_client)
    try:
        s3_client.head_bucket(Bucket=source.bucket)
        s3_client.list_objects_v2(Bucket=source.bucket, Prefix=source.prefix, MaxKeys=1)
    except AWS_ERRORS as exc:
        if is_transient_aws(exc) or not isinstance(exc, ClientError):
            raise s3_error(exc, source.root, "check") from exc
        code = _bucket_code(exc)
        raise ConfigError(
            f"S3 bucket {source.bucket!r} does not exist or is not readable at {where} ({code})"
        ) from None
    if source.mode != "notifications":
        return
    if sqs_client is None:
        raise ConfigError(f"{source.root}: notifications mode needs an SQS client")
    where = endpoint_of(sqs_client)
    try:
        sqs_client.get_queue_attributes(QueueUrl=source.queue_url, AttributeNames=["QueueArn"])
    except AWS_ERRORS as exc:
        if is_transient_aws(exc) or not isinstance(exc, ClientError):
            raise s3_error(exc, str(source.queue_url), "check") from exc
        raise ConfigError(
            f"SQS queue {source.queue_url!r} does not exist or is not readable at {where} "
            f"({_queue_code(exc)})"
        ) from None


def _bucket_code(exc: ClientError) -> str:
    code = error_code(exc)
    return {"404": "NoSuchBucket", "403": "AccessDenied"}.get(code, code or "error")


def _queue_code(exc: ClientError) -> str:
    query_code = exc.response.get("Error", {}).get("QueryErrorCode")
    return str(query_code or error_code(exc) or "error")
