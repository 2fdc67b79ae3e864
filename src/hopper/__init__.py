"""Hopper: files dropped into watched places become validated, typed Parquet, on Prefect 3.

The package follows the data's path: ``watch`` (detect) → ``ledger`` (record) → ``events``
(emit) → Prefect → ``ingest`` (``contracts`` validate, ``lineage`` transform, ``sink`` write).
"""

from hopper.errors import (
    ConfigError,
    ContractViolation,
    HopperError,
    SourceGoneError,
    TerminalError,
    TransientError,
    UnknownDatasetError,
    UnreadableFileError,
)
from hopper.models import FileRef, FileState, IngestOutcome, IngestRequest

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ContractViolation",
    "FileRef",
    "FileState",
    "HopperError",
    "IngestOutcome",
    "IngestRequest",
    "SourceGoneError",
    "TerminalError",
    "TransientError",
    "UnknownDatasetError",
    "UnreadableFileError",
    "__version__",
]
