"""Replay: choose file versions from the ledger and re-run their deployment through Prefect.

Replays reuse the deterministic output path, so the lake ends with the latest rows of each
source and never with duplicates. Selection is pure and tested on its own; dispatching goes
through the :class:`~hopper.prefect_api.PrefectAPI` handed in.
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

from hopper.config import HopperConfig
from hopper.errors import HopperError, SourceGoneError
from hopper.ledger import FileRecord, Ledger
from hopper.models import FileRef, FileState, IngestRequest
from hopper.watch.local import describe_file, relative_to_source

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
    return Path(target).expanduser().resolve().as_uri()


@dataclass
class Selection:
    """What to replay."""

    targets: list[str]
    failed: bool = False
    quarantined: bool = False
    dataset: str | None = None
    since_seconds: float | None = None


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
    """
    ref = current_ref(record, config)
    ledger.record_detected(ref)
    request = IngestRequest(
        ref=ref,
        dispatch_id=uuid.uuid4().hex,
        config_path=str(config.path) if config.path else None,
        replay=replay,
    )
    run_id = api.create_ingest_run(
        {"request": request.model_dump(mode="json")}, request.dispatch_id
    )
    ledger.mark_dispatched(
        ref.uri,
        ref.fingerprint,
        request.dispatch_id,
        replay_of=(record.flow_run_id or "") if replay else None,
    )
    ledger.mark_queued(ref.uri, ref.fingerprint, run_id)
    log.info("replaying %s as flow run %s", ref.uri, run_id)
    return ref, run_id
