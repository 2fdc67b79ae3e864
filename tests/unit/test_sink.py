import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hopper.sink.parquet_lake as sink_module
from hopper.lineage import add_lineage
from hopper.sink import (
    StreamingOutputs,
    output_path,
    partition_dir,
    quarantine_file,
    safe_stem,
    write_outputs,
)
from hopper.sink.table_stage import TableStagingLake


def test_output_path_is_pure_and_source_specific(tmp_path: Path) -> None:
    a = output_path(tmp_path, "sales", "", "jan.csv", "file:///in/sales/jan.csv")
    assert a == output_path(tmp_path, "sales", "", "jan.csv", "file:///in/sales/jan.csv")
    b = output_path(tmp_path, "sales", "", "jan.csv", "file:///in/sales/eu/jan.csv")
    assert a != b and Path(a).parent == tmp_path / "sales" and Path(a).name.startswith("jan-")


def test_output_paths_are_built_alike_for_folders_and_s3() -> None:
    uri = "s3://landing/in/sales/jan.csv"
    local = output_path("/data/lake", "sales", "region=EU", "jan.csv", uri)
    remote = output_path("s3://lake/tables/", "sales", "region=EU", "jan.csv", uri)
    assert local.removeprefix("/data/lake/") == remote.removeprefix("s3://lake/tables/")
    assert remote.startswith("s3://lake/tables/sales/region=EU/jan-")


def test_partition_dir_and_safe_names() -> None:
    assert (
        partition_dir([("region", "EU"), ("day", None)])
        == "region=EU/day=__HIVE_DEFAULT_PARTITION__"
    )
    assert partition_dir([("k", "a/b")]) == "k=a%2Fb"
    assert safe_stem("../../etc/passwd") == "etc_passwd"  # no dot-dot, no separator
    assert safe_stem(".hidden") == "hidden"
    assert safe_stem("my report (v2).csv") == "my_report_v2"


def test_rewrite_replaces_and_removes_stale_partitions(tmp_path: Path) -> None:
    uri = "file:///in/sales/jan.csv"
    first = pa.table({"region": ["EU", "US", "US"], "n": [1, 2, 3]})
    written = write_outputs(
        first,
        lake=str(tmp_path),
        dataset="sales",
        partition_by=["region"],
        source_name="jan.csv",
        uri=uri,
    )
    assert sorted(Path(p).parent.name for p in written) == ["region=EU", "region=US"]
    second = pa.table({"region": ["US"], "n": [9]})
    written2 = write_outputs(
        second,
        lake=str(tmp_path),
        dataset="sales",
        partition_by=["region"],
        source_name="jan.csv",
        uri=uri,
    )
    files = sorted(tmp_path.rglob("*.parquet"))
    assert [str(f) for f in files] == written2
    assert pq.read_table(files[0]).to_pydict() == {"n": [9]}
    assert not list(tmp_path.rglob("*.tmp"))


def test_writes_report_the_bytes_they_published(tmp_path: Path) -> None:
    table = pa.table({"region": ["EU", "US", "US"] * 100, "n": list(range(300))})
    lake = tmp_path / "lake"
    whole = write_outputs(
        table, lake=str(lake), dataset="sales", partition_by=["region"],
        source_name="jan.csv", uri="file:///in/sales/jan.csv",
    )  # fmt: skip
    assert len(whole) == 2
    assert whole.nbytes == sum(Path(p).stat().st_size for p in whole) > 0
    with StreamingOutputs(
        lake=lake, dataset="sales", partition_by=["region"],
        source_name="feb.csv", uri="file:///in/sales/feb.csv",
    ) as out:  # fmt: skip
        out.write(table.slice(0, 150))
        out.write(table.slice(150))
        streamed = out.commit()
    assert streamed.nbytes == sum(Path(p).stat().st_size for p in streamed) > 0
    staged = TableStagingLake(str(tmp_path / "tables")).write(
        table, dataset="sales", partition_by=[], source_name="mar.csv",
        uri="file:///in/sales/mar.csv", compression="zstd",
    )  # fmt: skip
    assert staged.nbytes == Path(staged[0]).stat().st_size > 0


def _codecs(path: str) -> dict[str, str]:
    """Each Parquet leaf column of a file's first row group, and its codec."""
    group = pq.read_metadata(path).row_group(0)
    return {
        group.column(i).path_in_schema: group.column(i).compression
        for i in range(group.num_columns)
    }


def test_lineage_columns_are_stored_uncompressed_and_the_rest_with_the_codec(
    tmp_path: Path,
) -> None:
    when = datetime(2026, 12, 4, tzinfo=UTC)
    rows = pa.table({"n": list(range(300)), "city": ["Oslo", "Lima", "Pune"] * 100})
    table = add_lineage(rows, "file:///in/sales/jan.csv", when)
    lake = tmp_path / "lake"
    expected = {"n": "ZSTD", "city": "ZSTD", "_source_uri": "UNCOMPRESSED",
                "_ingested_at": "UNCOMPRESSED"}  # fmt: skip
    (whole,) = write_outputs(
        table, lake=str(lake), dataset="sales", partition_by=[], source_name="jan.csv",
        uri="file:///in/sales/jan.csv", compression="zstd",
    )  # fmt: skip
    assert _codecs(whole) == expected
    assert pq.read_table(whole).equals(table)  # read back as written
    with StreamingOutputs(
        lake=lake, dataset="sales", partition_by=[], source_name="feb.csv",
        uri="file:///in/sales/feb.csv", compression="zstd",
    ) as out:  # fmt: skip
        out.write(table.slice(0, 150))
        out.write(table.slice(150))
        (streamed,) = out.commit()
    assert _codecs(streamed) == expected
    (staged,) = TableStagingLake(str(tmp_path / "tables")).write(
        table, dataset="sales", partition_by=[], source_name="mar.csv",
        uri="file:///in/sales/mar.csv", compression="zstd",
    )  # fmt: skip
    assert _codecs(staged) == expected
    # Nested columns, or a dotted name, are not their own leaf paths: one codec throughout.
    for extra in (pa.array([{"x": 1}] * 300), pa.array([[1, 2]] * 300)):
        nested = add_lineage(rows.append_column("extra", extra), "file:///in/sales/n.csv", when)
        (path,) = write_outputs(
            nested, lake=str(lake), dataset="nested", partition_by=[], source_name="n.csv",
            uri="file:///in/sales/n.csv", compression="zstd",
        )  # fmt: skip
        assert set(_codecs(path).values()) == {"ZSTD"}
    dotted = add_lineage(rows.rename_columns(["a.b", "city"]), "file:///in/s/d.csv", when)
    (path,) = write_outputs(
        dotted, lake=str(lake), dataset="dotted", partition_by=[], source_name="d.csv",
        uri="file:///in/s/d.csv", compression="zstd",
    )  # fmt: skip
    assert set(_codecs(path).values()) == {"ZSTD"}
    (plain,) = write_outputs(
        table, lake=str(lake), dataset="plain", partition_by=[], source_name="jan.csv",
        uri="file:///in/sales/jan.csv", compression="none",
    )  # fmt: skip
    assert set(_codecs(plain).values()) == {"UNCOMPRESSED"}


def test_streamed_row_groups_are_written_on_a_thread_while_rows_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "ROW_GROUP_ROWS", 100)
    writers: set[str] = set()
    real = pq.ParquetWriter.write_table

    def noted(self: pq.ParquetWriter, *args: object, **kwargs: object) -> None:
        writers.add(threading.current_thread().name)
        real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", noted)
    table = pa.table({"region": ["EU", "US"] * 250, "n": list(range(500))})
    with StreamingOutputs(
        lake=tmp_path, dataset="sales", partition_by=["region"],
        source_name="jan.csv", uri="file:///in/sales/jan.csv",
    ) as out:  # fmt: skip
        for start in range(0, 500, 50):
            out.write(table.slice(start, 50))
        written = out.commit()
    assert any(name.startswith("hopper-parquet") for name in writers)
    back = pa.concat_tables([pq.read_table(p) for p in sorted(written)])
    assert sorted(back.column("n").to_pylist()) == list(range(500))  # every row, once
    for path in written:  # row groups in the order the rows came
        assert pq.read_table(path).column("n").to_pylist() == sorted(
            pq.read_table(path).column("n").to_pylist()
        )


def test_a_row_group_write_that_fails_on_the_thread_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "ROW_GROUP_ROWS", 100)
    calls = []
    real = pq.ParquetWriter.write_table

    def failing(self: pq.ParquetWriter, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    table = pa.table({"n": list(range(1000))})
    with pytest.raises(OSError, match="No space left"), StreamingOutputs(
        lake=tmp_path / "lake", dataset="sales", partition_by=[],
        source_name="jan.csv", uri="file:///in/sales/jan.csv",
    ) as out:  # fmt: skip
        for start in range(0, 1000, 100):
            out.write(table.slice(start, 100))
        out.commit()
    assert [p for p in (tmp_path / "lake").rglob("*") if p.is_file()] == []


def test_quarantine_file_writes_copy_and_reason(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("x\n1\n")
    when = datetime(2024, 5, 6, tzinfo=UTC)
    copy = quarantine_file(
        source_uri=src.as_uri(),
        local_copy=src,
        quarantine=str(tmp_path / "q"),
        dataset="sales",
        when=when,
        reason={"reason": "broken"},
    )
    assert Path(copy) == tmp_path / "q" / "sales" / "2024-05-06" / "bad.csv"
    assert Path(copy).read_text() == "x\n1\n"
    assert '"broken"' in (Path(copy).parent / "bad.csv.error.json").read_text()


def test_a_reason_file_says_why_from_the_moment_it_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reason file claims the quarantine name before the copy is made; whoever reads it
    # then (a user, a test polling for it), or after a crash before the final write, reads
    # why already.
    from hopper.stores.local import LocalStore

    def crash(self: LocalStore, path: str, text: str) -> None:
        raise RuntimeError("killed before the final reason")

    monkeypatch.setattr(LocalStore, "put_text", crash)
    src = tmp_path / "bad.csv"
    src.write_text("x\n1\n")
    with pytest.raises(RuntimeError, match="killed"):
        quarantine_file(
            source_uri=src.as_uri(),
            local_copy=src,
            quarantine=str(tmp_path / "q"),
            dataset="sales",
            when=datetime(2024, 5, 6, tzinfo=UTC),
            reason={"reason": "broken", "replay": "hopper replay x"},
        )
    (claim,) = (tmp_path / "q" / "sales" / "2024-05-06").glob("*.error.json")
    held = json.loads(claim.read_text())
    assert held["reason"] == "broken" and held["uri"] == src.as_uri()


def test_quarantine_of_a_vanished_file_still_writes_the_reason(tmp_path: Path) -> None:
    when = datetime(2024, 5, 6, tzinfo=UTC)
    copy = quarantine_file(
        source_uri=(tmp_path / "gone.csv").as_uri(),
        local_copy=None,
        quarantine=str(tmp_path / "q"),
        dataset=None,
        when=when,
        reason={"reason": "gone"},
    )
    assert not Path(copy).exists()
    assert (tmp_path / "q" / "_unrouted" / "2024-05-06" / "gone.csv.error.json").exists()


def test_quarantine_never_replaces_another_files_copy(tmp_path: Path) -> None:
    when = datetime(2024, 5, 6, tzinfo=UTC)

    def reject(src: Path, fingerprint: str, text: str) -> Path:
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(text)
        return Path(
            quarantine_file(
                source_uri=src.as_uri(),
                local_copy=src,
                quarantine=str(tmp_path / "q"),
                dataset="sales",
                when=when,
                reason={"reason": text},
                fingerprint=fingerprint,
            )
        )

    eu = reject(tmp_path / "in" / "region=eu" / "data.csv", "v1", "eu\n")
    us = reject(tmp_path / "in" / "region=us" / "data.csv", "v1", "us\n")  # same name
    eu_v2 = reject(tmp_path / "in" / "region=eu" / "data.csv", "v2", "eu two\n")  # new version
    eu_again = reject(tmp_path / "in" / "region=eu" / "data.csv", "v1", "eu\n")  # a replay
    assert eu.name == "data.csv" and eu_again == eu
    assert len({eu, us, eu_v2}) == 3
    assert us.name.startswith("data-") and us.name.endswith(".csv")
    for copy, text in ((eu, "eu\n"), (us, "us\n"), (eu_v2, "eu two\n")):
        assert copy.read_text() == text
        assert json.loads(Path(f"{copy}.error.json").read_text())["reason"] == text
    assert sorted(p.name for p in eu.parent.iterdir()) == sorted(
        [n for p in (eu, us, eu_v2) for n in (p.name, f"{p.name}.error.json")]
    )
