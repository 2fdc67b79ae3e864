"""Upkeep of the table lake: compaction, snapshot expiry and orphan removal, table by table.

Ingestion commits one snapshot per batch, so a busy table gathers small data files (at least
one per partition per batch), a long snapshot history, and files nothing refers to any more
(data files a replay or a compaction replaced, once their snapshots expire; the leftovers
of a commit that failed). :func:`maintain` keeps each table lean, in three steps:

1. **Compaction.** Per partition, data files under 3/4 of ``lake.target_file_mb`` are packed
   (largest first) into groups of at most the target size, and each group of two or more is
   rewritten as one file. Every group of the table goes in *one* snapshot that deletes
   exactly the chosen files and adds their replacements (a file-level replace, rows and
   lineage columns as they were; no ``hopper.landed`` keys, it lands no source). Iceberg's
   optimistic concurrency keeps it safe against ingestion: a commit that lost the race, or
   whose files a concurrent commit added to or replaced, is redone on the refreshed table,
   with backoff and jitter — groups whose files are all still live keep what was written,
   the others are dropped (a replay may have just replaced their rows). Rows appended in
   the meantime are therefore never lost, and rows replaced in the meantime never return.
2. **Snapshot expiry.** Snapshots older than ``snapshot_max_age_hours`` are expired, except
   the latest ``keep_snapshots``, the current one and any branch or tag head. Never inside
   the ingest path's 7-day exactly-once window
   (:data:`~hopper.tables.commit.LANDING_WINDOW_SECONDS`): a retried batch looks for its own
   commit in those snapshots.
3. **Orphan removal.** Files under the table's ``data/`` and ``metadata/`` that no snapshot,
   manifest or metadata file refers to, and older than ``orphan_min_age_hours`` (a commit in
   progress has written files nothing refers to yet), are deleted — through the table's own
   FileIO, on local disk or S3 alike. If any live file of the current snapshot is not found
   where its path says, paths and listing disagree and nothing is deleted.

Planning (:func:`pack`, :func:`expirable`, :func:`orphans`) is pure; the rest reads and
writes through pyiceberg. ``--dry-run`` plans every step and changes nothing. One room, not
a package: the three steps run on one table in turn, share its retry rule and fill one
report, and each reads alone (:func:`compact`, :func:`expire`, :func:`remove_orphans`).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from hopper.config import HopperConfig, MaintainOptions
from hopper.errors import ConfigError, HopperError, TransientError
from hopper.tables.catalog import open_catalog, table_identifier
from hopper.tables.commit import LANDING_WINDOW_SECONDS
from hopper.tables.transaction import transaction

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table

log = logging.getLogger(__name__)

MAINTENANCE_PROPERTY = "hopper.maintenance"
"""Snapshot summary property of a compaction's snapshot (its value: ``compaction``)."""
SMALL_FRACTION = 0.75
"""A data file under this fraction of the target size is small (a compaction candidate)."""
COMMIT_ATTEMPTS = 8
"""Commits tried before a table's compaction or expiry gives up for this run."""


class TableUpkeep(BaseModel):
    """What upkeep did to one table (with ``dry_run``: what it would have done)."""

    table: str = Field(description="<namespace>.<dataset>.")
    files_before: int = Field(default=0, description="Data files in the current snapshot before.")
    files_after: int = Field(default=0, description="Data files in the current snapshot after.")
    rows_before: int = Field(default=0, description="Rows in the current snapshot before.")
    rows_after: int = Field(default=0, description="Rows in the current snapshot after.")
    files_rewritten: int = Field(default=0, description="Small data files compacted away.")
    files_written: int = Field(default=0, description="Data files the compaction wrote.")
    compaction_snapshot_id: int | None = Field(
        default=None, description="The compaction's snapshot (None: nothing to compact)."
    )
    snapshots_expired: int = Field(default=0, description="Snapshots expired.")
    snapshots_kept: int = Field(default=0, description="Snapshots left (time travel reach).")
    orphans: int = Field(default=0, description="Unreferenced old files deleted.")
    orphan_bytes: int = Field(default=0, description="Their bytes.")
    notes: list[str] = Field(default_factory=list, description="Steps skipped, and why.")
    error: str | None = Field(default=None, description="Why upkeep of this table failed.")


class UpkeepReport(BaseModel):
    """What :func:`maintain` did, table by table."""

    lake_format: str = Field(description="lake.format: upkeep is for iceberg tables only.")
    dry_run: bool = Field(description="Planned only: nothing was written or deleted.")
    tables: list[TableUpkeep] = Field(default_factory=list, description="One per table.")

    @property
    def failed(self) -> list[TableUpkeep]:
        """The tables whose upkeep failed."""
        return [t for t in self.tables if t.error]


def pack(sizes: Sequence[tuple[str, int]], target: int) -> list[list[str]]:
    """Group one partition's small files into rewrites of at most ``target`` bytes each.

    First fit, largest first. Only groups of two or more files are returned: rewriting a file
    alone changes nothing.

    Args:
        sizes: ``(path, bytes)`` of the partition's small files.
        target: the target size of a data file, in bytes.
    """
    bins: list[tuple[int, list[str]]] = []
    for path, size in sorted(sizes, key=lambda item: (-item[1], item[0])):
        for i, (used, paths) in enumerate(bins):
            if used + size <= target:
                bins[i] = (used + size, [*paths, path])
                break
        else:
            bins.append((size, [path]))
    return [paths for _, paths in bins if len(paths) > 1]


def expirable(
    snapshots: Iterable[tuple[int, int]],
    keep: set[int],
    cutoff_ms: int,
    keep_last: int,
) -> list[int]:
    """The snapshots to expire: older than ``cutoff_ms``, outside the newest ``keep_last``.

    Args:
        snapshots: ``(snapshot id, committed at in ms)`` of every snapshot.
        keep: ids never expired (the current snapshot, branch and tag heads).
        cutoff_ms: snapshots committed before this may expire.
        keep_last: how many of the newest snapshots always stay.
    """
    newest_first = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    return sorted(sid for sid, at in newest_first[keep_last:] if at < cutoff_ms and sid not in keep)


@dataclass(frozen=True)
class Listed:
    """A file found under a table's location."""

    path: str
    size: int
    mtime_ns: int | None


def orphans(listed: Iterable[Listed], referenced: set[str], before_ns: int) -> list[Listed]:
    """Listed files that nothing refers to and that were last written before ``before_ns``.

    A file without a modification time is never taken for an orphan.
    """
    return [
        f
        for f in listed
        if f.path not in referenced and f.mtime_ns is not None and f.mtime_ns < before_ns
    ]


def check_options(options: MaintainOptions) -> None:
    """Refuse settings that would break exactly-once ingestion.

    Raises:
        ConfigError: snapshots would expire inside the ingest path's landing window.
    """
    if options.snapshot_max_age_hours * 3600 < LANDING_WINDOW_SECONDS:
        raise ConfigError(
            f"lake.maintain.snapshot_max_age_hours {options.snapshot_max_age_hours:g} is "
            f"shorter than the {LANDING_WINDOW_SECONDS // 3600} hours in which a retried batch "
            "looks for its own commit; raise it to at least that"
        )


def maintain(
    config: HopperConfig,
    dataset: str | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> UpkeepReport:
    """Compact, expire and clean every dataset's table (or ``dataset``'s alone).

    A Parquet lake has nothing to maintain: the report lists no table. A table whose upkeep
    fails is reported with its error, and the others are still maintained.

    Args:
        config: the home's configuration (``lake.maintain`` holds the settings).
        dataset: maintain only this dataset's table.
        dry_run: plan every step, write and delete nothing.
        now: the time that ages are measured against (default: now).
        sleep: how to wait between commit attempts.

    Raises:
        ConfigError: ``lake.maintain`` would break exactly-once ingestion.
        HopperError: ``dataset`` has no table.
    """
    report = UpkeepReport(lake_format=config.lake.format, dry_run=dry_run)
    if not config.lake.is_table:
        return report
    options = config.lake.maintain
    check_options(options)
    catalog = open_catalog(config)
    if dataset is not None:
        names = [dataset]
        if not catalog.table_exists(table_identifier(config, dataset)):
            raise HopperError(
                f"dataset {dataset!r} has no table {table_identifier(config, dataset)} yet: a "
                "table is made by its first ingested file (`hopper status` lists the datasets)"
            )
    else:
        names = sorted(ident[-1] for ident in catalog.list_tables(config.lake.namespace))
    moment = now or datetime.now(UTC)
    for name in names:
        identifier = table_identifier(config, name)
        try:
            table = catalog.load_table(identifier)
            done = maintain_table(
                table,
                options,
                target_bytes=config.lake.target_file_mb << 20,
                dry_run=dry_run,
                now=moment,
                sleep=sleep,
            )
        except Exception as exc:  # one table's fault must not stop the others' upkeep
            log.exception("%s: upkeep failed", identifier)
            done = TableUpkeep(table=identifier, error=f"{type(exc).__name__}: {exc}")
        report.tables.append(done)
    return report


def maintain_table(
    table: Table,
    options: MaintainOptions,
    *,
    target_bytes: int,
    dry_run: bool = False,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TableUpkeep:
    """The three steps of upkeep on one table (see the module docstring).

    Args:
        table: the table, as loaded (a stale copy is fine: every commit refreshes on conflict).
        options: the home's ``lake.maintain``.
        target_bytes: the target size of a data file.
        dry_run: plan only.
        now: the time that ages are measured against (default: now).
        sleep: how to wait between commit attempts.
    """
    moment = now or datetime.now(UTC)
    name = ".".join(table.name())
    done = TableUpkeep(table=name)
    done.files_before, done.rows_before = _totals(table)
    if options.compact:
        table = compact(table, target_bytes, done, dry_run=dry_run, sleep=sleep)
    cutoff = moment.timestamp() - options.snapshot_max_age_hours * 3600
    table = expire(table, int(cutoff * 1000), options.keep_snapshots, done, dry_run, sleep)
    before_ns = int((moment.timestamp() - options.orphan_min_age_hours * 3600) * 1e9)
    remove_orphans(table, before_ns, done, dry_run)
    done.files_after, done.rows_after = _totals(table)
    if dry_run:
        done.files_after = done.files_before - done.files_rewritten + done.files_written
        done.rows_after = done.rows_before
    log.info(
        "%s: %d → %d data files, %d rows; %d snapshots expired, %d kept; %d orphans (%d bytes)%s",
        name,
        done.files_before,
        done.files_after,
        done.rows_after,
        done.snapshots_expired,
        done.snapshots_kept,
        done.orphans,
        done.orphan_bytes,
        " (dry run)" if dry_run else "",
    )
    return done


def _totals(table: Table) -> tuple[int, int]:
    """Data files and rows of the current snapshot, from its summary."""
    current = table.current_snapshot()
    summary = current.summary if current is not None else None
    totals = summary.additional_properties if summary is not None else {}
    return int(totals.get("total-data-files", 0)), int(totals.get("total-records", 0))


def _backoff(attempt: int) -> float:
    """Seconds to wait before commit attempt ``attempt + 1``: exponential, with jitter."""
    return min(0.05 * 2.0**attempt, 5.0) * random.uniform(0.5, 1.5)


@dataclass
class _Group:
    """Small files of one partition rewritten as one file."""

    partition: Hashable
    inputs: list[str]
    outputs: list[DataFile] = field(default_factory=list)


def _live(table: Table) -> dict[str, FileScanTask]:
    """The current snapshot's data files that compaction may rewrite, by path.

    Files of an older partition spec and files with delete files are left alone.
    """
    if table.current_snapshot() is None:
        return {}
    spec_id = table.spec().spec_id
    return {
        task.file.file_path: task
        for task in table.scan().plan_files()
        if not task.delete_files and task.file.spec_id == spec_id
    }


def plan_compaction(live: dict[str, FileScanTask], target_bytes: int) -> list[_Group]:
    """The rewrites of a table's small files, partition by partition (see :func:`pack`)."""
    small: dict[Hashable, list[tuple[str, int]]] = {}
    for path, task in live.items():
        if task.file.file_size_in_bytes < target_bytes * SMALL_FRACTION:
            small.setdefault(task.file.partition, []).append((path, task.file.file_size_in_bytes))
    return [
        _Group(partition, paths)
        for partition, sizes in small.items()
        for paths in pack(sizes, target_bytes)
    ]


def compact(
    table: Table,
    target_bytes: int,
    done: TableUpkeep,
    *,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Table:
    """Rewrite the table's small files in one snapshot (see the module docstring).

    Returns:
        The table after the compaction.

    Raises:
        TransientError: every commit attempt lost to concurrent writers.
    """
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    groups: list[_Group] = []
    for attempt in range(COMMIT_ATTEMPTS):
        if attempt:
            table = table.refresh()
        live = _live(table)
        # Groups whose files are all still live keep what was written for them.
        kept = [g for g in groups if all(path in live for path in g.inputs)]
        _discard(table, [g for g in groups if not all(path in live for path in g.inputs)])
        groups = kept or plan_compaction(live, target_bytes)
        done.files_rewritten = sum(len(g.inputs) for g in groups)
        done.files_written = len(groups)
        if not groups or dry_run:
            return table
        try:
            for group in groups:
                if not group.outputs:
                    group.outputs = rewrite(table, [live[path] for path in group.inputs])
        except BaseException:
            _discard(table, groups)
            raise
        try:
            done.compaction_snapshot_id = _replace(table, groups, live)
        except (CommitFailedException, ValidationException) as exc:
            if attempt == COMMIT_ATTEMPTS - 1:
                _discard(table, groups)
                raise TransientError(
                    f"table {'.'.join(table.name())}: compaction lost {COMMIT_ATTEMPTS} commits "
                    f"to concurrent writers ({exc}); the next run tries again"
                ) from exc
            wait = _backoff(attempt)
            log.info("%s: compaction conflict (%s); again in %.2fs", table.name(), exc, wait)
            sleep(wait)
            continue
        log.info(
            "%s: compacted %d small files into %d (snapshot %s)",
            ".".join(table.name()),
            done.files_rewritten,
            done.files_written,
            done.compaction_snapshot_id,
        )
        return table
    return table  # not reached: the last attempt returns or raises


def rewrite(table: Table, tasks: list[FileScanTask]) -> list[DataFile]:
    """Write the rows of ``tasks`` (data files of one partition) as one new data file.

    The rows are read through the table's current schema, so files written before a column
    was added read that column as nulls, as any reader would.

    Raises:
        HopperError: the file written does not hold exactly the rows read (nothing is kept).
    """
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, pyarrow_to_schema, write_file
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
    from pyiceberg.table import WriteTask

    schema, spec = table.schema(), table.spec()
    rows = ArrowScan(table.metadata, table.io, schema, AlwaysTrue()).to_table(tasks)
    partition = tasks[0].file.partition
    key = None
    if not spec.is_unpartitioned():
        values = [PartitionFieldValue(f, partition[i]) for i, f in enumerate(spec.fields)]
        key = PartitionKey(field_values=values, partition_spec=spec, schema=schema)
        if key.partition != partition:
            raise HopperError(f"{table.name()}: cannot rebuild partition {partition} to compact")
    task = WriteTask(
        write_uuid=uuid.uuid4(),
        task_id=0,
        schema=pyarrow_to_schema(
            rows.schema, name_mapping=schema.name_mapping, format_version=table.format_version
        ),
        record_batches=rows.to_batches(),
        partition_key=key,
    )
    written = list(write_file(table.io, table.metadata, iter([task])))
    expected = sum(t.file.record_count for t in tasks)
    if rows.num_rows != expected or sum(f.record_count for f in written) != expected:
        for data_file in written:
            table.io.delete(data_file.file_path)
        raise HopperError(
            f"{'.'.join(table.name())}: compacting {len(tasks)} files read {rows.num_rows} "
            f"rows where their manifests count {expected}; nothing was replaced"
        )
    return written


def _replace(table: Table, groups: list[_Group], live: dict[str, FileScanTask]) -> int | None:
    """One snapshot: the groups' input files deleted, their outputs added."""
    with transaction(table) as txn:
        props = {MAINTENANCE_PROPERTY: "compaction"}
        with txn.update_snapshot(snapshot_properties=props).overwrite() as replace:
            for group in groups:
                for path in group.inputs:
                    replace.delete_data_file(live[path].file)
                for data_file in group.outputs:
                    replace.append_data_file(data_file)
    current = table.current_snapshot()
    return current.snapshot_id if current is not None else None


def _discard(table: Table, groups: list[_Group]) -> None:
    """Delete the files written for groups that will not be committed."""
    for group in groups:
        for data_file in group.outputs:
            try:
                table.io.delete(data_file.file_path)
            except OSError as exc:  # unreferenced: a later orphan removal takes it
                log.warning("%s: not deleted (%s)", data_file.file_path, exc)
        group.outputs = []


def expire(
    table: Table,
    cutoff_ms: int,
    keep_last: int,
    done: TableUpkeep,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Table:
    """Expire the table's snapshots older than ``cutoff_ms`` beyond the newest ``keep_last``.

    The snapshots go from the table's metadata; their files are left to orphan removal.

    Returns:
        The table after the expiry.

    Raises:
        TransientError: every commit attempt lost to concurrent writers.
    """
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(COMMIT_ATTEMPTS):
        if attempt:
            table = table.refresh()
        metadata = table.metadata
        keep = {ref.snapshot_id for ref in metadata.refs.values()}
        if metadata.current_snapshot_id is not None:
            keep.add(metadata.current_snapshot_id)
        stamps = [(s.snapshot_id, s.timestamp_ms) for s in metadata.snapshots]
        ids = expirable(stamps, keep, cutoff_ms, keep_last)
        done.snapshots_expired = len(ids)
        done.snapshots_kept = len(stamps) - len(ids)
        if not ids or dry_run:
            return table
        try:
            table.maintenance.expire_snapshots().by_ids(ids).commit()
        except CommitFailedException as exc:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise TransientError(
                    f"table {'.'.join(table.name())}: snapshot expiry lost {COMMIT_ATTEMPTS} "
                    f"commits to concurrent writers ({exc}); the next run tries again"
                ) from exc
            sleep(_backoff(attempt))
            continue
        log.info("%s: expired %d snapshots", ".".join(table.name()), len(ids))
        return table
    return table  # not reached: the last attempt returns or raises


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata refers to, as URIs.

    The current and logged metadata files, statistics files, and for every snapshot its
    manifest list, its manifests and the data and delete files live in it. (A file a
    snapshot removed is named by its parent, if that is kept; once the parent has expired,
    nothing can read the file any more.)
    """
    metadata = table.metadata
    found: set[str] = {entry.metadata_file for entry in metadata.metadata_log}
    found.add(table.metadata_location)
    found.update(s.statistics_path for s in metadata.statistics)
    found.update(s.statistics_path for s in metadata.partition_statistics)
    read: set[str] = set()
    for snapshot in metadata.snapshots:
        found.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            found.add(manifest.manifest_path)
            if manifest.manifest_path in read:
                continue
            read.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                found.add(entry.data_file.file_path)
    return found


def _filesystem(table: Table) -> tuple[pafs.FileSystem, str]:
    """The file system of the table's location, and the location as a path in it.

    The table's own FileIO's file system when it has one (local disk or S3, configured by the
    catalog's properties), else Arrow's for the location's URI.
    """
    import pyarrow.fs as pafs
    from pyiceberg.io.pyarrow import PyArrowFileIO

    scheme, netloc, path = PyArrowFileIO.parse_location(table.location())
    if isinstance(table.io, PyArrowFileIO):
        return table.io.fs_by_scheme(scheme, netloc), path.rstrip("/")
    filesystem, path = pafs.FileSystem.from_uri(table.location())
    return filesystem, path.rstrip("/")


def _listing(filesystem: pafs.FileSystem, base: str) -> list[Listed]:
    """Every file under ``base``'s ``data/`` and ``metadata/`` folders."""
    import pyarrow.fs as pafs

    found: list[Listed] = []
    for folder in ("data", "metadata"):
        selector = pafs.FileSelector(f"{base}/{folder}", recursive=True, allow_not_found=True)
        for info in filesystem.get_file_info(selector):
            if info.type == pafs.FileType.File:
                found.append(Listed(info.path, info.size or 0, info.mtime_ns))
    return found


def remove_orphans(table: Table, before_ns: int, done: TableUpkeep, dry_run: bool = False) -> None:
    """Delete the table's unreferenced files last written before ``before_ns``.

    Nothing is deleted if a data file of the current snapshot under the table's location is
    missing from the listing: paths and listing disagree, and deleting could harm the table.
    """
    from pyiceberg.io.pyarrow import PyArrowFileIO

    def as_path(uri: str) -> str:
        return PyArrowFileIO.parse_location(uri)[2]

    filesystem, base = _filesystem(table)
    live = {as_path(p) for p in [*_live_paths(table), table.metadata_location]}
    referenced = {as_path(uri) for uri in referenced_files(table)}
    listed = _listing(filesystem, base)
    seen = {f.path for f in listed}
    missing = sorted(p for p in live if p.startswith(base + "/") and p not in seen)
    if missing:
        note = (
            f"orphan removal skipped: {len(missing)} live files not found under {base} "
            f"(e.g. {missing[0]}); check the table's location and storage"
        )
        log.warning("%s: %s", ".".join(table.name()), note)
        done.notes.append(note)
        return
    found = orphans(listed, referenced, before_ns)
    for orphan in found:
        if not dry_run:
            try:
                filesystem.delete_file(orphan.path)
            except FileNotFoundError:  # removed meanwhile (another upkeep run)
                continue
        log.info(
            "%s: orphan %s (%d bytes) removed", ".".join(table.name()), orphan.path, orphan.size
        )
        done.orphans += 1
        done.orphan_bytes += orphan.size


def _live_paths(table: Table) -> list[str]:
    """The current snapshot's data and delete files, as URIs."""
    if table.current_snapshot() is None:
        return []
    paths: list[str] = []
    for task in table.scan().plan_files():
        paths.append(task.file.file_path)
        paths += [d.file_path for d in task.delete_files]
    return paths


def report_markdown(report: UpkeepReport) -> str:
    """The report as a markdown table (the ``hopper-maintain`` run's artifact)."""
    title = "# Table upkeep" + (" (dry run: nothing changed)" if report.dry_run else "")
    if not report.tables:
        reason = (
            "no tables yet"
            if report.lake_format == "iceberg"
            else f"the lake is {report.lake_format} files: nothing to maintain"
        )
        return f"{title}\n\n{reason}\n"
    lines = [
        title,
        "",
        "| table | data files | rows | compacted | snapshots expired / kept | orphans | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report.tables:
        notes = "; ".join([*t.notes, *([f"**failed**: {t.error}"] if t.error else [])])
        lines.append(
            f"| {t.table} | {t.files_before} → {t.files_after} | {t.rows_after} "
            f"| {t.files_rewritten} → {t.files_written} "
            f"| {t.snapshots_expired} / {t.snapshots_kept} "
            f"| {t.orphans} ({t.orphan_bytes:,} bytes) | {notes.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"
