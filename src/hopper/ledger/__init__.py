"""The ledger: the source of truth for "what happened to this file".

Every file version is a row keyed by ``(uri, fingerprint)`` with an explicit state
(:class:`~hopper.models.FileState`); every transition is appended to a history table so
``hopper status FILE`` can tell the whole story.

A package of one idea per module:

- :mod:`~hopper.ledger.tables`: the two tables (``files``, ``history``);
- :mod:`~hopper.ledger.record`: :class:`FileRecord`, a version as read;
- :mod:`~hopper.ledger.store`: the database (URL, engine, transactions);
- :mod:`~hopper.ledger.transitions`: the allowed moves and the one helper that makes them;
- :mod:`~hopper.ledger.facade`: :class:`Ledger`, the dispatch protocol and the claims;
- :mod:`~hopper.ledger.queries`: the read side;
- :mod:`~hopper.ledger.alerts`: alert bookkeeping;
- :mod:`~hopper.ledger.lease`: :class:`Lease`, a run's renewed hold on its versions.
"""

from hopper.ledger.facade import Ledger
from hopper.ledger.lease import Lease
from hopper.ledger.record import FileRecord
from hopper.ledger.store import sqlite_url
from hopper.ledger.tables import files, history, metadata
from hopper.ledger.transitions import TRANSITIONS, IllegalTransition

__all__ = [
    "TRANSITIONS",
    "FileRecord",
    "IllegalTransition",
    "Lease",
    "Ledger",
    "files",
    "history",
    "metadata",
    "sqlite_url",
]
