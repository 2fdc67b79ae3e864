"""hopper.storage, the S3 store and the startup check against a real moto server."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hopper.config import S3Source
from hopper.errors import ConfigError, SourceGoneError, TerminalError, TransientError
from hopper.sink import (
    PARQUET_CONTENT_TYPE,
    discard_staged,
    parquet,
    quarantine_file,
    write_outputs,
)
from hopper.storage import fetch_to_local, make_s3_client, parse_s3_uri
from hopper.stores import store_for
from hopper.watch.s3 import check_s3_source

if TYPE_CHECKING:  # the fixture module is loaded as a plugin, so that pytest rewrites it
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration


def test_fetch_to_local_streams_the_object_under_its_own_name(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    local = tmp_path / "big data.csv.gz"
    payload = bytes(range(256)) * 12_000  # 3 MB: several chunks
    local.write_bytes(payload)
    moto.aws("s3", "cp", "--quiet", str(local), f"s3://{bucket}/incoming/sales/big data.csv.gz")
    uri = f"s3://{bucket}/incoming/sales/big data.csv.gz"
    etag = moto.s3.head_object(Bucket=bucket, Key="incoming/sales/big data.csv.gz")["ETag"]

    with fetch_to_local(uri, moto.s3, tmp_path / "work", etag=etag) as path:
        assert path.name == "big data.csv.gz"
        assert path.read_bytes() == payload
        assert path.is_relative_to(tmp_path / "work")
    assert not path.exists() and list((tmp_path / "work").iterdir()) == []

    with fetch_to_local(local.as_uri(), None) as same:
        assert same == local


def test_fetch_to_local_maps_a_deleted_or_changed_object_to_source_gone(moto: MotoServer) -> None:
    bucket = moto.bucket()
    moto.s3.put_object(Bucket=bucket, Key="incoming/sales/a.csv", Body=b"id\n1\n")
    uri = f"s3://{bucket}/incoming/sales/a.csv"
    with (
        pytest.raises(SourceGoneError, match="changed"),
        fetch_to_local(uri, moto.s3, etag="0" * 32),
    ):
        pass
    moto.aws("s3", "rm", uri)
    with pytest.raises(SourceGoneError) as info, fetch_to_local(uri, moto.s3):
        pass
    assert str(info.value) == f"{uri}: the object is gone (deleted before it could be read)"


def test_an_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    from tests.moto_server import free_port

    client = make_s3_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="will retry"), fetch_to_local("s3://b/k.csv", client):
        pass


def test_parquet_written_to_s3_reads_back_and_outputs_are_found_by_name_and_depth(
    moto: MotoServer,
) -> None:
    bucket = moto.bucket("lake")
    store = store_for(f"s3://{bucket}", moto.s3)
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", None]})
    uri = f"s3://{bucket}/sales/region=EU/a-0123456789.parquet"
    store.write_atomic(uri, parquet(table), PARQUET_CONTENT_TYPE)
    body = moto.s3.get_object(Bucket=bucket, Key="sales/region=EU/a-0123456789.parquet")["Body"]
    assert pq.read_table(io.BytesIO(body.read())).equals(table)
    meta = moto.s3.head_object(Bucket=bucket, Key="sales/region=EU/a-0123456789.parquet")
    assert meta["ContentType"] == "application/vnd.apache.parquet"

    other = f"s3://{bucket}/sales/region=US/a-0123456789.parquet"
    store.write_atomic(other, parquet(table.slice(0, 1), "snappy"))
    store.write_atomic(f"s3://{bucket}/sales/region=US/b-9999999999.parquet", parquet(table))
    store.write_atomic(f"s3://{bucket}/sales/a-0123456789.parquet", parquet(table))  # depth 0
    found = store.find(f"s3://{bucket}/sales", "a-0123456789.parquet", 1)
    assert sorted(found) == sorted([uri, other])
    assert store.find(f"s3://{bucket}/sales/", "a-0123456789.parquet", 0) == [
        f"s3://{bucket}/sales/a-0123456789.parquet"
    ]
    assert store.exists(other) and not store.exists(f"{other}.nope")
    store.delete(other)
    store.delete(other)  # deleting twice is fine
    assert store.find(f"s3://{bucket}/sales/", "a-0123456789.parquet", 1) == [uri]


def test_a_stream_to_s3_lands_whole_on_success_and_leaves_nothing_on_failure(
    moto: MotoServer,
) -> None:
    bucket = moto.bucket("lake")
    store = store_for(f"s3://{bucket}", moto.s3)
    uri = f"s3://{bucket}/_staging/sales/x/new/0.staged"
    part = bytes(range(256)) * 40_000  # 10 MB: more than one multipart part
    with store.open_output(uri, PARQUET_CONTENT_TYPE) as out:
        for _ in range(3):
            out.write(part)
    got = moto.s3.get_object(Bucket=bucket, Key="_staging/sales/x/new/0.staged")
    assert got["ContentType"] == PARQUET_CONTENT_TYPE and got["Body"].read() == part * 3

    failing = f"s3://{bucket}/_staging/sales/x/new/1.staged"
    with pytest.raises(TerminalError, match="bad row"), store.open_output(failing) as out:
        out.write(part)
        raise TerminalError("bad row")
    assert not store.exists(failing)
    assert store.list_files(f"s3://{bucket}/_staging/sales/x/") == [uri]
    store.delete_folder(f"s3://{bucket}/_staging/sales/x")
    assert store.list_files(f"s3://{bucket}/") == []


def test_claiming_a_name_on_s3_is_exclusive(moto: MotoServer) -> None:
    bucket = moto.bucket()
    store = store_for(f"s3://{bucket}", moto.s3)
    name = f"s3://{bucket}/quarantine/sales/2024-05-01/a.csv.error.json"
    assert store.claim(name, b"first") is None
    assert store.claim(name, b"second") == b"first"
    assert store.read_text(name) == "first"
    assert store.read_text(f"{name}.none") is None


def test_quarantine_copy_writes_the_file_and_its_reason(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.bucket()
    moto.s3.put_object(Bucket=bucket, Key="incoming/sales/bad.csv", Body=b"id\nx\n")
    reason = {"reason": "column id: 'x' is not int64", "violations": [{"column": "id"}]}

    def reject(source: str, local: Path | None = None) -> tuple[bytes | None, dict[str, object]]:
        copy = quarantine_file(
            source_uri=source, local_copy=local, quarantine=f"s3://{bucket}/quarantine",
            dataset="sales", when=datetime(2024, 5, 1, tzinfo=UTC), reason=reason, s3=moto.s3,
        )  # fmt: skip
        _, key = parse_s3_uri(copy)
        assert key.startswith("quarantine/sales/2024-05-01/")
        saved = moto.s3.get_object(Bucket=bucket, Key=f"{key}.error.json")["Body"].read()
        try:
            body = moto.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except moto.s3.exceptions.NoSuchKey:
            body = None
        return body, json.loads(saved)

    body, saved = reject(f"s3://{bucket}/incoming/sales/bad.csv")
    assert body == b"id\nx\n"
    assert saved["reason"] == reason["reason"] and saved["violations"] == reason["violations"]
    assert "source_missing" not in saved

    body, saved = reject(f"s3://{bucket}/incoming/gone.csv")
    assert body is None and saved["source_missing"] is True

    local = tmp_path / "local.csv"
    local.write_text("id\ny\n")
    body, saved = reject(local.as_uri(), local)
    assert body == b"id\ny\n" and "source_missing" not in saved


def test_check_s3_source_names_the_missing_bucket_or_queue(moto: MotoServer) -> None:
    bucket = moto.bucket()
    queue = moto.queue()
    check_s3_source(S3Source(bucket=bucket), moto.s3)
    notified = S3Source(bucket=bucket, mode="notifications", queue_url=queue)
    check_s3_source(notified, moto.s3, moto.sqs)

    with pytest.raises(ConfigError) as info:
        check_s3_source(S3Source(bucket="no-such-bucket"), moto.s3)
    assert str(info.value) == (
        f"S3 bucket 'no-such-bucket' does not exist or is not readable at {moto.endpoint} "
        "(NoSuchBucket)"
    )
    missing = f"{moto.endpoint}/123456789012/no-such-queue"
    with pytest.raises(ConfigError) as info:
        check_s3_source(notified.model_copy(update={"queue_url": missing}), moto.s3, moto.sqs)
    assert str(info.value) == (
        f"SQS queue '{missing}' does not exist or is not readable at {moto.endpoint} "
        "(QueueDoesNotExist)"
    )
    assert "\n" not in str(info.value)


def test_clients_honour_aws_endpoint_url(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto.bucket()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    client = make_s3_client()
    assert client.meta.endpoint_url == moto.endpoint
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_quarantine_on_s3_never_replaces_another_files_copy(moto: MotoServer) -> None:
    bucket = moto.bucket()
    when = datetime(2024, 5, 1, tzinfo=UTC)
    copies = []
    for key, fingerprint in (
        ("in/region=eu/data.csv", "v1"),
        ("in/region=us/data.csv", "v1"),  # another file, the same name
        ("in/region=eu/data.csv", "v2"),  # another version
        ("in/region=eu/data.csv", "v1"),  # a replay: takes its own name again
    ):
        moto.s3.put_object(Bucket=bucket, Key=key, Body=f"{key} {fingerprint}".encode())
        copies.append(
            quarantine_file(
                source_uri=f"s3://{bucket}/{key}",
                local_copy=None,
                quarantine=f"s3://{bucket}/quarantine",
                dataset="sales",
                when=when,
                reason={"reason": f"{key} {fingerprint}"},
                fingerprint=fingerprint,
                s3=moto.s3,
            )
        )
    assert copies[0] == f"s3://{bucket}/quarantine/sales/2024-05-01/data.csv" == copies[3]
    assert len(set(copies[:3])) == 3
    for copy in copies[1:3]:
        _, key = parse_s3_uri(copy)
        body = moto.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        reason = moto.s3.get_object(Bucket=bucket, Key=f"{key}.error.json")["Body"].read()
        saved = json.loads(reason)
        assert saved["reason"] == body and saved["uri"].endswith(body.split(" ")[0])


# --------------------------------------------------------------------------- no partial outputs

SALES_URI = "s3://landing/incoming/sales/jan.csv"
OLD_SALES = pa.table({"region": ["EU", "US", "EU"], "n": [1, 2, 3]})


def _write_sales(lake: str, table: pa.Table, s3: object) -> list[str]:
    return write_outputs(
        table, lake=lake, dataset="sales", partition_by=["region"],
        source_name="jan.csv", uri=SALES_URI, s3=s3,
    )  # fmt: skip


def _objects(moto: MotoServer, bucket: str) -> dict[str, list[int]]:
    """Every object of the bucket → its ``n`` values (none for what is not Parquet)."""
    found = {}
    for page in moto.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            body = moto.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            found[key] = (
                pq.read_table(io.BytesIO(body)).column("n").to_pylist()
                if key.endswith(".parquet")
                else []
            )
    return found


def test_s3_partition_value_too_long_leaves_nothing_in_the_lake(moto: MotoServer) -> None:
    bucket = moto.bucket("lake")
    table = pa.table({"region": ["EU"] * 9 + ["US"] * 9 + ["x" * 300] * 12, "n": range(30)})
    with pytest.raises(TerminalError, match="too long to name a folder"):
        _write_sales(f"s3://{bucket}/tables", table, moto.s3)
    assert _objects(moto, bucket) == {}


def test_s3_failed_replay_keeps_the_earlier_version_whole(moto: MotoServer) -> None:
    bucket = moto.bucket("lake")
    lake = f"s3://{bucket}/tables"
    written = _write_sales(lake, OLD_SALES, moto.s3)
    before = _objects(moto, bucket)
    assert sorted(before) == sorted(uri.removeprefix(f"s3://{bucket}/") for uri in written)
    meta = moto.s3.head_object(Bucket=bucket, Key=next(iter(before)))
    assert meta["ContentType"] == "application/vnd.apache.parquet"  # kept through the copy
    with pytest.raises(TerminalError):
        _write_sales(lake, pa.table({"region": ["EU", "x" * 300], "n": [10, 11]}), moto.s3)
    assert _objects(moto, bucket) == before


class Killed(BaseException):
    """The writer's process died: nothing of it runs any more (not even its clean-up)."""


class DyingS3:
    """An S3 client whose process 'dies' at its n-th copy: that and every later call fail."""

    def __init__(self, s3: object, die_at: int) -> None:
        self.s3, self.die_at, self.copies, self.dead = s3, die_at, 0, False

    def __getattr__(self, name: str) -> object:
        if self.dead:
            raise Killed
        if name == "copy":
            self.copies += 1
            if self.copies == self.die_at:
                self.dead = True
                raise Killed
        return getattr(self.s3, name)


@pytest.mark.parametrize("die_at", [1, 3, 4], ids=["backing-up", "publishing", "published-two"])
def test_s3_writer_dying_mid_publish_is_undone_by_discard_staged(
    moto: MotoServer, die_at: int
) -> None:
    bucket = moto.bucket("lake")
    lake = f"s3://{bucket}/tables"
    _write_sales(lake, OLD_SALES, moto.s3)
    before = _objects(moto, bucket)
    new = pa.table({"region": ["EU", "FR"], "n": [10, 11]})  # replaces EU, adds FR, drops US
    with pytest.raises(Killed):
        _write_sales(lake, new, DyingS3(moto.s3, die_at))
    left = _objects(moto, bucket)
    staged = [key for key in left if key.startswith("tables/_staging/sales/")]
    assert staged and any(key.endswith(".publish.json") for key in staged)  # the journal
    if die_at == 4:  # EU and FR are new, US not yet removed: a half publish
        published = {k: v for k, v in left.items() if k not in staged}
        assert sorted(published.values()) == [[2], [10], [11]]
    discard_staged(lake, "sales", SALES_URI, moto.s3)
    assert _objects(moto, bucket) == before
    discard_staged(lake, "sales", SALES_URI, moto.s3)  # again: nothing to do
    assert _objects(moto, bucket) == before


def test_s3_replay_replaces_and_leaves_no_staging(moto: MotoServer) -> None:
    bucket = moto.bucket("lake")
    lake = f"s3://{bucket}/tables"
    _write_sales(lake, OLD_SALES, moto.s3)
    written = _write_sales(lake, pa.table({"region": ["EU", "FR"], "n": [10, 11]}), moto.s3)
    after = _objects(moto, bucket)
    assert sorted(after) == sorted(uri.removeprefix(f"s3://{bucket}/") for uri in written)
    assert sorted(after.values()) == [[10], [11]]
