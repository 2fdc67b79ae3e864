"""The storage seam: the local store's promises, and that policy never asks where it writes.

The S3 store keeps the same promises against moto in tests/integration/test_s3_storage.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pyarrow as pa
import pytest

from hopper.stores import LocalStore, store_for
from hopper.stores.s3 import S3Store

SRC = Path(__file__).resolve().parents[2] / "src" / "hopper"


def test_the_factory_is_the_one_place_that_tells_places_apart() -> None:
    assert isinstance(store_for("/data/lake"), LocalStore)
    assert isinstance(store_for("s3://lake/tables", object()), S3Store)
    store_for("s3://lake/tables").prepare("s3://lake/tables")  # no client needed for that
    with pytest.raises(ValueError, match="S3 client"):
        store_for("s3://lake/tables").exists("s3://lake/tables/a.parquet")


def _callers_of(name: str) -> set[str]:
    found = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                found.add(str(path.relative_to(SRC)))
    return found


def test_no_is_s3_branch_outside_the_stores() -> None:
    assert _callers_of("is_s3") == set()
    asking = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if 'startswith("s3://")' in path.read_text(encoding="utf-8")
    }
    # Only the stores and the AWS plumbing (parsing and fetching s3:// URIs) tell places apart.
    assert {p for p in asking if not p.startswith("stores/")} == {"storage.py"}


def test_the_stores_import_no_policy() -> None:
    for path in (SRC / "stores").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"hopper.sink", "hopper.staging", "hopper.ingest", "hopper.config"}


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    store, target = LocalStore(), str(tmp_path / "a" / "b.bin")
    store.write_atomic(target, lambda out: out.write(b"first"))

    def half(out: pa.NativeFile) -> None:
        out.write(b"sec")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store.write_atomic(target, half)
    assert Path(target).read_bytes() == b"first"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin"]  # no temp left


def test_a_failed_stream_leaves_no_file(tmp_path: Path) -> None:
    store, target = LocalStore(), str(tmp_path / "s" / "0.staged")
    with pytest.raises(RuntimeError), store.open_output(target) as out:
        out.write(b"part")
        raise RuntimeError("rejected")
    assert not Path(target).exists()
    with store.open_output(target) as out:
        out.write(b"whole")
    assert Path(target).read_bytes() == b"whole"


def test_a_claim_is_taken_once_and_shows_its_holder(tmp_path: Path) -> None:
    store, name = LocalStore(), str(tmp_path / "q" / "a.csv.error.json")
    assert store.claim(name, b"mine") is None
    assert store.claim(name, b"yours") == b"mine"
    assert Path(name).read_bytes() == b"mine"


def test_find_and_list(tmp_path: Path) -> None:
    store = LocalStore()
    for rel in ("d/x=1/a.parquet", "d/x=2/a.parquet", "d/a.parquet", "d/x=1/b.parquet"):
        store.put_text(str(tmp_path / rel), rel)
    found = store.find(str(tmp_path / "d"), "a.parquet", 1)
    assert sorted(found) == [str(tmp_path / "d/x=1/a.parquet"), str(tmp_path / "d/x=2/a.parquet")]
    assert store.find(str(tmp_path / "d"), "a.parquet", 0) == [str(tmp_path / "d/a.parquet")]
    listed = store.list_files(str(tmp_path / "d" / "x="))
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in listed) == [
        "d/x=1/a.parquet",
        "d/x=1/b.parquet",
        "d/x=2/a.parquet",
    ]
    store.delete_folder(str(tmp_path / "d" / "x=1"))
    store.prune([str(tmp_path / "d/x=2/a.parquet")], str(tmp_path))  # not empty: kept
    assert store.read_text(str(tmp_path / "d/x=2/a.parquet")) == "d/x=2/a.parquet"
    assert store.read_text(str(tmp_path / "d/x=1/a.parquet")) is None
