"""What an ingest run tells the Prefect UI about its files, so that the runs list tells the truth.

A run whose files were all ingested ends ``Completed``. One that quarantined some ends in a
Completed state named ``Quarantined`` (rejecting bad data is the pipeline working, but the
runs list must show it), and one where any file failed ends in a Failed state named ``Failed
files``; the state's message counts them and names the first few. The artifact lists each
file with its outcome, its reason and the command that replays it.

Only the state's *type* matters to Hopper itself: revival (:mod:`hopper.reconcile`) reads run
states only for versions the ledger still shows queued or running, and a run records every
outcome in the ledger before its final state is set, so a run ending ``Failed files`` never
sends its files round again. Everything here is pure; the flows create the artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from hopper.files import replay_command
from hopper.models import FileRef, FileState, IngestOutcome
from hopper.prefect_api import file_replay_url

QUARANTINED = "Quarantined"
"""Name of the Completed state of a run that quarantined files and failed none."""
FAILED_FILES = "Failed files"
"""Name of the Failed state of a run in which any file failed."""
SKIPPED = "Skipped"
"""Name of the Completed state of a run whose files were all handled by other runs."""

NAMED = 3  # files a state message names; the rest are counted
MESSAGE_LIMIT = 1000


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def _first_line(reason: str | None) -> str:
    lines = (reason or "").splitlines()
    return lines[0] if lines else "no reason recorded"


def _part(kind: str, outcomes: list[IngestOutcome], total: int) -> str:
    """``"1 of 2 files quarantined: a.csv (reason)"``."""
    named = "; ".join(f"{_name(o.uri)} ({_first_line(o.reason)})" for o in outcomes[:NAMED])
    more = f"; and {len(outcomes) - NAMED} more" if len(outcomes) > NAMED else ""
    return f"{len(outcomes)} of {total} file{'s' * (total != 1)} {kind}: {named}{more}"


def final_state(
    outcomes: Sequence[IngestOutcome], data: Any = None, skipped: int = 0
) -> State[Any]:
    """The state an ingest run ends in, named after its worst outcome (pure).

    Args:
        outcomes: the outcomes this run recorded.
        data: the run's result.
        skipped: files the run left to other runs (settled, or claimed by another run).

    Returns:
        ``Completed`` if nothing was quarantined or failed (named :data:`SKIPPED` if the run
        had no file of its own); a Completed state named :data:`QUARANTINED` if files were
        quarantined and none failed; a Failed state named :data:`FAILED_FILES` if any
        failed. The message says how many, and which.
    """
    failed = [o for o in outcomes if o.state is FileState.FAILED]
    quarantined = [o for o in outcomes if o.state is FileState.QUARANTINED]
    total = len(outcomes)
    found = (("failed", failed), ("quarantined", quarantined))
    message = ". ".join(_part(kind, files, total) for kind, files in found if files)
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    if failed:
        return Failed(name=FAILED_FILES, message=message, data=data)
    if quarantined:
        return Completed(name=QUARANTINED, message=message, data=data)
    if not outcomes and skipped:
        others = f"{skipped} file{'s' * (skipped != 1)} already handled by other runs"
        return Completed(name=SKIPPED, message=others, data=data)
    return Completed(message=f"{total} file{'s' * (total != 1)} ingested", data=data)


def outcome_rows(
    outcomes: Sequence[IngestOutcome], refs: Mapping[str, FileRef], limit: int = 1000
) -> list[dict[str, Any]]:
    """The batch artifact's table: each file, its outcome and reason, how to replay it (pure).

    Args:
        outcomes: the run's outcomes.
        refs: the run's file versions by URI (to name them in the replay command).
        limit: rows listed at most.
    """
    rows = []
    for o in outcomes[:limit]:
        ref = refs.get(o.uri)
        replay = replay_command(ref) if ref and o.state is not FileState.INGESTED else ""
        rows.append(
            {
                "file": _name(o.uri),
                "dataset": o.dataset,
                "state": o.state.value,
                "rows in": o.rows_in,
                "rows out": o.rows_out,
                "seconds": o.seconds,
                "reason": o.reason or "",
                "replay": replay,
            }
        )
    return rows


def counts(outcomes: Sequence[IngestOutcome]) -> dict[str, int]:
    """Files per final state: ``ingested``, ``quarantined``, ``failed``."""
    return {s.value: sum(o.state is s for o in outcomes) for s in FileState if s.is_final}


def file_markdown(outcome: IngestOutcome, ref: FileRef, replay_page: str | None) -> str:
    """What to do about one file that was not ingested: its reason and both ways to replay it.

    Args:
        outcome: the file's outcome (quarantined or failed).
        ref: the file version.
        replay_page: the ``hopper-replay`` deployment's page in the Prefect UI, or None.
    """
    lines = [f"# {ref.name}: {outcome.state.value}", "", outcome.reason or "no reason recorded"]
    if outcome.quarantine_path:
        lines += ["", f"Quarantined copy: `{outcome.quarantine_path}` (reasons beside it)."]
    ui = file_replay_url(replay_page, ref)
    lines += ["", f"After fixing, replay it with `{replay_command(ref)}`"]
    if ui:
        lines[-1] += f" or [from the Prefect UI]({ui})"
    lines[-1] += "."
    return "\n".join(lines)
