"""One file end to end without Prefect: contract → validate → Parquet or quarantine."""

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import hopper.ingest as ingest_module
from hopper.config import HopperConfig
from hopper.files import is_watched
from hopper.ingest import ingest, ingest_each
from hopper.models import FileRef, FileState, IngestRequest


def _request(path: Path, dataset: str | None = "people") -> IngestRequest:
    st = path.stat()
    ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset=dataset)
    return IngestRequest(ref=ref, dispatch_id="d")


def _write(home: HopperConfig, name: str, text: str, dataset: str = "people") -> Path:
    path = home.sources[0].path / dataset / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_is_written_with_lineage(home: HopperConfig) -> None:
    path = _write(home, "p.csv", "id,full name,score\n1,Ada,1.5\n2,NA,\n")
    outcome = ingest(_request(path), home, flow_run_id="r1")
    assert outcome.state == FileState.INGESTED
    assert (outcome.rows_in, outcome.rows_out) == (2, 2)
    (out,) = outcome.outputs
    table = pq.read_table(out)
    assert table.column("full_name").to_pylist() == ["Ada", None]
    assert table.column("_source_uri").to_pylist() == [path.as_uri()] * 2
    assert outcome.schema_["_ingested_at"] == "timestamp[us, tz=UTC]"


def test_nanosecond_timestamps_land_cut_to_microseconds(tmp_path: Path) -> None:
    import pyarrow as pa

    from hopper.config import load_config
    from tests.conftest import make_home

    contract = (
        "name: events\nversion: 1\nformat: parquet\ncolumns:\n"
        "  - {name: id, type: int64}\n  - {name: ts, type: 'timestamp[ns, tz=UTC]'}\n"
    )
    home = load_config(make_home(tmp_path, {"events": contract}))
    path = home.sources[0].path / "events" / "e.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    nanos = [1_700_000_000_123_456_789, 1_700_000_001_000_000_001]  # sub-microsecond digits
    ts = pa.array(nanos, pa.timestamp("ns", tz="UTC"))
    pq.write_table(pa.table({"id": [1, 2], "ts": ts}), path)
    outcome = ingest(_request(path, "events"), home, isolate=False)
    assert outcome.state == FileState.INGESTED, outcome.reason
    back = pq.read_table(outcome.outputs[0]).column("ts")
    assert back.type == pa.timestamp("us", tz="UTC")
    assert back.cast(pa.int64()).to_pylist() == [n // 1000 for n in nanos]


def test_ingesting_again_replaces_the_output(home: HopperConfig) -> None:
    path = _write(home, "p.csv", "id,full name,score\n1,Ada,1.5\n2,Bob,2\n")
    first = ingest(_request(path), home)
    path.write_text("id,full name,score\n3,Cy,3\n")
    second = ingest(_request(path), home)
    assert first.outputs == second.outputs
    assert pq.read_table(second.outputs[0]).column("id").to_pylist() == [3]
    assert len(list(Path(home.lake.path).rglob("*.parquet"))) == 1


def test_type_error_quarantines_with_reason_file(home: HopperConfig) -> None:
    path = _write(home, "bad.csv", "id,full name,score\n1,Ada,oops\n")
    outcome = ingest(_request(path), home, flow_run_id="run-7")
    assert outcome.state == FileState.QUARANTINED
    assert outcome.outputs == [] and not list(Path(home.lake.path).rglob("*.parquet"))
    copy = Path(outcome.quarantine_path or "")
    reason = json.loads((copy.parent / "bad.csv.error.json").read_text())
    assert reason["flow_run_id"] == "run-7" and reason["contract_version"] == 1
    assert reason["violations"][0]["column"] == "score"
    assert "oops" in reason["violations"][0]["samples"]
    assert reason["replay"].startswith("hopper replay ")
    assert copy.read_text() == path.read_text()


def test_unknown_dataset_and_missing_contract_are_quarantined(home: HopperConfig) -> None:
    loose = home.sources[0].path / "loose.csv"
    loose.parent.mkdir(parents=True, exist_ok=True)
    loose.write_text("a\n1\n")
    outcome = ingest(_request(loose, dataset=None), home)
    assert outcome.state == FileState.QUARANTINED and "no dataset" in (outcome.reason or "")
    other = _write(home, "x.csv", "a\n1\n", dataset="other")
    outcome = ingest(_request(other, dataset="other"), home)
    assert outcome.state == FileState.QUARANTINED and "has no contract" in (outcome.reason or "")


def test_vanished_source_is_quarantined_with_clear_reason(home: HopperConfig) -> None:
    path = _write(home, "gone.csv", "id,full name,score\n1,a,1\n")
    request = _request(path)
    path.unlink()
    outcome = ingest(request, home)
    assert outcome.state == FileState.QUARANTINED and "gone" in (outcome.reason or "")


def test_transient_faults_are_retried_with_backoff(home: HopperConfig) -> None:
    from hopper.errors import TransientError
    from hopper.ingest import ingest_with_retries
    from tests.integration import faults

    contract = Path(home.datasets_dir) / "people.yaml"
    contract.write_text(
        contract.read_text()
        + 'transform: "tests.integration.faults:flaky_once"\nretry_backoff_seconds: 0.5\n'
    )
    faults._calls["flaky"] = 0
    path = _write(home, "p.csv", "id,full name,score\n1,Ada,1.5\n")
    waits: list[float] = []
    outcome = ingest_with_retries(_request(path), home, sleep=waits.append)
    assert outcome.state == FileState.INGESTED and len(waits) == 1 and 0.25 <= waits[0] <= 0.75

    contract.write_text(
        contract.read_text()
        .replace("flaky_once", "always_transient")
        .replace("retry_backoff_seconds: 0.5", "retry_backoff_seconds: 1\nretries: 3")
    )
    waits.clear()
    with pytest.raises(TransientError, match="never clears"):
        ingest_with_retries(_request(path), home, sleep=waits.append)
    assert len(waits) == 3 and waits[1] > waits[0] * 0.3 and waits[2] >= 2


def test_a_file_outside_every_source_is_refused_unread(home: HopperConfig, tmp_path: Path) -> None:
    # A forged run parameter (anyone who reaches the Prefect API can start a run) must not
    # make the worker read, ingest or copy a file the configured sources do not hold.
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("id,full name,score\n1,Top Secret,1\n")
    outcome = ingest(_request(secret), home, flow_run_id="forged")
    assert outcome.state == FileState.FAILED
    assert "not under any source" in (outcome.reason or "")
    assert not list(Path(home.lake.path).rglob("*")) and not list(Path(home.quarantine).rglob("*"))
    # a link inside a source pointing outside it (a file swapped for a link after detection)
    # is never read through: it is quarantined saying so, and the link's target is not copied
    link = home.sources[0].path / "people" / "link.csv"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    linked = ingest(_request(link), home)
    assert linked.state == FileState.QUARANTINED and "symbolic link" in (linked.reason or "")
    assert not list(Path(home.lake.path).rglob("*.parquet"))
    kept = [p for p in Path(home.quarantine).rglob("*") if p.is_file()]
    assert kept and all("Top Secret" not in p.read_text() for p in kept)
    # an S3 object in a bucket no source watches
    foreign = FileRef(uri="s3://someone-else/people/x.csv", size=1, mtime=1.0, dataset="people")
    outcome = ingest(IngestRequest(ref=foreign, dispatch_id="d"), home)
    assert outcome.state == FileState.FAILED and "not under any source" in (outcome.reason or "")


def test_a_neighbour_of_a_source_whose_name_begins_like_it_is_not_watched(
    home: HopperConfig,
) -> None:
    inbox = home.sources[0].path
    neighbour = inbox.with_name(inbox.name + "2") / "people" / "p.csv"  # inbox2/, not inbox/
    neighbour.parent.mkdir(parents=True)
    neighbour.write_text("id,full name,score\n1,Ada,1\n")
    inside = _write(home, "p.csv", "id,full name,score\n1,Ada,1\n")
    folders: dict[str, str] = {}
    assert not is_watched(home, _request(neighbour).ref, folders)
    assert is_watched(home, _request(inside).ref, folders)
    assert is_watched(home, _request(inside).ref, folders)  # the folder resolved once, kept
    assert str(inside.parent) in folders


def test_a_group_reads_each_dataset_contract_once(
    home: HopperConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [_write(home, f"p{i}.csv", f"id,full name,score\n{i},Ada,1\n") for i in range(3)]
    looked: list[str | None] = []
    real = ingest_module.load_dataset_contract

    def counted(config: HopperConfig, ref: FileRef) -> Any:
        looked.append(ref.dataset)
        return real(config, ref)

    monkeypatch.setattr(ingest_module, "load_dataset_contract", counted)
    requests = [_request(p) for p in paths] + [_request(paths[0], dataset="nobody")] * 2
    results = dict(
        ingest_each(requests, home, flow_run_id="r", s3s=[None] * len(requests), isolate=False)
    )
    assert [results[i].state for i in range(5)] == [FileState.INGESTED] * 3 + [
        FileState.QUARANTINED
    ] * 2
    # one look for the group's dataset; a dataset without a contract is looked for each time,
    # and each of its files is quarantined saying so
    assert looked == ["people", "nobody", "nobody"]
    assert all("has no contract" in (results[i].reason or "") for i in (3, 4))


def test_a_partition_value_too_long_for_a_folder_is_quarantined(home: HopperConfig) -> None:
    contract = home.contract_path("people")
    contract.write_text(contract.read_text() + "partition_by: [full_name]\n")
    path = _write(home, "long.csv", f"id,full name,score\n1,{'x' * 300},1\n2,Ada,2\n")
    outcome = ingest(_request(path), home)
    assert outcome.state == FileState.QUARANTINED
    assert "too long to name a folder" in (outcome.reason or "")
    assert not list(Path(home.lake.path).rglob("*.parquet"))


def test_a_followed_link_is_ingested_and_one_pointing_out_is_refused(
    home: HopperConfig, tmp_path: Path
) -> None:
    source = home.sources[0].model_copy(update={"follow_symlinks": True})
    config = home.model_copy(update={"sources": [source]})
    real = _write(home, "real.csv", "id,full name,score\n1,Ada,1\n", dataset="shared")
    link = home.sources[0].path / "people" / "link.csv"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)
    outcome = ingest(_request(link), config)
    assert outcome.state == FileState.INGESTED and outcome.rows_out == 1
    assert Path(outcome.outputs[0]).name.startswith("link-")
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("id,full name,score\n9,Top Secret,9\n")
    (home.sources[0].path / "people" / "out.csv").symlink_to(outside)
    refused = ingest(_request(home.sources[0].path / "people" / "out.csv"), config)
    assert refused.state == FileState.QUARANTINED and "symbolic link" in (refused.reason or "")
    assert refused.rows_out == 0 and refused.outputs == []


def test_a_file_named_in_latin_1_lands_and_one_that_is_bad_is_quarantined(
    home: HopperConfig,
) -> None:
    import os

    from hopper.files import replay_command
    from hopper.models import file_uri

    folder = home.sources[0].path / "people"
    folder.mkdir(parents=True, exist_ok=True)
    good = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.csv"))
    good.write_text("id,full name,score\n1,Ada,1.5\n")
    st = good.stat()
    ref = FileRef(uri=file_uri(good), size=st.st_size, mtime=st.st_mtime, dataset="people")
    assert "caf%E9.csv" in ref.uri
    outcome = ingest(IngestRequest(ref=ref, dispatch_id="d"), home)
    assert outcome.state == FileState.INGESTED and outcome.rows_out == 1
    assert pq.read_table(outcome.outputs[0]).column("_source_uri").to_pylist() == [ref.uri]

    bad = Path(os.fsdecode(os.fsencode(folder) + b"/d\xe9j\xe0.csv"))
    bad.write_text("id,full name,score\nNOPE,Ada,1.5\n")
    st = bad.stat()
    ref = FileRef(uri=file_uri(bad), size=st.st_size, mtime=st.st_mtime, dataset="people")
    outcome = ingest(IngestRequest(ref=ref, dispatch_id="d"), home)
    assert outcome.state == FileState.QUARANTINED
    reasons = list(Path(home.quarantine).rglob("*.error.json"))
    assert len(reasons) == 1
    copy = Path(outcome.quarantine_path or "")
    assert copy.read_bytes() == bad.read_bytes()
    assert json.loads(reasons[0].read_text())["replay"] == replay_command(ref)
    assert replay_command(ref) == f"hopper replay {ref.uri}"


def test_a_file_without_a_contract_gets_the_contract_default_retries(home: HopperConfig) -> None:
    from hopper.ingest import retry_policy

    ref = FileRef(uri="file:///x/nobody/a.csv", size=1, mtime=0.0, dataset="nobody")
    assert retry_policy(home, ref) == (4, 2.0)
