"""How a read that fails is reported, the same way by every reader of the package.

Arrow, the codecs and Python's json module fail with many exception types and long,
multi-line messages. Every reader catches the same set (:data:`READ_ERRORS`) and turns it into
an :class:`~hopper.errors.UnreadableFileError` (or :class:`~hopper.errors.UndecodableTextError`
when the bytes are not text in the contract's encoding) whose reason is the first line of the
original message, followed by a fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

from hopper.errors import UndecodableTextError, UnreadableFileError

T = TypeVar("T")

# RecursionError: Python's json module on absurdly nested JSON arrays.
READ_ERRORS = (pa.ArrowException, OSError, EOFError, ValueError, UnicodeError, RecursionError)
"""The exceptions that mean a file cannot be read as what it claims to be."""


def unreadable_on_error(source: str, kind: str, read: Callable[[], T]) -> T:
    """Call ``read``, turning a :data:`READ_ERRORS` failure into an error naming ``kind``.

    A ``MemoryError`` passes through: the caller names the memory limit it broke.

    Raises:
        UndecodableTextError: the bytes are not text in the expected encoding.
        UnreadableFileError: any other failure to read the file as ``kind``.
    """
    try:
        return read()
    except MemoryError:
        raise  # the caller names the memory limit
    except READ_ERRORS as exc:
        if isinstance(exc, UnicodeError):
            raise UndecodableTextError(
                f"{source}: cannot read as {kind}: {failure_reason(exc)}. Fix: set reader.encoding "
                "in the contract or re-send the file as UTF-8"
            ) from exc
        raise UnreadableFileError(
            f"{source}: cannot read as {kind}: {failure_reason(exc)}. Fix: check that it is valid "
            f"{kind} and complete, then re-send it"
        ) from exc


def failure_reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
