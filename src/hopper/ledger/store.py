"""Where a ledger lives: the database URL, the engine, and transactions that fail transiently.

SQLAlchemy Core keeps one code path for SQLite (WAL, the embedded default) and PostgreSQL
(scale-out). :class:`Store` is the base the ledger's rooms share; it knows no table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from hopper import migrations
from hopper.errors import TransientError


def sqlite_url(state_dir: Path) -> str:
    """The default ledger URL: a SQLite file in the Hopper home's state folder."""
    return f"sqlite:///{state_dir / 'ledger.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Store:
    """An open ledger database, migrated to the newest schema on open."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        try:
            migrations.upgrade(self.engine)  # tables are created and migrated on first open
        except OperationalError as exc:
            raise TransientError(f"ledger database unavailable ({url}): {exc.orig}") from exc

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction; an unreachable or locked database raises :class:`TransientError`."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise TransientError(f"ledger database unavailable ({self.url}): {exc.orig}") from exc
