"""Split an inspected table into the rows that go to the lake and the rows set aside.

With ``bad_rows: quarantine`` a file that :mod:`~hopper.contracts.verdict` lets in may still
hold bad rows: they leave the output table and are kept as the file's original text, with
their file-relative row number (``_row``) and the violations that hit them (``_reason``), so
whoever fixes them can find and correct each one. With ``bad_rows: rescue`` no row is set
aside: :mod:`~hopper.contracts.rescue` replaces the bad values and keeps them as read in
``_rescued_data``. The output table holds the declared columns, typed and renamed, then the
undeclared ones when ``extra_columns`` is ``evolve`` (then ``_rescued_data`` with rescue).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hopper.contracts.checks import Inspection, Issue
from hopper.contracts.convert import as_chunked, false_mask
from hopper.contracts.model import Contract
from hopper.contracts.rescue import rescue_rows


def split_rows(
    found: Inspection, contract: Contract, first_row: int = 1
) -> tuple[pa.Table, pa.Table | None]:
    """Split an inspection into its valid output rows and its rejected rows (or None).

    Args:
        found: the inspection of a whole file or of one batch.
        contract: the contract it was inspected against.
        first_row: the file-relative number of ``found.raw``'s first row (for ``_row``).

    Returns:
        The output table without the bad rows, and the bad rows (None when there are none).
        With ``bad_rows: rescue``: every row, bad values rescued, and None.
    """
    table = output_table(found, contract)
    if contract.bad_rows == "rescue":
        return rescue_rows(table, found, contract), None
    if not found.issues:
        return table, None
    bad = _any(found.issues, found.raw.num_rows)
    return table.filter(pc.invert(bad)), _rejected_rows(found.raw, found.issues, bad, first_row)


def output_table(found: Inspection, contract: Contract) -> pa.Table:
    """Every row of ``found`` in output form: typed declared columns, then evolved extras."""
    columns = dict(found.typed)
    if contract.extra_columns == "evolve":
        columns.update({name: found.raw.column(name) for name in found.extras})
    return pa.table(columns)


def _any(issues: list[Issue], num_rows: int) -> pa.ChunkedArray:
    bad = false_mask(num_rows)
    for issue in issues:
        bad = as_chunked(pc.or_(bad, issue.mask))
    return bad


def _rejected_rows(
    raw: pa.Table, issues: list[Issue], bad: pa.ChunkedArray, first_row: int = 1
) -> pa.Table:
    """The bad rows of ``raw`` as text, with ``_row`` (``first_row`` = raw's first) and why."""
    labels = [
        pc.if_else(issue.mask, f"{issue.violation.column}: {issue.violation.kind}; ", "")
        for issue in issues
    ]
    reasons = pc.utf8_rtrim(pc.binary_join_element_wise(*labels, ""), characters="; ")
    columns = {name: _as_text(raw.column(name)) for name in dict.fromkeys(raw.column_names)}
    rows = np.arange(first_row, first_row + raw.num_rows, dtype=np.int64)
    columns["_row"] = pa.chunked_array([pa.array(rows, pa.int64())])
    columns["_reason"] = reasons
    return pa.table(columns).filter(bad)


def _as_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return pc.cast(values, pa.string())
    except pa.ArrowNotImplementedError:
        return values


__all__ = ["output_table", "split_rows"]
