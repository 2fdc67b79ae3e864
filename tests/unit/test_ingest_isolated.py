"""Ingestion in reader children: a file over its limits is quarantined, nothing else suffers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hopper.config import load_config
from hopper.ingest import MAX_GROUP, SMALL_FILE_BYTES, groups, ingest, ingest_many
from hopper.isolate import Limits, ReaderPool
from hopper.models import FileRef, FileState, IngestRequest
from tests.conftest import CONTRACT, make_home

ROOT = Path(__file__).resolve().parents[2]


def _request(path: Path) -> IngestRequest:
    st = path.stat()
    ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset="people")
    return IngestRequest(ref=ref, dispatch_id="d")


def _people(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write("id,full name,score\n")
        for i in range(rows):
            f.write(f"{i},person number {i} with a rather long name,{i * 0.5}\n")
    return path


def test_a_file_over_its_memory_limit_is_quarantined_and_the_next_one_lands(
    tmp_path: Path,
) -> None:
    contract = CONTRACT + "max_memory_mb: 64\n"
    config = load_config(make_home(tmp_path, {"people": contract}))
    big = _people(config.sources[0].path / "people" / "big.csv", 600_000)  # ≈ 33 MB
    outcome = ingest(_request(big), config, flow_run_id="r1")
    assert outcome.state == FileState.QUARANTINED
    assert "64 MiB memory limit" in (outcome.reason or "")
    assert not list(Path(config.lake.path).rglob("*.parquet"))  # nothing of it in the lake
    copy = Path(outcome.quarantine_path or "")
    reason = json.loads((copy.parent / "big.csv.error.json").read_text())
    # Refused by the reader's own accounting or by the child's address-space limit,
    # whichever allocation fails first: either way the reason names the limit.
    assert "64 MiB memory limit" in reason["reason"]
    assert copy.stat().st_size == big.stat().st_size

    small = _people(config.sources[0].path / "people" / "small.csv", 10)
    landed = ingest(_request(small), config, flow_run_id="r2")
    assert landed.state == FileState.INGESTED
    assert pq.read_table(landed.outputs[0]).num_rows == 10


def test_a_batch_is_read_by_several_children_each_file_with_its_outcome(tmp_path: Path) -> None:
    config = load_config(make_home(tmp_path))
    paths = [_people(config.sources[0].path / "people" / f"p{i}.csv", 5) for i in range(6)]
    results = list(
        ingest_many([_request(p) for p in paths], config, flow_run_id="r", s3_for=lambda _ref: None)
    )
    assert sorted(r.ref.uri for r, _ in results) == sorted(p.as_uri() for p in paths)
    assert all(o.state == FileState.INGESTED and o.rows_out == 5 for _, o in results)


def test_files_read_in_groups_keep_their_own_outcomes_when_one_crashes_its_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the readers import the transform from tests.integration.faults
    contract = CONTRACT + 'transform: "tests.integration.faults:crash_on_666"\n'
    config = load_config(make_home(tmp_path, {"people": contract}))
    inbox = config.sources[0].path / "people"
    paths = [_people(inbox / f"p{i}.csv", 5) for i in range(12)]
    paths[4].write_text("id,full name,score\n666,the crash,1.0\n", encoding="utf-8")
    paths[7].write_text("id,full name,score\nnot a number,bad,1.0\n", encoding="utf-8")
    requests = [_request(p) for p in paths]
    assert [len(g) for g in groups(requests, 1)] == [3, 3, 3, 3]

    results = dict(
        (r.ref.uri, o)
        for r, o in ingest_many(
            requests, config, flow_run_id="r", s3_for=lambda _ref: None, threads=1
        )
    )
    assert sorted(results) == sorted(p.as_uri() for p in paths)  # each file once
    crashed, bad = results.pop(paths[4].as_uri()), results.pop(paths[7].as_uri())
    assert crashed.state == FileState.QUARANTINED and "SIGSEGV" in (crashed.reason or "")
    assert bad.state == FileState.QUARANTINED and "id" in (bad.reason or "")
    assert all(o.state == FileState.INGESTED and o.rows_out == 5 for o in results.values())
    landed = {Path(p).name for p in Path(config.lake.path).rglob("*.parquet")}
    assert len(landed) == 10 and not any(name.startswith(("p4.", "p7.")) for name in landed)


def test_groups_keep_large_files_alone_and_spread_small_ones() -> None:
    def request(size: int) -> IngestRequest:
        ref = FileRef(uri=f"file:///in/people/{size}-{id(object())}.csv", size=size, mtime=0.0)
        return IngestRequest(ref=ref, dispatch_id="d")

    small = [request(1000) for _ in range(500)]
    large = [request(SMALL_FILE_BYTES + 1) for _ in range(2)]
    cut = groups(small[:250] + large + small[250:], 2)
    assert [len(g) for g in cut[:2]] == [1, 1] and all(g[0].ref.size > 1000 for g in cut[:2])
    assert {len(g) for g in cut[2:]} <= {MAX_GROUP, 500 % MAX_GROUP}
    assert sum(len(g) for g in cut) == 502
    assert [len(g) for g in groups(small[:10], 2)] == [1] * 10  # few files: one per group


def test_a_transient_fault_in_a_group_is_retried_without_holding_a_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each reader's first file fails as a network hiccup would. Its retry needs a reader,
    # while every reader may be serving a group: the retries wait for their groups to end.
    monkeypatch.chdir(ROOT)  # the readers import the transform from tests.integration.faults
    contract = (
        CONTRACT
        + 'transform: "tests.integration.faults:flaky_once"\n'
        + "retry_backoff_seconds: 0.1\n"
    )
    config = load_config(make_home(tmp_path, {"people": contract}))
    inbox = config.sources[0].path / "people"
    paths = [_people(inbox / f"p{i}.csv", 5) for i in range(16)]
    readers = ReaderPool(2)
    try:
        results = list(
            ingest_many(
                [_request(p) for p in paths],
                config,
                flow_run_id="r",
                s3_for=lambda _ref: None,
                readers=readers,
            )
        )
    finally:
        readers.close()
    assert sorted(r.ref.uri for r, _ in results) == sorted(p.as_uri() for p in paths)
    assert all(o.state == FileState.INGESTED for _, o in results)


def test_a_reader_that_writes_to_local_folders_never_loads_boto3(tmp_path: Path) -> None:
    config = load_config(make_home(tmp_path))
    path = _people(config.sources[0].path / "people" / "p.csv", 5)
    pool = ReaderPool(1)
    try:
        landed = ingest(_request(path), config, flow_run_id="r", readers=pool)
        assert landed.state == FileState.INGESTED
        loaded = pool.call(
            eval,
            "'boto3' in __import__('sys').modules",
            limits=Limits(memory_mb=256, cpu_seconds=10),
            what="the reader's modules",
        )
        assert loaded is False
    finally:
        pool.close()
