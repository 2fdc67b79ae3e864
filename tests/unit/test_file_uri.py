"""File URIs are faithful to a path's bytes, and a file's name can always be shown.

A local file's URI is its identity in the ledger, in events and in the lake's lineage
column; the flow finds the file again through :meth:`FileRef.local_path`. Any byte string
that can name a file (anything but NUL and ``/``) must come back as the very same bytes, and
``FileRef.name`` must be text that UTF-8, JSON and Parquet accept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hopper.models import FileRef, display_name, file_uri, path_of_file_uri

file_names = st.binary(min_size=1, max_size=255).filter(
    lambda raw: b"\x00" not in raw and b"/" not in raw and raw not in (b".", b"..")
)


@given(name=file_names, folder=file_names)
def test_any_file_name_round_trips_through_its_uri(name: bytes, folder: bytes) -> None:
    path = os.fsdecode(b"/inbox/" + folder + b"/" + name)
    uri = file_uri(path)
    assert uri.isascii() and uri.isprintable() and " " not in uri  # one clean token
    assert uri == Path(path).as_uri()  # the same URI the watcher always produced
    assert os.fsencode(path_of_file_uri(uri)) == b"/inbox/" + folder + b"/" + name
    ref = FileRef(uri=uri, size=0, mtime=0.0)
    assert os.fsencode(ref.local_path()) == b"/inbox/" + folder + b"/" + name


@given(name=file_names)
def test_a_name_is_always_text_that_can_be_stored(name: bytes) -> None:
    ref = FileRef(uri=file_uri(os.fsdecode(b"/inbox/" + name)), size=0, mtime=0.0)
    shown = ref.name
    shown.encode("utf-8")  # no lone surrogates
    assert "\n" not in shown and "\r" not in shown
    json.loads(json.dumps({"name": shown}, ensure_ascii=False))
    pa.table({"name": [shown]})  # Arrow strings must be valid UTF-8
    if name.isascii() and name.decode().isprintable():
        assert shown == name.decode()  # plain names are shown as they are


def test_latin1_name_is_the_raw_bytes_not_a_replacement_character(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.csv"))
    path.write_bytes(b"x\n1\n")
    ref = FileRef(uri=file_uri(path), size=4, mtime=0.0)
    assert ref.uri.endswith("/caf%E9.csv")
    assert ref.local_path() == path and ref.local_path().exists()
    assert ref.name == "caf\\xe9.csv"


def test_percent_in_a_name_is_decoded_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "100%25 %41.csv"
    ref = FileRef(uri=file_uri(path), size=0, mtime=0.0)
    assert ref.uri.endswith("/100%2525%20%2541.csv")
    assert ref.local_path() == path and ref.name == "100%25 %41.csv"


def test_control_characters_are_shown_escaped_but_kept_in_the_uri(tmp_path: Path) -> None:
    path = tmp_path / "two\nlines\x1b[31m.csv"
    ref = FileRef(uri=file_uri(path), size=0, mtime=0.0)
    assert ref.name == "two\\x0alines\\x1b[31m.csv"
    assert ref.local_path() == path


def test_question_mark_and_hash_belong_to_the_name() -> None:
    assert FileRef(uri=file_uri("/in/a?b#c.csv"), size=0, mtime=0).name == "a?b#c.csv"
    assert FileRef(uri="s3://bucket/in/a?b#c.csv", size=0, mtime=0).name == "a?b#c.csv"
    assert path_of_file_uri("file:///in/a?b#c.csv") == Path("/in/a?b#c.csv")  # hand-written


def test_display_name_keeps_unicode_and_escapes_only_what_must_be() -> None:
    assert display_name("é 日本 ".encode()) == "é 日本 "
    assert display_name(b"   ") == "   "
    assert display_name(b"a\xffb\tc") == "a\\xffb\\x09c"


@pytest.mark.parametrize(
    "uri", ["s3://bucket/key.csv", "file://otherhost/x.csv", "file:relative.csv", "x.csv"]
)
def test_only_local_file_uris_have_a_path(uri: str) -> None:
    with pytest.raises(ValueError):
        path_of_file_uri(uri)
    assert path_of_file_uri("file://localhost/x.csv") == Path("/x.csv")


def test_relative_paths_have_no_uri() -> None:
    with pytest.raises(ValueError):
        file_uri("inbox/a.csv")
