"""Hopper's exception hierarchy: one root, two markers that decide what happens next.

::

    HopperError                     every error Hopper raises on purpose
    ├── ConfigError                 hopper.yaml / contract files that do not parse or validate
    ├── TerminalError               retrying cannot help: quarantine the file, alert, no retry
    │   ├── UnknownDatasetError     no routing rule or contract matches the file
    │   ├── UnreadableFileError     the bytes cannot be decoded in the declared format
    │   │   └── UndecodableTextError    …because the text is not in the declared encoding
    │   ├── ContractViolation       the data breaks the dataset's contract
    │   ├── ResourceLimitError      the file is bigger, deeper or hungrier than the dataset's
    │   │                           limits allow (max_file_mb, max_memory_mb, …)
    │   ├── SourceGoneError         the source file vanished before it could be read
    │   └── ReaderCrashedError      reading it crashed its child process or ran out of
    │                               the dataset's memory or time limits
    └── TransientError              network, throttling, server unavailable: retry with backoff

The flow's task retry policy asks :func:`is_transient` whether to retry; anything else that
escapes is treated as a bug and fails the run (and alerts) after retries.
"""

from __future__ import annotations

from typing import Any


class HopperError(Exception):
    """Root of every error Hopper raises on purpose."""


class ConfigError(HopperError):
    """A configuration or contract file is missing, malformed or inconsistent."""


class TerminalError(HopperError):
    """A fault that retrying cannot fix: the file is quarantined with this error's reason.

    Attributes:
        violations: structured details (column, rows, samples) written to the reason file.
    """

    def __init__(self, message: str, *, violations: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.violations: list[dict[str, Any]] = violations or []


class UnknownDatasetError(TerminalError):
    """No dataset (routing rule or contract) could be found for a file."""


class UnreadableFileError(TerminalError):
    """The file cannot be decoded in its declared or sniffed format."""


class UndecodableTextError(UnreadableFileError):
    """The file's text is not valid in the declared encoding (e.g. Latin-1 read as UTF-8)."""


class ContractViolation(TerminalError):
    """The file's data violates its dataset contract."""


class ResourceLimitError(TerminalError):
    """The file breaks one of its dataset's resource limits; the message names the limit.

    Raised before a reader allocates (size, decompression ratio, line length, JSON depth,
    Parquet footer claims) or while it reads (decoded bytes over ``max_memory_mb``, an
    allocation Arrow could not make).
    """


class SourceGoneError(TerminalError):
    """The source file no longer exists."""


class ReaderCrashedError(TerminalError):
    """The child process reading a file died (a signal) or exceeded its memory or time limit.

    Only that file is quarantined; the worker and the other files of its batch carry on.
    """


class TransientError(HopperError):
    """A fault that may go away by itself (network, throttling, locked database): retry."""


def is_transient(exc: BaseException) -> bool:
    """Whether an exception is worth retrying.

    Args:
        exc: the exception raised by an ingestion step.

    Returns:
        True for :class:`TransientError` and for OS-level connection faults.
    """
    if isinstance(exc, TerminalError):
        return False
    return isinstance(exc, TransientError | ConnectionError | TimeoutError)
