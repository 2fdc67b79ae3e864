"""What holding a file to its contract finds and produces: violations and conformed tables.

Every path that checks a file — the whole-file read (:mod:`~hopper.contracts.validate`), the
streaming one (:mod:`~hopper.contracts.stream`) and the column diff
(:mod:`~hopper.contracts.diff`) — speaks of what is wrong in :class:`Violation` records, so
``hopper validate``, quarantine reasons and flow artifacts all read the same; this module
holds them, their text rendering and the result of a successful conformance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

MAX_ROWS = 20
"""Row numbers kept per violation."""
MAX_SAMPLES = 5
"""Distinct offending values kept per violation."""


@dataclass
class Violation:
    """One way a file breaks its contract.

    Attributes:
        column: the column (as named in the file), or None for whole-file problems.
        kind: missing_column, extra_column (undeclared, duplicated, or named like a column
            Hopper writes itself), type, null, min, max, allowed, pattern, unique,
            unreadable, limit (a resource limit of the dataset) or transform.
        message: what is wrong, in words.
        rows: 1-based data row numbers (header excluded), at most 20.
        samples: up to 5 distinct offending values, as text.
        count: total number of offending rows.
    """

    column: str | None
    kind: str
    message: str
    rows: list[int] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the violation."""
        return asdict(self)


@dataclass
class ConformResult:
    """A file converted to its contract.

    Attributes:
        table: typed valid rows, output names, contract column order then evolved extras.
        rejected: bad rows (quarantine only) as original text plus ``_row`` and ``_reason``.
        violations: what was wrong (empty unless rows were quarantined or values rescued).
        rows_in: rows read from the file.
        extra_columns: undeclared columns found in the file (schema drift).
        rows_rescued: rows of :attr:`table` with values rescued into ``_rescued_data``
            (rescue only).
    """

    table: pa.Table
    rejected: pa.Table | None
    violations: list[Violation]
    rows_in: int
    extra_columns: list[str]
    rows_rescued: int = 0

    @property
    def rows_out(self) -> int:
        """Rows kept in :attr:`table`."""
        return int(self.table.num_rows)


def format_violations(
    violations: list[Violation], source: str, *, details: list[str] | None = None
) -> str:
    """Readable multi-line summary of violations, ending with how to fix them.

    Args:
        violations: what was found.
        source: the file's name or URI.
        details: extra lines (e.g. a column-by-column diff) put before the fix.

    Returns:
        Text naming the file and, per violation, the column, kind, count, rows and samples.
    """
    if not violations:
        return f"{source}: conforms to its contract"
    lines = [f"{source}: {len(violations)} contract violation(s):"]
    for v in violations:
        where = f"column {v.column!r}" if v.column is not None else "file"
        line = f"  - {where} [{v.kind}]: {v.message}"
        if v.rows:
            more = ", ..." if v.count > len(v.rows) else ""
            line += f"; rows {', '.join(map(str, v.rows))}{more}"
        if v.samples:
            line += f"; samples {', '.join(repr(s) for s in v.samples)}"
        lines.append(line)
    lines += details or []
    lines.append(
        "Fix: correct the file and send it again, or change the dataset contract "
        "(datasets/<name>.yaml) to accept this data; then replay the file."
    )
    return "\n".join(lines)


__all__ = ["MAX_ROWS", "MAX_SAMPLES", "ConformResult", "Violation", "format_violations"]
