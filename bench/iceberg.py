"""The Iceberg table lake's benchmarks, each against the Parquet lake measured in the same run.

With ``lake.format: iceberg`` a file has landed when its rows are visible in its dataset's
table: when the catalog's pointer (``iceberg_tables.metadata_location`` in the embedded
``.hopper/catalog.db``) names metadata whose snapshots hold one more landing key
(:data:`hopper.tables.commit.LANDED_PROPERTY`, one per source committed). :class:`TableWatch`
reads that pointer with one SQLite query (cheap enough to poll every 20 ms) and loads the
metadata only when it moves.

- **latency** and **burst**: the same drops and the same small files as :mod:`bench.cases`,
  the clock stopped at the commit instead of at a Parquet file's rename;
- **data files**: after the burst, the table's live data files by batch (a snapshot's
  dispatch id) and partition, from ``inspect.entries()``, before any compaction;
- **scan**: the burst's table read whole by pyiceberg, against the same rows as the Parquet
  lake's per-source files read by ``pyarrow.dataset``, each reader warm in a process of its
  own (no Hopper running during either);
- **commit**: :func:`hopper.tables.commit.land` timed in this process on a table that
  already holds ``small`` and then ``large`` sources. The history is written as a real one
  would be — one append per batch of 500 sources (a burst's smallest batch), each its own
  snapshot, data file and manifest, with the batch's landing keys in its summary — but
  from one real batch's rows under new source URIs rather than by ingesting every file.
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import hashlib
import logging
import os
import pstats
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from bench.cases import (
    BenchError,
    drop_atomically,
    latency_phases,
    ledger_counts,
    quarantined,
    settle,
)
from bench.data import small_csv, small_name, write_small_files
from bench.procs import HopperUp, Profile, make_home
from bench.stats import Result, percentile

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

ICEBERG_LAKE = "lake:\n  path: lake\n  format: iceberg\n"
NAMESPACE = "hopper"
"""The tables' namespace (``lake.namespace``'s default): table ``hopper.<dataset>``."""
GOAL_BURST_RATIO = 0.8
GOAL_FILES_PER_BATCH_PARTITION = 1
GOAL_SCAN_SPEEDUP = 20.0
GOAL_LATENCY_EXTRA = 0.3
GOAL_COMMIT_GROWTH = 2.0


def iceberg_profile(profile: Profile) -> Profile:
    """``profile`` (the Hopper under test) with its lake made an Iceberg lake."""
    return dataclasses.replace(
        profile, name=f"{profile.name}, iceberg lake", lake_yaml=ICEBERG_LAKE
    )


@dataclass
class ParquetLake:
    """The Parquet lake's figures the Iceberg rows are compared with (same run)."""

    latency: dict[str, Any] | None = None
    burst: dict[str, Any] | None = None
    burst_folder: Path | None = None
    measured_by: str = "the latency and burst rows"


# --------------------------------------------------------------------------- the table


def landed_count(table: Table) -> int:
    """Landings recorded in the table's snapshots (one landing key per source committed)."""
    from hopper.tables.commit import LANDED_PROPERTY

    count = 0
    for snapshot in table.metadata.snapshots:
        summary = snapshot.summary
        text = summary.additional_properties.get(LANDED_PROPERTY) if summary else None
        count += sum(1 for key in (text or "").split(",") if key)
    return count


class TableWatch:
    """A dataset's table as a reader finds it through the embedded catalog, polled cheaply."""

    def __init__(self, root: Path, dataset: str) -> None:
        from hopper.tables.catalog import CATALOG_FILE

        self.catalog_db = root / ".hopper" / CATALOG_FILE
        self.dataset = dataset
        self._conn: sqlite3.Connection | None = None
        self._pointer: str | None = None
        self._landed = 0

    def pointer(self) -> str | None:
        """The table's current metadata file, or None while there is no table."""
        try:
            if self._conn is None:
                uri = f"file:{self.catalog_db}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
            row = self._conn.execute(
                "SELECT metadata_location FROM iceberg_tables "
                "WHERE table_namespace = ? AND table_name = ?",
                (NAMESPACE, self.dataset),
            ).fetchone()
        except sqlite3.OperationalError:  # no catalog file or table yet
            return None
        return str(row[0]) if row and row[0] else None

    def table(self) -> Table | None:
        """The table at its current pointer (metadata only), or None."""
        from pyiceberg.table import StaticTable

        pointer = self.pointer()
        return StaticTable.from_metadata(pointer) if pointer else None

    def landed(self) -> int:
        """Sources committed so far (the metadata is read only when the pointer moved)."""
        pointer = self.pointer()
        if pointer and pointer != self._pointer:
            from pyiceberg.table import StaticTable

            self._landed = landed_count(StaticTable.from_metadata(pointer))
            self._pointer = pointer
        return self._landed

    def close(self) -> None:
        """Close the catalog connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def wait_for_landings(
    watch: TableWatch, want: int, timeout: float, poll: float, quarantine: Path, stem: str
) -> float:
    """Wait until ``want`` sources are in the table; return ``time.monotonic()`` when seen.

    Raises:
        BenchError: the source ``stem`` was quarantined, or ``timeout`` passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if watch.landed() >= want:
            return now
        if any(n.startswith(stem + ".") for n in quarantined(quarantine)):
            raise BenchError(f"{stem} was quarantined; see {quarantine}")
        if now > deadline:
            raise BenchError(f"{stem} not in table {watch.dataset} within {timeout:.0f}s")
        time.sleep(poll)


# --------------------------------------------------------------------------- latency, burst


def latency(up: HopperUp, dataset: str, count: int, timeout: float = 120) -> dict[str, Any]:
    """:func:`bench.cases.latency` into a table: rename → its rows visible in the table."""
    watch = TableWatch(up.root, dataset)
    latencies: list[float] = []
    drops: list[tuple[Path, float, float]] = []
    try:
        for i in range(count):
            target = up.inbox(dataset) / small_name("lat", i)
            before = watch.landed()
            wall = time.time()
            moved = drop_atomically(small_csv(i, seed=1), target)
            seen = wait_for_landings(
                watch, before + 1, timeout, 0.02, up.quarantine(dataset), target.stem
            )
            latencies.append(seen - moved)
            drops.append((target, wall, wall + seen - moved))
            log.info(
                "iceberg latency %d/%d: %s after %.2fs", i + 1, count, target.name, seen - moved
            )
    finally:
        watch.close()
    result: dict[str, Any] = {
        "files": count,
        "latencies": [round(x, 3) for x in latencies],
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
    }
    try:  # the ledger's "ingested" follows the commit here: the last phase is negative
        result["per_drop"] = []
        result["phases"] = latency_phases(up, drops, result["per_drop"])
    except Exception as exc:
        log.warning("could not break iceberg latency down into phases: %s", exc)
    return result


def burst(
    up: HopperUp, dataset: str, count: int, staging: Path, timeout: float, prefix: str = "b"
) -> dict[str, Any]:
    """:func:`bench.cases.burst` into a table: the clock stops at the commit of the last file.

    Exactly once: every source's rows in the table as many times as the file has rows (from
    a scan of ``_source_uri``), no other source, none quarantined, the ledger counting every
    file ingested.
    """
    log.info("iceberg burst: writing %d small files to %s", count, staging)
    paths = write_small_files(staging, count, prefix, seed=2)
    inbox = up.inbox(dataset)
    expected = {(inbox / p.name).resolve().as_uri(): p.read_bytes().count(b"\n") - 1 for p in paths}
    watch = TableWatch(up.root, dataset)
    started = time.monotonic()
    for path in paths:
        os.replace(path, inbox / path.name)
    moved_s = time.monotonic() - started
    try:
        landed, bad, seconds = settle(
            watch.landed,
            lambda: len(quarantined(up.quarantine(dataset))),
            count,
            started,
            timeout,
            "iceberg burst",
        )
        table = watch.table()
    finally:
        watch.close()
    timed_out = landed + bad < count
    ledger: dict[str, Any] = {}
    for _ in range(20):  # the ledger is written just after the commit
        ledger = ledger_counts(up, dataset)
        if ledger.get("ingested", 0) >= landed:
            break
        time.sleep(0.5)
    rows: Counter[str] = Counter()
    if table is not None:
        rows.update(
            table.scan(selected_fields=("_source_uri",)).to_arrow()["_source_uri"].to_pylist()
        )
    wrong = sorted(uri for uri in set(rows) | set(expected) if rows[uri] != expected.get(uri, 0))
    ingested = int(ledger.get("ingested", 0))
    return {
        "files": count,
        "landed": landed,
        "seconds": round(seconds, 2),
        "move_seconds": round(moved_s, 2),
        "files_per_s": landed / seconds if seconds > 0 else 0.0,
        "timed_out": timed_out,
        "quarantined": bad,
        "rows": sum(rows.values()),
        "sources_with_wrong_rows": [u.rsplit("/", 1)[-1] for u in wrong[:20]],
        "ledger_ingested": ingested,
        "ledger": ledger,
        "exactly_once": not timed_out and not wrong and ingested == count and bad == 0,
    }


# --------------------------------------------------------------------------- data files, scan


def most_files_per_batch_partition(entries: Iterable[tuple[str, str]]) -> int:
    """The most data files any one batch wrote to any one partition.

    Args:
        entries: one ``(batch, partition)`` per live data file.
    """
    return max(Counter(entries).values(), default=0)


def table_files(root: Path, dataset: str) -> dict[str, Any]:
    """The table's data files, snapshots and batches, from its metadata (no data read).

    A batch is a snapshot's dispatch id (one flow run's commit); the ledger's count of flow
    runs whose files were ingested is reported next to it.
    """
    from hopper.ledger import Ledger, sqlite_url
    from hopper.models import FileState
    from hopper.tables.commit import DISPATCH_PROPERTY

    watch = TableWatch(root, dataset)
    try:
        table = watch.table()
    finally:
        watch.close()
    if table is None:
        raise BenchError(f"no table for {dataset}")
    batch_of = {
        s.snapshot_id: (
            s.summary.additional_properties.get(DISPATCH_PROPERTY) if s.summary else None
        )
        for s in table.metadata.snapshots
    }
    entries = table.inspect.entries()
    files = [
        (batch_of.get(snapshot) or str(snapshot), repr(data_file["partition"]))
        for snapshot, data_file in zip(
            entries["snapshot_id"].to_pylist(), entries["data_file"].to_pylist(), strict=True
        )
        if data_file["content"] == 0  # data, not delete files
    ]
    ledger = Ledger(sqlite_url(root / ".hopper"))
    try:
        records = ledger.records(dataset=dataset, states=[FileState.INGESTED])
    finally:
        ledger.close()
    operations = Counter(
        s.summary.operation.value if s.summary else "?" for s in table.metadata.snapshots
    )
    return {
        "data_files": len(files),
        "snapshots": len(table.metadata.snapshots),
        "operations": dict(operations),
        "batches": len(set(batch_of.values())),
        "ledger_flow_runs": len({r.flow_run_id for r in records}),
        "partitions": len({partition for _, partition in files}),
        "most_files_per_batch_partition": most_files_per_batch_partition(files),
        "rows": int(sum(entries["data_file"].combine_chunks().field("record_count").to_pylist())),
    }


SCAN_ROUNDS = 2
"""Times each reader gets a process of its own; the rounds alternate table and folder."""


def _read_table_once(catalog_db: str, identifier: str) -> int:
    """Load the table through its catalog, as a reader does, and read it whole."""
    from pyiceberg.catalog import load_catalog

    from hopper.tables.catalog import CATALOG_NAME

    catalog = load_catalog(CATALOG_NAME, type="sql", uri=f"sqlite:///{catalog_db}")
    return int(catalog.load_table(identifier).scan().to_arrow().num_rows)


def _read_folder_once(folder: str) -> int:
    """List the folder's files anew and read them whole."""
    import pyarrow.dataset as ds

    return int(ds.dataset(folder, format="parquet").to_table().num_rows)


def _timed_reads(reader: str, target: tuple[str, ...], repeats: int) -> tuple[list[float], int]:
    """In a process of its own: one warm-up read, then ``repeats`` reads; all their seconds.

    The first figure is the warm-up's (the process's first read: thread pools, imports).
    """
    read = _read_table_once if reader == "table" else _read_folder_once
    seconds = []
    for _ in range(1 + repeats):
        began = time.monotonic()
        rows = read(*target)
        seconds.append(time.monotonic() - began)
    return seconds, rows


def scan_speed(root: Path, dataset: str, parquet_folder: Path, repeats: int = 5) -> dict[str, Any]:
    """Seconds to read the whole table (pyiceberg) and the Parquet lake's folder (pyarrow).

    Each reader runs in a process of its own (spawned, nothing else in it), as a reader of
    either lake would: one untimed warm-up read, then ``repeats`` reads in a row, each loading
    the table through the catalog or listing the folder anew. The rounds alternate table and
    folder processes, and the medians of all timed reads are kept.

    Why apart: read in one process, a read just after the folder's pays for what the
    folder's read left behind (measured: 0.45 s of CPU instead of 0.10 s for the same 21
    Parquet files with plain pyarrow, whatever reads them; none of it when the folder is
    read in another process). That cost belongs to the folder's reader, not to the table.

    DuckDB and polars are not dependencies of Hopper: whether they are installed is noted,
    and they are not measured.
    """
    import importlib.util
    import multiprocessing

    from hopper.tables.catalog import CATALOG_FILE

    table_target = (str(root / ".hopper" / CATALOG_FILE), f"{NAMESPACE}.{dataset}")
    folder_target = (str(parquet_folder),)
    iceberg_s: list[float] = []
    parquet_s: list[float] = []
    iceberg_rows = parquet_rows = 0
    spawn = multiprocessing.get_context("spawn")
    first_reads: dict[str, list[float]] = {"iceberg": [], "parquet": []}
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        for _ in range(SCAN_ROUNDS):
            seconds, iceberg_rows = pool.apply(_timed_reads, ("table", table_target, repeats))
            first_reads["iceberg"].append(round(seconds[0], 3))
            iceberg_s += seconds[1:]
            seconds, parquet_rows = pool.apply(_timed_reads, ("folder", folder_target, repeats))
            first_reads["parquet"].append(round(seconds[0], 3))
            parquet_s += seconds[1:]
    iceberg_median, parquet_median = statistics.median(iceberg_s), statistics.median(parquet_s)
    return {
        "method": f"each reader in its own process, {SCAN_ROUNDS} rounds of 1 warm-up and "
        f"{repeats} timed reads",
        "iceberg_seconds": [round(s, 3) for s in iceberg_s],
        "parquet_seconds": [round(s, 3) for s in parquet_s],
        "first_read_in_process": first_reads,
        "iceberg_median": iceberg_median,
        "parquet_median": parquet_median,
        "speedup": parquet_median / iceberg_median if iceberg_median > 0 else 0.0,
        "iceberg_rows": iceberg_rows,
        "parquet_rows": parquet_rows,
        "parquet_files": sum(1 for _ in parquet_folder.rglob("*.parquet")),
        "same_rows": iceberg_rows == parquet_rows,
        "other_readers_installed": {
            name: importlib.util.find_spec(name) is not None for name in ("duckdb", "polars")
        },
    }


# --------------------------------------------------------------------------- commit cost

COMMIT_DATASET = "bench_commit"
PROFILED = (
    ("reading staged files", "hopper/tables/commit.py", "_read_staged"),
    ("loading the table", "hopper/tables/commit.py", "_load_table"),
    ("landing keys of earlier snapshots", "hopper/tables/commit.py", "landed_keys"),
    (
        "pyiceberg: copies of the table metadata",
        "table/update/__init__.py",
        "update_table_metadata",
    ),
    ("pyiceberg: catalog commit (metadata file, SQLite)", "catalog/sql.py", "commit_table"),
    ("removing staged files", "hopper/tables/commit.py", "_remove_stage"),
)
"""Where a commit's time goes: (label, file, function); the spans may nest, so may overlap."""


def renamed_rows(template: pa.Table, sources: int, name: str) -> tuple[pa.Table, list[str]]:
    """``sources`` sources' rows: the template's sources, repeated, under new ``_source_uri``s.

    Args:
        template: rows of real sources, with a ``_source_uri`` column.
        sources: how many sources to make.
        name: a ``str.format`` pattern for the new URIs, given the source's index.

    Returns:
        The rows, and the new sources' URIs in order.
    """
    from hopper.lineage import SOURCE_URI

    encoded = pc.dictionary_encode(template[SOURCE_URI]).combine_chunks()
    indices, known = encoded.indices, len(encoded.dictionary)
    where = template.schema.get_field_index(SOURCE_URI)
    parts, uris = [], []
    for offset in range(0, sources, known):
        take = min(known, sources - offset)
        names = [name.format(offset + j) for j in range(take)]
        keep = pc.less(indices, take)
        column = pa.array(names, template.schema.field(where).type).take(indices.filter(keep))
        parts.append(template.filter(keep).set_column(where, SOURCE_URI, column))
        uris += names
    return pa.concat_tables(parts), uris


@dataclass
class CommitHome:
    """A home whose table holds ``sources`` sources; fresh batches are committed to it."""

    root: Path
    config: Any
    ledger: Any
    sources: int
    snapshots: int = 0
    manifests: int = 0
    build_seconds: float = 0.0
    fresh: int = 0

    def stage(self, count: int) -> list[Any]:
        """Stage ``count`` new small files as a worker's readers would (in this process)."""
        from hopper.ingest import ingest
        from hopper.models import FileRef, IngestRequest

        outcomes = []
        folder = self.root / "inbox" / COMMIT_DATASET
        for _ in range(count):
            path = folder / small_name("fresh", self.fresh)
            path.write_bytes(small_csv(self.fresh, seed=6))
            self.fresh += 1
            st = path.stat()
            ref = FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime,
                          dataset=COMMIT_DATASET)  # fmt: skip
            request = IngestRequest(ref=ref, dispatch_id=f"bench-{self.fresh}")
            outcomes.append(ingest(request, self.config, isolate=False))
        return outcomes

    def land(self, outcomes: list[Any], dispatch_id: str) -> float:
        """Commit staged ``outcomes`` with :func:`hopper.tables.land`; return the seconds."""
        from hopper.models import FileState
        from hopper.tables import land

        began = time.monotonic()
        landed = land(self.config, self.ledger, outcomes, dispatch_id)
        seconds = time.monotonic() - began
        bad = [o.uri for o in landed if o.state is not FileState.INGESTED]
        if bad:
            raise BenchError(f"{len(bad)} sources not committed, e.g. {bad[0]}")
        return seconds

    def close(self) -> None:
        """Close the ledger."""
        self.ledger.close()


def commit_home(root: Path, sources: int, first: int, history_batch: int) -> CommitHome:
    """A home whose table already holds ``sources`` sources.

    The ``first`` are ingested and committed for real, in one batch; the rest are appended
    directly, ``history_batch`` at a time, one snapshot each, its rows those of the first
    batch under new URIs and its summary carrying its dispatch id and its sources' landing
    keys, as :func:`hopper.tables.land` writes them. Nothing is compacted or expired.
    """
    from hopper.config import load_config
    from hopper.ledger import Ledger, sqlite_url

    began = time.monotonic()
    config = load_config(make_home(root, [COMMIT_DATASET], lake_yaml=ICEBERG_LAKE))
    home = CommitHome(root, config, Ledger(sqlite_url(config.state_dir)), sources)
    try:
        _write_history(home, first, history_batch)
    except BaseException:
        home.close()
        raise
    home.build_seconds = time.monotonic() - began
    return home


def _write_history(home: CommitHome, first: int, history_batch: int) -> None:
    """Commit ``first`` real sources, then append the rest of the home's sources as history."""
    from hopper.tables import open_catalog, table_identifier
    from hopper.tables.commit import DISPATCH_PROPERTY, LANDED_PROPERTY, landing_key

    root, config, sources = home.root, home.config, home.sources
    home.land(home.stage(first), "history-0")
    table = open_catalog(config).load_table(table_identifier(config, COMMIT_DATASET))
    template = table.scan().to_arrow().cast(table.schema().as_arrow())
    pattern = (root / "inbox" / COMMIT_DATASET).as_uri() + "/history/b{batch:05d}-{{:05d}}.csv"
    done, batch = first, 1
    while done < sources:
        count = min(history_batch, sources - done)
        rows, uris = renamed_rows(template, count, pattern.format(batch=batch))
        keys = [landing_key(u, hashlib.sha256(u.encode()).hexdigest(), 0) for u in uris]
        props = {DISPATCH_PROPERTY: f"history-{batch}", LANDED_PROPERTY: ",".join(keys)}
        table.append(rows, snapshot_properties=props)
        done, batch = done + count, batch + 1
        if batch % 50 == 0:
            log.info("commit: %s: %d/%d sources in the table", root.name, done, sources)
    snapshot = table.current_snapshot()
    home.snapshots = len(table.metadata.snapshots)
    home.manifests = len(snapshot.manifests(table.io)) if snapshot is not None else 0


def profile_land(home: CommitHome, batch: int) -> dict[str, float]:
    """One more commit under cProfile: seconds inside each of :data:`PROFILED`, and the total."""
    outcomes = home.stage(batch)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        total = home.land(outcomes, "profiled")
    finally:
        profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    spent = {"total (profiled)": round(total, 4)}
    for label, file, function in PROFILED:
        spent[label] = round(
            sum(v[3] for (f, _, fn), v in stats.items() if fn == function and f.endswith(file)), 4
        )
    return spent


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Hopper's per-file log lines off while this process stages and commits thousands."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def commit_scaling(
    work: Path, small: int, large: int, batch: int, repeats: int, history_batch: int = 0
) -> dict[str, Any]:
    """Median seconds of :func:`hopper.tables.land` for ``batch`` fresh sources, by table size.

    Three tables: ``small`` and ``large`` sources written as a real history would be (one
    snapshot per ``history_batch``; by default the smallest batch a burst is cut into,
    :data:`hopper.batching.BATCH_FLOOR`: the longest history), and, to
    tell the cost of sources from that of snapshots, ``large`` sources in two snapshots. The
    commits alternate between the tables; each adds one snapshot to its table.
    """
    from hopper.batching import BATCH_FLOOR

    history_batch = history_batch or BATCH_FLOOR
    first, large_first = min(small, history_batch), min(large, history_batch)
    shapes = {  # sources, the real first batch, then sources per snapshot
        "small": (small, first, history_batch),
        "large": (large, large_first, history_batch),
        "large, 2 snapshots": (large, large_first, max(1, large - large_first)),
    }
    with _quiet("hopper"), _quiet("alembic"), contextlib.ExitStack() as stack:
        homes: dict[str, CommitHome] = {}
        for label, (sources, real, per_batch) in shapes.items():
            folder = work / label.replace(",", "").replace(" ", "-")
            home = commit_home(folder, sources, real, per_batch)
            stack.callback(home.close)
            homes[label] = home
            log.info(
                "commit: a table of %d sources in %d snapshots, built in %.1fs",
                sources,
                home.snapshots,
                home.build_seconds,
            )
        times: dict[str, list[float]] = {label: [] for label in homes}
        for rep in range(repeats):
            for label, home in homes.items():
                times[label].append(home.land(home.stage(batch), f"timed-{rep}"))
        result: dict[str, Any] = {
            "batch": batch,
            "repeats": repeats,
            "history_batch": history_batch,
        }
        for label, home in homes.items():
            result[label] = {
                "sources": home.sources,
                "snapshots_before": home.snapshots,
                "manifests_before": home.manifests,
                "build_seconds": round(home.build_seconds, 1),
                "seconds": [round(s, 4) for s in times[label]],
                "median": statistics.median(times[label]),
                "where_the_time_goes": profile_land(home, batch),
            }
    result["ratio"] = result["large"]["median"] / result["small"]["median"]
    log.info(
        "commit: %.3fs with %d sources, %.3fs with %d (%.2fx)",
        result["large"]["median"],
        large,
        result["small"]["median"],
        small,
        result["ratio"],
    )
    return result


# --------------------------------------------------------------------------- table rows


def _not_measured(what: str) -> str:
    return f"{what}: not measured"


def latency_result(run: dict[str, Any], parquet: dict[str, Any] | None) -> Result:
    """Row: one small file's drop → rows visible, p50 within 0.3 s of the Parquet lake's."""
    measured = f"p50 {run['p50']:.2f} s, p95 {run['p95']:.2f} s"
    base, passed = _not_measured("Parquet lake"), None
    if parquet:
        measured += f" ({run['p50'] - parquet['p50']:+.2f} s)"
        base = f"Parquet lake: p50 {parquet['p50']:.2f} s, p95 {parquet['p95']:.2f} s"
        passed = run["p50"] <= parquet["p50"] + GOAL_LATENCY_EXTRA
    return Result(
        f"iceberg: latency, 1 small file ({run['files']} drops)",
        measured,
        f"p50 ≤ Parquet lake's + {GOAL_LATENCY_EXTRA} s",
        base,
        passed,
        {"run": run, "parquet": parquet},
    )


def burst_result(run: dict[str, Any], parquet: dict[str, Any] | None) -> Result:
    """Row: the burst into a table, at ≥ 0.8× the Parquet lake's files/s, exactly once."""
    measured = f"{run['files_per_s']:.1f} files/s"
    if run["timed_out"]:
        measured += f" ({run['landed']}/{run['files']} in {run['seconds']:.0f} s, timed out)"
    elif not run["exactly_once"]:
        measured += " (NOT exactly once)"
    base, passed = _not_measured("Parquet lake"), None
    if parquet:
        ratio = run["files_per_s"] / parquet["files_per_s"] if parquet["files_per_s"] else 0.0
        run["ratio_to_parquet"] = ratio
        measured += f", {ratio:.2f}× Parquet"
        base = f"Parquet lake: {parquet['files_per_s']:.1f} files/s"
        if not parquet["exactly_once"]:
            base += " (NOT exactly once)"
        passed = run["exactly_once"] and ratio >= GOAL_BURST_RATIO
    return Result(
        f"iceberg: burst of {run['files']:,} small files",
        measured,
        f"all once, ≥ {GOAL_BURST_RATIO}× Parquet lake files/s",
        base,
        passed,
        {"run": run, "parquet": parquet},
    )


def files_result(run: dict[str, Any], burst_files: int) -> Result:
    """Row: the burst's table holds no more than one data file per batch per partition."""
    most = run["most_files_per_batch_partition"]
    return Result(
        "iceberg: data files after the burst",
        f"{run['data_files']} data files, {run['snapshots']} snapshots, {run['batches']} "
        f"batches, {run['partitions']} partition(s); ≤ {most} per batch and partition",
        f"≤ {GOAL_FILES_PER_BATCH_PARTITION} per batch per partition (before compaction)",
        f"Parquet lake: {burst_files:,} files",
        0 < most <= GOAL_FILES_PER_BATCH_PARTITION,
        {"run": run},
    )


def scan_result(run: dict[str, Any]) -> Result:
    """Row: reading the burst's table whole, ≥ 20× faster than the per-source Parquet files."""
    measured = f"{run['iceberg_median']:.3f} s ({run['speedup']:.1f}× faster)"
    if not run["same_rows"]:
        measured += f" (rows differ: {run['iceberg_rows']:,} vs {run['parquet_rows']:,})"
    return Result(
        f"iceberg: full scan, {run['iceberg_rows']:,} rows (pyiceberg)",
        measured,
        f"≥ {GOAL_SCAN_SPEEDUP:.0f}× faster than the Parquet lake",
        f"Parquet lake: {run['parquet_median']:.3f} s ({run['parquet_files']:,} files, "
        "pyarrow.dataset)",
        run["same_rows"] and run["speedup"] >= GOAL_SCAN_SPEEDUP,
        {"run": run},
    )


def commit_result(run: dict[str, Any]) -> Result:
    """Row: committing a batch to a table of many sources costs ≤ 2× that of a small table."""
    small, large = run["small"], run["large"]
    return Result(
        f"iceberg: commit of {run['batch']} sources, {large['sources']:,} vs "
        f"{small['sources']:,} in the table",
        f"{large['median']:.3f} s ({run['ratio']:.2f}×; {large['snapshots_before']} snapshots)",
        f"≤ {GOAL_COMMIT_GROWTH:.0f}× the small table's",
        f"{small['sources']:,} sources: {small['median']:.3f} s "
        f"({small['snapshots_before']} snapshots)",
        run["ratio"] <= GOAL_COMMIT_GROWTH,
        {"run": run},
    )
