"""Large CSV/TSV files stream to an S3 lake as to a local one (moto server, nothing patched).

``stream_threshold_mb: 0`` makes small files stream. The in-process test shrinks the block
size so that a file spans many blocks and proves the streamed path ran; the others go
through a reader child process, which makes its own S3 client, as a worker does.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hopper.contracts.stream as stream_module
import hopper.ingest as ingest_module
from hopper.config import FolderSource, HopperConfig, LakeOptions, S3Options, load_config
from hopper.ingest import ingest
from hopper.lineage import INGESTED_AT
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from hopper.storage import parse_s3_uri
from tests.conftest import make_home
from tests.unit.test_streaming import ROWS, orders_contract, orders_csv

if TYPE_CHECKING:
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration

PARTITIONED = "partition_by: [region]\n"


def _home(tmp_path: Path, moto: MotoServer, *, bad_rows: str = "reject") -> HopperConfig:
    """A home whose lake and quarantine are on S3: `whole` and `streamed` versions of orders."""
    bucket = moto.bucket("lake")
    config = load_config(
        make_home(
            tmp_path,
            {
                "whole": orders_contract("whole", bad_rows=bad_rows, extra=PARTITIONED),
                "streamed": orders_contract(
                    "streamed", bad_rows=bad_rows, extra=PARTITIONED + "stream_threshold_mb: 0\n"
                ),
            },
        )
    )
    return config.model_copy(
        update={
            "lake": LakeOptions(path=f"s3://{bucket}/lake"),
            "quarantine": f"s3://{bucket}/quarantine",
            "s3": S3Options(endpoint_url=moto.endpoint),
        }
    )


def _ingest(
    home: HopperConfig, dataset: str, text: str, s3: Any, *, isolate: bool
) -> IngestOutcome:
    source = home.sources[0]
    assert isinstance(source, FolderSource)
    path = source.path / dataset / "orders.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset=dataset)
    return ingest(IngestRequest(ref=ref, dispatch_id="d"), home, s3=s3, isolate=isolate)


def _objects(moto: MotoServer, uri: str) -> dict[str, bytes]:
    """Every object under ``uri`` (a prefix) → its bytes."""
    bucket, prefix = parse_s3_uri(uri)
    found = {}
    for page in moto.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = moto.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"].removeprefix(prefix)] = body
    return found


def _tables(moto: MotoServer, home: HopperConfig, dataset: str) -> dict[str, pa.Table]:
    """The dataset's outputs by partition folder, lineage columns dropped."""
    return {
        key.rsplit("/", 1)[0]: pq.read_table(io.BytesIO(body)).drop_columns(
            [INGESTED_AT, "_source_uri"]
        )
        for key, body in _objects(moto, f"{home.lake.path}/{dataset}/").items()
    }


def test_a_streamed_csv_lands_on_s3_as_the_whole_file_path_writes_it(
    moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "STREAM_BLOCK_BYTES", 4096)  # ~100 rows a block
    streamed_runs: list[IngestOutcome] = []
    real = ingest_module._convert_streaming

    def spy(*args: Any) -> IngestOutcome:
        outcome = real(*args)
        streamed_runs.append(outcome)
        return outcome

    monkeypatch.setattr(ingest_module, "_convert_streaming", spy)
    home = _home(tmp_path, moto)
    text = orders_csv()
    whole = _ingest(home, "whole", text, moto.s3, isolate=False)
    assert streamed_runs == []
    streamed = _ingest(home, "streamed", text, moto.s3, isolate=False)
    assert streamed_runs == [streamed]  # streamed, not read whole after a refusal
    assert streamed.state == whole.state == FileState.INGESTED
    assert (streamed.rows_in, streamed.rows_out) == (whole.rows_in, whole.rows_out) == (ROWS,) * 2
    assert streamed.schema_ == whole.schema_
    assert all(out.startswith(f"{home.lake.path}/streamed/region=") for out in streamed.outputs)
    got, expected = _tables(moto, home, "streamed"), _tables(moto, home, "whole")
    assert (
        sorted(got)
        == sorted(expected)
        == [
            "region=APAC",
            "region=EU",
            "region=US",
            "region=__HIVE_DEFAULT_PARTITION__",
        ]
    )
    for partition, table in expected.items():
        assert got[partition].schema == table.schema
        assert got[partition].to_pylist() == table.to_pylist()
    assert _objects(moto, f"{home.lake.path}/_staging/") == {}


def test_a_reader_child_streams_to_s3_with_its_own_client(moto: MotoServer, tmp_path: Path) -> None:
    home = _home(tmp_path, moto)
    outcome = _ingest(home, "streamed", orders_csv(), moto.s3, isolate=True)
    assert outcome.state == FileState.INGESTED, outcome.reason
    outputs = _objects(moto, f"{home.lake.path}/streamed/")
    assert sorted(f"{home.lake.path}/streamed/{key}" for key in outputs) == sorted(outcome.outputs)
    rows = sum(pq.read_metadata(io.BytesIO(body)).num_rows for body in outputs.values())
    assert rows == ROWS


def test_a_rejected_streamed_file_leaves_nothing_on_s3(moto: MotoServer, tmp_path: Path) -> None:
    home = _home(tmp_path, moto)
    last = f"{ROWS},01/01/2024,3,oops,EU,n,1"  # rejected by its very last row
    outcome = _ingest(home, "streamed", orders_csv(bad={ROWS: last}), moto.s3, isolate=True)
    assert outcome.state == FileState.QUARANTINED
    assert "price" in (outcome.reason or "")
    assert _objects(moto, f"{home.lake.path}/") == {}  # no output, nothing staged
    bucket, _ = parse_s3_uri(home.lake.path)
    uploads = moto.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []  # and no unfinished multipart upload either
    quarantined = _objects(moto, f"{home.quarantine}/streamed/")
    assert sorted(key.rsplit("/", 1)[-1] for key in quarantined) == [
        "orders.csv",
        "orders.csv.error.json",
    ]
