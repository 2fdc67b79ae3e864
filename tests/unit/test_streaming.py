"""Streamed ingestion of large CSV/TSV files: same result as the whole-file path, bounded.

Files here are small; ``stream_threshold_mb: 0`` makes them stream and a tiny block size
makes them span many blocks. Each test compares the streamed run with the whole-file run
(the same contract without the threshold) on the same file.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hopper.contracts.stream as stream_module
import hopper.sink.parquet_lake as sink_module
from hopper.config import FolderSource, HopperConfig, load_config
from hopper.contracts import load_contract, read_and_conform
from hopper.contracts.model import Contract
from hopper.contracts.stream import StreamingConform, stream_refusal
from hopper.errors import ContractViolation
from hopper.ingest import ingest
from hopper.lineage import INGESTED_AT
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from tests.conftest import make_home

BLOCK = 4096
ROWS = 3000

ORDERS = """\
name: {name}
version: 1
format: csv
columns:
  - name: order id
    type: int64
    nullable: false
    rename: order_id
  - name: day
    type: date32
    format: ["%d/%m/%Y", "%Y-%m-%d"]
  - name: qty
    type: int32
    default: 1
    min: 0
  - name: price
    type: float64
  - name: region
    type: string
    allowed: [EU, US, APAC]
  - name: note
    type: string
extra_columns: evolve
bad_rows: {bad_rows}
derived:
  - name: total
    expr: qty * price
  - name: label
    expr: concat(lower(region), "-", year(day))
drop: [note]
{extra}"""


def orders_contract(name: str, *, bad_rows: str = "reject", extra: str = "") -> str:
    """The test contract: renames, a date format, defaults, checks, derived, drop, extras."""
    return ORDERS.format(name=name, bad_rows=bad_rows, extra=extra)


def orders_csv(rows: int = ROWS, bad: dict[int, str] | None = None) -> str:
    """A CSV of ``rows`` orders; ``bad`` replaces whole lines (1 = first data row)."""
    regions = ["EU", "US", "APAC", "NA"]
    lines = ["order id,day,qty,price,region,note,extra"]
    for i in range(1, rows + 1):
        day = f"{(i % 28) + 1:02d}/0{(i % 9) + 1}/2024" if i % 3 else f"2023-0{(i % 9) + 1}-15"
        qty = "" if i % 17 == 0 else str(i % 50)
        price = "NA" if i % 13 == 0 else f"{(i * 7) % 1000 / 4:.2f}"
        region = regions[i % 4]
        lines.append(f'{i},{day},{qty},{price},{region},"note, {i}",{i % 5}')
    for row, line in (bad or {}).items():
        lines[row] = line
    return "\n".join(lines) + "\n"


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream in blocks of 4 KiB (about 100 rows), so test files span many blocks."""
    monkeypatch.setattr(stream_module, "STREAM_BLOCK_BYTES", BLOCK)


def _home(tmp_path: Path, contracts: dict[str, str]) -> HopperConfig:
    return load_config(make_home(tmp_path, contracts))


def _ingest(
    home: HopperConfig, dataset: str, name: str, text: str, encoding: str = "utf-8"
) -> IngestOutcome:
    source = home.sources[0]
    assert isinstance(source, FolderSource)
    path = source.path / dataset / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    st = path.stat()
    ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset=dataset)
    # In this process: the tests shrink the block sizes by patching this process's modules.
    return ingest(IngestRequest(ref=ref, dispatch_id="d"), home, isolate=False)


def _pair(tmp_path: Path, *, bad_rows: str = "reject", extra: str = "") -> HopperConfig:
    """A home with `whole` (read whole) and `streamed` (threshold 0) versions of orders."""
    return _home(
        tmp_path,
        {
            "whole": orders_contract("whole", bad_rows=bad_rows, extra=extra),
            "streamed": orders_contract(
                "streamed", bad_rows=bad_rows, extra=extra + "stream_threshold_mb: 0\n"
            ),
        },
    )


def _read(paths: list[str]) -> dict[str, pa.Table]:
    """Output tables by partition folder (relative to the dataset), lineage time removed."""
    tables = {}
    for path in paths:
        parts = Path(path).parts
        key = "/".join(parts[parts.index("lake") + 2 : -1])
        tables[key] = pq.read_table(path).drop_columns([INGESTED_AT])
    return tables


def _same_outputs(whole: IngestOutcome, streamed: IngestOutcome) -> None:
    assert streamed.state == whole.state == FileState.INGESTED
    assert (streamed.rows_in, streamed.rows_out) == (whole.rows_in, whole.rows_out)
    assert streamed.rows_rejected == whole.rows_rejected
    assert streamed.schema_ == whole.schema_
    got, expected = _read(streamed.outputs), _read(whole.outputs)
    assert sorted(got) == sorted(expected)
    for key, table in expected.items():
        uris = got[key].column("_source_uri").to_pylist()
        assert set(uris) == {streamed.uri}
        left = got[key].drop_columns(["_source_uri"])
        assert left.schema == table.drop_columns(["_source_uri"]).schema
        assert left.to_pylist() == table.drop_columns(["_source_uri"]).to_pylist()


def _leftovers(home: HopperConfig) -> list[Path]:
    return [p for p in Path(home.lake.path).rglob("*") if p.is_file()]


def _fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The reasons ingest gave for reading a file whole after it began to stream it."""
    return [
        str(r.args[1])
        for r in caplog.records
        if r.name == "hopper.ingest" and r.msg.startswith("%s: cannot stream")
    ]


def test_streamed_output_matches_the_whole_file_path(tmp_path: Path, small_blocks: None) -> None:
    home = _pair(tmp_path)
    text = orders_csv()
    whole = _ingest(home, "whole", "orders.csv", text)
    streamed = _ingest(home, "streamed", "orders.csv", text)
    _same_outputs(whole, streamed)
    table = pq.read_table(streamed.outputs[0])
    assert "note" not in table.column_names and "order_id" in table.column_names
    assert table.schema.field("total").type == pa.float64()
    assert table.schema.field("day").type == pa.date32()
    assert table.column("qty").null_count == 0  # the default filled the blanks
    assert table.column("price").null_count == ROWS // 13
    assert table.schema.field("extra").type == pa.int64()  # evolved, Arrow-inferred


def test_stream_spans_many_blocks_but_writes_few_row_groups(
    tmp_path: Path, small_blocks: None
) -> None:
    home = _pair(tmp_path)
    contract = load_contract(home.contract_path("streamed"))
    path = tmp_path / "orders.csv"
    path.write_text(orders_csv(), encoding="utf-8")
    stream = StreamingConform(path, contract)
    tables = list(stream)
    assert stream.blocks == len(tables) > 10
    assert sum(t.num_rows for t in tables) == stream.rows_out == stream.rows_in == ROWS
    streamed = _ingest(home, "streamed", "orders.csv", orders_csv())
    assert pq.ParquetFile(streamed.outputs[0]).metadata.num_row_groups == 1


def test_row_groups_are_cut_at_the_row_target_not_per_block(
    tmp_path: Path, small_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "ROW_GROUP_ROWS", 1000)
    home = _pair(tmp_path)
    streamed = _ingest(home, "streamed", "orders.csv", orders_csv(5500))
    meta = pq.ParquetFile(streamed.outputs[0]).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) == 5500 and 3 <= len(sizes) <= 6
    assert all(size >= 1000 for size in sizes[:-1])


def test_bad_value_in_the_last_block_rejects_and_leaves_nothing(
    tmp_path: Path, small_blocks: None
) -> None:
    home = _pair(tmp_path)
    last = f"{ROWS},01/01/2024,3,oops,EU,n,1"
    text = orders_csv(bad={ROWS: last})
    whole = _ingest(home, "whole", "orders.csv", text)
    streamed = _ingest(home, "streamed", "orders.csv", text)
    assert streamed.state == whole.state == FileState.QUARANTINED
    assert _leftovers(home) == []  # no output, no temp file
    reason = json.loads(
        (Path(streamed.quarantine_path or "").parent / "orders.csv.error.json").read_text()
    )
    (violation,) = reason["violations"]
    assert violation["column"] == "price" and violation["kind"] == "type"
    assert violation["rows"] == [ROWS] and violation["samples"] == ["oops"]
    assert f"rows {ROWS}" in reason["reason"]


def _violations(path: Path, contract: Contract, *, streamed: bool) -> list[dict[str, Any]]:
    with pytest.raises(ContractViolation) as caught:
        if streamed:
            list(StreamingConform(path, contract))
        else:
            read_and_conform(path, contract)
    return caught.value.violations


def test_violations_across_blocks_match_the_whole_file_path(
    tmp_path: Path, small_blocks: None
) -> None:
    home = _pair(tmp_path)
    bad = {
        5: "5,01/01/2024,-1,1.0,EU,n,1",  # min, block 1
        1500: "1500,31/02/2024,-2,x1,MARS,n,1",  # bad date, min, type, allowed
        2990: "2990,01/01/2024,4,x2,US,n,1",  # type, last block
        ROWS: ",01/01/2024,4,2.0,US,n,1",  # null id
    }
    path = tmp_path / "orders.csv"
    path.write_text(orders_csv(bad=bad), encoding="utf-8")
    whole = _violations(path, load_contract(home.contract_path("whole")), streamed=False)
    streamed = _violations(path, load_contract(home.contract_path("streamed")), streamed=True)
    assert streamed == whole
    by_kind = {(v["column"], v["kind"]): v for v in streamed}
    assert by_kind[("price", "type")]["rows"] == [1500, 2990]
    assert by_kind[("qty", "min")]["rows"] == [5, 1500] and by_kind[("qty", "min")]["count"] == 2
    assert by_kind[("order id", "null")]["rows"] == [ROWS]


def test_quarantine_collects_bad_rows_across_blocks(tmp_path: Path, small_blocks: None) -> None:
    home = _pair(tmp_path, bad_rows="quarantine")
    bad = {
        2: "2,01/01/2024,-1,1.0,EU,n,1",
        1200: "1200,01/01/2024,4,oops,EU,n,1",
        ROWS: f"{ROWS},01/01/2024,4,2.0,MARS,n,1",
    }
    text = orders_csv(bad=bad)
    whole = _ingest(home, "whole", "orders.csv", text)
    streamed = _ingest(home, "streamed", "orders.csv", text)
    _same_outputs(whole, streamed)
    assert streamed.rows_rejected == 3 and streamed.rows_out == ROWS - 3
    rejected = pq.read_table(streamed.quarantine_path or "")
    assert rejected.column("_row").to_pylist() == [2, 1200, ROWS]
    assert rejected.column("_reason").to_pylist() == [
        "qty: min",
        "price: type",
        "region: allowed",
    ]
    assert rejected.column("price").to_pylist()[1] == "oops"


def test_a_column_that_never_converts_rejects_the_file_even_in_quarantine(
    tmp_path: Path, small_blocks: None
) -> None:
    home = _pair(tmp_path, bad_rows="quarantine")
    header, *rows = orders_csv().splitlines()
    mangled = []
    for row in rows:  # every price (and nothing else) stops converting
        parts = row.split(",", 4)
        parts[3] = parts[3] if parts[3] == "NA" else f"p{parts[3]}"
        mangled.append(",".join(parts))
    text = "\n".join([header, *mangled]) + "\n"
    whole = _ingest(home, "whole", "orders.csv", text)
    streamed = _ingest(home, "streamed", "orders.csv", text)
    assert streamed.state == whole.state == FileState.QUARANTINED
    assert "price" in (streamed.reason or "") and streamed.reason == whole.reason
    assert _leftovers(home) == []


def test_partitions_stream_one_file_per_partition(tmp_path: Path, small_blocks: None) -> None:
    home = _pair(tmp_path, extra="partition_by: [region, _ingest_date]\n")
    text = orders_csv()
    whole = _ingest(home, "whole", "orders.csv", text)
    streamed = _ingest(home, "streamed", "orders.csv", text)
    _same_outputs(whole, streamed)
    assert len(streamed.outputs) == 4  # EU, US, APAC and null ("NA")
    assert not [p for p in Path(home.lake.path).rglob(".*")]


def test_undeclared_column_changing_type_falls_back_to_the_whole_file(
    tmp_path: Path, small_blocks: None, caplog: pytest.LogCaptureFixture
) -> None:
    home = _pair(tmp_path)
    late = f"{ROWS},01/01/2024,3,1.0,EU,n,text"  # `extra` was inferred int64 from block 1
    text = orders_csv(bad={ROWS: late})
    whole = _ingest(home, "whole", "orders.csv", text)
    with caplog.at_level(logging.WARNING, logger="hopper.ingest"):
        streamed = _ingest(home, "streamed", "orders.csv", text)
    [reason] = _fallbacks(caplog)
    assert "an undeclared column changes type" in reason
    _same_outputs(whole, streamed)
    table = pq.read_table(streamed.outputs[0])
    assert table.schema.field("extra").type == pa.string()


def test_headerless_tsv_streams(tmp_path: Path, small_blocks: None) -> None:
    contract = """\
name: {name}
format: tsv
reader: {{header: false}}
columns:
  - {{name: id, type: int64}}
  - {{name: word, type: string}}
{extra}"""
    home = _home(
        tmp_path,
        {
            "whole": contract.format(name="whole", extra=""),
            "streamed": contract.format(name="streamed", extra="stream_threshold_mb: 0\n"),
        },
    )
    text = "".join(f"{i}\tw{i}\t{i * 2}\n" for i in range(2000))
    whole = _ingest(home, "whole", "t.tsv", text)
    streamed = _ingest(home, "streamed", "t.tsv", text)
    _same_outputs(whole, streamed)
    assert pq.read_table(streamed.outputs[0]).column_names[:3] == ["id", "word", "f2"]


def test_rewrite_by_stream_replaces_the_earlier_output(tmp_path: Path, small_blocks: None) -> None:
    home = _pair(tmp_path)
    first = _ingest(home, "streamed", "orders.csv", orders_csv())
    second = _ingest(home, "streamed", "orders.csv", orders_csv(500))
    assert first.outputs == second.outputs
    assert pq.read_metadata(second.outputs[0]).num_rows == 500
    assert len(_leftovers(home)) == 1


def test_what_is_not_streamed(tmp_path: Path) -> None:
    home = _pair(tmp_path)
    streamed = load_contract(home.contract_path("streamed"))
    path = tmp_path / "orders.csv"
    path.write_text(orders_csv(10), encoding="utf-8")
    assert stream_refusal(path, streamed) is None
    assert "threshold" in (stream_refusal(path, load_contract(home.contract_path("whole"))) or "")
    unique = streamed.model_copy(
        update={"columns": [streamed.columns[0].model_copy(update={"unique": True})]}
    )
    assert "unique" in (stream_refusal(path, unique) or "")
    with_transform = streamed.model_copy(update={"transform": "mod:fn"})
    assert "transform" in (stream_refusal(path, with_transform) or "")
    jsonl = tmp_path / "orders.jsonl"
    jsonl.write_text('{"order id": 1}\n', encoding="utf-8")
    auto = streamed.model_copy(update={"format": "auto"})
    assert "jsonl" in (stream_refusal(jsonl, auto) or "")


def test_utf16_file_streams_like_the_whole_file_and_is_refused_clearly_without_encoding(
    tmp_path: Path, small_blocks: None
) -> None:
    home = _pair(tmp_path, extra="reader:\n  encoding: utf-16\n")
    text = orders_csv()
    whole = _ingest(home, "whole", "orders.csv", text, encoding="utf-16")
    streamed = _ingest(home, "streamed", "orders.csv", text, encoding="utf-16")
    assert whole.state == streamed.state == FileState.INGESTED, (whole.reason, streamed.reason)
    _same_outputs(whole, streamed)

    plain = _pair(tmp_path / "plain")  # the contract reads UTF-8
    refused = _ingest(plain, "streamed", "orders.csv", text, encoding="utf-16")
    assert refused.state == FileState.QUARANTINED
    assert "UTF-16 byte-order mark" in (refused.reason or "")
    assert "reader.encoding: utf-16" in (refused.reason or "")


def test_stream_rejects_a_ragged_last_block_as_unreadable(
    tmp_path: Path, small_blocks: None
) -> None:
    home = _pair(tmp_path)
    text = orders_csv(bad={ROWS: "1,2"})
    streamed = _ingest(home, "streamed", "orders.csv", text)
    assert streamed.state == FileState.QUARANTINED
    assert "field" in (streamed.reason or "") or "CSV" in (streamed.reason or "")
    assert _leftovers(home) == []


def test_lineage_columns_share_one_template(tmp_path: Path) -> None:
    from hopper.lineage import add_lineage

    table = add_lineage(pa.table({"x": list(range(700_000))}), "s3://b/k.csv", datetime.now(UTC))
    uris = table.column("_source_uri")
    assert uris.type == pa.string() and uris.num_chunks > 1
    assert len({chunk.buffers()[2].address for chunk in uris.chunks}) == 1
    assert uris.unique().to_pylist() == ["s3://b/k.csv"]


@pytest.mark.parametrize("rows", [0, 1, 100, 4096, 4097, 20_000])
@pytest.mark.parametrize("uri", ["file:///in/a.csv", "s3://b/" + "k" * 2000])
def test_lineage_columns_hold_the_same_values_made_directly_or_from_a_template(
    rows: int, uri: str
) -> None:
    from hopper.lineage import lineage_columns

    when = datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC)
    uris, stamps = lineage_columns(rows, uri, when)
    assert uris.type == pa.string() and stamps.type == pa.timestamp("us", tz="UTC")
    assert len(uris) == len(stamps) == rows
    assert uris.null_count == stamps.null_count == 0
    assert set(uris.to_pylist()) <= {uri} and set(stamps.to_pylist()) <= {when}


def test_types_are_made_portable_per_table_cutting_nanoseconds_keeping_metadata() -> None:
    from hopper.lineage import add_lineage

    when = datetime(2026, 12, 4, tzinfo=UTC)
    nanos = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", tz="UTC"))
    outputs = []
    for owner in ("first", "second"):  # same names and types: the second hits the cache
        field = pa.field("ts", nanos.type, metadata={"owner": owner})
        table = pa.table([nanos, pa.nulls(1)], schema=pa.schema(
            [field, pa.field("empty", pa.null())], metadata={"from": owner}
        ))  # fmt: skip
        outputs.append((owner, add_lineage(table, f"file:///in/{owner}.csv", when)))
    for owner, out in outputs:
        assert out.schema.field("ts").type == pa.timestamp("us", tz="UTC")
        assert out.column("ts").cast(pa.int64()).to_pylist() == [1_700_000_000_123_456]  # cut
        assert out.schema.field("empty").type == pa.string()
        assert out.schema.metadata == {b"from": owner.encode()}
        assert out.schema.field("ts").metadata == {b"owner": owner.encode()}
        assert out.column("_source_uri").to_pylist() == [f"file:///in/{owner}.csv"]
    plain = pa.table({"n": [1]})  # nothing to change: the columns are not copied
    out = add_lineage(plain, "file:///in/p.csv", when)
    assert (
        out.column("n").chunk(0).buffers()[1].address
        == plain.column("n").chunk(0).buffers()[1].address
    )


def test_a_row_longer_than_a_block_falls_back_to_the_whole_file(
    tmp_path: Path, small_blocks: None, caplog: pytest.LogCaptureFixture
) -> None:
    home = _pair(tmp_path)
    long_row = f'1000,01/01/2024,3,1.0,EU,"{"x" * (3 * BLOCK)}",1'
    text = orders_csv(bad={1000: long_row})
    whole = _ingest(home, "whole", "orders.csv", text)
    with caplog.at_level(logging.WARNING, logger="hopper.ingest"):
        streamed = _ingest(home, "streamed", "orders.csv", text)
    [reason] = _fallbacks(caplog)
    assert "a row is longer than" in reason
    _same_outputs(whole, streamed)


def test_too_many_partitions_fall_back_to_the_whole_file(
    tmp_path: Path,
    small_blocks: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sink_module, "MAX_STREAM_PARTITIONS", 2)
    home = _pair(tmp_path, extra="partition_by: [region]\n")
    text = orders_csv()
    whole = _ingest(home, "whole", "orders.csv", text)
    with caplog.at_level(logging.WARNING, logger="hopper.ingest"):
        streamed = _ingest(home, "streamed", "orders.csv", text)
    [reason] = _fallbacks(caplog)
    assert "more than 2 partitions" in reason
    _same_outputs(whole, streamed)
    assert not [p for p in Path(home.lake.path).rglob(".*")]
