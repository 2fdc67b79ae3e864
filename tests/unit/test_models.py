from pathlib import Path

import pytest

from hopper.models import FileRef, FileState


def test_fingerprint_prefers_etag_then_hash_then_stat() -> None:
    s3 = FileRef(uri="s3://b/k.csv", size=1, mtime=1.0, etag='"abc"', version_id="v1")
    assert s3.fingerprint == "etag:abc:v1"
    hashed = FileRef(uri="file:///x.csv", size=1, mtime=1.0, sha256="ff")
    assert hashed.fingerprint == "sha256:ff"
    bare = FileRef(uri="file:///x.csv", size=10, mtime=1.5)
    assert bare.fingerprint == "stat:10:1500000"


def test_local_path_and_name(tmp_path: Path) -> None:
    path = tmp_path / "my file #1.csv"
    ref = FileRef(uri=path.as_uri(), size=0, mtime=0)
    assert ref.local_path() == path
    assert ref.name == "my file #1.csv"
    with pytest.raises(ValueError):
        FileRef(uri="s3://b/k", size=0, mtime=0).local_path()


def test_final_states() -> None:
    assert FileState.INGESTED.is_final and FileState.QUARANTINED.is_final
    assert not FileState.DISPATCHED.is_final
