"""S3Listing against a real moto server, with files uploaded by the real AWS CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hopper.config import RoutingRule, S3Source, WatchOptions
from hopper.models import FileRef
from hopper.watch.s3 import S3Listing

if TYPE_CHECKING:  # the fixture module is loaded as a plugin, so that pytest rewrites it
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration

IGNORE = WatchOptions().ignore


def listing(moto: MotoServer, bucket: str, cursor: Path, **options: object) -> S3Listing:
    source = S3Source.model_validate(
        {"bucket": bucket, "prefix": "incoming/", "endpoint_url": moto.endpoint, **options}
    )
    return S3Listing(source, moto.s3, [], IGNORE, cursor)


def head_etag(moto: MotoServer, bucket: str, key: str) -> str:
    return str(moto.s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


def by_uri(refs: list[FileRef]) -> dict[str, FileRef]:
    return {ref.uri: ref for ref in refs}


def test_listing_yields_each_object_once_across_restarts_and_finds_changes(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    drop = tmp_path / "drop"
    files = {
        "sales/a.csv": "id,full name\n1,Ann\n",
        "sales/2024/b.csv": "id,full name\n2,Bob\n3,Cy\n",
        "events/my file+1.jsonl": '{"id": 1}\n',
        "sales/.hidden.csv": "x\n",
        "sales/c.csv.part": "partial\n",
        ".tmp/sales/d.csv": "x\n",
    }
    for rel, text in files.items():
        (drop / rel).parent.mkdir(parents=True, exist_ok=True)
        (drop / rel).write_text(text)
    moto.aws("s3", "cp", "--recursive", "--quiet", str(drop), f"s3://{bucket}/incoming/")
    moto.aws("s3api", "put-object", "--bucket", bucket, "--key", "incoming/sales/")  # marker
    moto.aws("s3", "cp", "--quiet", str(drop / "sales/a.csv"), f"s3://{bucket}/elsewhere/a.csv")
    cursor = tmp_path / "state" / "cursor.json"

    source = listing(moto, bucket, cursor)
    assert source.root == f"s3://{bucket}/incoming/"
    refs = by_uri(source.poll())
    expected = {
        "sales/a.csv": "sales",
        "sales/2024/b.csv": "sales",
        "events/my file+1.jsonl": "events",
    }
    assert set(refs) == {f"s3://{bucket}/incoming/{rel}" for rel in expected}
    for rel, dataset in expected.items():
        ref = refs[f"s3://{bucket}/incoming/{rel}"]
        assert ref.dataset == dataset
        assert ref.size == len(files[rel].encode())
        assert ref.etag == head_etag(moto, bucket, f"incoming/{rel}")
        assert ref.version_id is None
        assert ref.mtime > 1_600_000_000
    assert not cursor.exists(), "the cursor is saved only once the daemon acknowledged"
    source.ack()
    saved = json.loads(cursor.read_text())
    assert saved["bucket"] == bucket and len(saved["objects"]) == 3

    assert source.scan() == 3
    assert source.poll() == [], "a second listing must yield nothing new"
    source.stop()

    restarted = listing(moto, bucket, cursor)
    assert restarted.poll() == [], "a restart with the same cursor must not re-yield"

    (drop / "sales/a.csv").write_text("id,full name\n1,Ann\n4,Dee\n")
    moto.aws(
        "s3", "cp", "--quiet", str(drop / "sales/a.csv"), f"s3://{bucket}/incoming/sales/a.csv"
    )
    moto.aws("s3", "cp", "--quiet", str(drop / "sales/a.csv"), f"s3://{bucket}/incoming/aaa/0.csv")
    restarted.scan()
    again = by_uri(restarted.poll())
    changed = again.pop(f"s3://{bucket}/incoming/sales/a.csv")
    assert changed.etag == head_etag(moto, bucket, "incoming/sales/a.csv")
    assert changed.fingerprint != refs[f"s3://{bucket}/incoming/sales/a.csv"].fingerprint
    assert set(again) == {f"s3://{bucket}/incoming/aaa/0.csv"}, "a key sorting first is found"
    assert again[f"s3://{bucket}/incoming/aaa/0.csv"].dataset == "aaa"


def test_unacknowledged_refs_are_delivered_again_after_a_restart(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    moto.aws("s3api", "put-object", "--bucket", bucket, "--key", "incoming/sales/a.csv")
    cursor = tmp_path / "cursor.json"
    first = listing(moto, bucket, cursor)
    assert len(first.poll()) == 1
    first.stop()  # "crash" before the daemon recorded the ref: no ack

    second = listing(moto, bucket, cursor)
    assert [ref.uri for ref in second.poll()] == [f"s3://{bucket}/incoming/sales/a.csv"]
    second.ack()
    moto.aws("s3", "rm", f"s3://{bucket}/incoming/sales/a.csv")
    second.scan()
    second.ack()
    assert json.loads(cursor.read_text())["objects"] == {}, "deleted keys leave the cursor"


def test_routing_rules_and_non_recursive_listing(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.bucket()
    for key in ("incoming/top.csv", "incoming/sales/a.csv", "incoming/x/orders-1.csv"):
        moto.s3.put_object(Bucket=bucket, Key=key, Body=b"id\n1\n")
    source = S3Source(bucket=bucket, prefix="incoming", recursive=False)
    flat = S3Listing(source, moto.s3, [], IGNORE, tmp_path / "flat.json")
    assert [ref.uri for ref in flat.poll()] == [f"s3://{bucket}/incoming/top.csv"]

    rules = [RoutingRule(glob="*/orders-*.csv", dataset="orders")]
    deep = S3Listing(
        source.model_copy(update={"recursive": True}),
        moto.s3,
        rules,
        IGNORE,
        tmp_path / "deep.json",
    )
    datasets = {ref.uri.rsplit("/", 1)[1]: ref.dataset for ref in deep.poll()}
    assert datasets == {"top.csv": None, "a.csv": "sales", "orders-1.csv": "orders"}


def test_versioned_bucket_refs_carry_the_version_id(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.bucket()
    moto.aws(
        "s3api", "put-bucket-versioning", "--bucket", bucket,
        "--versioning-configuration", "Status=Enabled",
    )  # fmt: skip
    put = moto.s3.put_object(Bucket=bucket, Key="incoming/sales/a.csv", Body=b"id\n1\n")
    (ref,) = listing(moto, bucket, tmp_path / "c.json").poll()
    assert ref.version_id == put["VersionId"]
    assert ref.fingerprint == f"etag:{put['ETag'].strip(chr(34))}:{put['VersionId']}"


def test_a_thousand_objects_are_all_yielded_once(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.bucket()
    drop = tmp_path / "many"
    for i in range(1000):
        folder = drop / ("sales" if i % 2 else "events")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:04d}.csv").write_text(f"id\n{i}\n")
    moto.aws("s3", "sync", "--quiet", str(drop), f"s3://{bucket}/incoming/")
    source = listing(moto, bucket, tmp_path / "cursor.json")
    refs = source.poll()
    assert len(refs) == 1000
    assert len({ref.uri for ref in refs}) == 1000
    assert {ref.dataset for ref in refs} == {"sales", "events"}
    source.ack()
    assert source.scan() == 1000
    assert source.poll() == []
