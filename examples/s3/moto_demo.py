"""Run a local S3 + SQS (moto in server mode) ready for examples/s3/hopper.yaml.

Usage (from the repository root, in its own terminal; Ctrl-C stops it):

    .venv/bin/python examples/s3/moto_demo.py

It starts moto on 127.0.0.1:5000, creates the buckets `landing`, `lake` and `quarantine`, a
queue `hopper-landing` with a dead-letter queue, and the bucket notification that sends every
object created under `incoming/` to the queue. Nothing here talks to AWS.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx

ENDPOINT = "http://127.0.0.1:5000"
log = logging.getLogger("moto_demo")


def use_dummy_credentials() -> None:
    """moto accepts any credentials: set dummy ones unless the environment has some."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_dummy_credentials()
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", "5000"])
    for _ in range(100):
        try:
            httpx.get(ENDPOINT, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    s3 = boto3.client("s3", endpoint_url=ENDPOINT)
    sqs = boto3.client("sqs", endpoint_url=ENDPOINT)
    for bucket in ("landing", "lake", "quarantine"):
        s3.create_bucket(Bucket=bucket)
    dlq = sqs.create_queue(QueueName="hopper-landing-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": "5"}
    queue = sqs.create_queue(
        QueueName="hopper-landing",
        Attributes={"VisibilityTimeout": "60", "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket="landing",
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
                }
            ]
        },
    )
    log.info("moto is serving S3 and SQS on %s", ENDPOINT)
    log.info("buckets: landing, lake, quarantine; queue: %s", queue)
    log.info("in another terminal:")
    log.info(
        "  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1"
    )
    log.info("  .venv/bin/hopper up --config examples/s3/hopper.yaml --port 4210")
    log.info(
        "then upload: .venv/bin/aws --endpoint-url %s s3 cp config/samples/sales.csv "
        "s3://landing/incoming/sales/",
        ENDPOINT,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, lambda *_: proc.terminate())
    proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
