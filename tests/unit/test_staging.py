"""No partial outputs: a source's lake files are staged, then published together or not at all.

Local lakes here (S3 in tests/integration/test_s3_storage.py). A writer killed mid-write is a
real child process killed with SIGKILL at a chosen step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from hopper.errors import TerminalError
from hopper.sink import StreamingOutputs, discard_staged, write_outputs
from hopper.staging import STAGING, staging_key

URI = "file:///inbox/sales/jan.csv"
LONG = "x" * 300  # too long to name a partition folder


def _write(lake: Path, table: pa.Table, uri: str = URI) -> list[str]:
    return write_outputs(
        table, lake=str(lake), dataset="sales", partition_by=["region"],
        source_name="jan.csv", uri=uri,
    )  # fmt: skip


def _lake_state(lake: Path) -> dict[str, list[int]]:
    """Every file in the lake (staging included) → its ``n`` values (none: not Parquet)."""
    return {
        str(p.relative_to(lake)): (
            pq.read_table(p).column("n").to_pylist() if p.suffix == ".parquet" else []
        )
        for p in sorted(lake.rglob("*"))
        if p.is_file()
    }


def _published(lake: Path) -> dict[str, list[int]]:
    return {k: v for k, v in _lake_state(lake).items() if not k.startswith(STAGING)}


OLD = pa.table({"region": ["EU", "US", "EU"], "n": [1, 2, 3]})


def test_a_partition_value_too_long_leaves_nothing_in_the_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    # 18 rows in two good partitions come before the bad one, as in the file
    table = pa.table({"region": ["EU"] * 9 + ["US"] * 9 + [LONG] * 12, "n": list(range(30))})
    with pytest.raises(TerminalError, match="too long to name a folder"):
        _write(lake, table)
    assert [p for p in lake.rglob("*") if p.is_file()] == []
    assert not (lake / "sales").exists()


def test_a_failed_replay_keeps_the_earlier_version_whole(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _write(lake, OLD)
    before = _lake_state(lake)
    assert [Path(k).parent.name for k in before] == ["region=EU", "region=US"]
    new = pa.table({"region": ["EU", LONG], "n": [10, 11]})
    with pytest.raises(TerminalError):
        _write(lake, new)
    assert _lake_state(lake) == before


def test_a_failure_while_publishing_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    _write(lake, OLD)
    before = _lake_state(lake)
    calls: list[str] = []
    real = os.replace

    def flaky(src: str, dst: str) -> None:
        calls.append(str(dst))
        if len(calls) == 3:  # the journal, the first file, then the second file fails
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    new = pa.table({"region": ["EU", "FR"], "n": [10, 11]})  # replaces EU, adds FR, drops US
    with pytest.raises(OSError, match="No space"):
        _write(lake, new)
    assert len(calls) >= 3 and "region=FR" in calls[2]
    assert _lake_state(lake) == before
    assert not (lake / "sales" / "region=FR").exists()


KILLER = """
import os, signal, sys
import pyarrow as pa
from hopper.sink import write_outputs

lake, kill_at = sys.argv[1], int(sys.argv[2])
real, calls = os.replace, []

def replace(src, dst):
    calls.append(dst)
    if len(calls) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)

os.replace = replace
table = pa.table({"region": ["EU", "FR"], "n": [10, 11]})
write_outputs(table, lake=lake, dataset="sales", partition_by=["region"],
              source_name="jan.csv", uri=%(uri)r)
"""


def _killed_writer(lake: Path, kill_at: int) -> None:
    script = KILLER % {"uri": URI}
    done = subprocess.run([sys.executable, "-c", script, str(lake), str(kill_at)], check=False)
    assert done.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kill_at", [1, 2, 3], ids=["staged", "publishing", "published-two"])
def test_discard_staged_undoes_a_writer_killed_at_any_step(tmp_path: Path, kill_at: int) -> None:
    lake = tmp_path / "lake"
    _write(lake, OLD)
    before = _lake_state(lake)
    _killed_writer(lake, kill_at)
    staging = lake / STAGING / "sales"
    (attempt,) = {p.name.lstrip(".").split(".")[0] for p in staging.iterdir()}  # no folder
    assert attempt.startswith(staging_key(URI) + "-")
    assert all(p.is_file() for p in staging.iterdir())
    if kill_at > 1:  # the journal was written: the lake may be half published
        assert json.loads((staging / f"{attempt}.publish.json").read_text())["uri"] == URI
    if kill_at == 3:
        assert _published(lake) != before
    discard_staged(str(lake), "sales", URI, None)
    assert _lake_state(lake) == before
    assert list((lake / STAGING / "sales").iterdir()) == []
    discard_staged(str(lake), "sales", URI, None)  # again: nothing to do
    assert _lake_state(lake) == before


def test_discard_staged_undoes_a_half_publish_left_in_the_older_folder_layout(
    tmp_path: Path,
) -> None:
    # A worker of an earlier version, killed while publishing, left its attempt in a folder
    # (<attempt>/publish.json, <attempt>/0.staged, …): the upgraded worker undoes it alike.
    lake = tmp_path / "lake"
    _write(lake, OLD)
    before = _lake_state(lake)
    _killed_writer(lake, 3)
    assert _published(lake) != before
    staging = lake / STAGING / "sales"
    (attempt,) = {p.name.split(".")[0] for p in staging.iterdir()}
    folder = staging / attempt
    folder.mkdir()
    for path in list(staging.glob(f"{attempt}.*")):
        path.rename(folder / path.name.removeprefix(f"{attempt}."))
    journal = folder / "publish.json"
    journal.write_text(journal.read_text().replace(f"{attempt}.", f"{attempt}/"))
    discard_staged(str(lake), "sales", URI, None)
    assert _lake_state(lake) == before
    assert list(staging.iterdir()) == []


def test_discard_staged_with_nothing_staged_is_a_no_op(tmp_path: Path) -> None:
    discard_staged(str(tmp_path / "nowhere"), "sales", URI, None)
    _write(tmp_path, OLD)
    before = _lake_state(tmp_path)
    discard_staged(str(tmp_path), "sales", URI, None)
    discard_staged(str(tmp_path), "sales", "file:///inbox/sales/other.csv", None)
    assert _lake_state(tmp_path) == before


def test_staged_files_are_invisible_to_readers_and_only_this_source_is_discarded(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    _write(lake, OLD, uri="file:///inbox/sales/other.csv")
    _killed_writer(lake, 1)  # killed with its files staged, before publishing
    assert any(p.suffix == ".staged" for p in (lake / STAGING).rglob("*"))
    assert all(STAGING not in p.parts for p in lake.glob("**/*.parquet"))  # a DuckDB-like glob
    for root in (lake, lake / "sales"):
        rows = ds.dataset(root, partitioning="hive").to_table()
        assert sorted(rows.column("n").to_pylist()) == [1, 2, 3]
    discard_staged(str(lake), "sales", "file:///inbox/sales/other.csv", None)
    assert any(p.is_file() for p in (lake / STAGING).rglob("*"))  # not that source's
    discard_staged(str(lake), "sales", URI, None)
    assert not any(p.is_file() for p in (lake / STAGING).rglob("*"))


def _stream(lake: Path) -> StreamingOutputs:
    return StreamingOutputs(
        lake=lake, dataset="sales", partition_by=["region"], source_name="jan.csv", uri=URI
    )


def test_a_stream_failing_part_way_leaves_nothing_and_keeps_the_earlier_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hopper.sink.parquet_lake as sink

    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 1)  # every block is flushed to disk at once
    lake = tmp_path / "lake"
    with pytest.raises(TerminalError), _stream(lake) as out:
        out.write(pa.table({"region": ["EU", "US"], "n": [1, 2]}))
        out.write(pa.table({"region": [LONG], "n": [3]}))
    assert [p for p in lake.rglob("*") if p.is_file()] == []
    _write(lake, OLD)
    before = _lake_state(lake)
    with pytest.raises(TerminalError), _stream(lake) as out:
        out.write(pa.table({"region": ["EU", "FR"], "n": [7, 8]}))
        out.write(pa.table({"region": [LONG], "n": [9]}))
    assert _lake_state(lake) == before


STREAM_KILLER = """
import os, signal, sys
import pyarrow as pa
import hopper.sink.parquet_lake as sink

sink.ROW_GROUP_ROWS = 1
with sink.StreamingOutputs(lake=__import__("pathlib").Path(sys.argv[1]), dataset="sales",
                           partition_by=["region"], source_name="jan.csv", uri=%(uri)r) as out:
    out.write(pa.table({"region": ["EU", "FR"], "n": [10, 11]}))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_stream_killed_mid_write_is_discarded(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _write(lake, OLD)
    before = _lake_state(lake)
    script = STREAM_KILLER % {"uri": URI}
    done = subprocess.run([sys.executable, "-c", script, str(lake)], check=False)
    assert done.returncode == -signal.SIGKILL
    leftovers = [k for k in _lake_state(lake) if k not in before]
    assert leftovers and all(k.startswith(f"{STAGING}/sales/") for k in leftovers)
    assert _published(lake) == before
    discard_staged(str(lake), "sales", URI)
    assert _lake_state(lake) == before


def test_a_successful_stream_leaves_no_staging_behind(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _write(lake, OLD)
    with _stream(lake) as out:
        out.write(pa.table({"region": ["EU", "FR"], "n": [7, 8]}))
        written = out.commit()
    assert sorted(Path(p).parent.name for p in written) == ["region=EU", "region=FR"]
    assert sorted(_lake_state(lake).values()) == [[7], [8]]
    assert not any(p.is_file() for p in (lake / STAGING).rglob("*"))


def test_an_unpartitioned_replay_replaces_in_one_step_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"

    def write(table: pa.Table) -> list[str]:
        return write_outputs(
            table, lake=str(lake), dataset="sales", partition_by=[], source_name="jan.csv",
            uri=URI,
        )  # fmt: skip

    write(OLD)
    before = _lake_state(lake)
    real = os.replace

    def full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        write(pa.table({"region": ["EU"], "n": [9]}))
    assert _lake_state(lake) == before
    monkeypatch.setattr(os, "replace", real)
    (written,) = write(pa.table({"region": ["EU"], "n": [9]}))
    assert _lake_state(lake) == {str(Path(written).relative_to(lake)): [9]}


def test_the_sweep_removes_only_staging_folders_older_than_its_cutoff(tmp_path: Path) -> None:
    from hopper.staging import Stage, staging_root, sweep_staging

    lake = str(tmp_path / "lake")
    stage = Stage(lake, "sales", URI)
    stage.write(f"{lake}/sales/a.parquet", lambda out: out.write(b"x"))
    legacy = Path(staging_root(lake, "sales")) / "0123456789abcdef-0a1b2c3d4e5f" / "new"
    legacy.mkdir(parents=True)
    (legacy / "0.staged").write_bytes(b"y")  # a folder named before attempts had a time
    staged = Path(f"{stage.attempt}.0.staged")
    assert sweep_staging(lake) == 0  # a fresh attempt: a writer may still be at work
    assert staged.is_file()
    assert sweep_staging(lake, older_than=-60) == 1  # "a day later"
    assert not staged.exists()
    assert legacy.is_dir()
    assert not list(Path(lake, "sales").glob("*.parquet"))  # nothing was published by it
