"""Hostile input against a running Hopper: nothing escapes, nothing crashes, nothing leaks.

A corpus of hand-made hostile files (bombs, garbage, endless lines, deep JSON, odd names, a
symlink out of the home, a file still being written…) and a few dozen files whose names and
contents hypothesis generates are dropped into the inbox of the session's `hopper up`. Then:

- every file that is not ignored ends in the lake or in quarantine with a reason file;
- nothing was written outside the home's lake, quarantine and state folders;
- a fake secret planted in file contents, and the alert webhook URL (a real secret of the
  running processes), appear in none of: the process logs, reason files, lake metadata,
  `hopper status --json`, Prefect's events, flow runs, logs and artifacts;
- the server, the worker and the watcher are alive (same PIDs) and a good file still lands.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileState
from tests.integration.conftest import Running, hopper, wait_for
from tests.moto_server import MotoServer

pytestmark = pytest.mark.integration

FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYHOPPERFAKE"  # shaped like an AWS secret key
OUTSIDE_SECRET = "OUTSIDE-THE-HOME-7f3a"
HEADER = b"id,full name,score\n"
GOOD = HEADER + b"1,Ada,1.5\n2,Bob,2\n"


def _gzip_bomb() -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as out:
        out.write(HEADER)
        for _ in range(100):
            out.write(b"1,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,1.5\n" * 20_000)  # ≈ 90 MB
    return buf.getvalue()


def _wide(columns: int) -> bytes:
    """The declared columns, then thousands more (what a wrong delimiter can look like)."""
    extra = b",".join(b"c%d" % i for i in range(3, columns))
    return HEADER.rstrip(b"\n") + b"," + extra + b"\n1,a,1," + b"1," * (columns - 4) + b"1\n"


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _corpus() -> dict[str, bytes]:
    """Relative path under the inbox → bytes: at least one file per kind of hostility."""
    truncated_gz = gzip.compress(GOOD + FAKE_SECRET.encode() + b",x,1\n" * 2000)
    people_parquet = _parquet(pa.table({"id": [1], "full name": ["a"], "score": [1.0]}))
    long_name = "l" * 240 + ".csv"
    return {
        "people/empty.csv": b"",
        "people/header-only.csv": HEADER,
        "people/only-newlines.csv": b"\n\n\n\r\n",
        "people/bom.csv": b"\xef\xbb\xbf" + GOOD,
        "people/nul-bytes.csv": HEADER + b"1,A\x00da,1.5\n\x00\x00\x00\n",
        "people/binary-garbage.csv": os.urandom(4000) + FAKE_SECRET.encode() + os.urandom(99),
        "people/truncated.csv.gz": truncated_gz[: len(truncated_gz) // 2],
        "people/bomb.csv.gz": _gzip_bomb(),
        "people/semicolons.csv": b"id;full name;score\n1;Ada;1.5\n",
        "people/wide.csv": _wide(10_000),
        "people/huge-line.csv": HEADER + b"1,Ada,1.5\n2," + FAKE_SECRET.encode() * 60_000 + b",2\n",
        "people/unterminated-quote.csv": HEADER + b'1,"Ada,1.5\n2,Bob,2\n',
        "people/mixed-encodings.csv": HEADER + "1,Zoë,1\n".encode() + b"2,Zo\xeb,2\n",
        "people/csv-injection.csv": HEADER + b"1,\"=cmd|' /C calc'!A0\",1\n2,@SUM(1+1),2\n",
        "people/ragged.csv": HEADER + b"1,Ada\n2,Bob,2,extra,fields\n",
        "people/overflow.csv": HEADER + b"99999999999999999999999,Ada,1\n",
        "people/cr-only.csv": GOOD.replace(b"\n", b"\r"),
        "people/wrong-schema.parquet": _parquet(pa.table({"other": [1, 2]})),
        "people/truncated.parquet": people_parquet[: len(people_parquet) // 2],
        "people/gzip-but-not.csv.gz": GOOD,
        "people/secret-note.csv": b"id,full name,score,note\n1,Ada,1.5,"
        + FAKE_SECRET.encode()
        + b"\n",
        "people/new\nline.csv": GOOD,
        "people/\u202etxt.exe.csv": GOOD,
        "people/e\u0301\u0301\u0301-combining.csv": GOOD,
        "people/\uff0e\uff0e\uff0fwide-dots.csv": GOOD,
        "people/-rf --leading-dash.csv": GOOD,
        "people/back\\slash\\..\\..\\x.csv": GOOD,
        "people/ctl\x07\x1b[31m.csv": GOOD,
        f"people/{long_name}": GOOD,
        "people/AKIAFAKEHOPPERNAME01.csv": GOOD,  # a secret-looking name (names are shown)
        "events/wrong-shape.jsonl": b'[1, 2, 3]\n"just a string"\n42\n',
        "events/not-json.jsonl": b"{id: 1, kind: click}\n",
        "events/deep.jsonl": b'{"id": 1, "kind": "click", "value": '
        + b'{"a": ' * 20_000
        + b'"'
        + FAKE_SECRET.encode()
        + b'"'
        + b"}" * 20_001
        + b"\n",
        "events/deep-array.json": b"[" * 100_000 + b"]" * 100_000,
        "events/nul.jsonl": b'{"id": 1, "kind": "cl\x00ick", "value": 1}\n',
        "events/array-of-objects.json": b'[{"id": 1, "kind": "view", "value": 2.5}]',
        "unrouted-at-root.csv": GOOD,
        "nosuchdataset/x.csv": GOOD,
        "people\n/newline-folder.csv": GOOD,
    }


IGNORED = {".hidden.csv": GOOD, "partial.csv.part": GOOD, "~lock.csv": GOOD}


def _hypothesis_files() -> dict[str, bytes]:
    """Names and contents drawn by hypothesis (deterministic: derandomized, few examples)."""
    drawn: list[tuple[str, bytes]] = []
    text = st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
        max_size=30,
    )
    cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
    rows = st.lists(st.lists(cell, min_size=1, max_size=5), max_size=8).map(
        lambda rs: HEADER + "\n".join(",".join(r) for r in rs).encode(errors="surrogatepass")
    )
    content = st.one_of(
        st.binary(max_size=3000),
        text.map(lambda t: t.encode()),
        rows,
        st.sampled_from([FAKE_SECRET.encode(), GOOD, b"\xff\xfe" + GOOD]),
    )

    @settings(
        max_examples=30,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(name=text, data=content)
    def draw(name: str, data: bytes) -> None:
        drawn.append((name, data))

    draw()
    return {f"people/hyp{i:02d}-{name}.csv": data for i, (name, data) in enumerate(drawn)}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                st_ = path.lstat()
            except FileNotFoundError:
                continue
            found[str(path)] = (st_.st_size, st_.st_mtime_ns)
    return found


def _write_slowly(path: Path) -> None:
    """A file that changes while being written: header, pauses, rows, more rows."""
    with path.open("wb") as out:
        for part in (HEADER, b"1,Ada,1.5\n", b"2,Bob,", b"2\n3,Cy,3\n"):
            out.write(part)
            out.flush()
            time.sleep(0.6)


def _prefect_dump(api: str) -> str:
    """Everything Prefect's API holds about runs: events, flow runs, logs, artifacts."""
    chunks: list[Any] = []
    with httpx.Client(base_url=api, timeout=30) as client:
        page = client.post("/events/filter", json={"limit": 50}).json()
        for _ in range(40):
            chunks.append(page["events"])
            if not page.get("next_page"):
                break
            page = client.get(page["next_page"]).json()
        for path in ("/flow_runs/filter", "/logs/filter", "/artifacts/filter"):
            for offset in range(0, 20_000, 200):
                rows = client.post(path, json={"limit": 200, "offset": offset}).json()
                chunks.append(rows)
                if len(rows) < 200:
                    break
    return json.dumps(chunks)


def test_hostile_corpus_is_contained(up: Running, moto: MotoServer) -> None:
    inbox = up.root / "inbox"
    base = up.root.parent
    children = dict(up.state()["children"])
    before = _tree(base)

    outside = base / "outside-the-home"
    outside.mkdir(exist_ok=True)
    (outside / "target.csv").write_bytes(HEADER + f"1,{OUTSIDE_SECRET},1\n".encode())
    files = {**_corpus(), **_hypothesis_files()}
    for rel, data in {**files, **{f"people/{k}": v for k, v in IGNORED.items()}}.items():
        path = inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (inbox / "people" / "link-outside.csv").symlink_to(outside / "target.csv")
    (inbox / "people" / "link-dir").symlink_to(outside, target_is_directory=True)
    slow = inbox / "people" / "still-being-written.csv"
    writer = threading.Thread(target=_write_slowly, args=(slow,))
    writer.start()
    writer.join()
    expected = {(inbox / rel).resolve().as_uri() for rel in files} | {slow.resolve().as_uri()}

    ledger = Ledger(sqlite_url(up.root / ".hopper"))
    final = {FileState.INGESTED, FileState.QUARANTINED}

    # The slow file pauses longer than the stability wait, so parts of it may be detected
    # (and ingested) first; wait for the version with its whole content.
    slow_size = slow.stat().st_size

    def settled() -> dict[str, Any] | None:
        latest = {r.uri: r for r in ledger.records()}
        missing = [u for u in expected if u not in latest or latest[u].state not in final]
        whole = latest.get(slow.resolve().as_uri())
        return None if missing or whole is None or whole.ref.size != slow_size else latest

    try:
        records = wait_for(settled, 150, "every hostile file to be ingested or quarantined")
    except AssertionError:
        latest = {r.uri: r.state.value for r in ledger.records()}
        stuck = {
            u: latest.get(u) for u in expected if latest.get(u) not in ("ingested", "quarantined")
        }
        raise AssertionError(f"not settled: {stuck}") from None

    # Ignored files and links were never picked up; nothing of the link target was read.
    seen = {r.uri for r in ledger.records(latest_only=False)}
    assert not any(("link-" in u or "hidden" in u or ".part" in u or "~lock" in u) for u in seen)

    # Outcomes that are specific to one kind of hostility.
    def of(rel: str) -> Any:
        return records[(inbox / rel).resolve().as_uri()]

    for rel in ("people/bom.csv", "people/csv-injection.csv", "people/secret-note.csv",
                "people/cr-only.csv", "events/array-of-objects.json",
                "people/new\nline.csv", "people/-rf --leading-dash.csv"):  # fmt: skip
        assert of(rel).state == FileState.INGESTED, (rel, of(rel).reason)
    written = records[slow.resolve().as_uri()]
    assert written.state == FileState.INGESTED
    assert written.outcome["rows_out"] == 3  # the final content, not a part of it
    for rel, words in {
        "people/bomb.csv.gz": "decompression bomb",
        "people/huge-line.csv": "max_line_bytes",
        "people/wide.csv": "max_columns",
        "events/deep.jsonl": "max_json_depth",
        "people/overflow.csv": "'id'",
        "unrouted-at-root.csv": "no dataset",
        "nosuchdataset/x.csv": "has no contract",
        "people\n/newline-folder.csv": "no dataset",
    }.items():
        assert of(rel).state == FileState.QUARANTINED and words in (of(rel).reason or ""), rel
    injected = [
        pq.read_table(p).column("full_name").to_pylist()
        for p in up.lake_files("people")
        if "csv_injection" in p.name or "csv-injection" in p.name
    ]
    assert injected == [["=cmd|' /C calc'!A0", "@SUM(1+1)"]]  # kept as plain text

    # Every quarantined file has a reason file, inside the quarantine, naming it.
    quarantine = up.root / "quarantine"
    reasons = {}
    for path in quarantine.rglob("*.error.json"):
        body = json.loads(path.read_text())
        reasons[body["uri"]] = body
    for uri, record in records.items():
        if uri in expected and record.state == FileState.QUARANTINED:
            assert uri in reasons and reasons[uri]["reason"], uri
            assert Path(record.outcome["quarantine_path"]).resolve().is_relative_to(quarantine)

    # Nothing written outside the lake, the quarantine and the state folder (and the inbox).
    after = _tree(base)
    allowed = [up.root / d for d in ("lake", "quarantine", ".hopper", "inbox")]
    allowed += [outside, moto.log.parent]
    changed = [p for p, st_ in after.items() if before.get(p) != st_]
    escaped = [p for p in changed if not any(Path(p).is_relative_to(a) for a in allowed)]
    assert escaped in ([], [str(up.log)]), escaped
    assert (outside / "target.csv").read_bytes() == HEADER + f"1,{OUTSIDE_SECRET},1\n".encode()

    # No secret in any output.
    status = hopper("status", "--json", env=up.env)
    assert status.returncode == 0, status.stderr
    texts = {
        "status": status.stdout,
        "prefect": _prefect_dump(up.api_url),
        "up.log": up.log.read_text(errors="replace"),
    }
    for path in (up.root / ".hopper").rglob("*.log"):
        texts[str(path)] = path.read_text(errors="replace")
    for uri, body in reasons.items():
        texts[uri] = json.dumps(body)
    for path in (up.root / "lake").rglob("*.parquet"):
        meta = pq.read_metadata(path)
        texts[str(path)] = repr(meta.metadata) + str(meta.schema)
    assert "hopper.file.detected" in texts["prefect"] and "ingest" in texts["prefect"]
    assert len(reasons) >= 20 and "Hopper is up." in texts["up.log"]  # the search has material
    for where, text in texts.items():
        assert FAKE_SECRET not in text, f"planted secret leaked into {where}"
        assert OUTSIDE_SECRET not in text, f"file outside the home leaked into {where}"
        assert up.webhook.url not in text, f"webhook URL leaked into {where}"
    assert FAKE_SECRET not in json.dumps(up.webhook.received)

    # Still alive, same processes, and a good file still lands.
    assert up.proc.poll() is None
    assert up.state()["children"] == children, "a process crashed and was restarted"
    assert httpx.get(f"{up.api_url}/health", timeout=10).json() is True
    fresh = inbox / "people" / "fresh-after-the-storm.csv"
    tmp = inbox / "people" / ".fresh.tmp"
    tmp.write_bytes(GOOD)
    os.replace(tmp, fresh)
    wait_for(
        lambda: any("fresh-after-the-storm" in p.name for p in up.lake_files("people")),
        60,
        "a good file to land after the hostile corpus",
    )
