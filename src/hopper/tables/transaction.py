"""A pyiceberg transaction whose table metadata is worked out once per staged change.

pyiceberg 0.12's ``Transaction.table_metadata`` replays the staged updates on the table's
metadata and deep-copies the result at every read, and one append reads it about twenty
times: with a few hundred snapshots kept that is most of a commit, and the cost grows with
every snapshot (apache/iceberg-python issue 2673). The result depends only on the table's
metadata and on the staged updates (a tuple that is replaced, never changed, when an update
is staged), so :func:`transaction` keeps it until either changes. The metadata models are
frozen pydantic models; pyiceberg's append, delete and rewrite paths only read them.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.table import Table, Transaction
    from pyiceberg.table.metadata import TableMetadata


@cache
def _memo_class() -> type[Transaction]:
    from pyiceberg.table import Transaction

    class MemoTransaction(Transaction):
        _memo: tuple[Any, Any, TableMetadata] | None = None

        @property
        def table_metadata(self) -> TableMetadata:
            base, updates = self._table.metadata, self._updates
            memo = self._memo
            if memo is not None and memo[0] is base and memo[1] is updates:
                return memo[2]
            metadata = super().table_metadata
            self._memo = (base, updates, metadata)
            return metadata

    return MemoTransaction


def transaction(table: Table) -> Transaction:
    """A transaction on ``table``, as ``table.transaction()``, reading its metadata once."""
    return _memo_class()(table)
