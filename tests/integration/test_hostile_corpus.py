"""Containment under a grown hostile corpus (issue 14): no file stops, crashes or bloats Hopper.

The kinds (``tests/hostile_kinds.py``) are new beside ``test_hostile.py``'s: paths deeper
than PATH_MAX, link loops, locked folders, names in any bytes, JSON nested behind lone
``\\r``, forged Parquet footers and pages, dictionary and multi-codec bombs, forged lineage
columns, partitions that cannot name a folder, files swapped for links, FIFOs or folders after
the watcher saw them… They go into six datasets of their own (``hc-*``, capped at
``max_memory_mb`` and ``max_seconds``) in the session's running ``hopper up``, all at once.
While Hopper works, a sampler watches the supervised processes every 0.1 s. Then:

- the server, the worker and the watcher kept their PIDs throughout;
- every file that can be named ended in the lake or in quarantine, as its kind expects, with
  a reason file when quarantined; no version of any is ``failed`` or still pending, in the
  ledger and in ``hopper status --json``;
- no process of the worker's tree (the worker, its reader children) went past the datasets'
  ``max_memory_mb`` plus a small margin, an idle reader's own size (peak resident set,
  ``VmHWM``);
- the lake holds no row of a file that did not land, no forged or duplicated lineage column,
  no partition folder a file chose for itself;
- a clean file of each format still lands afterwards.

The test also puts a loose address-space limit on the worker (its size now plus 4 GiB): a
safety net so that a regression cannot take the machine's memory, not the cap under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from bench.procs import descendants

from hopper.contracts import Contract
from hopper.ledger import FileRecord, Ledger, sqlite_url
from hopper.models import FileState
from tests import hostile_kinds as hk
from tests.integration.conftest import Running, hopper

pytestmark = pytest.mark.integration

MARGIN_MB = 256
"""How far past ``max_memory_mb`` a process's peak resident set may go: the reader process's
own footprint (Python, pyarrow and pandas: ≈ 200 MiB idle) and sampling slack."""
SAMPLE_SECONDS = 0.1
SETTLE_SECONDS = 120
SAFETY_HEADROOM = 4 << 30
FINAL = {FileState.INGESTED, FileState.QUARANTINED}
RESERVED = {"_source_uri", "_ingested_at", "_ingest_date"}


# --------------------------------------------------------------------------- processes


def _proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _kb(value: str | None) -> int:
    return int(value.split()[0]) if value else 0


def _alive(pid: int) -> bool:
    state = _proc_status(pid).get("State", "")
    return bool(state) and not state.startswith(("Z", "X"))


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]


class Sampler(threading.Thread):
    """Watches ``hopper up``'s children: PID changes, and the worker tree's peak memory."""

    def __init__(self, up: Running) -> None:
        super().__init__(daemon=True)
        self.up = up
        self.first: dict[str, int] = dict(up.state()["children"])
        self.changes: list[str] = []
        self.peaks: dict[int, tuple[int, str, float]] = {}  # pid → (peak kB, command, when)
        self.capped: dict[int, tuple[int, int]] = {}  # worker pid → its previous RLIMIT_AS
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_SECONDS):
            self.sample()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.sample()
        for pid, old in self.capped.items():
            with contextlib.suppress(OSError):
                resource.prlimit(pid, resource.RLIMIT_AS, old)

    def sample(self) -> None:
        try:
            children = dict(self.up.state()["children"])
        except (OSError, ValueError, KeyError):
            return  # being rewritten: look again on the next tick
        if children != self.first:
            change = f"PIDs changed: {self.first} → {children}"
            if change not in self.changes:
                self.changes.append(change)
        for name, pid in children.items():
            if not _alive(pid):
                gone = f"{name} (pid {pid}) is not running"
                if gone not in self.changes:
                    self.changes.append(gone)
        worker = children.get("worker")
        if worker is None:
            return
        self.cap(worker)
        for pid in [worker, *descendants(worker)]:
            status = _proc_status(pid)
            peak = max(_kb(status.get("VmHWM")), _kb(status.get("VmRSS")))
            known = self.peaks.get(pid)
            if known is None or peak > known[0]:
                self.peaks[pid] = (peak, known[1] if known else _cmdline(pid), time.time())

    def cap(self, worker: int) -> None:
        """The safety net: a loose address-space limit, and a fresh peak, on a new worker."""
        if worker in self.capped:
            return
        try:
            old = resource.prlimit(worker, resource.RLIMIT_AS)
            size = _kb(_proc_status(worker).get("VmSize")) * 1024
            soft = size + SAFETY_HEADROOM
            if old[1] != resource.RLIM_INFINITY:
                soft = min(soft, old[1])
            if old[0] == resource.RLIM_INFINITY or old[0] > soft:
                resource.prlimit(worker, resource.RLIMIT_AS, (soft, old[1]))
            Path(f"/proc/{worker}/clear_refs").write_text("5")  # VmHWM from now on
            self.capped[worker] = old
        except OSError:
            pass


# --------------------------------------------------------------------------- files


def _uri(path: bytes) -> str:
    return Path(os.fsdecode(path)).as_uri()


def _index(records: list[FileRecord]) -> dict[str | bytes, list[FileRecord]]:
    """Ledger records by URI and by the local path (bytes) their URI names."""
    index: dict[str | bytes, list[FileRecord]] = defaultdict(list)
    for record in records:
        index[record.uri].append(record)
        if record.ref.is_local:
            with contextlib.suppress(ValueError, UnicodeError):
                index[os.fsencode(record.ref.local_path())].append(record)
    return index


def _versions(index: dict[str | bytes, list[FileRecord]], path: bytes) -> list[FileRecord]:
    """A file's versions: by the URI Hopper should give it, or by the path its URI names."""
    found = {(r.uri, r.fingerprint): r for r in index.get(_uri(path), []) + index.get(path, [])}
    return sorted(found.values(), key=lambda r: r.detected_at)


def _drop(staging: Path, inbox: Path) -> None:
    """Move every staged file and folder into the inbox at once (renames: move-in events)."""
    moves = []
    for dataset in os.listdir(staging):
        (inbox / dataset).mkdir(exist_ok=True)
        for name in os.listdir(os.fsencode(staging / dataset)):
            moves.append(
                (
                    os.fsencode(staging / dataset) + b"/" + name,
                    os.fsencode(inbox / dataset) + b"/" + name,
                )
            )
    for src, dst in moves:
        os.rename(src, dst)


def _swap_when_seen(ledger: Ledger, path: bytes, kind: hk.Kind, notes: dict[str, str]) -> None:
    """Run the kind's attack on ``path`` as soon as the ledger has recorded the file."""
    assert kind.after_detection is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        seen = ledger.versions(_uri(path))
        if seen:
            notes[kind.name] = f"swapped while {seen[-1].state.value}"
            kind.after_detection(Path(os.fsdecode(path)))
            return
        time.sleep(0.05)
    notes[kind.name] = "never detected, so never swapped"


def _unblock_fifos(inbox: Path) -> None:
    """Give any reader stuck opening a FIFO of the corpus an end of file."""
    for path in (inbox / "hc-csv").iterdir():
        if path.is_fifo():
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


# --------------------------------------------------------------------------- the lake


def _lake_report(lake: Path, datasets: set[str]) -> tuple[dict[str, int], list[str]]:
    """Rows per ``_source_uri`` in the corpus datasets' lake files, and what is wrong there."""
    rows: dict[str, int] = defaultdict(int)
    problems: list[str] = []
    for dataset in sorted(datasets):
        for path in sorted((lake / dataset).rglob("*.parquet")):
            where = path.relative_to(lake)
            meta = pq.ParquetFile(path).metadata
            names = [meta.schema.column(j).path for j in range(meta.num_columns)]
            if len(set(names)) != len(names):
                problems.append(f"lake {where}: duplicate columns {names}")
            lowered = [n.lower() for n in names if n.lower() in RESERVED]
            if len(set(lowered)) != len(lowered):
                problems.append(f"lake {where}: lineage columns in several spellings {names}")
            lineage = [j for j, n in enumerate(names) if n.lower() == "_source_uri"]
            if not lineage:
                problems.append(f"lake {where}: no _source_uri column")
                continue
            for j in lineage:
                for group in range(meta.num_row_groups):
                    column = meta.row_group(group).column(j)
                    stats = column.statistics
                    if stats is not None and stats.has_min_max and stats.min == stats.max:
                        value = stats.min
                        rows[value.decode() if isinstance(value, bytes) else value] += (
                            meta.row_group(group).num_rows
                        )
                        continue
                    if meta.row_group(group).total_byte_size > 256 << 20:
                        problems.append(f"lake {where}: row group {group} too big to check")
                        continue
                    table = pq.ParquetFile(path).read_row_group(group)
                    for value in table.column(j).to_pylist():
                        rows[value] += 1
    return rows, problems


# --------------------------------------------------------------------------- judging


def _unsettled(ledger: Ledger, files: dict[bytes, hk.Kind], inbox: Path) -> list[str]:
    """Kinds with a file still on its way (``failed`` is final too: it is judged later)."""
    records = _index(ledger.records(latest_only=False))
    waiting = []
    for path, kind in files.items():
        versions = _versions(records, path)
        if kind.expect == hk.NEVER_READ or (kind.expect == hk.UNSEEN_OR_SETTLED and not versions):
            continue
        if not versions or any(v.state not in {*FINAL, FileState.FAILED} for v in versions):
            waiting.append(kind.name)
    grown = inbox / "hc-csv" / "grows.csv"
    last = _versions(records, os.fsencode(grown))
    if not last or last[-1].ref.size != grown.stat().st_size:
        waiting.append("grows-while-read (its last version)")
    return waiting


def _judge(
    ledger: Ledger, files: dict[bytes, hk.Kind], quarantine: Path, notes: dict[str, str], t0: float
) -> tuple[list[str], list[str]]:
    """Each file's fate against its kind's expectation: ``(problems, one line per file)``."""
    records = _index(ledger.records(latest_only=False))
    reasons: dict[str, dict[str, Any]] = {}
    for path in quarantine.rglob("*.error.json"):
        body = json.loads(path.read_text(encoding="utf-8"))
        reasons[body["uri"]] = body
    problems: list[str] = []
    table: list[str] = []
    for path, kind in files.items():
        versions = _versions(records, path)
        states = [v.state.value for v in versions]
        latest = versions[-1] if versions else None
        reason = (latest.reason or "") if latest else ""
        took = f"{latest.updated_at - t0:5.0f}s" if latest else "    -"
        table.append(
            f"{kind.name:34} {kind.expect:17} {','.join(states) or '-':24} {took} "
            f"{notes.get(kind.name, '')} {reason[:100]!r}"
        )
        label = f"{kind.name} ({os.fsdecode(path).rsplit('/', 1)[-1]!r})"
        if any(v.state == FileState.FAILED for v in versions):
            problems.append(f"{label}: failed: {[v.reason for v in versions]}")
        if kind.expect == hk.NEVER_READ:
            if versions:
                problems.append(f"{label}: a link was read: {states}")
            continue
        if latest is None:
            if kind.expect != hk.UNSEEN_OR_SETTLED:
                problems.append(f"{label}: never recorded")
            continue
        if latest.state not in FINAL:
            problems.append(f"{label}: ends {latest.state.value}")
            continue
        if kind.expect in (hk.INGESTED, hk.QUARANTINED) and latest.state.value != kind.expect:
            problems.append(f"{label}: {latest.state.value}, expected {kind.expect}: {reason}")
        if latest.state == FileState.QUARANTINED:
            body = reasons.get(latest.uri)
            if body is None or not body.get("reason"):
                problems.append(f"{label}: quarantined without a reason file")
            words = kind.reason
            if words and words not in reason and words not in json.dumps(body or {}):
                problems.append(f"{label}: reason does not name {words!r}: {reason}")
    return problems, table


def _status_problems(up: Running, datasets: set[str]) -> list[str]:
    """``hopper status --json`` shows nothing failed or pending in the corpus datasets."""
    status = hopper("status", "--json", env=up.env)
    if status.returncode != 0:
        return [f"hopper status --json failed: {status.stderr[-500:]}"]
    counts = json.loads(status.stdout)["datasets"]
    return [
        f"hopper status: {dataset} {counts.get(dataset)}"
        for dataset in sorted(datasets)
        if (counts.get(dataset) or {}).get("failed") or (counts.get(dataset) or {}).get("pending")
    ]


def _outside_records(ledger: Ledger, datasets: set[str], inbox: Path) -> list[str]:
    """Records of the corpus datasets whose file is not inside the inbox (read via a link)."""
    problems = []
    for record in ledger.records(latest_only=False):
        if record.dataset not in datasets or not record.ref.is_local:
            continue
        try:
            path = record.ref.local_path()
            inside = Path(os.path.realpath(path.parent)).is_relative_to(inbox)
        except ValueError:
            inside = False
        if not inside:
            problems.append(f"ledger: a file outside the inbox was recorded: {record.uri}")
    return problems


def _lake_problems(up: Running, ledger: Ledger, datasets: set[str], inbox: Path) -> list[str]:
    """Only rows of files that landed; lineage Hopper's own; partitions Hopper's own."""
    everything = ledger.records(latest_only=False)
    ingested = {r.uri for r in everything if r.state == FileState.INGESTED}
    not_landed = {r.uri for r in ledger.records() if r.state != FileState.INGESTED} - ingested
    lake_rows, problems = _lake_report(up.root / "lake", datasets)
    for uri, count in sorted(lake_rows.items()):
        if uri in not_landed:
            problems.append(f"lake: {count} rows of {uri}, which did not land")
        elif uri not in ingested:
            problems.append(f"lake: {count} rows claim a source never ingested: {uri!r}")
    path_values = _uri(os.fsencode(inbox) + b"/hc-part/path-values.csv")
    if lake_rows.get(path_values, 0) != 5:
        problems.append(f"lake: path-values.csv has {lake_rows.get(path_values, 0)} of 5 rows")
    forged_days = list((up.root / "lake" / "hc-daily").glob("*1999*"))
    if forged_days:
        problems.append(f"lake: a file chose its own partition: {forged_days}")
    for where in ("lake", "quarantine"):
        for path in (up.root / where).rglob("*"):
            if path.is_file() and hk.OUTSIDE_MARK.encode() in path.read_bytes():
                problems.append(f"{where}: holds the file outside the inbox: {path}")
    return problems


def _clean_files_land(up: Running, ledger: Ledger, inbox: Path) -> list[str]:
    """Drop one good file per format (written aside, renamed in); wait for all to land."""
    clean = hk.clean_files()
    for rel, data in clean.items():
        target = os.fsencode(inbox) + b"/" + rel
        tmp = target.rsplit(b"/", 1)[0] + b"/.clean.tmp"
        Path(os.fsdecode(tmp)).write_bytes(data)
        os.replace(tmp, target)
    deadline = time.monotonic() + 90
    landed: set[bytes] = set()
    while time.monotonic() < deadline and len(landed) < len(clean) and up.proc.poll() is None:
        records = _index(ledger.records(latest_only=False))
        for rel in clean:
            versions = _versions(records, os.fsencode(inbox) + b"/" + rel)
            if versions and versions[-1].state == FileState.INGESTED:
                landed.add(rel)
        time.sleep(0.5)
    missing = sorted(set(clean) - landed)
    return [f"clean files did not land: {missing}"] if missing else []


def _process_problems(up: Running, sampler: Sampler, t0: float) -> list[str]:
    """Same PIDs throughout (with the logs' last errors if not); memory within the cap."""
    problems = list(sampler.changes)
    if up.proc.poll() is not None:
        problems.append(f"hopper up exited with {up.proc.returncode}")
    if sampler.changes:
        for name in ("watcher", "worker", "server"):
            log = up.root / ".hopper" / "logs" / f"{name}.log"
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            crashes = [line for line in lines if "Error" in line or "Fatal" in line]
            problems += [f"{name}.log: {line[:300]}" for line in crashes[-3:]]
    peaks = sorted(sampler.peaks.items(), key=lambda item: -item[1][0])
    print("peak resident sets (MiB):", [(pid, p[0] // 1024, p[1][-20:]) for pid, p in peaks])
    for pid, (kb, cmd, when) in peaks:
        if kb // 1024 > hk.MEMORY_MB + MARGIN_MB:
            problems.append(
                f"pid {pid} ({cmd}) peaked at {kb // 1024} MiB, over {hk.MEMORY_MB} MiB + "
                f"{MARGIN_MB}, {when - t0:.0f}s after the drop"
            )
    return problems


# --------------------------------------------------------------------------- the test


def test_hostile_corpus_is_contained(up: Running, tmp_path: Path) -> None:
    inbox = (up.root / "inbox").resolve()
    limits = {"max_memory_mb", "max_seconds"} <= set(Contract.model_fields)
    contracts = hk.contracts(limits)
    for name, text in contracts.items():
        (up.root / "datasets" / f"{name}.yaml").write_text(text, encoding="utf-8")
    datasets = set(contracts)
    kinds = hk.kinds(hk.make_outside(up.root.parent / "outside-the-home-corpus"))
    assert len({k.name for k in kinds}) == len(kinds) >= 30
    files: dict[bytes, hk.Kind] = {}  # live path → its kind
    for kind in kinds:
        for rel in kind.build(tmp_path / "staging"):
            files[os.fsencode(inbox) + b"/" + rel] = kind

    problems: list[str] = []
    if not limits:
        problems.append("contracts have no max_memory_mb/max_seconds yet: corpus ran uncapped")
    ledger = Ledger(sqlite_url(up.root / ".hopper"))
    sampler = Sampler(up)
    assert set(sampler.first) >= {"server", "worker", "watcher"}, sampler.first
    sampler.sample()
    sampler.start()
    notes: dict[str, str] = {}
    swappers: list[threading.Thread] = []
    t0 = time.time()
    try:
        _drop(tmp_path / "staging", inbox)
        for kind in kinds:
            if kind.after_drop is not None:
                kind.after_drop(inbox)
        for path, kind in files.items():
            if kind.after_detection is not None:
                swapper = threading.Thread(
                    target=_swap_when_seen, args=(ledger, path, kind, notes), daemon=True
                )
                swapper.start()
                swappers.append(swapper)

        waiting = ["(not looked yet)"]
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline and up.proc.poll() is None:
            if not any(s.is_alive() for s in swappers):
                waiting = _unsettled(ledger, files, inbox)
                if not waiting:
                    break
            time.sleep(0.5)
        if waiting:
            problems.append(f"not settled after {SETTLE_SECONDS}s: {sorted(set(waiting))}")
        settled_after = time.time() - t0

        judged, table = _judge(ledger, files, up.root / "quarantine", notes, t0)
        print("\n".join(["", f"settled after {settled_after:.0f}s", *table]))
        problems += judged
        problems += _status_problems(up, datasets)
        problems += _outside_records(ledger, datasets, inbox)
        problems += _lake_problems(up, ledger, datasets, inbox)
        problems += _clean_files_land(up, ledger, inbox)
    finally:
        sampler.stop()
        hk.unlock(inbox)
        _unblock_fifos(inbox)
        for swapper in swappers:
            swapper.join(timeout=10)
        ledger.close()
    problems += _process_problems(up, sampler, t0)
    assert not problems, "\n".join(problems)
