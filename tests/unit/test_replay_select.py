from pathlib import Path

import pytest

from hopper.errors import HopperError
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome
from hopper.replay import Selection, parse_since, select


def _ledger(tmp_path: Path) -> tuple[Ledger, list[FileRef]]:
    ledger = Ledger(sqlite_url(tmp_path / "state"))
    refs = [
        FileRef(uri=(tmp_path / "in" / ds / name).as_uri(), size=1, mtime=1.0, dataset=ds)
        for ds, name in [("sales", "a.csv"), ("sales", "b.json"), ("orders", "c.csv")]
    ]
    for ref, state in zip(
        refs, [FileState.INGESTED, FileState.QUARANTINED, FileState.FAILED], strict=True
    ):
        ledger.record_detected(ref)
        ledger.finish(
            IngestOutcome(
                uri=ref.uri, fingerprint=ref.fingerprint, dataset=ref.dataset, state=state
            ),
            "run",
        )
    return ledger, refs


def test_parse_since() -> None:
    assert parse_since("90s") == 90 and parse_since("2h") == 7200 and parse_since("1.5d") == 129600
    with pytest.raises(HopperError, match="30m"):
        parse_since("yesterday")


def test_select_by_state_dataset_and_glob(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path)
    names = lambda recs: sorted(r.ref.name for r in recs)  # noqa: E731
    assert names(select(ledger, Selection([], failed=True))) == ["c.csv"]
    assert names(select(ledger, Selection([], failed=True, quarantined=True))) == [
        "b.json",
        "c.csv",
    ]
    assert names(select(ledger, Selection([], dataset="sales"))) == ["a.csv", "b.json"]
    assert names(select(ledger, Selection([str(tmp_path / "in" / "*" / "*.csv")]))) == [
        "a.csv",
        "c.csv",
    ]
    assert names(select(ledger, Selection([str(tmp_path / "in" / "sales" / "a.csv")]))) == ["a.csv"]


def test_unknown_file_is_a_clear_error(tmp_path: Path) -> None:
    ledger, _ = _ledger(tmp_path)
    with pytest.raises(HopperError, match="no record of this file"):
        select(ledger, Selection([str(tmp_path / "nope.csv")]))
