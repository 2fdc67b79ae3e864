"""Ingest one file version: route → contract → read and validate → transform → write → record.

This is the whole of the flow's work, as plain functions so that it can be tested without a
Prefect server. Terminal faults end in quarantine here; transient faults propagate so the
flow's task retries them with backoff.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hopper.config import HopperConfig, load_config
from hopper.contracts import Contract, load_contract, read_and_conform
from hopper.errors import SourceGoneError, TerminalError, UnknownDatasetError
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest
from hopper.settings import HopperSettings
from hopper.sink import quarantine_copy, write_outputs, write_parquet_atomic
from hopper.transform import add_lineage

log = logging.getLogger(__name__)


@dataclass
class Home:
    """A loaded Hopper home: its config and its ledger."""

    config: HopperConfig
    ledger: Ledger

    @classmethod
    def open(cls, config_path: Path | str | None = None) -> Home:
        """Load ``hopper.yaml`` (argument, else ``HOPPER_CONFIG``) and open its ledger."""
        settings = HopperSettings()
        config = load_config(Path(config_path) if config_path else settings.config)
        url = settings.ledger_url or sqlite_url(config.state_dir)
        return cls(config=config, ledger=Ledger(url))


def replay_command(ref: FileRef) -> str:
    """The exact command that re-runs a file after its problem is fixed."""
    target = str(ref.local_path()) if ref.is_local else ref.uri
    return f"hopper replay {shlex.quote(target)}"


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
    return load_contract(path)


def ingest(
    request: IngestRequest, config: HopperConfig, *, flow_run_id: str | None = None
) -> IngestOutcome:
    """Ingest one file version and return its outcome (ingested or quarantined).

    Raises:
        TransientError: (and other unexpected errors) for the caller to retry or fail.
    """
    ref = request.ref
    started = time.monotonic()
    now = datetime.now(UTC)
    outcome = IngestOutcome(
        uri=ref.uri, fingerprint=ref.fingerprint, dataset=ref.dataset, state=FileState.INGESTED
    )
    contract: Contract | None = None
    try:
        contract = load_dataset_contract(config, ref)
        if not ref.is_local:
            raise TerminalError(f"{ref.uri}: only local files are supported by this worker")
        path = ref.local_path()
        if not path.is_file():
            raise SourceGoneError(
                f"{ref.uri}: the file is gone (deleted or moved before it could be read)."
            )
        result = read_and_conform(path, contract, source_name=ref.uri, ingested_at=now)
        table = add_lineage(result.table, ref.uri, now)
        outputs = write_outputs(
            table,
            lake=config.lake,
            dataset=contract.name,
            partition_by=list(contract.partition_by),
            source_name=ref.name,
            uri=ref.uri,
            compression=contract.compression,
        )
        outcome.rows_in = result.rows_in
        outcome.rows_out = table.num_rows
        outcome.outputs = [str(p) for p in outputs]
        outcome.schema_ = {f.name: str(f.type) for f in table.schema}
        if result.rejected is not None and result.rejected.num_rows:
            outcome.rows_rejected = result.rejected.num_rows
            outcome.quarantine_path = str(_write_rejected_rows(config, ref, result.rejected, now))
            outcome.reason = f"{outcome.rows_rejected} bad rows quarantined"
    except TerminalError as exc:
        outcome = _quarantine(config, ref, exc, contract, flow_run_id, now)
    outcome.seconds = round(time.monotonic() - started, 3)
    log.info(
        "%s → %s (%d rows in, %d out) in %.2fs",
        ref.uri,
        outcome.state.value,
        outcome.rows_in,
        outcome.rows_out,
        outcome.seconds,
    )
    return outcome


def _write_rejected_rows(config: HopperConfig, ref: FileRef, rejected: Any, now: datetime) -> Path:
    from hopper.sink import output_name

    target = (
        config.quarantine
        / (ref.dataset or "_unrouted")
        / now.strftime("%Y-%m-%d")
        / output_name(ref.name, ref.uri).replace(".parquet", ".rejected.parquet")
    )
    write_parquet_atomic(rejected, target)
    return target


def _quarantine(
    config: HopperConfig,
    ref: FileRef,
    exc: TerminalError,
    contract: Contract | None,
    flow_run_id: str | None,
    now: datetime,
) -> IngestOutcome:
    """Copy the file to quarantine with a reason file, and describe that as an outcome."""
    reason = str(exc)
    first_line = one_line_reason(exc)
    log.warning("%s quarantined: %s", ref.uri, first_line)
    body = {
        "uri": ref.uri,
        "fingerprint": ref.fingerprint,
        "dataset": ref.dataset,
        "error": type(exc).__name__,
        "reason": reason,
        "violations": exc.violations,
        "contract_version": contract.version if contract else None,
        "flow_run_id": flow_run_id,
        "quarantined_at": now.isoformat(),
        "replay": replay_command(ref),
    }
    source = ref.local_path() if ref.is_local else Path(ref.name)
    copy = quarantine_copy(
        source, quarantine=config.quarantine, dataset=ref.dataset, when=now, reason=body
    )
    return IngestOutcome(
        uri=ref.uri,
        fingerprint=ref.fingerprint,
        dataset=ref.dataset,
        state=FileState.QUARANTINED,
        quarantine_path=str(copy),
        reason=first_line,
    )


def one_line_reason(exc: TerminalError, limit: int = 400) -> str:
    """A one-line reason naming columns, rows and samples (for alerts and `hopper status`)."""
    parts = []
    for v in exc.violations:
        where = f"column {v['column']!r}" if v.get("column") else "file"
        rows = f" (rows {', '.join(map(str, v['rows'][:3]))})" if v.get("rows") else ""
        samples = (
            f" e.g. {', '.join(repr(s) for s in v['samples'][:2])}" if v.get("samples") else ""
        )
        parts.append(f"{where}: {v.get('message', v.get('kind', 'invalid'))}{rows}{samples}")
    text = "; ".join(parts) if parts else (str(exc).splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failed_outcome(ref: FileRef, exc: BaseException) -> IngestOutcome:
    """The outcome recorded when retries are exhausted or an unexpected error escapes."""
    return IngestOutcome(
        uri=ref.uri,
        fingerprint=ref.fingerprint,
        dataset=ref.dataset,
        state=FileState.FAILED,
        reason=f"{type(exc).__name__}: {exc}".splitlines()[0],
    )
