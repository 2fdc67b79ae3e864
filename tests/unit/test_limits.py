"""Resource limits: oversized files, decompression bombs and absurd column counts end in
quarantine with a reason — nothing is inflated, nothing reaches the lake."""

from __future__ import annotations

import gzip
from pathlib import Path

from hopper.config import HopperConfig
from hopper.ingest import ingest
from hopper.models import FileRef, FileState, IngestRequest


def _ingest(home: HopperConfig, path: Path, limits: str) -> tuple[FileState, str]:
    contract = Path(home.datasets_dir) / "people.yaml"
    contract.write_text(contract.read_text() + limits)
    st = path.stat()
    ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset="people")
    outcome = ingest(IngestRequest(ref=ref, dispatch_id="d"), home)
    assert not list(Path(home.lake).rglob("*.parquet"))
    return outcome.state, outcome.reason or ""


def _file(home: HopperConfig, name: str) -> Path:
    path = home.sources[0].path / "people" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_file_over_max_file_mb(home: HopperConfig) -> None:
    path = _file(home, "big.csv")
    path.write_text("id,full name,score\n" + "1,abcdefghij,1.5\n" * 80_000)  # ≈ 1.3 MB
    state, reason = _ingest(home, path, "max_file_mb: 1\n")
    assert state == FileState.QUARANTINED and "max_file_mb" in reason


def test_gzip_bomb_is_refused_without_inflating_it(home: HopperConfig) -> None:
    path = _file(home, "bomb.csv.gz")
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b"id,full name,score\n")
        row = b"1,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,1.5\n"
        for _ in range(200):
            out.write(row * 10_000)  # ≈ 100 MB decompressed, ~100 KB compressed
    state, reason = _ingest(home, path, "max_decompression_ratio: 50\n")
    assert state == FileState.QUARANTINED and "decompression bomb" in reason


def test_too_many_columns(home: HopperConfig) -> None:
    path = _file(home, "wide.csv")
    extra = [f"c{i}" for i in range(50)]
    path.write_text(
        "id,full name,score," + ",".join(extra) + "\n1,a,1.5," + ",".join("1" * 50) + "\n"
    )
    state, reason = _ingest(home, path, "max_columns: 20\n")
    assert state == FileState.QUARANTINED and "max_columns" in reason
