"""Containment: whatever a file or S3 key is called, what Hopper writes stays in its roots.

Every hostile name is pushed through the functions that turn a source name into a path —
lake outputs (whole and streamed), temporary files, quarantine copies and reason files,
rejected rows, local copies of S3 objects — and each result must resolve inside its root
(local) or stay under its prefix without a ``..`` segment (S3), in a name the filesystem
accepts (at most 255 bytes).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pytest

from hopper.config import DATASET_NAME, HopperConfig, RoutingRule, S3Source
from hopper.errors import SourceGoneError, UnreadableFileError
from hopper.ingest import ingest
from hopper.models import FileRef, FileState, IngestRequest
from hopper.routing import route
from hopper.sink import (
    StreamingOutputs,
    output_path,
    partition_dir,
    quarantine_file,
    write_outputs,
    write_rejected_rows,
)
from hopper.storage import fetch_to_local, local_name
from hopper.stores import s3 as stores_s3
from hopper.stores.local import temp_path
from hopper.watch.s3 import object_ref

WHEN = datetime(2024, 5, 1, tzinfo=UTC)

HOSTILE = {
    "dotdot": "../../../etc/passwd",
    "dotdot-only": "..",
    "dot-only": ".",
    "absolute": "/etc/cron.d/evil.csv",
    "backslashes": "..\\..\\windows\\system32\\evil.csv",
    "newline": "line\nbreak.csv",
    "carriage-return": "cr\rname.csv",
    "nul": "nul\x00byte.csv",
    "control-chars": "bell\x07esc\x1b[31mred.csv",
    "rtl-override": "invoice\u202ev[s]c.exe.csv",
    "combining": "e\u0301\u0301\u0301\u0301.csv",
    "fullwidth-dots": "\uff0e\uff0e\uff0fescape.csv",
    "leading-dash": "-rf --no-preserve-root.csv",
    "hidden": ".hidden.csv",
    "spaces-only": "   ",
    "long-ascii": "a" * 300 + ".csv",
    "long-utf8": "é" * 200 + ".csv.gz",  # 400 bytes
    "percent": "%2e%2e%2fx.csv",
    "url-ish": "x?y#z.csv",
    "slash-end": "folder/",
}
NAMES = pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _fits(path: Path | str) -> bool:
    return all(len(part.encode()) <= 255 for part in PurePosixPath(str(path)).parts)


def _key_under(uri: str, prefix: str) -> bool:
    assert uri.startswith("s3://")
    key = uri.removeprefix("s3://")
    return key.startswith(prefix) and ".." not in key.split("/") and _fits(key)


class RecordingS3:
    """Stands in for boto3: records the keys Hopper writes (the paths are what is tested)."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def upload_file(self, _local: str, bucket: str, key: str, **_: Any) -> None:
        self.keys.append(f"{bucket}/{key}")

    def put_object(self, *, Bucket: str, Key: str, **_: Any) -> None:
        self.keys.append(f"{Bucket}/{Key}")

    def copy(self, _src: dict[str, str], bucket: str, key: str, **_: Any) -> None:
        self.keys.append(f"{bucket}/{key}")

    def delete_object(self, *, Bucket: str, Key: str) -> None:
        pass

    def get_paginator(self, _name: str) -> Any:
        class Pages:
            def paginate(self, **_: Any) -> list[dict[str, Any]]:
                return [{"Contents": []}]

        return Pages()


class RecordingArrowS3:
    """Stands in for Arrow's S3 file system: records the keys streamed to, lists nothing."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def open_output_stream(self, path: str, metadata: Any = None) -> pa.NativeFile:
        self.keys.append(path)
        return pa.BufferOutputStream()

    def get_file_info(self, _selector: Any) -> list[Any]:
        return []


def _uri(name: str) -> str:
    return "file:///inbox/people/" + quote(name, safe="")


TABLE = pa.table({"id": [1, 2], "region": ["../../x", "a/b\\c\n"]})


@NAMES
def test_lake_paths_stay_in_the_lake(tmp_path: Path, name: str) -> None:
    lake = tmp_path / "lake"
    for partition in ("", partition_dir([("region", "../../x")]), partition_dir([("..", "..")])):
        target = Path(output_path(lake, "people", partition, name, _uri(name)))
        assert _inside(target, lake) and _fits(target)
        assert _inside(temp_path(target), target.parent) and _fits(temp_path(target))
    written = write_outputs(
        TABLE, lake=str(lake), dataset="people", partition_by=["region"],
        source_name=name, uri=_uri(name),
    )  # fmt: skip
    assert len(written) == 2 and all(_inside(Path(p), lake) for p in written)
    with StreamingOutputs(
        lake=lake, dataset="people", partition_by=[], source_name=name, uri=_uri(name) + "s"
    ) as out:
        out.write(TABLE)
        (streamed,) = out.commit()
    assert _inside(Path(streamed), lake)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(_inside(p, lake) and not p.name.startswith(".") for p in files)


@NAMES
def test_quarantine_and_rejected_rows_stay_in_the_quarantine(tmp_path: Path, name: str) -> None:
    quarantine = tmp_path / "q"
    source = tmp_path / "src.csv"  # the local copy; its hostile name is in the URI
    source.write_text("id\n1\n")
    copy = quarantine_file(
        source_uri=_uri(name), local_copy=source, quarantine=str(quarantine),
        dataset="people", when=WHEN, reason={"reason": "bad"},
    )  # fmt: skip
    rejected = write_rejected_rows(
        TABLE, quarantine=str(quarantine), dataset="people", source_name=name,
        uri=_uri(name), when=WHEN,
    )  # fmt: skip
    for path in (Path(copy), Path(copy + ".error.json"), Path(rejected)):
        assert path.is_file() and _inside(path, quarantine) and _fits(path)
    written = [p for p in quarantine.rglob("*") if p.is_file()]
    assert len(written) == 3 and all(
        p.parent == quarantine / "people" / "2024-05-01" for p in written
    )


@NAMES
def test_s3_keys_stay_under_their_prefixes(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = RecordingS3()
    monkeypatch.setattr(stores_s3, "arrow_filesystem", lambda _client: RecordingArrowS3(s3.keys))
    src = f"s3://landing/incoming/people/{name}"
    target = quarantine_file(
        source_uri=src, local_copy=None, quarantine="s3://q/quarantine",
        dataset="people", when=WHEN, reason={}, s3=s3,
    )  # fmt: skip
    assert _key_under(target, "q/quarantine/people/2024-05-01/")
    rejected = write_rejected_rows(
        TABLE, quarantine="s3://q/quarantine", dataset="people", source_name=name,
        uri=src, when=WHEN, s3=s3,
    )  # fmt: skip
    assert _key_under(rejected, "q/quarantine/people/2024-05-01/")
    written = write_outputs(
        TABLE, lake="s3://lake/tables", dataset="people", partition_by=["region"],
        source_name=name, uri=src, s3=s3,
    )  # fmt: skip
    assert all(_key_under(uri, "lake/tables/people/") for uri in written)
    # the quarantine name's claim (its reason key), the copy, the reason; rejected rows;
    # 2 outputs, each staged then copied into place, and the publish journal
    assert len(s3.keys) == 9 and len(set(s3.keys)) == 8
    staged = [k for k in s3.keys if k.startswith("lake/tables/_staging/people/")]
    assert len(staged) == 3 and all(_key_under("s3://" + k, "lake/") for k in staged)
    assert all(_key_under("s3://" + key, key.split("/", 1)[0] + "/") for key in s3.keys)


@NAMES
def test_local_copy_of_an_s3_object_stays_in_its_temp_folder(tmp_path: Path, name: str) -> None:
    local = tmp_path / "t" / local_name("incoming/people/" + name)
    assert local.parent == tmp_path / "t" and _inside(local, tmp_path / "t") and _fits(local)
    assert "\x00" not in local.name and "\\" not in local.name


@NAMES
def test_routing_never_yields_a_path_as_dataset(name: str) -> None:
    rules = [RoutingRule(glob="special/*.csv", dataset="special")]
    for relative in (name, f"people/{name}", f"{name}/x.csv", f"{name}/{name}"):
        dataset = route(relative, rules)
        assert dataset is None or DATASET_NAME.fullmatch(dataset)
    source = S3Source(bucket="landing", prefix="incoming/")
    for key in (f"incoming/{name}/x.csv", f"incoming/people/{name}", f"incoming/../{name}"):
        ref = object_ref(
            source, key, size=1, mtime=0, etag="e", version_id=None, rules=rules, ignore=[]
        )
        assert ref is None or ref.dataset is None or DATASET_NAME.fullmatch(ref.dataset)


@pytest.mark.parametrize("dataset", ["people\n", "../people", "/abs", "Peo ple", "a" * 64, ""])
def test_file_refs_refuse_a_dataset_that_is_not_a_name(dataset: str) -> None:
    with pytest.raises(ValueError, match="dataset name"):
        FileRef(uri="file:///x.csv", size=1, mtime=0, dataset=dataset)
    with pytest.raises(ValueError):
        RoutingRule(glob="*", dataset=dataset)
    assert route(f"{dataset}/x.csv", []) is None


def test_a_symlink_swapped_in_is_not_read_or_copied(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("id\nTOP-SECRET\n")
    link = tmp_path / "inbox" / "people" / "link.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with (
        pytest.raises(UnreadableFileError, match="symbolic link"),
        fetch_to_local(link.as_uri(), None),
    ):
        pass
    quarantine = tmp_path / "q"
    copy = quarantine_file(
        source_uri=link.as_uri(), local_copy=link, quarantine=str(quarantine),
        dataset="people", when=WHEN, reason={"reason": "x"},
    )  # fmt: skip
    assert not Path(copy).exists()
    assert "symbolic link" in Path(copy + ".error.json").read_text()
    assert not any("TOP-SECRET" in p.read_text() for p in quarantine.rglob("*") if p.is_file())


def test_a_fetch_reads_only_a_regular_file_or_a_link_its_source_follows(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "folder.csv").mkdir(parents=True)
    real = inbox / "real.csv"
    real.write_text("id\n1\n")
    link = inbox / "link.csv"
    link.symlink_to(real)
    with fetch_to_local(real.as_uri(), None) as path:
        assert path == real
    with fetch_to_local(link.as_uri(), None, follow=lambda _link: True) as path:
        assert path == real.resolve()
    refused = fetch_to_local(link.as_uri(), None, follow=lambda _link: False)
    with pytest.raises(UnreadableFileError, match="symbolic link"), refused:
        pass
    gone = [inbox / "gone.csv", inbox / "folder.csv", real / "under-a-file.csv"]
    for uri in [p.as_uri() for p in gone]:
        with pytest.raises(SourceGoneError, match="is gone"), fetch_to_local(uri, None):
            pass


@pytest.mark.parametrize(
    "name",
    [HOSTILE[k] for k in ("long-ascii", "long-utf8", "newline", "rtl-override", "leading-dash")]
    + ["b" * 251 + ".csv"],  # the longest name a file can have: 255 bytes
    ids=["long-ascii", "long-utf8", "newline", "rtl-override", "leading-dash", "255-bytes"],
)
def test_ingest_of_a_hostile_name_quarantines_inside_the_home(
    home: HopperConfig, name: str
) -> None:
    folder = home.sources[0].path / "people"
    folder.mkdir(parents=True, exist_ok=True)
    name = name if len(name.encode()) <= 255 else name.encode()[:250].decode(errors="ignore")
    path = folder / name
    path.write_text("id,full name,score\nnot-a-number,a,1\n")
    st = path.stat()
    ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset="people")
    outcome = ingest(IngestRequest(ref=ref, dispatch_id="d"), home)
    assert outcome.state == FileState.QUARANTINED, outcome.reason
    assert outcome.quarantine_path and _inside(Path(outcome.quarantine_path), Path(home.quarantine))
    reason = json.loads(Path(outcome.quarantine_path + ".error.json").read_text())
    assert reason["uri"] == ref.uri and "not-a-number" in reason["reason"]
    root = Path(home.sources[0].path).parent
    for dirpath, _dirs, files in os.walk(root):
        for file in files:
            full = Path(dirpath) / file
            assert (
                any(
                    _inside(full, Path(r))
                    for r in (
                        home.sources[0].path,
                        home.quarantine,
                        home.state_dir,
                        home.datasets_dir,
                    )
                )
                or full.name == "hopper.yaml"
            ), full
