"""Source clean-up on real folders and a real ledger: what is archived or deleted, when,
under which name, what is left alone, how a crash is finished, and replay's way back."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hopper.cleanup import CLAIM_SUFFIX, Cleaner, bring_back, lazy_clients, replay_refusal
from hopper.config import FolderSource, HopperConfig
from hopper.errors import ConfigError, SourceGoneError
from hopper.files import describe_file
from hopper.ledger import FileRecord, Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome


def _config(tmp_path: Path, after: str = "archive", **more: object) -> HopperConfig:
    source = FolderSource(path=Path("inbox"), after_ingest=after)  # type: ignore[arg-type]
    return HopperConfig(sources=[source], **more).resolved(tmp_path)  # type: ignore[arg-type]


def _drop(config: HopperConfig, name: str, text: str = "id\n1\n", dataset: str = "sales") -> Path:
    path = config.sources[0].path / dataset / name  # type: ignore[union-attr]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _settle(ledger: Ledger, path: Path, state: FileState = FileState.INGESTED) -> FileRef:
    ref = describe_file(path, f"sales/{path.name}", [])
    assert ref is not None
    ledger.claim(ref, "run-1")
    outcome = IngestOutcome(uri=ref.uri, fingerprint=ref.fingerprint, dataset="sales", state=state)
    ledger.finish(outcome, "run-1")
    return ref


def _record(ledger: Ledger, ref: FileRef) -> FileRecord:
    record = ledger.get(ref.uri, ref.fingerprint)
    assert record is not None
    return record


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(sqlite_url(tmp_path / ".hopper"))


def test_an_ingested_file_is_archived_under_its_dataset_and_day(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = _config(tmp_path)
    path = _drop(config, "a.csv")
    ref = _settle(ledger, path)
    cleaner = Cleaner(config, ledger, lazy_clients(config))
    assert cleaner.active
    assert cleaner.tick() == 1
    target = tmp_path / "archive" / "sales" / _today() / "a.csv"
    assert not path.exists() and target.read_text() == "id\n1\n"
    claim = json.loads((target.parent / f"a.csv{CLAIM_SUFFIX}").read_text())
    assert (claim["uri"], claim["fingerprint"]) == (ref.uri, ref.fingerprint)
    record = _record(ledger, ref)
    assert (record.state, record.cleanup) == (FileState.INGESTED, "archived")
    assert record.archived_uri == target.as_uri()
    assert ledger.history(ref.uri)[-1]["event"] == "archived"
    assert cleaner.tick() == 0  # settled once


def test_quarantined_and_failed_files_stay_where_they_are(tmp_path: Path, ledger: Ledger) -> None:
    config = _config(tmp_path)
    bad = _drop(config, "bad.csv")
    lost = _drop(config, "lost.csv", "id\n2\n")
    _settle(ledger, bad, FileState.QUARANTINED)
    _settle(ledger, lost, FileState.FAILED)
    pending = _drop(config, "new.csv", "id\n3\n")
    ref = describe_file(pending, "sales/new.csv", [])
    assert ref is not None
    ledger.record_detected(ref)
    assert Cleaner(config, ledger, lazy_clients(config)).tick() == 0
    assert bad.exists() and lost.exists() and pending.exists()
    assert not (tmp_path / "archive").exists()


def test_a_file_changed_since_its_ingestion_is_left_alone(tmp_path: Path, ledger: Ledger) -> None:
    config = _config(tmp_path)
    path = _drop(config, "a.csv")
    ref = _settle(ledger, path)
    path.write_text("id\n1\n2\n")  # a new version arrived before the clean-up
    assert Cleaner(config, ledger, lazy_clients(config)).tick() == 1
    assert path.read_text() == "id\n1\n2\n"
    assert _record(ledger, ref).cleanup == "changed"
    assert not any(p.is_file() for p in (tmp_path / "archive").rglob("*"))


def test_a_name_taken_in_the_archive_gets_a_version_id(tmp_path: Path, ledger: Ledger) -> None:
    config = _config(tmp_path)
    cleaner = Cleaner(config, ledger, lazy_clients(config))
    first = _drop(config, "a.csv")
    _settle(ledger, first)
    cleaner.tick()
    again = _drop(config, "a.csv", "id\n9\n")  # dropped again, new content: a new version
    ref = _settle(ledger, again)
    assert cleaner.tick() == 1
    day = tmp_path / "archive" / "sales" / _today()
    data = sorted(p.name for p in day.iterdir() if not p.name.endswith(CLAIM_SUFFIX))
    assert len(data) == 2 and "a.csv" in data
    other = next(n for n in data if n != "a.csv")
    assert other.startswith("a-") and other.endswith(".csv")
    assert (day / other).read_text() == "id\n9\n"
    assert _record(ledger, ref).archived_uri == (day / other).as_uri()


def test_a_clean_up_interrupted_after_the_move_is_finished_once(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = _config(tmp_path)
    path = _drop(config, "a.csv")
    ref = _settle(ledger, path)
    cleaner = Cleaner(config, ledger, lazy_clients(config))
    record = _record(ledger, ref)
    # The watcher died after moving the file, before the ledger heard of it.
    marked: list[str] = []
    ledger_mark = ledger.mark_cleaned
    ledger.mark_cleaned = lambda *a, **k: marked.append(a[2]) or False  # type: ignore[method-assign]
    cleaner.clean(record)
    ledger.mark_cleaned = ledger_mark  # type: ignore[method-assign]
    assert marked == ["archived"] and not path.exists()
    assert _record(ledger, ref).cleaned_at is None
    assert cleaner.tick() == 1  # the next tick finds its own copy and records it
    record = _record(ledger, ref)
    assert record.cleanup == "archived"
    assert len([h for h in ledger.history(ref.uri) if h["event"] == "archived"]) == 1


def test_a_copy_made_but_its_source_not_removed_is_finished(tmp_path: Path, ledger: Ledger) -> None:
    """As after a copy-then-delete (S3, or across file systems) killed in between."""
    config = _config(tmp_path)
    path = _drop(config, "a.csv")
    ref = _settle(ledger, path)
    day = tmp_path / "archive" / "sales" / _today()
    day.mkdir(parents=True)
    claim = {"uri": ref.uri, "fingerprint": ref.fingerprint}
    (day / f"a.csv{CLAIM_SUFFIX}").write_text(json.dumps(claim))
    (day / "a.csv").write_text("id\n1\n")
    assert Cleaner(config, ledger, lazy_clients(config)).tick() == 1
    assert not path.exists()
    assert _record(ledger, ref).archived_uri == (day / "a.csv").as_uri()


def test_delete_removes_the_source_and_a_replay_says_so(tmp_path: Path, ledger: Ledger) -> None:
    config = _config(tmp_path, after="delete")
    path = _drop(config, "a.csv")
    ref = _settle(ledger, path)
    assert Cleaner(config, ledger, lazy_clients(config)).tick() == 1
    assert not path.exists() and not (tmp_path / "archive").exists()
    record = _record(ledger, ref)
    assert record.cleanup == "deleted"
    refusal = replay_refusal(record)
    assert refusal and f"deleted after ingestion on {_today()} by after_ingest: delete" in refusal
    with pytest.raises(SourceGoneError, match="by after_ingest: delete"):
        bring_back(record, config, lazy_clients(config))


def test_keep_cleans_nothing(tmp_path: Path, ledger: Ledger) -> None:
    config = _config(tmp_path, after="keep")
    path = _drop(config, "a.csv")
    _settle(ledger, path)
    cleaner = Cleaner(config, ledger, lazy_clients(config))
    assert not cleaner.active and cleaner.tick() == 0 and path.exists()


def test_an_archived_file_comes_back_as_the_same_version_for_its_replay(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = _config(tmp_path)
    path = _drop(config, "a.csv")
    before = os.stat(path).st_mtime_ns
    ref = _settle(ledger, path)
    Cleaner(config, ledger, lazy_clients(config)).tick()
    bring_back(_record(ledger, ref), config, lazy_clients(config))
    assert path.read_text() == "id\n1\n" and os.stat(path).st_mtime_ns == before
    again = describe_file(path, "sales/a.csv", [])
    assert again is not None and again.fingerprint == ref.fingerprint
    assert not any(p.is_file() for p in (tmp_path / "archive").rglob("*"))


def test_the_archive_may_not_lie_in_a_watched_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ingested again"):
        _config(tmp_path, archive="inbox/done")
    assert _config(tmp_path).archive == str(tmp_path / "archive")
    assert _config(tmp_path, after="keep", archive="inbox/done").archive  # nothing archives


def test_an_s3_source_needs_an_s3_archive(tmp_path: Path) -> None:
    config = HopperConfig.model_validate(
        {"sources": [{"type": "s3", "bucket": "landing", "after_ingest": "archive"}]}
    )
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        config.resolved(tmp_path)
    inside = config.model_copy(update={"archive": "s3://landing/done"})
    with pytest.raises(ConfigError, match="ingested again"):
        inside.resolved(tmp_path)
    ok = config.model_copy(update={"archive": "s3://archive/landing"}).resolved(tmp_path)
    assert ok.archive == "s3://archive/landing"
