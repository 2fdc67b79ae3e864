"""Replay: choose file versions from the ledger and re-run their deployment through Prefect.

Replays reuse the deterministic output path, so the lake ends with the latest rows of each
source and never with duplicates. Selection is pure and tested on its own; dispatching goes
through the :class:`~hopper.prefect_api.PrefectAPI` handed in. :func:`run_replay` is the one
replay that ``hopper replay`` and the ``hopper-replay`` deployment (the Prefect UI's way in)
both run, and :func:`report_markdown` is what the deployment's run shows of it.

:func:`dispatch_batches` is the way back in for many files at once (reconciliation after a
lost worker or a lost watcher): the versions are taken in the ledger under one dispatch id
per batch (sized as the watcher sizes a fresh burst's, :func:`hopper.batching.batch_size`) and
one ``ingest-batch`` run is created for each, exactly like the watcher sends a fresh burst.
One run per file would start hundreds of runs that each pay a flow's start-up cost
(≈ 2 files/s instead of ≈ 100). Runs are created through the API rather than by emitting
the batch event: reconciliation runs without a watcher to confirm events, and the API
answers with the run id (or an error) at once.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hopper.batching import batch_size, cut_batches
from hopper.cleanup import bring_back, lazy_clients
from hopper.config import HopperConfig
from hopper.errors import HopperError, SourceGoneError
from hopper.files import describe_file, relative_to_source
from hopper.ledger import FileRecord, Ledger
from hopper.models import FileRef, FileState, IngestBatch, IngestRequest, file_uri
from hopper.prefect_api import run_url

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``2h``, ``7d``.

    Raises:
        HopperError: for anything else.
    """
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise HopperError(f"--since {text!r}: use a number and a unit, e.g. 30m, 2h, 7d")
    return float(match.group(1)) * _UNIT[match.group(2)]


def to_uri(target: str) -> str:
    """A command-line target (path or URI) as a ledger URI."""
    if "://" in target:
        return target
    return file_uri(Path(target).expanduser().resolve())


@dataclass
class Selection:
    """What to replay."""

    targets: list[str]
    failed: bool = False
    quarantined: bool = False
    dataset: str | None = None
    since_seconds: float | None = None


def selection(
    targets: list[str],
    *,
    failed: bool = False,
    quarantined: bool = False,
    dataset: str | None = None,
    since: str | None = None,
) -> Selection:
    """What a replay asks for, as the command and the deployment take it (pure).

    Raises:
        HopperError: when nothing is named or selected (a replay of everything is never
            meant), or ``since`` is not a duration.
    """
    if not (targets or failed or quarantined or dataset or since):
        raise HopperError(
            "name files to replay (paths, URIs or globs), or select them as failed, "
            "quarantined, by dataset or by age (--failed, --quarantined, --dataset, --since)"
        )
    return Selection(
        list(targets), failed, quarantined, dataset, parse_since(since) if since else None
    )


def _glob_matches(record: FileRecord, pattern: str) -> bool:
    """Whether a record's file matches a glob given as a path or as a URI."""
    if "://" in pattern:
        return fnmatch.fnmatchcase(record.uri, pattern)
    if not record.ref.is_local:
        return False
    full = str(Path(pattern).expanduser().absolute())
    return fnmatch.fnmatchcase(str(record.ref.local_path()), full)


def select(ledger: Ledger, sel: Selection) -> list[FileRecord]:
    """The latest version of every file the selection names.

    Raises:
        HopperError: if a named file was never seen by Hopper.
    """
    states = [
        s
        for s, on in ((FileState.FAILED, sel.failed), (FileState.QUARANTINED, sel.quarantined))
        if on
    ]
    since = time.time() - sel.since_seconds if sel.since_seconds is not None else None
    chosen: dict[str, FileRecord] = {}
    if states or sel.dataset or since is not None or not sel.targets:
        for rec in ledger.records(states=states or None, dataset=sel.dataset, since=since):
            chosen[rec.uri] = rec
    for target in sel.targets:
        if any(ch in target for ch in "*?["):
            chosen.update({r.uri: r for r in ledger.records() if _glob_matches(r, target)})
            continue
        uri = to_uri(target)
        latest = ledger.latest(uri)
        if latest is None:
            raise HopperError(
                f"{target}: Hopper has no record of this file "
                "(check the path, or drop it into an inbox)"
            )
        chosen[uri] = latest
    return list(chosen.values())


def current_ref(record: FileRecord, config: HopperConfig) -> FileRef:
    """The file as it is now (a changed source is a new version).

    Raises:
        SourceGoneError: when the source no longer exists.
    """
    ref = record.ref
    if not ref.is_local:
        return ref
    path = ref.local_path()
    if not path.is_file():
        raise SourceGoneError(f"{path}: the source file is gone; it cannot be replayed")
    rel = relative_to_source(path, config.folders)
    fresh = describe_file(path, rel, config.routing) if rel else None
    if fresh is None:
        return ref
    return fresh if fresh.dataset else fresh.model_copy(update={"dataset": ref.dataset})


class RunStarter(Protocol):
    """What starting a run needs from Prefect (a :class:`~hopper.prefect_api.PrefectAPI`)."""

    def create_ingest_run(self, parameters: dict[str, Any], idempotency_key: str) -> str: ...


class BatchStarter(RunStarter, Protocol):
    """Starting single-file and batch runs (a :class:`~hopper.prefect_api.PrefectAPI`)."""

    def create_batch_run(self, parameters: dict[str, Any], idempotency_key: str) -> str: ...


def batch_of(records: list[FileRecord], dispatch_id: str, config: HopperConfig) -> IngestBatch:
    """The ``ingest-batch`` parameter for versions taken under ``dispatch_id`` (pure).

    Only the dispatch id travels: the run reads its files from the ledger.
    """
    return IngestBatch(
        dispatch_id=dispatch_id,
        count=len(records),
        datasets=sorted({r.dataset or "unrouted" for r in records}),
        config_path=str(config.path) if config.path else None,
    )


def dispatch_batches(
    records: list[FileRecord], config: HopperConfig, ledger: Ledger, api: BatchStarter
) -> list[FileRecord]:
    """Send versions due again as ``ingest-batch`` runs within the batch limits.

    As many files each as a fresh burst of as many files would get, ``batch_max_files`` at
    most, and at most ``max_batch_bytes`` bytes (:func:`hopper.batching.batch_size`,
    :func:`hopper.batching.cut_batches`).

    Each chunk is taken in the ledger first (conditional on the state and dispatch id in
    ``records``), so a watcher sharing the ledger cannot send the same versions too; a lone
    version gets its own ``ingest-file`` run. A chunk whose run cannot be created stays
    ``dispatched`` and is sent again by the watcher (after ``confirm_seconds``) or by the
    next reconciliation.

    Returns:
        The versions a run was created for.
    """
    sent: list[FileRecord] = []
    watch = config.watch
    size = batch_size(len(records), watch.batch_max_files)
    for chunk in cut_batches(records, lambda r: r.ref.size, size, watch.max_batch_bytes):
        dispatch_id = uuid.uuid4().hex
        taken = ledger.take_for_dispatch(chunk, dispatch_id)
        if not taken:
            continue
        try:
            if len(taken) == 1:
                request = IngestRequest(
                    ref=taken[0].ref,
                    dispatch_id=dispatch_id,
                    config_path=str(config.path) if config.path else None,
                )
                run_id = api.create_ingest_run(
                    {"request": request.model_dump(mode="json")}, dispatch_id
                )
            else:
                batch = batch_of(taken, dispatch_id, config)
                run_id = api.create_batch_run({"batch": batch.model_dump(mode="json")}, dispatch_id)
        except Exception as exc:  # the server is down or busy: the versions stay dispatched
            log.warning("could not start a run for %d file(s) again: %s", len(taken), exc)
            continue
        for record in taken:
            ledger.mark_queued(record.uri, record.fingerprint, run_id)
        log.info("sent %d file(s) again as flow run %s", len(taken), run_id)
        sent.extend(taken)
    return sent


def dispatch_replay(
    record: FileRecord,
    config: HopperConfig,
    ledger: Ledger,
    api: RunStarter,
    *,
    replay: bool = True,
) -> tuple[FileRef, str]:
    """Start an ``ingest-file`` run for a record's current version; return it and the run id.

    With ``replay`` the run re-ingests even a settled version; without it, it behaves like a
    first dispatch (a run finding the version settled skips it).

    The version is marked dispatched before its run is created, as the watcher does: marked
    after, it would move a run that already claimed or finished it back to be sent again. If
    the run cannot be created the version stays dispatched, due to be sent again by the
    watcher or the next reconciliation, and the error is raised.

    A replayed source that was archived after ingestion is first moved back where it was
    (:func:`hopper.cleanup.bring_back`: the same version, lineage and output path; an S3
    object to its key), so the run reads only under its source, and is archived again once
    it lands; one that was deleted, or whose archived copy is gone, raises
    :class:`SourceGoneError` saying so.
    """
    if replay:
        bring_back(record, config, lazy_clients(config))
    ref = current_ref(record, config)
    ledger.record_detected(ref)
    request = IngestRequest(
        ref=ref,
        dispatch_id=uuid.uuid4().hex,
        config_path=str(config.path) if config.path else None,
        replay=replay,
    )
    ledger.mark_dispatched(
        ref.uri,
        ref.fingerprint,
        request.dispatch_id,
        replay_of=(record.flow_run_id or "") if replay else None,
    )
    run_id = api.create_ingest_run(
        {"request": request.model_dump(mode="json")}, request.dispatch_id
    )
    ledger.mark_queued(ref.uri, ref.fingerprint, run_id)  # only if no run claimed it yet
    log.info("replaying %s as flow run %s", ref.uri, run_id)
    return ref, run_id


class ReplayStarter(RunStarter, Protocol):
    """What a replay needs from Prefect (a :class:`~hopper.prefect_api.PrefectAPI`)."""

    @property
    def api_url(self) -> str: ...

    def healthy(self) -> bool: ...


@dataclass(frozen=True)
class Replayed:
    """One file a replay sent again (or, in a dry run, would send).

    Attributes:
        record: the version as the ledger had it before: its state and reason.
        ref: the version sent (the file as it is now); None in a dry run.
        flow_run_id: the new ``ingest-file`` run; None in a dry run.
    """

    record: FileRecord
    ref: FileRef | None = None
    flow_run_id: str | None = None


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did, or would do (``dry_run``)."""

    dry_run: bool
    files: list[Replayed]

    @property
    def started(self) -> list[tuple[FileRef, str]]:
        """The versions sent and their new runs (none in a dry run)."""
        return [(f.ref, f.flow_run_id) for f in self.files if f.ref and f.flow_run_id]


def run_replay(
    ledger: Ledger,
    config: HopperConfig,
    api: ReplayStarter | None,
    sel: Selection,
    *,
    dry_run: bool = False,
) -> ReplayReport:
    """Select versions and send each again as an ``ingest-file`` run (:func:`dispatch_replay`).

    A dry run only selects (and needs no ``api``).

    Raises:
        HopperError: a named file is unknown, or the Prefect server does not answer.
        SourceGoneError: a selected file or object no longer exists, and no archived copy
            of it does (the files before it were sent again).
    """
    records = select(ledger, sel)
    if dry_run or not records:
        return ReplayReport(dry_run, [Replayed(record) for record in records])
    if api is None or not api.healthy():
        where = f" at {api.api_url}" if api is not None else ""
        raise HopperError(f"the Prefect server{where} does not answer; start it with `hopper up`")
    files = []
    for record in records:
        ref, run_id = dispatch_replay(record, config, ledger, api)
        files.append(Replayed(record, ref, run_id))
    return ReplayReport(dry_run, files)


REPORT_ROWS = 1000
"""Files listed in a replay's markdown report; the rest are counted."""


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: one line, no column break."""
    return " ".join(text.split()).replace("|", "\\|")


def report_markdown(report: ReplayReport, ui_url: str) -> str:
    """The ``hopper-replay`` run's artifact: each file, its state before, its new run (pure).

    Args:
        report: what the replay did.
        ui_url: the Prefect UI, for links to the new runs.
    """
    n = len(report.files)
    files = f"{n} file{'s' * (n != 1)}"
    if report.dry_run:
        title = f"# Dry run: {files} would be replayed"
        head = ["| file | state | reason |", "|---|---|---|"]
    else:
        title = f"# Replayed {files}"
        head = ["| file | state before | reason | new run |", "|---|---|---|---|"]
    if not n:
        return f"{title}\n\nNo file matched the selection."
    rows = []
    for item in report.files[:REPORT_ROWS]:
        record = item.record
        reason = (record.reason or "").splitlines()
        cells = [f"`{_cell(record.uri)}`", record.state.value, _cell(reason[0] if reason else "")]
        if not report.dry_run:
            link = run_url(ui_url, item.flow_run_id)
            cells.append(f"[{item.flow_run_id}]({link})" if link else "")
        rows.append("| " + " | ".join(cells) + " |")
    if n > REPORT_ROWS:
        rows += ["", f"… and {n - REPORT_ROWS} more"]
    return "\n".join([title, "", *head, *rows])
