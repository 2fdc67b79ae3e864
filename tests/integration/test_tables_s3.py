"""The Iceberg lake on S3 (a moto server): data, metadata and staging all in the bucket."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hopper.config import HopperConfig, LakeOptions, S3Options, load_config
from hopper.ingest import ingest
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestRequest
from hopper.tables import land, open_catalog
from tests.conftest import drop_file, make_home

if TYPE_CHECKING:
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration


def _home(tmp_path: Path, moto: MotoServer) -> HopperConfig:
    bucket = moto.bucket("tables")
    config = load_config(make_home(tmp_path))
    return config.model_copy(
        update={
            "lake": LakeOptions(path=f"s3://{bucket}/lake", format="iceberg"),
            "s3": S3Options(endpoint_url=moto.endpoint),
        }
    )


def _drop(home: HopperConfig, name: str, text: str) -> FileRef:
    return drop_file(home, "people", name, text)


def test_an_s3_table_takes_a_batch_and_a_new_version(tmp_path: Path, moto: MotoServer) -> None:
    home = _home(tmp_path, moto)
    ledger = Ledger(sqlite_url(home.state_dir))
    try:
        for round_, texts in enumerate(
            [
                {"a.csv": "id,full name,score\n1,Ada,1\n", "b.csv": "id,full name,score\n2,Bo,2\n"},
                {"a.csv": "id,full name,score\n1,Ada,1\n3,Cy,3\n"},  # a new version of a.csv
            ]
        ):
            refs = [_drop(home, name, text) for name, text in texts.items()]
            for ref in refs:
                ledger.record_detected(ref)
                assert ledger.claim(ref, f"run-{round_}")
            outcomes = [
                ingest(IngestRequest(ref=r, dispatch_id=f"d{round_}"), home, s3=moto.s3,
                       isolate=False)
                for r in refs
            ]  # fmt: skip
            landed = land(home, ledger, outcomes, f"d{round_}", moto.s3)
            assert {o.state for o in landed} == {FileState.INGESTED}, landed
            ledger.finish_many(landed, f"run-{round_}")
    finally:
        ledger.close()
    table = open_catalog(home).load_table("hopper.people")
    assert table.location().startswith(f"{home.lake.path}/hopper/people")
    rows = table.scan().to_arrow().sort_by("id")
    assert rows.column("id").to_pylist() == [1, 2, 3]
    bucket, prefix = home.lake.path.removeprefix("s3://").split("/", 1)
    keys = [
        o["Key"]
        for page in moto.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert any(k.startswith(f"{prefix}/hopper/people/metadata/") for k in keys)
    assert not [k for k in keys if k.startswith(f"{prefix}/_staging/")]  # all committed
