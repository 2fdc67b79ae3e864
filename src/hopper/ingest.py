"""Ingest one file version: route → contract → read and validate → transform → write → record.

This is the whole of the flow's work, as plain functions so that it can be tested without a
Prefect server. Terminal faults end in quarantine here; transient faults propagate so the
flow's task retries them with backoff.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa

from hopper.config import HopperConfig
from hopper.contracts import Contract, load_contract, read_and_conform
from hopper.contracts.limits import check_file_limits, check_table_limits
from hopper.contracts.stream import StreamFallback, StreamingConform, stream_refusal
from hopper.errors import (
    HopperError,
    ReaderCrashedError,
    TerminalError,
    UnknownDatasetError,
    is_transient,
)
from hopper.files import is_watched
from hopper.isolate import Call, Limits, ReaderPool, shared_pool
from hopper.lineage import add_lineage
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from hopper.sink import (
    TooManyPartitions,
    discard_staged,
    open_lake,
    quarantine,
    write_rejected_rows,
)
from hopper.staging import Written

log = logging.getLogger(__name__)


_contracts: dict[Path, tuple[int, Contract]] = {}


def cached_contract(path: Path) -> Contract:
    """A contract, parsed again only when its file changes (batches reuse it per file)."""
    mtime = path.stat().st_mtime_ns
    hit = _contracts.get(path)
    if hit is None or hit[0] != mtime:
        hit = (mtime, load_contract(path))
        _contracts[path] = hit
    return hit[1]


def load_dataset_contract(config: HopperConfig, ref: FileRef) -> Contract:
    """The contract for a file's dataset; a missing one is a terminal, explained error."""
    if not ref.dataset:
        raise UnknownDatasetError(
            f"{ref.uri}: no dataset for this file. Put it in a sub-folder named after its "
            "dataset (inbox/<dataset>/file.csv) or add a routing rule to hopper.yaml."
        )
    path = config.contract_path(ref.dataset)
    if not path.is_file():
        raise UnknownDatasetError(
            f"{ref.uri}: dataset {ref.dataset!r} has no contract ({path} not found). Create it "
            f"with `hopper contract infer FILE --dataset {ref.dataset} > {path}`, then replay."
        )
    return cached_contract(path)


def ingest(
    request: IngestRequest,
    config: HopperConfig,
    *,
    flow_run_id: str | None = None,
    s3: Any = None,
    isolate: bool = True,
    readers: ReaderPool | None = None,
) -> IngestOutcome:
    """Ingest one file version and return its outcome (ingested or quarantined).

    Args:
        request: the file and its dispatch.
        config: the Hopper home's configuration.
        flow_run_id: the Prefect flow run doing the work (for reason files and the ledger).
        s3: an S3 client, needed when the source, the lake or the quarantine is on S3.
        isolate: read and write the file in a child process under the contract's memory
            and time limits (:mod:`hopper.isolate`); False runs it in this process (for
            tests that patch the readers, and for debugging).
        readers: the reader processes to use (default: the process's shared pool).

    Raises:
        TransientError: (and other unexpected errors) for the caller to retry or fail.
    """
    ((_, result),) = ingest_each(
        [request], config, flow_run_id=flow_run_id, s3s=[s3], isolate=isolate, readers=readers
    )
    if isinstance(result, Exception):
        raise result
    return result


def ingest_each(
    requests: Sequence[IngestRequest],
    config: HopperConfig,
    *,
    flow_run_id: str | None,
    s3s: Sequence[Any],
    isolate: bool = True,
    readers: ReaderPool | None = None,
) -> Iterator[tuple[int, IngestOutcome | Exception]]:
    """:func:`ingest` for several files, read one after another by one reader child.

    Yields ``(index, outcome)`` in the order of ``requests``, each as soon as it is done, or
    ``(index, error)`` where :func:`ingest` would raise (a transient fault, for the caller to
    retry). Each file keeps its own limits, outcome and quarantine: the files share only
    the message to the reader, and the checks of their folders and contracts.

    Args:
        requests: the files.
        config: the Hopper home's configuration.
        flow_run_id: the flow run doing the work.
        s3s: each file's S3 client (or None), in the order of ``requests``.
        isolate: see :func:`ingest`.
        readers: the reader processes (default: the process's shared pool).
    """
    from hopper.storage import fetch_to_local

    now = datetime.now(UTC)
    folders: dict[str, str] = {}  # resolved folders, for is_watched
    contracts: dict[str, Contract] = {}  # by dataset: one look at each contract file
    jobs: list[_Job] = []
    with ExitStack() as local_copies:  # each file's local path lives until the batch ends
        for index, request in enumerate(requests):
            ref, s3 = request.ref, s3s[index]
            began = time.monotonic()
            if not is_watched(config, ref, folders):
                # A run's parameters can be forged by anyone who can reach the Prefect API:
                # never read (or copy to quarantine) a file that no configured source holds.
                refused = TerminalError(
                    f"{ref.uri} is not under any source of {config.path or 'hopper.yaml'}: "
                    "refused, neither read nor copied"
                )
                log.error("%s", refused)
                yield index, _timed(failed_outcome(ref, refused), began)
                continue
            contract = contracts.get(ref.dataset or "")
            try:
                if contract is None:
                    contract = load_dataset_contract(config, ref)
                    contracts[ref.dataset or ""] = contract
                local = local_copies.enter_context(
                    fetch_to_local(
                        ref.uri,
                        s3,
                        config.state_dir / "tmp",
                        etag=ref.etag,
                        version_id=ref.version_id,
                        follow=lambda link: any(source.follows(link) for source in config.folders),
                    )
                )
            except TerminalError as exc:  # no contract, or the source is gone
                outcome = quarantine(config, ref, exc, contract, flow_run_id, now, None, s3)
                yield index, _timed(outcome, began)
                continue
            except Exception as exc:
                yield index, exc
                continue
            jobs.append(_Job(index, ref, local, contract, s3, time.monotonic() - began))
        began = time.monotonic()
        for job, result in _converted(jobs, config, now, isolate, readers):
            if isinstance(result, TerminalError):  # quarantined while the local copy exists
                try:
                    if isinstance(result, ReaderCrashedError):  # whatever it staged goes
                        discard_staged(config.lake.path, job.contract.name, job.ref.uri, job.s3)
                    result = quarantine(
                        config, job.ref, result, job.contract, flow_run_id, now, job.local, job.s3
                    )
                except Exception as exc:
                    result = exc
            if isinstance(result, IngestOutcome):
                _timed(result, began, job.prepared)
            began = time.monotonic()
            yield job.position, result


class _Job(NamedTuple):
    """A file of :func:`ingest_each` ready to convert."""

    position: int  # in the requests
    ref: FileRef
    local: Path
    contract: Contract
    s3: Any
    prepared: float  # seconds spent finding its contract and fetching it


def _converted(
    jobs: list[_Job], config: HopperConfig, now: datetime, isolate: bool, readers: ReaderPool | None
) -> Iterator[tuple[_Job, IngestOutcome | Exception]]:
    """Each job converted (in a reader child unless not ``isolate``), or why it was not."""
    if not isolate:
        for job in jobs:
            try:
                yield job, _convert(job.ref, job.local, job.contract, config, now, job.s3)
            except Exception as exc:
                yield job, exc
        return
    calls = [
        Call(
            (job.ref, job.local, job.contract, config, now),
            Limits(memory_mb=job.contract.max_memory_mb, cpu_seconds=job.contract.max_seconds),
            job.ref.uri,
        )
        for job in jobs
    ]
    for index, outcome, error in (readers or shared_pool()).call_each(convert_file, calls):
        if error is not None:
            yield jobs[index], error if isinstance(error, Exception) else RuntimeError(error)
        else:
            assert outcome is not None
            yield jobs[index], outcome


def _timed(outcome: IngestOutcome, began: float, extra: float = 0.0) -> IngestOutcome:
    """Note how long the file took (since ``began``, plus ``extra``), and log the outcome."""
    outcome.seconds = round(time.monotonic() - began + extra, 3)
    clean = outcome.state is FileState.INGESTED and not outcome.rows_rejected
    log.log(  # a clean file is routine: a batch of thousands logs its tally instead
        logging.DEBUG if clean else logging.INFO,
        "%s → %s (%d rows in, %d out) in %.2fs",
        outcome.uri,
        outcome.state.value,
        outcome.rows_in,
        outcome.rows_out,
        outcome.seconds,
    )
    return outcome


_s3_clients: dict[tuple[str | None, str | None], Any] = {}


def convert_file(
    ref: FileRef, path: Path, contract: Contract, config: HopperConfig, now: datetime
) -> IngestOutcome:
    """:func:`_convert` as a reader child runs it: with an S3 client of its own, if it needs one.

    The client is made on first use (:class:`~hopper.lazy_s3.LazyS3Client`), so a file that
    goes from a folder to a local lake never makes one, nor loads boto3.
    """
    key = (config.s3.endpoint_url, config.s3.region)
    if key not in _s3_clients:
        from hopper.lazy_s3 import LazyS3Client

        _s3_clients[key] = LazyS3Client(*key)
    return _convert(ref, path, contract, config, now, _s3_clients[key])


def _convert(
    ref: FileRef, path: Path, contract: Contract, config: HopperConfig, now: datetime, s3: Any
) -> IngestOutcome:
    """Validate, transform and write one readable file.

    Large CSV/TSV files are streamed block by block in bounded memory, to a local or an S3
    lake alike (:func:`_convert_streaming`); the rest, and files that turn out not to stream
    (see :mod:`hopper.contracts.stream`), are read whole. Both give the same outcome and
    output.
    """
    check_file_limits(path, contract, source=ref.uri)
    refusal = stream_refusal(path, contract)
    if refusal is None:
        try:
            return _convert_streaming(ref, path, contract, config, now, s3)
        except (StreamFallback, TooManyPartitions) as exc:
            log.warning("%s: cannot stream (%s); reading the whole file", ref.uri, exc)
    else:
        log.debug("%s: read whole: %s", ref.uri, refusal)
    result = read_and_conform(path, contract, source_name=ref.uri, ingested_at=now)
    check_table_limits(result.table.num_columns, contract, source=ref.uri)
    table = add_lineage(result.table, ref.uri, now)
    outputs = open_lake(config.lake, s3).write(
        table,
        dataset=contract.name,
        partition_by=list(contract.partition_by),
        source_name=ref.name,
        uri=ref.uri,
        compression=contract.compression,
    )
    outcome = _ingested(ref, result.rows_in, table.num_rows, outputs, table.schema, config)
    outcome.rows_rescued = result.rows_rescued
    _record_rejected(outcome, result.rejected, ref, config, now, s3)
    return outcome


def _ingested(
    ref: FileRef,
    rows_in: int,
    rows_out: int,
    outputs: Written,
    schema: pa.Schema | None,
    config: HopperConfig,
) -> IngestOutcome:
    """The outcome of a file written to the lake (whole or streamed).

    For a table lake the rows are only staged: ``staged`` says where, and the flow run's
    commit (:func:`hopper.tables.land`) fills ``outputs``.
    """
    staged = config.lake.is_table
    return IngestOutcome.of(
        ref,
        FileState.INGESTED,
        rows_in=rows_in,
        rows_out=rows_out,
        outputs=[] if staged else outputs,
        staged=outputs if staged else [],
        bytes_out=outputs.nbytes,
        schema=dict(_type_names(schema)) if schema is not None else {},
    )


@functools.lru_cache(maxsize=64)  # a batch's files share a few schemas
def _type_names(schema: pa.Schema) -> tuple[tuple[str, str], ...]:
    """Each column's name and type, as the outcome reports them."""
    return tuple((f.name, str(f.type)) for f in schema)


def _convert_streaming(
    ref: FileRef, path: Path, contract: Contract, config: HopperConfig, now: datetime, s3: Any
) -> IngestOutcome:
    """:func:`_convert` for a large CSV/TSV file: read, check and write block by block.

    Each block's valid rows get their lineage columns and go to staged Parquet files (on S3,
    multipart uploads written a part at a time), published into the lake only once the whole
    file has passed; a rejected file (even by its last row) leaves nothing in the lake.

    Raises:
        StreamFallback, TooManyPartitions: the file is to be read whole instead (nothing of
            it has been left in the lake).
    """
    stream = StreamingConform(path, contract, source_name=ref.uri, ingested_at=now)
    schema: pa.Schema | None = None
    with open_lake(config.lake, s3).stream(
        dataset=contract.name,
        partition_by=list(contract.partition_by),
        source_name=ref.name,
        uri=ref.uri,
        compression=contract.compression,
    ) as outputs:
        for block in stream:
            check_table_limits(block.num_columns, contract, source=ref.uri)
            table = add_lineage(block, ref.uri, now)
            schema = schema or table.schema
            outputs.write(table)
        written = outputs.commit()
    outcome = _ingested(ref, stream.rows_in, stream.rows_out, written, schema, config)
    outcome.rows_rescued = stream.rows_rescued
    _record_rejected(outcome, stream.rejected, ref, config, now, s3)
    return outcome


def _record_rejected(
    outcome: IngestOutcome,
    rejected: pa.Table | None,
    ref: FileRef,
    config: HopperConfig,
    now: datetime,
    s3: Any,
) -> None:
    """Write a file's quarantined rows (``bad_rows: quarantine``) and note them in ``outcome``."""
    if rejected is None or not rejected.num_rows:
        return
    outcome.rows_rejected = rejected.num_rows
    outcome.quarantine_path = write_rejected_rows(
        rejected,
        quarantine=config.quarantine,
        dataset=ref.dataset,
        source_name=ref.name,
        uri=ref.uri,
        when=now,
        s3=s3,
    )
    outcome.reason = f"{outcome.rows_rejected} bad rows quarantined"


def retry_policy(config: HopperConfig, ref: FileRef) -> tuple[int, float]:
    """``(retries, first delay)`` of a file's dataset contract (defaults if it has none)."""
    path = config.contract_path(ref.dataset) if ref.dataset else None
    try:
        contract = cached_contract(path) if path and path.is_file() else None
    except HopperError:
        contract = None  # ingesting will quarantine the file with the reason
    if contract is None:  # the contract's defaults, so there is one policy to read
        fields = Contract.model_fields
        return fields["retries"].default, fields["retry_backoff_seconds"].default
    return contract.retries, contract.retry_backoff_seconds


def ingest_with_retries(
    request: IngestRequest,
    config: HopperConfig,
    *,
    flow_run_id: str | None = None,
    s3: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    isolate: bool = True,
    readers: ReaderPool | None = None,
    first_error: Exception | None = None,
) -> IngestOutcome:
    """:func:`ingest` with the contract's retries: exponential backoff, ±50 % jitter.

    Used where a Prefect task per file would cost more than the file (batches); single-file
    runs use Prefect's task retries with the same policy.

    Args:
        first_error: the error of a first attempt already made (by :func:`ingest_each`):
            this one then begins with the first retry, or raises it if it is not transient.

    Raises:
        The last transient error when retries run out, or any non-transient error at once.
    """
    retries, delay = retry_policy(config, request.ref)
    for attempt in range(retries + 1):
        try:
            if attempt == 0 and first_error is not None:
                raise first_error
            return ingest(
                request, config, flow_run_id=flow_run_id, s3=s3, isolate=isolate, readers=readers
            )
        except Exception as exc:
            if attempt == retries or not is_transient(exc):
                raise
            wait = delay * 2**attempt * random.uniform(0.5, 1.5)
            log.warning(
                "%s: %s; retry %d/%d in %.1fs", request.ref.uri, exc, attempt + 1, retries, wait
            )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


SMALL_FILE_BYTES = 1 << 20
"""Files up to this size go to a reader several at a time (see :func:`ingest_many`)."""
MAX_GROUP = 32
"""The most small files sent to one reader at once."""


def groups(requests: list[IngestRequest], workers: int) -> list[list[IngestRequest]]:
    """``requests`` cut into groups for the readers (pure).

    A file larger than :data:`SMALL_FILE_BYTES` is a group of its own. Small files go in
    groups of up to :data:`MAX_GROUP`, small enough that each of ``workers`` gets about
    four groups: the message, the checks and the hand-over are paid per group, and the
    readers stay evenly busy to the end.
    """
    small = [r for r in requests if r.ref.size <= SMALL_FILE_BYTES]
    large = [[r] for r in requests if r.ref.size > SMALL_FILE_BYTES]
    size = max(1, min(MAX_GROUP, len(small) // (max(workers, 1) * 4)))
    return large + [small[i : i + size] for i in range(0, len(small), size)]


def ingest_many(
    requests: list[IngestRequest],
    config: HopperConfig,
    *,
    flow_run_id: str | None,
    s3_for: Callable[[FileRef], Any],
    readers: ReaderPool | None = None,
    threads: int | None = None,
) -> Iterator[tuple[IngestRequest, IngestOutcome]]:
    """Ingest several files at once, in groups read by the reader children; yield each with
    its outcome.

    Outcomes come in the order groups finish, not the order of ``requests``.

    Each file keeps its own retries and outcome: a file whose retries run out, or that hits
    a bug, is yielded as failed and the others go on.

    Args:
        requests: the files.
        config: the Hopper home's configuration.
        flow_run_id: the flow run doing the work.
        s3_for: the S3 client (or None) for a file (see :meth:`hopper.home.Home.s3_for`).
        readers: the reader processes (default: the process's shared pool).
        threads: groups in flight at once (default: the reader pool's size).
    """
    readers = readers or shared_pool()
    clients = {id(r): s3_for(r.ref) for r in requests}  # made here, not raced for in threads

    def retried(request: IngestRequest, error: Exception | None) -> IngestOutcome:
        try:
            return ingest_with_retries(
                request,
                config,
                flow_run_id=flow_run_id,
                s3=clients[id(request)],
                readers=readers,
                first_error=error,
            )
        except Exception as exc:  # retries exhausted or a bug: this file fails, not all
            log.error("%s failed: %s", request.ref.uri, exc)
            return failed_outcome(request.ref, exc)

    def run(group: list[IngestRequest]) -> list[tuple[IngestRequest, IngestOutcome]]:
        done: list[tuple[IngestRequest, IngestOutcome]] = []
        again: list[tuple[IngestRequest, Exception | None]] = []
        try:
            for index, result in ingest_each(
                group,
                config,
                flow_run_id=flow_run_id,
                s3s=[clients[id(r)] for r in group],
                readers=readers,
            ):
                if isinstance(result, IngestOutcome):
                    done.append((group[index], result))
                else:  # retried once the group is over: its reader is busy with the rest
                    again.append((group[index], result))
        except Exception as exc:  # a bug in the group's own handling: the rest go one by one
            log.error("a group of %d files failed (%s); the rest go one by one", len(group), exc)
            seen = {id(r) for r, _ in done} | {id(r) for r, _ in again}
            again += [(r, None) for r in group if id(r) not in seen]
        return done + [(r, retried(r, error)) for r, error in again]

    size = threads or readers.size
    batches = groups(requests, size)
    if size == 1 or len(batches) <= 1:
        for group in batches:
            yield from run(group)
        return
    with ThreadPoolExecutor(max_workers=size, thread_name_prefix="hopper-ingest") as pool:
        futures = [pool.submit(run, group) for group in batches]
        for future in as_completed(futures):
            yield from future.result()


def failed_outcome(ref: FileRef, exc: BaseException) -> IngestOutcome:
    """The outcome recorded when retries are exhausted or an unexpected error escapes."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return IngestOutcome.of(ref, FileState.FAILED, reason=reason)
