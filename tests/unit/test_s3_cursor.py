"""The listing cursor's pure parts: comparison, pruning, persistence."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hopper.watch.s3.cursor import ListingCursor, load_cursor, save_cursor


def test_new_and_changed_keys_are_new_wherever_they_sort() -> None:
    cursor = ListingCursor("landing", "incoming/", {"incoming/m.csv": "e1"})
    assert not cursor.is_new("incoming/m.csv", "e1")
    assert cursor.is_new("incoming/m.csv", "e2"), "same key, new content: a new version"
    assert cursor.is_new("incoming/a.csv", "e1"), "a key sorting before every seen key"
    assert cursor.is_new("incoming/z.csv", "e1")
    assert cursor.is_new("incoming/m.csv", None)


def test_a_complete_listing_forgets_deleted_keys() -> None:
    cursor = ListingCursor("landing", "", {"a": "1", "b": "2", "c": "3"})
    assert cursor.forget_missing(["b", "new"]) == 2
    assert cursor.objects == {"b": "2"}


def test_round_trip_and_atomic_save(tmp_path: Path) -> None:
    path = tmp_path / "state" / "s3-landing.json"
    cursor = ListingCursor(
        "landing", "incoming/", {"incoming/a b.csv": "e1", "incoming/ü.csv": "e2"}
    )
    save_cursor(path, cursor)
    assert load_cursor(path, "landing", "incoming/") == cursor
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file left behind"


def test_missing_corrupt_or_foreign_cursors_start_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cursor.json"
    assert load_cursor(path, "landing", "in/") == ListingCursor("landing", "in/")

    caplog.set_level(logging.WARNING)
    path.write_text('{"objects": ')
    assert load_cursor(path, "landing", "in/").objects == {}
    assert "unreadable cursor" in caplog.text and "s3://landing/in/" in caplog.text

    save_cursor(path, ListingCursor("other", "in/", {"in/a.csv": "e"}))
    assert load_cursor(path, "landing", "in/").objects == {}
    assert "is for s3://other/in/" in caplog.text
