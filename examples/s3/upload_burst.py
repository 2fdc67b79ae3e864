"""Upload a burst of small `sales` CSV files to the local moto S3 of examples/s3/moto_demo.py.

Usage (from the repository root, with moto_demo.py running):

    .venv/bin/python examples/s3/upload_burst.py 2000

Each file gets a few rows of the `sales` contract (config/datasets/sales.yaml) with order ids
unique across the burst, under s3://landing/incoming/sales/burst-NNNNN.csv, so every upload
becomes one S3 notification on the `hopper-landing` queue.
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor

import boto3
from moto_demo import ENDPOINT, use_dummy_credentials  # beside this script

HEADER = "order_id,order date,region,product,quantity,unit price,discount\n"
log = logging.getLogger("upload_burst")


def sales_csv(index: int, rows: int = 5) -> bytes:
    """A small valid `sales` file; order ids ``index * rows`` onwards."""
    lines = [
        f"{index * rows + k},2024-01-{1 + k % 28:02d},{('EU', 'US', 'APAC')[k % 3]},widget,"
        f"{k + 1},9.99,{'NA' if k % 4 == 0 else '0.1'}\n"
        for k in range(rows)
    ]
    return (HEADER + "".join(lines)).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=2000, help="files to upload")
    parser.add_argument("--bucket", default="landing")
    parser.add_argument("--prefix", default="incoming/sales/")
    parser.add_argument("--endpoint-url", default=ENDPOINT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_dummy_credentials()
    s3 = boto3.client("s3", endpoint_url=args.endpoint_url)

    def upload(index: int) -> None:
        key = f"{args.prefix}burst-{index:05d}.csv"
        s3.put_object(Bucket=args.bucket, Key=key, Body=sales_csv(index))
        if (index + 1) % 500 == 0:
            log.info("%d uploaded", index + 1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, range(args.count)))
    log.info("uploaded %d files to s3://%s/%s", args.count, args.bucket, args.prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
