"""The one accept/reject decision: may a checked file's good rows go in, or is it refused?

The whole-file path (:func:`~hopper.contracts.validate.read_and_conform`) decides once it has
inspected the file; the streaming path (:class:`~hopper.contracts.stream.StreamingConform`)
decides after its last block, on violations merged across blocks. Both ask
:func:`decide`, so a file gets the same verdict however it was read. A file is refused when

- it has a structural problem (a missing, duplicated, reserved or frozen extra column);
- a column has values none of which converts: the column changed type, a schema change
  rather than a few bad rows, so even ``bad_rows: quarantine`` or ``rescue`` refuses the
  whole file;
- it has any violation and the contract says ``bad_rows: reject``;
- it has a violation that ``bad_rows: rescue`` cannot rescue: a null, or a bad value, in a
  column that is not nullable and has no default (:func:`~hopper.contracts.rescue.
  unrescuable`).

Otherwise it goes in, its bad rows (if any) set aside by :mod:`~hopper.contracts.split`, or
its bad values rescued. A refusal's message lists the violations and, for missing or
mistyped columns, ends with the column-by-column diff of :mod:`~hopper.contracts.diff`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hopper.contracts.checks import Inspection
from hopper.contracts.diff import diff_inspection, format_diff
from hopper.contracts.model import Contract
from hopper.contracts.rescue import unrescuable
from hopper.contracts.results import Violation, format_violations
from hopper.errors import ContractViolation


def decide(
    path: Path,
    contract: Contract,
    found: Inspection,
    source: str,
    valid: Mapping[str, int] | None = None,
    *,
    rows: int | None = None,
    sample_rows: int | None = None,
) -> None:
    """Refuse the file if it must not go in; return if its good rows may be written.

    Args:
        path: the inspected file.
        contract: its contract.
        found: its inspection (for a streamed file: the first block's, with the issues
            merged over every block).
        source: the file's name or URI, for messages.
        valid: output name -> rows holding a converted value, over the whole file; None
            takes them from ``found`` (a file inspected whole).
        rows: the file's row count when ``found`` holds only part of it.
        sample_rows: bound on the rows re-read to infer the file's own types for the diff.

    Raises:
        ContractViolation: the file is refused; ``violations`` holds the details.
    """
    changed = type_changes(found, found.valid_values() if valid is None else valid, contract)
    if must_refuse(found, contract, changed):
        raise ContractViolation(
            failure_message(
                path, contract, found, source, changed, rows=rows, sample_rows=sample_rows
            ),
            violations=[v.to_dict() for v in found.violations],
        )


def must_refuse(found: Inspection, contract: Contract, changed: Sequence[Violation] = ()) -> bool:
    """Whether these findings refuse the file (``changed``: its type changes, when known).

    A streamed block is judged without ``changed``, which only the end of the file tells.
    """
    if found.structural or changed:
        return True
    if contract.bad_rows == "rescue":
        return bool(_unrescued(found, contract))
    return bool(found.violations and contract.bad_rows == "reject")


def _unrescued(found: Inspection, contract: Contract) -> list[str]:
    """Why ``bad_rows: rescue`` cannot rescue some of ``found``'s violations (empty: it can)."""
    if contract.bad_rows != "rescue":
        return []
    reasons = (unrescuable(issue.violation, contract) for issue in found.issues)
    return list(dict.fromkeys(reason for reason in reasons if reason))


def type_changes(
    found: Inspection, valid: Mapping[str, int], contract: Contract
) -> list[Violation]:
    """Type violations where no value of the column converts: the column changed type.

    Such a column is a schema change rather than a few bad rows, so even with ``bad_rows:
    quarantine`` (or ``rescue``) the whole file is quarantined instead of every row being set
    aside (or every value rescued).
    """
    changed = []
    for issue in found.issues:
        violation = issue.violation
        if violation.kind != "type" or violation.column is None:
            continue
        if valid.get(contract.column(violation.column).output_name, 0) == 0:
            changed.append(violation)
    return changed


def failure_message(
    path: Path,
    contract: Contract,
    found: Inspection,
    source: str,
    changed: list[Violation],
    *,
    rows: int | None = None,
    sample_rows: int | None = None,
) -> str:
    """The violations, plus a column-by-column diff when columns are missing or mistyped.

    ``rows`` overrides the row count of ``found.raw`` and ``sample_rows`` bounds the re-read
    that infers the file's own types (both for streamed files, whose inspection is a batch).
    """
    violations = found.violations
    details = [
        f"bad_rows: rescue cannot keep these rows: {reason}. Fix: give the column a default, "
        "make it nullable, or use bad_rows: quarantine."
        for reason in ([] if found.structural or changed else _unrescued(found, contract))
    ]
    if not any(v.kind in ("missing_column", "extra_column", "type") for v in violations):
        return format_violations(violations, source, details=details)
    details += [
        f"Column {v.column!r} changed type: none of its values converts, so the whole file is "
        "quarantined (not just its rows)."
        for v in changed
    ]
    diff = diff_inspection(path, contract, found, source, rows=rows, sample_rows=sample_rows)
    details += format_diff(diff).splitlines()
    return format_violations(violations, source, details=details)


__all__ = ["decide", "failure_message", "must_refuse", "type_changes"]
