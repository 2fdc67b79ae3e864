"""Hold a whole file to its contract: the ingestion path and the ``hopper validate`` path.

:func:`read_and_conform` reads a file whole, inspects it (:mod:`~hopper.contracts.checks`),
takes the accept/reject decision (:mod:`~hopper.contracts.verdict`), splits off bad rows
(:mod:`~hopper.contracts.split`) and applies the contract's transforms; large CSV/TSV files
take the same steps block by block in :mod:`~hopper.contracts.stream`. :func:`validate_file`
is the ``hopper validate`` path: the same limits and inspection, and the transforms tried on
valid data, reported rather than raised.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from hopper.contracts.checks import inspect_file
from hopper.contracts.limits import check_file_limits
from hopper.contracts.model import Contract
from hopper.contracts.rescue import place_rescued, rows_rescued
from hopper.contracts.results import ConformResult, Violation
from hopper.contracts.split import split_rows
from hopper.contracts.transforms import apply_transforms, has_transforms
from hopper.contracts.verdict import decide
from hopper.errors import ResourceLimitError, TerminalError, UnreadableFileError
from hopper.lineage import reserved_clashes, reserved_name

logger = logging.getLogger(__name__)


def read_and_conform(
    path: Path,
    contract: Contract,
    *,
    source_name: str | None = None,
    ingested_at: dt.datetime | None = None,
) -> ConformResult:
    """Read a file, convert it to its contract and apply the contract's transforms.

    Args:
        path: the file to read.
        contract: its dataset contract.
        source_name: how to name the file in messages (defaults to the path).
        ingested_at: ingestion time, whose UTC date fills the ``_ingest_date`` partition
            (defaults to now).

    Returns:
        The typed, transformed table, plus the rejected rows when ``bad_rows`` is
        ``quarantine``; with ``rescue``, the table ends with ``_rescued_data``.

    Raises:
        UnreadableFileError: the file cannot be decoded.
        ContractViolation: the file is refused (see :func:`~hopper.contracts.verdict.decide`):
            a structural violation (missing column, frozen schema drift, or a column none of
            whose values convert: a type change), or any violation when ``bad_rows`` is
            ``reject``, or one that ``rescue`` cannot rescue; ``violations`` holds the
            details and, for missing columns and type problems, the message ends with a
            column-by-column diff.
        TerminalError: a transform step failed (see :func:`~hopper.contracts.transforms.
            apply_transforms`), or lost ``_rescued_data`` (see :func:`~hopper.contracts.
            rescue.place_rescued`).
    """
    source = source_name or str(path)
    found = inspect_file(path, contract, source)
    decide(path, contract, found, source)
    table, rejected = split_rows(found, contract)
    if rejected is not None:
        logger.warning("%s: %d row(s) quarantined", source, rejected.num_rows)
    if has_transforms(contract):
        when = ingested_at or dt.datetime.now(dt.UTC)
        table = apply_transforms(table, contract, source=source, ingested_at=when)
    table = place_rescued(table, contract, source)
    rescued = rows_rescued(table)
    if rescued:
        logger.warning("%s: %d row(s) with rescued values", source, rescued)
    # Per file and routine: the worker logs each outcome, and a batch its tally.
    logger.debug("%s: %d row(s) in, %d out", source, found.raw.num_rows, table.num_rows)
    return ConformResult(
        table, rejected, found.violations, found.raw.num_rows, found.extras, rescued
    )


def validate_file(
    path: Path, contract: Contract, *, source_name: str | None = None
) -> list[Violation]:
    """Check a file against its contract without ingesting it.

    Args:
        path: the file to check.
        contract: its dataset contract.
        source_name: how to name the file in messages (defaults to the path).

    Returns:
        Every violation found (empty when the file conforms); an undecodable file gives one
        violation of kind ``unreadable``.
    """
    source = source_name or str(path)
    # The same limits as ingestion: size, decompression, line length, JSON depth, columns.
    try:
        over = _over_limit(lambda: check_file_limits(path, contract, source=source))
        if over:
            return over
        found = inspect_file(path, contract, source)
    except UnreadableFileError as exc:
        return [Violation(column=None, kind="unreadable", message=str(exc))]
    except ResourceLimitError as exc:  # found while reading: memory, columns
        return [Violation(column=None, kind="limit", message=str(exc))]
    if found.violations or not has_transforms(contract):
        return found.violations
    # The data is valid: make sure the contract's transforms also go through on it.
    try:
        table = apply_transforms(
            split_rows(found, contract)[0],
            contract,
            source=source,
            ingested_at=dt.datetime.now(dt.UTC),
        )
        table = place_rescued(table, contract, source)
    except TerminalError as exc:
        column = exc.violations[0].get("column") if exc.violations else None
        return [Violation(column=column, kind="transform", message=str(exc))]
    return [
        Violation(
            column=name,
            kind="transform",
            message=f"the transform's output has a column named like Hopper's own column "
            f"{reserved_name(name)!r}; rename it in the transform",
        )
        for name in reserved_clashes(table.column_names)
    ]


def _over_limit(check: Callable[[], None]) -> list[Violation]:
    """Run a limit check; its refusal as a ``limit`` violation (unreadable files propagate)."""
    try:
        check()
    except UnreadableFileError:
        raise
    except TerminalError as exc:
        return [Violation(column=None, kind="limit", message=str(exc))]
    return []


__all__ = ["read_and_conform", "validate_file"]
