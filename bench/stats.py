"""Pure helpers: percentiles, CPU and memory arithmetic, results and the results table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between closest ranks.

    Matches ``numpy.percentile(values, q)`` (its default "linear" method).

    Args:
        values: the sample; must not be empty.
        q: the percentile, from 0 to 100.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside 0–100.
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0–100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_percent(cpu_seconds: float, wall_seconds: float) -> float:
    """CPU use as a percentage of one core over a wall-clock interval."""
    return 100.0 * cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0


def rss_growth(samples: Sequence[float]) -> float:
    """Growth of a memory series: median of its last third minus median of its first third.

    Medians of thirds rather than last-minus-first, so one allocation burst (a rescan, a
    garbage collection) at either end does not read as a leak.

    Args:
        samples: memory readings in time order (any unit; the result has the same unit).
    """
    if len(samples) < 2:
        return 0.0
    third = max(1, len(samples) // 3)
    return statistics.median(samples[-third:]) - statistics.median(samples[:third])


def is_flat(growth: float, start: float, tolerance: float = 0.02, floor: float = 2.0) -> bool:
    """Whether memory ``growth`` is within ``max(floor, tolerance × start)`` (same unit)."""
    return growth <= max(floor, tolerance * start)


@dataclass
class Result:
    """One row of the results table (and one entry of the JSON report)."""

    benchmark: str
    measured: str
    goal: str
    baseline: str = "—"
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL`` or ``n/a`` (not measured, or errored)."""
        if self.passed is None:
            return "n/a"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {**asdict(self), "verdict": self.verdict}


def format_table(results: Sequence[Result]) -> str:
    """The results as a Markdown table (readable in a terminal, pasteable into docs)."""
    header = ("benchmark", "measured", "goal", "baseline (same run)", "result")
    rows = [(r.benchmark, r.measured, r.goal, r.baseline, r.verdict) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)]) + "\n"


def mb(n_bytes: float) -> float:
    """Bytes to MB (10^6), the unit of file sizes and throughputs in the report."""
    return n_bytes / 1e6


def mib(n_bytes: float) -> float:
    """Bytes to MiB (2^20), the unit of memory in the report."""
    return n_bytes / (1 << 20)
