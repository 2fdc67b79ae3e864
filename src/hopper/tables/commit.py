"""A batch's staged sources committed to their tables: one snapshot per batch per dataset.

The reader processes stage each passed source's rows (:mod:`hopper.sink.table_stage`); the
flow run then calls :func:`land` with the batch's outcomes. Per dataset, one transaction:

- the rows of every source that had been ingested before (a replay, or a new version of the
  same file) are deleted by ``_source_uri``, and
- every staged source's rows are appended, written by pyiceberg as data files of about
  ``lake.target_file_mb``, at most one per partition for a batch that size,

so a reader sees the old rows or the new, never both and never neither. A brand-new source
is a plain (fast) append, whose cost does not grow with the table.

**Exactly once.** Each snapshot's summary carries the batch's dispatch id and a *landing
key* per source: a hash of its URI, its fingerprint and how many times the ledger has
recorded that version as ingested. A batch whose worker died after the commit and before
the ledger's update is dispatched again; its retry finds its keys in the table's snapshots
and does not append again. A replay of the same version, recorded as ingested once more,
has a new key. Only the snapshots made since the batch's versions were detected (less
:data:`CLOCK_SKEW_SECONDS`) are read for keys, so the check costs the same on a table of a
hundred thousand sources as on a new one.

**Concurrent writers** (several workers, the maintenance run) use Iceberg's optimistic
concurrency: pyiceberg first retries a commit that lost the race on the refreshed table
itself (``commit.retry.*`` table properties); if that still fails, the whole landing is
redone here, with exponential backoff and jitter, checking the landing keys again. Two runs
never land the same version at once: the ledger gives each version to one run at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from hopper.config import HopperConfig
from hopper.errors import HopperError, TerminalError, TransientError
from hopper.lineage import SOURCE_URI
from hopper.models import FileState, IngestOutcome
from hopper.sink.quarantine import quarantine
from hopper.staging import attempt_of, remove_attempt
from hopper.stores import store_for
from hopper.tables.catalog import open_catalog, table_identifier, table_location
from hopper.tables.schema import SchemaConflict, conform, create_table, evolve, for_table
from hopper.tables.transaction import transaction

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from hopper.ledger import Ledger

log = logging.getLogger(__name__)

DISPATCH_PROPERTY = "hopper.dispatch-id"
"""Snapshot summary property: the dispatch id of the batch that made the snapshot."""
LANDED_PROPERTY = "hopper.landed"
"""Snapshot summary property: the landing keys of the sources it holds, comma-separated."""
LANDING_WINDOW_SECONDS = 7 * 86400
"""How far back a retried batch looks for its own commit (snapshots older are not read)."""
CLOCK_SKEW_SECONDS = 600
"""How far the committing worker's clock may lag the watcher's (which dated the detection)."""
COMMIT_ATTEMPTS = 8
"""Commits tried before a batch's sources fail (each lost race or fault is one)."""
APPEND_BYTES = 256 << 20
"""Arrow bytes of staged rows gathered before they are handed to pyiceberg as one append."""


def landing_key(uri: str, fingerprint: str, generation: int) -> str:
    """The key of one landing of one version (see the module docstring)."""
    return hashlib.sha256(f"{uri}\n{fingerprint}\n{generation}".encode()).hexdigest()[:16]


def landed_keys(
    table: Table, now_ms: int | None = None, since: float | None = None
) -> dict[str, int]:
    """Landing key → snapshot id, from the table's recent snapshots' summaries.

    Args:
        table: the table.
        now_ms: the time now (epoch milliseconds).
        since: no snapshot older than this (epoch seconds, less :data:`CLOCK_SKEW_SECONDS`)
            can hold the keys looked for: the earliest detection of the batch's versions.
            Without it, the whole :data:`LANDING_WINDOW_SECONDS` is read.
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    oldest = now_ms - LANDING_WINDOW_SECONDS * 1000
    if since is not None:
        oldest = max(oldest, int((since - CLOCK_SKEW_SECONDS) * 1000))
    found: dict[str, int] = {}
    for snapshot in table.metadata.snapshots:
        if snapshot.timestamp_ms < oldest:
            continue
        summary = snapshot.summary
        text = summary.additional_properties.get(LANDED_PROPERTY) if summary else None
        for key in (text or "").split(","):
            if key:
                found[key] = snapshot.snapshot_id
    return found


@dataclass
class Pending:
    """One source's staged rows on their way into a table."""

    outcome: IngestOutcome
    key: str
    replaces: bool
    rows: list[pa.Table] = field(default_factory=list)
    conflict: TerminalError | None = None  # why its table refused it (it is quarantined)


@dataclass
class Landed:
    """What one dataset's commit did."""

    snapshot_id: int | None
    appended: int = 0
    already: int = 0


def land(
    config: HopperConfig,
    ledger: Ledger,
    outcomes: list[IngestOutcome],
    dispatch_id: str,
    s3: Any = None,
    *,
    flow_run_id: str | None = None,
    sleep: Any = time.sleep,
) -> list[IngestOutcome]:
    """Commit the staged sources among ``outcomes`` to their tables, one commit per dataset.

    Outcomes that are not ingested rows waiting for a table are returned as they are. A
    waiting source ends ingested (``outputs`` names the table and snapshot), quarantined
    (its rows cannot go into its table, :class:`~hopper.tables.schema.SchemaConflict`: the
    file is copied to quarantine with the reason, as a rejected file is), or failed (the
    commit kept failing); its staged file is removed either way.

    Args:
        config: the home's configuration.
        ledger: the home's ledger (how often each version was ingested before).
        outcomes: the batch's outcomes, as the readers returned them.
        dispatch_id: the batch's dispatch id (noted in the snapshot).
        s3: the S3 client, for an S3 lake, quarantine or source.
        flow_run_id: the run committing (for quarantine reason files).
        sleep: how to wait between commit attempts.

    Returns:
        ``outcomes``, each settled.
    """
    staged = [o for o in outcomes if o.state is FileState.INGESTED and not o.outputs]
    if not staged or not config.lake.is_table:
        return outcomes
    counts = ledger.ingestions({o.uri for o in staged})
    replaced = {uri for uri, _ in counts}
    datasets: dict[str, list[Pending]] = {}
    for outcome in staged:
        key = landing_key(outcome.uri, outcome.fingerprint, counts.get(_version(outcome), 0))
        pending = Pending(outcome, key, outcome.uri in replaced)
        datasets.setdefault(outcome.dataset or "", []).append(pending)
    store = store_for(config.lake.path, s3)
    since = ledger.first_detected({o.uri for o in staged})
    for dataset, group in datasets.items():
        try:
            _land_dataset(config, dataset, group, dispatch_id, store, sleep, since)
        except TerminalError as exc:  # e.g. one source its table refuses, or no contract
            log.error("%s: %d sources refused: %s", dataset, len(group), exc)
            for pending in group:
                _refuse(pending, exc)
        except HopperError as exc:  # transient: commits kept losing, the store kept failing
            log.error("%s: %d sources not committed: %s", dataset, len(group), exc)
            for pending in group:
                _settle(pending.outcome, FileState.FAILED, str(exc).splitlines()[0])
        except Exception as exc:  # a bug or a catalog fault: the files fail, and are alerted on
            log.exception("%s: %d sources not committed", dataset, len(group))
            for pending in group:
                reason = f"the commit to its table failed: {type(exc).__name__}: {exc}"
                _settle(pending.outcome, FileState.FAILED, reason.splitlines()[0])
        finally:
            for pending in group:
                for path in pending.outcome.staged:
                    _remove_stage(store, path)
                pending.outcome.staged = []
        for pending in group:
            if pending.conflict is not None:
                _quarantine(config, ledger, pending, flow_run_id, s3)
    return outcomes


def _quarantine(
    config: HopperConfig,
    ledger: Ledger,
    pending: Pending,
    flow_run_id: str | None,
    s3: Any,
) -> None:
    """Quarantine a source whose rows its table refused, as a rejected file is."""
    outcome = pending.outcome
    record = ledger.get(outcome.uri, outcome.fingerprint)
    if record is None or pending.conflict is None:  # not the ledger's: nothing to copy
        return
    now = datetime.now(UTC)
    copy = quarantine(config, record.ref, pending.conflict, None, flow_run_id, now, None, s3)
    outcome.quarantine_path = copy.quarantine_path


def _version(outcome: IngestOutcome) -> tuple[str, str]:
    return outcome.uri, outcome.fingerprint


def _settle(outcome: IngestOutcome, state: FileState, reason: str) -> None:
    outcome.state = state
    outcome.reason = reason
    outcome.outputs = []


def _refuse(pending: Pending, exc: TerminalError) -> None:
    _settle(pending.outcome, FileState.QUARANTINED, str(exc).splitlines()[0])
    pending.rows = []
    pending.conflict = exc


def _remove_stage(store: Any, staged: str) -> None:
    try:
        attempt = attempt_of(staged)
        flat = staged.startswith(f"{attempt}.")  # one file is the whole attempt: no listing
        remove_attempt(store, attempt, [staged] if flat else None)
    except Exception as exc:  # committed already; a leftover is hidden and swept later
        log.warning("staged file %s not removed: %s", staged, exc)


def _read_staged(store: Any, pending: list[Pending]) -> None:
    """Read each source's staged rows (small files whole, large ones in bounded slices)."""
    for item in pending:
        for path in item.outcome.staged:
            with store.open_input(path) as source:
                parquet = pq.ParquetFile(source)
                item.rows += [
                    for_table(pa.Table.from_batches([batch]))
                    for batch in parquet.iter_batches(batch_size=1 << 20)
                ]


def _load_table(config: HopperConfig, dataset: str, schema: pa.Schema) -> Table:
    """The dataset's table, created with ``schema`` and the contract's partitions if new."""
    from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError

    catalog = open_catalog(config)
    identifier = table_identifier(config, dataset)
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    from hopper.contracts.yaml_io import load_contract

    contract = load_contract(config.contract_path(dataset))
    properties = {
        "write.target-file-size-bytes": str(config.lake.target_file_mb << 20),
        "write.parquet.compression-codec": contract.compression.replace("none", "uncompressed"),
    }
    with contextlib.suppress(TableAlreadyExistsError):  # else another worker made it first
        create_table(
            catalog,
            identifier,
            table_location(config, dataset),
            schema,
            list(contract.partition_by),
            properties,
        )
    # Loaded, not the object the creation returned: that one cannot be refreshed, which
    # pyiceberg's own retry of a commit that lost a race needs.
    return catalog.load_table(identifier)


def _land_dataset(
    config: HopperConfig,
    dataset: str,
    group: list[Pending],
    dispatch_id: str,
    store: Any,
    sleep: Any,
    since: float | None = None,
) -> None:
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    _read_staged(store, group)
    schema = pa.unify_schemas(
        [t.schema for p in group for t in p.rows[:1]] or [pa.schema([])],
        promote_options="permissive",
    )
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            table = _load_table(config, dataset, schema)
            table = _evolve_for(table, group, schema)
            landed = _commit(config, table, group, dispatch_id, since)
        except (CommitFailedException, ValidationException) as exc:
            # lost the race (a replacement's delete also meets a concurrent compaction's
            # rewrite as a ValidationException): redo it all on the table as it now is
            if attempt == COMMIT_ATTEMPTS - 1:
                raise TransientError(
                    f"table {table_identifier(config, dataset)}: {COMMIT_ATTEMPTS} commits "
                    f"lost to concurrent writers ({exc})"
                ) from exc
            wait = min(0.05 * 2**attempt, 5.0) * random.uniform(0.5, 1.5)
            log.info("%s: commit conflict (%s); retrying in %.2fs", dataset, exc, wait)
            sleep(wait)
            continue
        except OSError as exc:
            raise TransientError(f"table {table_identifier(config, dataset)}: {exc}") from exc
        log.info(
            "%s: snapshot %s: %d sources appended, %d already there",
            table_identifier(config, dataset),
            landed.snapshot_id,
            landed.appended,
            landed.already,
        )
        return


def _evolve_for(table: Table, group: list[Pending], schema: pa.Schema) -> Table:
    """The table, with the batch's new columns; a source that cannot fit is quarantined."""
    try:
        return evolve(table, schema)
    except SchemaConflict:
        if len(group) == 1:
            raise
    # The batch's columns together do not fit: find the sources that do not, one by one.
    for pending in group:
        if pending.outcome.state is not FileState.INGESTED or not pending.rows:
            continue
        try:
            table = evolve(table, pending.rows[0].schema)
        except SchemaConflict as exc:
            _refuse(pending, exc)
    return table


def _chunks(rows: list[pa.Table], schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows conformed to the table's schema, gathered into appends of bounded size."""
    gathered: list[pa.Table] = []
    size = 0
    for table in rows:
        gathered.append(conform(table, schema))
        size += table.nbytes
        if size >= APPEND_BYTES:
            yield pa.concat_tables(gathered)
            gathered, size = [], 0
    if gathered:
        yield pa.concat_tables(gathered)


def _commit(
    config: HopperConfig,
    table: Table,
    group: list[Pending],
    dispatch_id: str,
    since: float | None = None,
) -> Landed:
    """One transaction: delete the replaced sources' rows, append the batch's; settle each.

    ``since`` bounds the snapshots read for landing keys (:func:`landed_keys`).
    """
    from pyiceberg.expressions import In

    live = [p for p in group if p.outcome.state is FileState.INGESTED]
    already = landed_keys(table, since=since)
    fresh = [p for p in live if p.key not in already]
    schema = table.schema().as_arrow()
    rows: list[pa.Table] = []
    for pending in fresh:
        try:
            rows += [conform(t, schema) for t in pending.rows]
        except SchemaConflict as exc:
            _refuse(pending, exc)
    fresh = [p for p in fresh if p.outcome.state is FileState.INGESTED]
    replaced = sorted({p.outcome.uri for p in fresh if p.replaces})
    snapshot_id: int | None = None
    if rows or replaced:
        props = {
            DISPATCH_PROPERTY: dispatch_id,
            LANDED_PROPERTY: ",".join(p.key for p in fresh),
        }
        with transaction(table) as txn:
            if replaced:
                # pyiceberg's In takes (term, values) at run time; its pydantic fields mislead mypy.
                where = In(SOURCE_URI, replaced)  # type: ignore[call-arg, arg-type]
                txn.delete(where, snapshot_properties=props)
            for chunk in _chunks(rows, schema):
                txn.append(chunk, snapshot_properties=props)
        current = table.current_snapshot()
        snapshot_id = current.snapshot_id if current is not None else None
    name = ".".join(table.name())
    for pending in live:
        if pending.outcome.state is not FileState.INGESTED:
            continue
        snap = already.get(pending.key, snapshot_id)
        pending.outcome.outputs = [f"{name}@{snap}"] if snap is not None else [name]
    return Landed(snapshot_id, appended=len(fresh), already=len(live) - len(fresh))
