"""What one read may spend: the memory, columns and nesting a contract allows a file.

:class:`ReadLimits` is the contract's limits seen from a reader, and the one place that words
the error for a read that needs more memory than ``max_memory_mb``, so the whole-file CSV and
JSON reads, the CSV stream and the bounded Parquet read all name the limit alike. (The checks
made before a file is parsed at all live in :mod:`hopper.contracts.limits`.)
"""

from __future__ import annotations

from dataclasses import dataclass

from hopper.contracts.model import Contract
from hopper.errors import ResourceLimitError

MIB = 1 << 20
"""Bytes in a mebibyte: limits are set in MiB."""


def plain_number(value: float) -> str:
    """A limit as a person writes it: ``300`` rather than ``300.0``, ``0.5`` as is."""
    return str(int(value)) if value == int(value) else f"{value:g}"


@dataclass(frozen=True)
class ReadLimits:
    """The resources a reader may spend on one user's file, from its contract.

    Attributes:
        max_memory_mb: decoded data the read may hold (``max_memory_mb``).
        max_decompression_ratio: uncompressed bytes per byte of file at most.
        max_columns: leaf columns at most.
        max_depth: nesting of a Parquet schema at most (``max_json_depth``).
    """

    max_memory_mb: float
    max_decompression_ratio: float
    max_columns: int
    max_depth: int

    @classmethod
    def of(cls, contract: Contract | None) -> ReadLimits:
        """A contract's limits; without one (``contract infer``), a contract's defaults."""
        if contract is None:
            fields = Contract.model_fields
            return cls(
                fields["max_memory_mb"].default,
                fields["max_decompression_ratio"].default,
                fields["max_columns"].default,
                fields["max_json_depth"].default,
            )
        return cls(
            contract.max_memory_mb,
            contract.max_decompression_ratio,
            contract.max_columns,
            contract.max_json_depth,
        )

    @property
    def max_memory_bytes(self) -> int:
        """``max_memory_mb`` in bytes."""
        return int(self.max_memory_mb * MIB)

    def exceeded(self, source: str, detail: object) -> ResourceLimitError:
        """The error for a read that needs more than ``max_memory_mb``."""
        text = str(detail).strip().splitlines()[0] if str(detail).strip() else "out of memory"
        return ResourceLimitError(
            f"{source}: exceeded the {plain_number(self.max_memory_mb)} MiB memory limit "
            "(max_memory_mb) "
            f"while reading it: {text}. Split the file, or raise max_memory_mb in the "
            "contract if the data is genuine, then replay it."
        )
