"""Replay of a cleaned-up S3 source, against moto: the archived object comes back to its key
as the same version and lands in the same output; a deleted one, or one whose archived copy
is gone too, is refused saying the source is gone; the run reads only under its source.

The real :class:`~hopper.cleanup.Cleaner`, :func:`~hopper.replay.dispatch_replay` and
:func:`~hopper.ingest.ingest` run against the session's moto server (Arrow's S3 file system,
which the archive's store uses, is not reached by moto's in-process ``mock_aws``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from hopper.cleanup import CLAIM_SUFFIX, Cleaner, lazy_clients
from hopper.config import HopperConfig, load_config
from hopper.errors import HopperError, SourceGoneError
from hopper.ingest import ingest
from hopper.ledger import FileRecord, Ledger, sqlite_url
from hopper.lineage import SOURCE_URI
from hopper.models import FileRef, FileState, IngestRequest
from hopper.replay import dispatch_replay, run_replay, selection
from hopper.storage import parse_s3_uri
from tests.conftest import CONTRACT

if TYPE_CHECKING:
    from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration

TEXT = "id,full name,score\n1,Ada,1.5\n2,Grace,2.5\n"
KEY = "incoming/people/a.csv"


def _home(tmp_path: Path, moto: MotoServer, landing: str, after: str = "archive") -> HopperConfig:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "people.yaml").write_text(CONTRACT)
    archive = moto.bucket("archive")
    (tmp_path / "hopper.yaml").write_text(
        "sources:\n"
        f"  - type: s3\n    bucket: {landing}\n    prefix: incoming/\n    mode: listing\n"
        f"    after_ingest: {after}\n"
        f"archive: s3://{archive}/done\n"
        "lake: lake\nquarantine: quarantine\ndatasets_dir: datasets\nstate_dir: .hopper\n"
        f"s3:\n  endpoint_url: {moto.endpoint}\n"
    )
    return load_config(tmp_path / "hopper.yaml")


def _put(moto: MotoServer, bucket: str, text: str = TEXT) -> FileRef:
    """Upload the object and describe it as the watcher would."""
    moto.s3.put_object(Bucket=bucket, Key=KEY, Body=text.encode())
    head = moto.s3.head_object(Bucket=bucket, Key=KEY)
    version = head.get("VersionId")
    return FileRef(
        uri=f"s3://{bucket}/{KEY}",
        size=int(head["ContentLength"]),
        mtime=head["LastModified"].timestamp(),
        dataset="people",
        etag=str(head["ETag"]).strip('"'),
        version_id=version if version and version != "null" else None,
    )


class Runs:
    """Prefect as far as a replay needs it: each run ingests its file at once, for real."""

    api_url = "http://prefect.invalid/api"

    def __init__(self, config: HopperConfig, ledger: Ledger, s3: Any) -> None:
        self.config, self.ledger, self.s3 = config, ledger, s3
        self.requests: list[IngestRequest] = []

    def healthy(self) -> bool:
        return True

    def create_ingest_run(self, parameters: dict[str, Any], idempotency_key: str) -> str:
        request = IngestRequest.model_validate(parameters["request"])
        self.requests.append(request)
        run_id = f"run-{len(self.requests) + 1}"
        assert self.ledger.claim(request.ref, run_id, replay=request.replay)
        outcome = ingest(request, self.config, flow_run_id=run_id, s3=self.s3, isolate=False)
        self.ledger.finish(outcome, run_id)
        return run_id


def _ingest_first(config: HopperConfig, ledger: Ledger, ref: FileRef, s3: Any) -> None:
    ledger.record_detected(ref)
    assert ledger.claim(ref, "run-1")
    outcome = ingest(
        IngestRequest(ref=ref, dispatch_id="d-1"), config, flow_run_id="run-1", s3=s3, isolate=False
    )
    assert outcome.state is FileState.INGESTED, outcome.reason
    ledger.finish(outcome, "run-1")


def _record(ledger: Ledger, ref: FileRef) -> FileRecord:
    record = ledger.get(ref.uri, ref.fingerprint)
    assert record is not None
    return record


def _lake(config: HopperConfig) -> dict[str, list[Any]]:
    """Each lake file and the ``_source_uri`` of its rows."""
    files = sorted(Path(config.lake.path).rglob("*.parquet"))
    return {str(f): pq.read_table(f).column(SOURCE_URI).to_pylist() for f in files}


def _keys(moto: MotoServer, bucket: str) -> list[str]:
    listing = moto.s3.list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(sqlite_url(tmp_path / "state"))


def _cleaned(
    tmp_path: Path,
    moto: MotoServer,
    ledger: Ledger,
    after: str = "archive",
    versioned: bool = False,
) -> tuple[str, HopperConfig, FileRef, FileRecord]:
    """An object ingested, then cleaned up (``after``): its bucket, home, ref and record."""
    landing = moto.bucket()
    if versioned:
        moto.s3.put_bucket_versioning(Bucket=landing, VersioningConfiguration={"Status": "Enabled"})
    config = _home(tmp_path, moto, landing, after=after)
    ref = _put(moto, landing)
    _ingest_first(config, ledger, ref, moto.s3)
    assert Cleaner(config, ledger, lazy_clients(config)).tick() == 1
    return landing, config, ref, _record(ledger, ref)


def test_an_archived_object_comes_back_as_the_same_version_and_lands_again(
    tmp_path: Path, moto: MotoServer, ledger: Ledger
) -> None:
    landing = moto.bucket()
    config = _home(tmp_path, moto, landing)
    ref = _put(moto, landing)
    _ingest_first(config, ledger, ref, moto.s3)
    lake_before = _lake(config)
    assert lake_before and all(uris == [ref.uri] * 2 for uris in lake_before.values())

    cleaner = Cleaner(config, ledger, lazy_clients(config))
    assert cleaner.tick() == 1
    record = _record(ledger, ref)
    archive_bucket, archive_key = parse_s3_uri(record.archived_uri or "")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert (record.cleanup, archive_key) == ("archived", f"done/people/{day}/a.csv")
    assert _keys(moto, landing) == []

    runs = Runs(config, ledger, moto.s3)
    sent, run_id = dispatch_replay(record, config, ledger, runs)

    # The run was sent the version itself, under its source, and read the archived bytes.
    (request,) = runs.requests
    assert request.replay and (request.ref.uri, request.ref.fingerprint) == (
        ref.uri,
        ref.fingerprint,
    )
    assert (sent.uri, sent.fingerprint) == (ref.uri, ref.fingerprint)
    head = moto.s3.head_object(Bucket=landing, Key=KEY)
    assert str(head["ETag"]).strip('"') == ref.etag
    assert moto.s3.get_object(Bucket=landing, Key=KEY)["Body"].read() == TEXT.encode()
    assert _keys(moto, archive_bucket) == []  # the copy and its claim moved back
    after = _record(ledger, ref)
    assert (after.state, after.flow_run_id) == (FileState.INGESTED, run_id)
    assert len(ledger.versions(ref.uri)) == 1
    assert _lake(config) == lake_before  # the same output, lineage still the original URI

    # Once it has landed again it is archived again, as a local file is.
    assert cleaner.tick() == 1
    again = _record(ledger, ref)
    assert (again.cleanup, again.archived_uri) == ("archived", record.archived_uri)
    assert _keys(moto, landing) == []
    assert _keys(moto, archive_bucket) == [archive_key, archive_key + CLAIM_SUFFIX]


def test_a_versioned_object_comes_back_as_its_own_version(
    tmp_path: Path, moto: MotoServer, ledger: Ledger
) -> None:
    landing, config, ref, record = _cleaned(tmp_path, moto, ledger, versioned=True)
    assert ref.version_id
    assert record.cleanup == "archived"

    runs = Runs(config, ledger, moto.s3)
    dispatch_replay(record, config, ledger, runs)
    head = moto.s3.head_object(Bucket=landing, Key=KEY)
    assert head["VersionId"] == ref.version_id  # the very version, not a copy of it
    assert _record(ledger, ref).state is FileState.INGESTED
    assert len(ledger.versions(ref.uri)) == 1


def test_a_copy_that_would_be_a_new_version_is_undone_and_refused(
    tmp_path: Path, moto: MotoServer, ledger: Ledger
) -> None:
    landing, config, ref, record = _cleaned(tmp_path, moto, ledger)
    bucket, key = parse_s3_uri(record.archived_uri or "")
    moto.s3.put_object(Bucket=bucket, Key=key, Body=b"id,full name,score\n9,Other,0\n")

    runs = Runs(config, ledger, moto.s3)
    with pytest.raises(HopperError, match="would be a new version") as caught:
        dispatch_replay(record, config, ledger, runs)
    assert not isinstance(caught.value, SourceGoneError)
    assert runs.requests == [] and _keys(moto, landing) == []
    assert key in _keys(moto, bucket)  # the archived copy stays
    assert _record(ledger, ref).state is FileState.INGESTED


def test_a_deleted_object_is_refused_saying_the_source_is_gone(
    tmp_path: Path, moto: MotoServer, ledger: Ledger
) -> None:
    landing, config, ref, _ = _cleaned(tmp_path, moto, ledger, after="delete")
    assert _record(ledger, ref).cleanup == "deleted" and _keys(moto, landing) == []

    runs = Runs(config, ledger, moto.s3)
    with pytest.raises(
        SourceGoneError, match=r"deleted after ingestion on .* by after_ingest: delete"
    ):
        run_replay(ledger, config, runs, selection([ref.uri]))
    assert runs.requests == []
    assert _record(ledger, ref).state is FileState.INGESTED


def test_an_archived_object_whose_copy_is_gone_too_is_refused(
    tmp_path: Path, moto: MotoServer, ledger: Ledger
) -> None:
    landing, config, ref, record = _cleaned(tmp_path, moto, ledger)
    bucket, key = parse_s3_uri(record.archived_uri or "")
    moto.s3.delete_object(Bucket=bucket, Key=key)

    runs = Runs(config, ledger, moto.s3)
    with pytest.raises(SourceGoneError, match="the source is gone and its archived copy s3://"):
        run_replay(ledger, config, runs, selection([ref.uri]))
    assert runs.requests == [] and _keys(moto, landing) == []


def test_a_run_never_reads_the_archive_itself(
    tmp_path: Path, moto: MotoServer, ledger: Ledger
) -> None:
    """A forged run naming the archived copy is refused: replays read under the source."""
    _, config, ref, _ = _cleaned(tmp_path, moto, ledger)
    lake_before = _lake(config)
    archived = _record(ledger, ref).archived_uri or ""
    forged = ref.model_copy(update={"uri": archived})
    outcome = ingest(
        IngestRequest(ref=forged, dispatch_id="d-forged", replay=True),
        config,
        s3=moto.s3,
        isolate=False,
    )
    assert outcome.state is FileState.FAILED
    assert outcome.reason and "not under any source" in outcome.reason
    assert _lake(config) == lake_before
    assert not (tmp_path / "quarantine").exists() or not any(
        p.is_file() for p in (tmp_path / "quarantine").rglob("*")
    )
