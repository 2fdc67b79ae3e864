"""The benchmarks, one function each; they drive a running Hopper through files only.

Files always arrive atomically, as a user's tool would deliver them: written under a hidden
name (which the watcher ignores), or in a staging folder on the same filesystem, then
``os.replace``-d into ``inbox/<dataset>/``. A file has landed when its Parquet output
(``<source stem>-<id>.parquet``, written atomically by Hopper) exists under
``lake/<dataset>/``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench.data import (
    HEADER,
    settle_disk,
    small_csv,
    small_name,
    write_big_csv,
    write_small_files,
)
from bench.procs import (
    HopperUp,
    PeakRSS,
    free_port,
    hopper_cli,
    make_home,
    proc_memory,
    proc_times,
)
from bench.procs import watcher_process as start_watcher
from bench.stats import cpu_percent, mb, mib, percentile, rss_growth

log = logging.getLogger(__name__)


class BenchError(RuntimeError):
    """A benchmark could not produce its figure (a file was quarantined, a timeout, …)."""


# --------------------------------------------------------------------------- lake helpers


BURST_PREFIX, BURST_SEED = "b", 2  # a burst's file names and contents (see burst())


def source_stem(output_name: str) -> str:
    """The source file's stem from a lake output name ``<stem>-<10 hex>.parquet``."""
    return output_name.removesuffix(".parquet").rsplit("-", 1)[0]


def _outputs(folder: Path) -> Iterator[tuple[str, str]]:
    """``(folder, name)`` of each finished Parquet file under ``folder`` (no hidden temps)."""
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            if name.endswith(".parquet") and not name.startswith("."):
                yield dirpath, name


def lake_outputs(folder: Path) -> list[str]:
    """Names of the finished Parquet files under ``folder`` (any depth; no hidden temps)."""
    return [name for _, name in _outputs(folder)]


def last_output_at(folder: Path) -> float | None:
    """When the last finished Parquet file under ``folder`` was written (epoch seconds).

    Hopper writes each output under a staged name and renames it into place at once: its
    modification time is when it became visible, to within the rename.
    """
    times = [os.stat(os.path.join(where, name)).st_mtime for where, name in _outputs(folder)]
    return max(times, default=None)


def quarantined(folder: Path) -> list[str]:
    """Names of the files quarantined under ``folder`` (their ``.error.json`` excluded)."""
    found: list[str] = []
    for _dirpath, _dirs, names in os.walk(folder):
        found.extend(n for n in names if not n.endswith(".error.json"))
    return found


def wait_for_output(
    up: HopperUp,
    dataset: str,
    stem: str,
    timeout: float,
    poll: float,
    abort: Callable[[], str | None] = lambda: None,
) -> float:
    """Wait until the output of source ``stem`` is in the lake; return ``time.monotonic()``.

    Raises:
        BenchError: the file was quarantined, ``abort`` returned a reason, or ``timeout``
            passed.
    """
    deadline = time.monotonic() + timeout
    lake, bad = up.lake(dataset), up.quarantine(dataset)
    while True:
        now = time.monotonic()
        if any(source_stem(n) == stem for n in lake_outputs(lake)):
            return now
        if any(n.startswith(stem + ".") for n in quarantined(bad)):
            raise BenchError(f"{stem} was quarantined; see {bad}")
        if now > deadline:
            raise BenchError(f"{stem} did not land in {lake} within {timeout:.0f}s")
        reason = abort()
        if reason:
            raise BenchError(reason)
        time.sleep(poll)


def drop_atomically(content: bytes, target: Path) -> float:
    """Write ``content`` to a hidden name next to ``target``, rename it; return the rename time."""
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(content)
    moved = time.monotonic()
    os.replace(tmp, target)
    return moved


def ledger_counts(up: HopperUp, dataset: str) -> dict[str, Any]:
    """The dataset's row of ``hopper status --json`` (ingested, quarantined, …)."""
    done = hopper_cli("status", "--json", "--config", str(up.config), env=up.cli_env())
    if done.returncode != 0:
        raise BenchError(f"hopper status failed: {done.stderr.strip()[-500:]}")
    return dict(json.loads(done.stdout)["datasets"].get(dataset, {}))


# --------------------------------------------------------------------------- latency


def latency(up: HopperUp, dataset: str, count: int, timeout: float = 120) -> dict[str, Any]:
    """Drop ``count`` small files one at a time; time each from rename to Parquet visible.

    Returns:
        ``latencies`` (seconds, in drop order), ``p50``, ``p95`` and ``phases`` (median
        seconds per step of a file's path, from the ledger and Prefect's state history).
    """
    latencies: list[float] = []
    drops: list[tuple[Path, float, float]] = []  # (path, wall time dropped, wall time seen)
    for i in range(count):
        target = up.inbox(dataset) / small_name("lat", i)
        wall = time.time()
        moved = drop_atomically(small_csv(i, seed=1), target)
        seen = wait_for_output(up, dataset, target.stem, timeout, poll=0.02)
        latencies.append(seen - moved)
        drops.append((target, wall, wall + seen - moved))
        log.info("latency %d/%d: %s landed after %.2fs", i + 1, count, target.name, seen - moved)
    result: dict[str, Any] = {
        "files": count,
        "latencies": [round(x, 3) for x in latencies],
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
    }
    try:
        result["per_drop"] = []
        result["phases"] = latency_phases(up, drops, result["per_drop"])
    except Exception as exc:  # the breakdown is a diagnosis aid, never a reason to fail
        log.warning("could not break latency down into phases: %s", exc)
    return result


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def latency_phases(
    up: HopperUp,
    drops: list[tuple[Path, float, float]],
    per_drop: list[dict[str, float]] | None = None,
) -> dict[str, float]:
    """Median seconds spent in each step between a drop and its Parquet being visible.

    Steps come from the ledger's history (watcher and flow side) and the flow run's state
    history in Prefect (``Scheduled`` = created by the automation, ``Pending`` = picked up
    by the worker, ``Running`` = the flow-run process has started and imported the flow).
    """
    from hopper.ledger import Ledger, sqlite_url

    ledger = Ledger(sqlite_url(up.root / ".hopper"))
    steps: dict[str, list[float]] = {}
    slowest: dict[str, float] = {}
    every: list[dict[str, float]] = []
    try:
        with httpx.Client(base_url=up.api_url, timeout=10) as client:
            for path, dropped, seen in drops:
                events = {h["event"]: h for h in ledger.history(path.resolve().as_uri())}
                run_id = events["running"]["flow_run_id"]
                states = client.get("/flow_run_states/", params={"flow_run_id": run_id})
                states.raise_for_status()
                at = {s["type"]: _ts(s["timestamp"]) for s in reversed(states.json())}
                marks = [
                    ("watcher: drop → detected", dropped, events["detected"]["at"]),
                    ("watcher: detected → event emitted", None, events["dispatched"]["at"]),
                    ("automation: event → flow run created", None, at["SCHEDULED"]),
                    ("worker: created → picked up (poll)", None, at["PENDING"]),
                    ("process start + imports → Running", None, at["RUNNING"]),
                    ("flow: Running → ledger claim", None, events["running"]["at"]),
                    ("ingest: read, validate, write", None, events["ingested"]["at"]),
                    ("bench: ledger ingested → seen", None, seen),
                ]
                previous = dropped
                this: dict[str, float] = {}
                for name, start, end in marks:
                    this[name] = round(end - (start or previous), 3)
                    steps.setdefault(name, []).append(this[name])
                    previous = end
                if seen - dropped > sum(slowest.values()):
                    slowest = this
                every.append(this)
    finally:
        ledger.close()
    medians = {name: round(statistics.median(values), 3) for name, values in steps.items()}
    # The median hides what makes the p95: the steps of the slowest drop, next to it.
    if per_drop is not None:
        per_drop.extend(every)
    return {**medians, **{f"slowest drop: {name}": v for name, v in slowest.items()}}


# --------------------------------------------------------------------------- burst


class Probe(Protocol):
    """Something measured over a burst, from the first move to the last output."""

    def start(self) -> None: ...

    def stop(self) -> dict[str, Any]: ...


def settle(
    landed_now: Callable[[], int],
    bad_now: Callable[[], int],
    count: int,
    started: float,
    timeout: float,
    label: str,
) -> tuple[int, int, float]:
    """Poll until ``count`` files have landed or been quarantined, or ``timeout`` passes.

    Returns:
        ``(landed, quarantined, seconds)``: seconds from ``started`` to the last landing (to
        the deadline if it timed out).
    """
    deadline = started + timeout
    landed, bad, last_change, next_log = 0, 0, started, started + 10
    while True:
        now = time.monotonic()
        seen, bad = landed_now(), bad_now()
        if seen != landed:
            landed, last_change = seen, now
        if landed + bad >= count or now > deadline:
            break
        if now >= next_log:
            log.info("%s: %d/%d landed after %.0fs", label, landed, count, now - started)
            next_log = now + 10
        time.sleep(0.25)
    return landed, bad, (deadline if landed + bad < count else last_change) - started


def burst(
    up: HopperUp,
    dataset: str,
    count: int,
    staging: Path,
    timeout: float,
    prefix: str = BURST_PREFIX,
    probe: Probe | None = None,
) -> dict[str, Any]:
    """Move ``count`` small files into the inbox at once; time until every output exists.

    Returns:
        ``files``, ``landed``, ``seconds`` (to the last output seen, or to the timeout),
        ``files_per_s``, ``timed_out``, ``quarantined``, ``duplicates`` and the ledger's
        ``ledger_ingested`` count, plus ``exactly_once`` (every file once, none twice).
    """
    log.info("burst: writing %d small files to %s", count, staging)
    paths = write_small_files(staging, count, prefix, seed=BURST_SEED)
    inbox = up.inbox(dataset)
    settle_disk()
    if probe is not None:
        probe.start()
    started, started_at = time.monotonic(), time.time()
    for path in paths:
        os.replace(path, inbox / path.name)
    moved_s = time.monotonic() - started
    log.info("burst: moved %d files into %s in %.2fs", count, inbox, moved_s)
    landed, bad, seconds = settle(
        lambda: len(lake_outputs(up.lake(dataset))),
        lambda: len(quarantined(up.quarantine(dataset))),
        count,
        started,
        timeout,
        "burst",
    )
    last = last_output_at(up.lake(dataset)) if landed == count else None
    if last is not None:  # the poll saw the last output up to 0.25 s late; its time is exact
        seconds = min(seconds, max(last - started_at, 0.001))
    measured = probe.stop() if probe is not None else {}
    timed_out = landed + bad < count
    if timed_out:
        log.warning("burst: timed out after %.0fs with %d/%d landed", timeout, landed, count)
    # The ledger is written just after the output: give it a moment to agree.
    ledger: dict[str, Any] = {}
    for _ in range(20):
        ledger = ledger_counts(up, dataset)
        if ledger.get("ingested", 0) >= landed:
            break
        time.sleep(0.5)
    names = lake_outputs(up.lake(dataset))
    per_source = Counter(source_stem(n) for n in names)
    duplicates = sorted(stem for stem, n in per_source.items() if n > 1)
    ingested = int(ledger.get("ingested", 0))
    return {
        "files": count,
        "landed": landed,
        "seconds": round(seconds, 2),
        "move_seconds": round(moved_s, 2),
        "files_per_s": landed / seconds if seconds > 0 else 0.0,
        "timed_out": timed_out,
        "quarantined": bad,
        "lake_files_at_check": len(names),
        "duplicates": duplicates[:20],
        "ledger_ingested": ingested,
        "ledger": ledger,
        **measured,
        "exactly_once": not timed_out
        and not duplicates
        and len(names) == count
        and ingested == count
        and bad == 0,
    }


# --------------------------------------------------------------------------- big files


def bare_pyarrow(path: Path, out: Path) -> float:
    """Seconds for ``pyarrow.csv.read_csv`` + ``pyarrow.parquet.write_table`` (zstd) of a file."""
    started = time.monotonic()
    table = pacsv.read_csv(path)
    pq.write_table(table, out, compression="zstd")
    seconds = time.monotonic() - started
    del table
    out.unlink()
    pa.default_memory_pool().release_unused()
    return seconds


def big_file(
    up: HopperUp,
    dataset: str,
    size_bytes: int,
    work: Path,
    *,
    timeout: float | None = None,
    bare: bool = True,
    rss_cap: int | None = None,
) -> dict[str, Any]:
    """Generate a big CSV, convert it with bare pyarrow, then drop it into Hopper.

    Args:
        up: the running Hopper.
        dataset: its dataset (inbox folder).
        size_bytes: the CSV's size.
        work: scratch folder on the same filesystem as the Hopper home.
        timeout: seconds to wait for the output (default: 120 s + 5 MB/s).
        bare: also measure bare pyarrow on the same file.
        rss_cap: kill the flow run if its RSS passes this many bytes (and report that).

    Returns:
        Sizes, seconds, throughputs (MB/s), their ratio and the peak RSS of the worker's
        descendants (the flow-run process) while the file was ingested.
    """
    name = f"{dataset}-{round(mb(size_bytes))}mb"
    path = work / f"{name}.csv"
    began = time.monotonic()
    rows = write_big_csv(path, size_bytes, seed=3)
    size = path.stat().st_size
    log.info(
        "%s: generated %.0f MB (%d rows) in %.1fs", name, mb(size), rows, time.monotonic() - began
    )
    result: dict[str, Any] = {"file": path.name, "bytes": size, "rows": rows}
    if bare:
        seconds = bare_pyarrow(path, work / f"{name}.bare.parquet")
        result.update(bare_seconds=round(seconds, 2), bare_mb_s=mb(size) / seconds)
        log.info("%s: bare pyarrow %.1fs (%.0f MB/s)", name, seconds, mb(size) / seconds)
    limit = timeout if timeout is not None else 120 + mb(size) / 5
    with PeakRSS(up.worker_pid(), cap=rss_cap) as rss:
        moved = time.monotonic()
        os.replace(path, up.inbox(dataset) / path.name)

        def capped() -> str | None:
            return f"flow run passed the {mib(rss_cap or 0):.0f} MiB cap" if rss.capped else None

        try:
            seen = wait_for_output(up, dataset, name, limit, poll=0.05, abort=capped)
        except BenchError:
            if not rss.capped:
                raise
            # Remove the source, so that no retry or reconcile runs it again, unwatched.
            (up.inbox(dataset) / path.name).unlink(missing_ok=True)
            log.warning("%s: flow run killed at the RSS cap; source removed", name)
            result.update(capped=True, peak_rss_bytes=rss.capped[1], hopper_mb_s=0.0)
            return result
    seconds = seen - moved
    peak, command = rss.peak()
    result.update(
        capped=False,
        hopper_seconds=round(seconds, 2),
        hopper_mb_s=mb(size) / seconds,
        peak_rss_bytes=peak,
        peak_rss_command=command,
        worker_rss_bytes=proc_memory(up.worker_pid()).get("VmRSS", 0),
    )
    if bare:
        result["ratio"] = result["hopper_mb_s"] / result["bare_mb_s"]
    log.info(
        "%s: hopper %.1fs (%.0f MB/s), flow-run peak RSS %.0f MiB",
        name,
        seconds,
        result["hopper_mb_s"],
        mib(peak),
    )
    return result


# --------------------------------------------------------------------------- watcher idle


def _idle_files(inbox: Path, count: int, per_folder: int = 1000) -> list[tuple[Path, str]]:
    """Create ``count`` tiny CSV files in sub-folders of ``inbox``; return (path, relative)."""
    made = []
    for i in range(count):
        folder = inbox / f"part-{i // per_folder:03d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"idle-{i:06d}.csv"
        path.write_text(f"{HEADER}{i},1.5,Oslo,2024-01-01\n")
        made.append((path, path.relative_to(inbox.parent).as_posix()))
    return made


def seed_ledger(state_dir: Path, files: list[tuple[Path, str]]) -> str:
    """Record ``files`` as already ingested, exactly as the watcher would describe them.

    A watcher "tracking" files is one whose files were ingested long ago; pushing 100,000
    files through Prefect first would take hours, so their ledger rows are written directly
    (one bulk insert; the per-file public API as a fallback, should the table change).

    Returns:
        ``"bulk"`` or ``"api"``: how the rows were written.
    """
    from hopper.files import describe_file
    from hopper.ledger import Ledger, sqlite_url
    from hopper.ledger import files as files_table
    from hopper.models import FileState, IngestOutcome

    ledger = Ledger(sqlite_url(state_dir))
    try:
        refs = [ref for path, rel in files if (ref := describe_file(path, rel, [])) is not None]
        now = time.time()
        outcomes = [
            IngestOutcome(
                uri=r.uri, fingerprint=r.fingerprint, dataset=r.dataset, state=FileState.INGESTED
            )
            for r in refs
        ]
        try:
            rows = [
                {
                    "uri": r.uri,
                    "fingerprint": r.fingerprint,
                    "dataset": r.dataset,
                    "ref": r.model_dump_json(),
                    "state": FileState.INGESTED.value,
                    "dispatch_count": 1,
                    "flow_run_id": "bench-seed",
                    "outcome": o.model_dump_json(by_alias=True),
                    "detected_at": now,
                    "updated_at": now,
                }
                for r, o in zip(refs, outcomes, strict=True)
            ]
            with ledger.engine.begin() as conn:
                conn.execute(files_table.insert(), rows)
            return "bulk"
        except Exception as exc:
            log.warning("bulk ledger seeding failed (%s); using the ledger API (slow)", exc)
            for ref, outcome in zip(refs, outcomes, strict=True):
                ledger.claim(ref, "bench-seed")
                ledger.finish(outcome, "bench-seed")
            return "api"
    finally:
        ledger.close()


def _cpu_over(pid: int, seconds: float) -> float:
    """CPU % (of one core) a process used over the next ``seconds``."""
    cpu0, wall0 = proc_times(pid)[0], time.monotonic()
    time.sleep(seconds)
    return cpu_percent(proc_times(pid)[0] - cpu0, time.monotonic() - wall0)


def detected_in_log(text: str) -> int:
    """Files a watcher's log says it detected: one by one, or in a burst's tally."""
    tallies = re.findall(r"detected (\d+) files \(", text)
    return text.count("detected file://") + sum(int(n) for n in tallies)


def watcher_idle(
    root: Path,
    api_url: str,
    count: int,
    window: float,
    *,
    settle_timeout: float = 600,
    settle_cpu: float = 10.0,
) -> dict[str, Any]:
    """CPU and memory of a ``hopper watch`` that tracks ``count`` already-ingested files.

    The files are created (and recorded as ingested) before the watcher starts, so its
    startup scan sees all of them; once its CPU has settled (three 2-second windows below
    ``settle_cpu`` % of a core), its CPU time and RSS are sampled every second for
    ``window`` seconds.

    Args:
        root: an empty folder for the watcher's own Hopper home.
        api_url: the Prefect API the watcher talks to (a running `hopper up`'s).
        count: files to track.
        window: seconds to measure.
        settle_timeout: give up waiting for the CPU to settle after this long (and measure).
        settle_cpu: CPU % of one core below which the watcher counts as idle.
    """
    dataset = "bench_idle"
    config = make_home(root, [dataset])
    began = time.monotonic()
    files = _idle_files(root / "inbox" / dataset, count)
    created_s = time.monotonic() - began
    how = seed_ledger(root / ".hopper", files)
    log.info(
        "watcher idle: created %d files in %.1fs, ledger seeded (%s) in %.1fs",
        count,
        created_s,
        how,
        time.monotonic() - began - created_s,
    )
    log_path = root / "watch.log"
    with start_watcher(config, api_url, log_path) as proc:
        started = time.monotonic()
        while "startup scan" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - started > settle_timeout:
                raise BenchError(f"the watcher did not start; see {log_path}")
            time.sleep(0.2)
        calm, settled = 0, False
        while time.monotonic() - started < settle_timeout:
            calm = calm + 1 if _cpu_over(proc.pid, 2.0) < settle_cpu else 0
            if calm >= 3:
                settled = True
                break
        settle_s = time.monotonic() - started
        log.info(
            "watcher idle: %s after %.0fs; measuring for %.0fs",
            "settled" if settled else "NOT settled",
            settle_s,
            window,
        )
        cpu0, wall0 = proc_times(proc.pid)[0], time.monotonic()
        rss: list[float] = []
        while time.monotonic() - wall0 < window:
            rss.append(mib(proc_memory(proc.pid).get("VmRSS", 0)))
            time.sleep(1.0)
        rss.append(mib(proc_memory(proc.pid).get("VmRSS", 0)))
        cpu = cpu_percent(proc_times(proc.pid)[0] - cpu0, time.monotonic() - wall0)
        alive = proc.poll() is None
    text = log_path.read_text(errors="replace")
    return {
        "files": count,
        "seconds": window,
        "settled": settled,
        "settle_seconds": round(settle_s, 1),
        "cpu_percent": cpu,
        "rss_start_mib": rss[0],
        "rss_end_mib": rss[-1],
        "rss_max_mib": max(rss),
        "rss_growth_mib": rss_growth(rss),
        "alive_at_end": alive,
        "dispatched_by_mistake": detected_in_log(text),
        "ledger_seeding": how,
    }


# --------------------------------------------------------------------------- big file to S3


def _moto_server(log_path: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """Start a moto server on a free port; return it, its endpoint and an AWS environment."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(endpoint, timeout=1)
            return proc, endpoint, env
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise BenchError(f"moto_server did not start; see {log_path}") from None
            time.sleep(0.2)


INGEST_ONE = """
import json, sys
from datetime import UTC, datetime
from pathlib import Path
from hopper.config import load_config
from hopper.ingest import ingest
from hopper.models import FileRef, IngestRequest
from hopper.lazy_s3 import LazyS3Client

config = load_config(Path(sys.argv[1]))
path = Path(sys.argv[2])
st = path.stat()
ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset=sys.argv[3])
outcome = ingest(IngestRequest(ref=ref, dispatch_id="bench"), config,
                 s3=LazyS3Client(config.s3.endpoint_url, config.s3.region))
print(outcome.model_dump_json())
"""


def big_file_s3(
    work: Path, size_bytes: int, *, rss_cap: int | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Ingest a big CSV into an S3 lake on a moto server; measure the reader's peak RSS.

    The file goes the way a worker takes it: :func:`hopper.ingest.ingest` in a driver process
    hands it to a reader child (under the contract's limits), which streams it block by
    block to multipart uploads on S3. The peak is the highest of the driver and its reader
    child (the kernel's high-water mark), as the ``rss`` row measures a flow run.

    Args:
        work: scratch folder (the home, the CSV and moto's log go there).
        size_bytes: the CSV's size.
        rss_cap: kill the ingestion if a process passes this many bytes (and report that).
        timeout: seconds to wait for the ingestion (default: 120 s + 5 MB/s).

    Returns:
        Sizes, seconds, MB/s, the peak RSS and the objects the lake holds afterwards.
    """
    import boto3
    from pyarrow import fs as pa_fs

    dataset = "bench_rss_s3"
    root = work / "home-rss-s3"
    make_home(root, [dataset])
    proc, endpoint, env = _moto_server(work / "moto.log")
    try:
        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        s3.create_bucket(Bucket="bench")
        config = root / "hopper.yaml"
        text = config.read_text(encoding="utf-8")
        text = text.replace("lake: lake\n", "lake: s3://bench/lake\n").replace(
            "quarantine: quarantine\n", "quarantine: s3://bench/quarantine\n"
        )
        config.write_text(text + f"s3:\n  endpoint_url: {endpoint}\n", encoding="utf-8")
        path = root / "inbox" / dataset / f"{dataset}-{round(mb(size_bytes))}mb.csv"
        began = time.monotonic()
        rows = write_big_csv(path, size_bytes, seed=3)
        size = path.stat().st_size
        log.info(
            "rss-s3: generated %.0f MB (%d rows) in %.1fs", mb(size), rows, time.monotonic() - began
        )
        result: dict[str, Any] = {"file": path.name, "bytes": size, "rows": rows}
        limit = timeout if timeout is not None else 120 + mb(size) / 5
        driver = subprocess.Popen(
            [sys.executable, "-c", INGEST_ONE, str(config), str(path), dataset],
            stdout=subprocess.PIPE,
            stderr=(work / "rss-s3.log").open("wb"),
            env={**env, "HOPPER_READERS": "1"},
            cwd=root,
        )
        started = time.monotonic()
        with PeakRSS(driver.pid, cap=rss_cap) as rss:
            try:
                out, _ = driver.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                driver.kill()
                raise BenchError(f"rss-s3: not ingested within {limit:.0f}s") from None
        seconds = time.monotonic() - started
        peak, command = rss.peak()
        if rss.capped:
            result.update(capped=True, peak_rss_bytes=rss.capped[1], hopper_mb_s=0.0)
            return result
        if driver.returncode != 0:
            raise BenchError(f"rss-s3: ingestion failed; see {work / 'rss-s3.log'}")
        outcome = json.loads(out.decode().strip().splitlines()[-1])
        if outcome["state"] != "ingested":
            raise BenchError(f"rss-s3: {outcome['state']}: {outcome.get('reason')}")
        objects = s3.list_objects_v2(Bucket="bench", Prefix="lake/").get("Contents", [])
        lake = pa_fs.S3FileSystem(
            access_key="bench",
            secret_key="bench",
            region="us-east-1",
            endpoint_override=endpoint,
        )
        lake_rows = 0
        for obj in objects:  # each object's footer only, not its whole body
            with lake.open_input_file(f"bench/{obj['Key']}") as handle:
                lake_rows += pq.read_metadata(handle).num_rows
        if lake_rows != outcome["rows_out"] or any("_staging" in o["Key"] for o in objects):
            raise BenchError(f"rss-s3: the lake holds {lake_rows} rows in {len(objects)} objects")
        result.update(
            capped=False,
            hopper_seconds=round(seconds, 2),
            hopper_mb_s=mb(size) / seconds,
            peak_rss_bytes=peak,
            peak_rss_command=command,
            lake_objects=len(objects),
            lake_bytes=sum(o["Size"] for o in objects),
            rows_out=outcome["rows_out"],
        )
        log.info(
            "rss-s3: %.1fs (%.0f MB/s), peak RSS %.0f MiB",
            seconds,
            result["hopper_mb_s"],
            mib(peak),
        )
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
