"""The pure parts of ``bench/``: data generation, statistics, the results table, the CLI.

No servers here; the benchmarks themselves run with ``python -m bench`` (see bench/README.md).
These tests only keep the bench code from rotting between runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from bench import bare, cases, data, iceberg, run
from bench.procs import Profile, make_home
from bench.stats import Result, format_table, is_flat, percentile, rss_growth


def test_small_csv_is_deterministic_and_sized() -> None:
    first = data.small_csv(7, seed=1)
    assert first == data.small_csv(7, seed=1)
    assert first != data.small_csv(8, seed=1)
    assert first != data.small_csv(7, seed=2)
    for i in range(30):
        table = pacsv.read_csv(io.BytesIO(data.small_csv(i)))
        assert 50 <= table.num_rows <= 100
        assert table.column_names == ["id", "amount", "city", "day"]
        assert table.schema.field("day").type == pa.date32()


def test_write_small_files_names_and_contents(tmp_path: Path) -> None:
    paths = data.write_small_files(tmp_path, 3, "b", seed=4)
    assert [p.name for p in paths] == ["b-00000.csv", "b-00001.csv", "b-00002.csv"]
    assert paths[2].read_bytes() == data.small_csv(2, seed=4)


def test_big_csv_is_deterministic_typed_and_close_to_size(tmp_path: Path) -> None:
    size = 2_000_000
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    rows = data.write_big_csv(a, size, seed=5)
    data.write_big_csv(b, size, seed=5)
    digest = hashlib.sha256(a.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(b.read_bytes()).hexdigest()
    assert size <= a.stat().st_size <= size * 1.01
    assert not list(tmp_path.glob(".*"))  # no temp file left behind
    nulls = pacsv.ConvertOptions(strings_can_be_null=True)  # "NA" is a default null value
    table = pacsv.read_csv(a, convert_options=nulls)
    assert table.num_rows == rows
    assert [str(t) for t in table.schema.types] == ["int64", "double", "string", "date32[day]"]
    assert table.column("id").null_count == 0
    assert 0.02 < table.column("city").null_count / rows < 0.08
    assert table.column("id").to_pylist()[:3] == [0, 1, 2]


def test_big_csv_differs_by_seed(tmp_path: Path) -> None:
    data.write_big_csv(tmp_path / "a.csv", 100_000, seed=1)
    data.write_big_csv(tmp_path / "b.csv", 100_000, seed=2)
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "b.csv").read_bytes()


@pytest.mark.parametrize("q", [0, 5, 50, 95, 100, 37.5])
def test_percentile_matches_numpy(q: float) -> None:
    sample = [4.2, 1.0, 9.5, 3.3, 7.7, 2.2, 5.0]
    assert percentile(sample, q) == pytest.approx(float(np.percentile(sample, q)))


def test_percentile_edges() -> None:
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_rss_growth_ignores_a_single_spike() -> None:
    assert rss_growth([100, 100, 180, 100, 100, 100]) == 0
    assert rss_growth([100, 101, 102, 110, 111, 112]) == pytest.approx(11)
    assert is_flat(1.5, 80) and not is_flat(10, 80)


def test_format_table_aligns_and_shows_verdicts() -> None:
    rows = [
        Result("latency", "p50 5.00 s", "p50 ≤ 1.5 s", "≈ 5 s", False),
        Result("big", "100 MB/s", "≥ 0.8×", passed=True),
        Result("idle", "error: boom", "—"),
    ]
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 5
    assert len({len(line) for line in lines}) == 1  # every line padded to the same width
    assert lines[0].startswith("| benchmark")
    assert "| FAIL" in lines[2] and "| pass" in lines[3] and "| n/a" in lines[4]
    assert rows[0].to_dict()["verdict"] == "FAIL"


def test_lake_names_map_back_to_sources(tmp_path: Path) -> None:
    assert cases.source_stem("lat-00003-0123456789.parquet") == "lat-00003"
    (tmp_path / "day=2024-01-01").mkdir()
    (tmp_path / "day=2024-01-01" / "a-0123456789.parquet").write_bytes(b"")
    (tmp_path / ".b-0123456789.parquet.tmp").write_bytes(b"")
    assert cases.lake_outputs(tmp_path) == ["a-0123456789.parquet"]


def test_the_last_output_is_timed_by_its_modification_time(tmp_path: Path) -> None:
    assert cases.last_output_at(tmp_path) is None
    (tmp_path / "day=2024-01-01").mkdir()
    for name, when in (("a-01.parquet", 1000.0), ("day=2024-01-01/b-02.parquet", 2000.0)):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (when, when))
    (tmp_path / ".c-03.parquet").write_bytes(b"")  # still staged: not an output
    os.utime(tmp_path / ".c-03.parquet", (3000.0, 3000.0))
    assert cases.last_output_at(tmp_path) == 2000.0


def test_bench_home_has_a_contract_per_dataset(tmp_path: Path) -> None:
    config = make_home(tmp_path, ["bench_a", "bench_b"])
    assert "sources:" in config.read_text()
    assert (tmp_path / "inbox" / "bench_b").is_dir()
    text = (tmp_path / "datasets" / "bench_a.yaml").read_text()
    assert text.startswith("name: bench_a\n") and "type: date32" in text


def test_cli_sizes_and_profiles(tmp_path: Path) -> None:
    quick = run.sizes_from(run.parse_args(["--quick", "--burst-files", "7"]))
    assert quick.burst_files == 7 and quick.latency_files == run.QUICK.latency_files
    assert run.sizes_from(run.parse_args([])) == run.FULL
    shipped = run.candidate_profile(run.parse_args([]))
    assert (shipped.extra_yaml, shipped.env) == ("", ())  # Hopper as shipped...
    assert not shipped.same_setup(run.BASELINE)  # ...measured against naive Prefect
    extra = tmp_path / "extra.yaml"
    extra.write_text("watch:\n  stable_seconds: 0.1\n")
    candidate = run.candidate_profile(run.parse_args(["--extra-yaml", str(extra), "--env", "A=1"]))
    assert candidate.env == (("A", "1"),) and not candidate.same_setup(run.BASELINE)
    assert Profile("x").same_setup(Profile("y"))
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "latency,nope"])


def test_scaleout_row_names_the_ceiling() -> None:
    def burst(fps: float, cores: dict[str, float], busy: float) -> dict[str, object]:
        return {
            "files_per_s": fps,
            "exactly_once": True,
            "cpu_cores": cores,
            "machine_busy_percent": busy,
        }

    one = burst(40.0, {"server": 0.9, "workers": 0.5, "watcher": 0.1, "postgres": 0.2}, 85.0)
    two = burst(50.0, {"server": 1.0, "workers": 0.7, "watcher": 0.1, "postgres": 0.3}, 99.0)
    result = run.scaleout_result(
        {"files": 200, "one_worker": one, "two_workers": two, "ratio": 1.25}
    )
    assert result.passed is True
    assert "50.0 files/s (1.25× 1 worker)" in result.measured
    assert "machine 99 % busy; server 1.00 cores" in result.measured
    assert result.baseline.startswith("1 worker: 40.0 files/s; machine 85 % busy")
    two["exactly_once"] = False
    assert run.scaleout_result({"files": 200, "one_worker": one, "two_workers": two,
                                "ratio": 1.25}).passed is False  # fmt: skip


def test_machine_cpu_counters_advance() -> None:
    from bench.scaleout import machine_busy_seconds

    busy, total = machine_busy_seconds()
    assert 0 <= busy <= total
    spin_until = time.monotonic() + 0.05  # several clock ticks (/proc/stat counts in 10 ms)
    while time.monotonic() < spin_until:
        pass
    busy2, total2 = machine_busy_seconds()
    assert busy2 >= busy and total2 > total


def test_the_hypervisors_share_is_read_and_named() -> None:
    from bench.scaleout import ceiling, machine_busy_seconds, machine_steal_seconds

    steal, (busy, _) = machine_steal_seconds(), machine_busy_seconds()
    assert 0 <= steal <= busy  # stolen time is part of what the machine counts as busy
    run_ = {
        "cpu_cores": {"server": 0.4, "workers": 1.1, "readers": 0.8, "watcher": 0.2, "postgres": 0},
        "machine_busy_percent": 95.0,
        "machine_steal_percent": 6.0,
    }
    assert ceiling(run_).startswith("machine 95 % busy (6 % stolen by the hypervisor); workers")
    run_["machine_steal_percent"] = 0.0
    assert ceiling(run_).startswith("machine 95 % busy; workers")


def test_iceberg_rows_are_judged_against_the_parquet_lake() -> None:
    lat = {"files": 5, "p50": 1.2, "p95": 2.0}
    assert iceberg.latency_result(lat, {"p50": 0.95, "p95": 1.5}).passed is True
    slow = iceberg.latency_result(lat, {"p50": 0.85, "p95": 1.5})
    assert slow.passed is False and "(+0.35 s)" in slow.measured
    assert iceberg.latency_result(lat, None).verdict == "n/a"  # no Parquet figure: no verdict
    burst = {"files": 200, "landed": 200, "seconds": 2.5, "files_per_s": 80.0,
             "timed_out": False, "exactly_once": True}  # fmt: skip
    assert iceberg.burst_result(burst, {"files_per_s": 100.0, "exactly_once": True}).passed
    row = iceberg.burst_result(dict(burst), {"files_per_s": 101.0, "exactly_once": True})
    assert row.passed is False and "0.79× Parquet" in row.measured
    assert iceberg.burst_result({**burst, "exactly_once": False}, {"files_per_s": 1.0,
                                "exactly_once": True}).passed is False  # fmt: skip
    files = {"data_files": 3, "snapshots": 3, "batches": 3, "partitions": 1}
    assert iceberg.files_result({**files, "most_files_per_batch_partition": 1}, 200).passed
    assert not iceberg.files_result({**files, "most_files_per_batch_partition": 2}, 200).passed
    scan = {"iceberg_median": 0.1, "parquet_median": 2.5, "speedup": 25.0, "iceberg_rows": 9,
            "parquet_rows": 9, "parquet_files": 2, "same_rows": True}  # fmt: skip
    assert iceberg.scan_result(scan).passed
    assert not iceberg.scan_result({**scan, "same_rows": False, "parquet_rows": 8}).passed
    commit = {"batch": 100, "ratio": 2.1,
              "small": {"sources": 1000, "median": 0.2, "snapshots_before": 2},
              "large": {"sources": 100_000, "median": 0.42, "snapshots_before": 200}}  # fmt: skip
    row = iceberg.commit_result(commit)
    assert row.passed is False and "(2.10×; 200 snapshots)" in row.measured


def test_iceberg_counts_data_files_per_batch_and_partition() -> None:
    assert iceberg.most_files_per_batch_partition([]) == 0
    one_each = [("d1", "{}"), ("d2", "{}"), ("d1", "{'day': 1}")]
    assert iceberg.most_files_per_batch_partition(one_each) == 1
    assert iceberg.most_files_per_batch_partition([*one_each, ("d2", "{}")]) == 2


def test_iceberg_history_rows_repeat_real_sources_under_new_uris() -> None:
    template = pa.table({"id": [1, 2, 3, 4], "_source_uri": ["a", "a", "b", "c"]})
    rows, uris = iceberg.renamed_rows(template, 5, "s{:02d}")
    assert uris == ["s00", "s01", "s02", "s03", "s04"]
    per_source = dict(zip(*np.unique(rows["_source_uri"].to_numpy(), return_counts=True),
                          strict=True))  # fmt: skip
    assert per_source == {"s00": 2, "s01": 1, "s02": 1, "s03": 2, "s04": 1}
    assert rows["id"].to_pylist() == [1, 2, 3, 4, 1, 2, 3]


def test_iceberg_profile_and_sizes() -> None:
    candidate = run.candidate_profile(run.parse_args(["--env", "A=1"]))
    table_lake = iceberg.iceberg_profile(candidate)
    assert table_lake.env == (("A", "1"),) and "format: iceberg" in table_lake.lake_yaml
    assert not table_lake.same_setup(candidate)
    args = run.parse_args(["--quick", "--only", "iceberg", "--commit-repeats", "2"])
    quick = run.sizes_from(args)
    assert quick.commit_repeats == 2 and quick.commit_batch == run.QUICK.commit_batch
    assert (run.FULL.commit_sources_small, run.FULL.commit_sources_large) == (1_000, 100_000)
    assert quick.commit_sources_large < run.FULL.commit_sources_large


def test_iceberg_commit_benchmark_runs_in_process(tmp_path: Path) -> None:
    assert iceberg.TableWatch(tmp_path, "nothing").landed() == 0  # no catalog yet
    result = iceberg.commit_scaling(tmp_path, 4, 12, 2, 1, history_batch=4)
    assert result["small"]["snapshots_before"] == 1
    assert result["large"]["snapshots_before"] == 3  # one real batch, two written directly
    assert result["large, 2 snapshots"]["snapshots_before"] == 2
    assert result["ratio"] > 0
    spent = result["large"]["where_the_time_goes"]
    assert spent["total (profiled)"] >= spent["reading staged files"] > 0
    watch = iceberg.TableWatch(tmp_path / "large", iceberg.COMMIT_DATASET)
    try:
        assert watch.landed() == 12 + 2 + 2  # the history, one timed commit, one profiled
        table = watch.table()
        assert table is not None
        sources = set(
            table.scan(selected_fields=("_source_uri",)).to_arrow()["_source_uri"].to_pylist()
        )
        assert len(sources) == 16
        rows = table.scan().to_arrow()
    finally:
        watch.close()
    files = iceberg.table_files(tmp_path / "large", iceberg.COMMIT_DATASET)
    assert files["data_files"] == files["snapshots"] == files["batches"] == 5
    assert files["most_files_per_batch_partition"] == 1 and files["rows"] == rows.num_rows
    folder = tmp_path / "per-source"
    folder.mkdir()
    pq.write_table(rows.slice(0, 10), folder / "a.parquet")
    pq.write_table(rows.slice(10), folder / "b.parquet")
    scan = iceberg.scan_speed(tmp_path / "large", iceberg.COMMIT_DATASET, folder, repeats=1)
    assert scan["same_rows"] and scan["parquet_files"] == 2 and scan["speedup"] > 0
    # each round: one process per reader, its warm-up read kept apart from the timed ones
    assert len(scan["iceberg_seconds"]) == len(scan["parquet_seconds"]) == iceberg.SCAN_ROUNDS
    assert len(scan["first_read_in_process"]["iceberg"]) == iceberg.SCAN_ROUNDS


def test_bare_burst_converts_the_burst_files_and_checks_their_contract(tmp_path: Path) -> None:
    files = data.write_small_files(tmp_path / "in", 5, "b", seed=2)
    result = bare.bare_burst(files, data.contract_yaml("bench_burst"), tmp_path / "out")
    written = sorted((tmp_path / "out" / "pass-1").glob("*.parquet"))
    assert [p.stem for p in written] == [p.stem for p in files]
    assert len(list((tmp_path / "out" / "pass-2").glob("*.parquet"))) == 5  # the second pass
    assert result["seconds"] == min(result["pass_seconds"]) and len(result["pass_seconds"]) == 2
    table = pq.read_table(written[0])
    assert (
        table.schema.field("day").type == pa.date32()
        and table.schema.field("id").type == pa.int64()
    )
    assert result["files"] == 5 and result["rows"] == sum(
        pq.read_table(p).num_rows for p in written
    )
    assert result["files_per_s"] > 0
    # The contract is checked, not only read: a null in the non-nullable id is refused.
    bad = tmp_path / "bad.csv"
    bad.write_text("id,amount,city,day\nNA,1.0,Oslo,2021-01-01\n")
    with pytest.raises(bare.BareError, match="nulls in 'id'"):
        bare.bare_burst([bad], data.contract_yaml("bench_burst"), tmp_path / "out2")
    row = run.bare_result({"files": 5, "files_per_s": 3.0, "exactly_once": True}, result)
    assert row.passed == (3.0 / result["files_per_s"] >= run.GOAL_BARE_RATIO)


def test_the_bare_baseline_is_the_fastest_of_the_passes_around_the_burst(tmp_path: Path) -> None:
    before = run.bare_pass(tmp_path, 4)  # the burst's own names and contents
    assert sorted(p.name for p in (tmp_path / "staging-bare").iterdir()) == [
        data.small_name(cases.BURST_PREFIX, i) for i in range(4)
    ]
    assert len(before["pass_seconds"]) == 1 and before["files"] == 4
    slow = {**before, "seconds": before["seconds"] + 10, "pass_seconds": [before["seconds"] + 10]}
    chosen = bare.fastest([slow, before])
    assert chosen["seconds"] == before["seconds"]
    assert chosen["files_per_s"] == before["files_per_s"]
    assert chosen["pass_seconds"] == [*slow["pass_seconds"], *before["pass_seconds"]]
    with pytest.raises(ValueError):
        bare.fastest([])


def test_the_s3_rss_driver_script_ingests_a_file(tmp_path: Path) -> None:
    """The driver ``rss-s3`` runs in a process of its own: its imports and calls stay current
    (here against a folder lake, where its S3 client is never made)."""
    import json
    import subprocess
    import sys

    config = make_home(tmp_path, ["bench"])
    source = tmp_path / "inbox" / "bench" / "one.csv"
    source.write_bytes(data.small_csv(1))
    done = subprocess.run(
        [sys.executable, "-c", cases.INGEST_ONE, str(config), str(source), "bench"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["state"] == "ingested", outcome
