"""The Prefect server ``hopper up`` starts: Prefect's own, with SQLite writes that lock up front.

On its embedded SQLite database, Prefect's server opens most write transactions *deferred*:
they read first and take SQLite's write lock only at their first write. If another
connection commits in between, SQLite cannot let the transaction wait for the lock (its
snapshot is stale) and fails at once with "database is locked"; the server answers 503 and
the caller retries after 2 s, then 4 s. The automation that turns a file's event into a flow
run is such a caller (``POST /deployments/{id}/create_flow_run``), so on a busy server about
one drop in five waited 2 s more before its run existed — the whole of the latency p95 in
``docs/performance.md``.

Here every transaction the server opens for writing begins ``IMMEDIATE``: it takes the write
lock when it starts and, if another writer holds it, waits under SQLite's busy timeout instead
of failing. SQLite admits one writer at a time either way, so nothing is lost in concurrency;
Prefect already does this for the writes it knows to contend (run state changes, triggers).
The configuration is handed to Prefect through its database dependency hook
(``set_database_config``), the way Prefect lets a server choose its database configuration;
with PostgreSQL nothing changes.

Run as ``python -m hopper.prefect_server [options of prefect server start]``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from prefect.server.database.configurations import AioSqliteConfiguration

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction


class ImmediateSqliteConfiguration(AioSqliteConfiguration):
    """Prefect's SQLite configuration, with every write transaction begun ``IMMEDIATE``."""

    @asynccontextmanager
    async def begin_transaction(
        self, session: AsyncSession, with_for_update: bool = False
    ) -> AsyncIterator[AsyncSessionTransaction]:
        """Begin a transaction that holds SQLite's write lock from its first statement."""
        async with super().begin_transaction(session, with_for_update=True) as transaction:
            yield transaction


def configure(url: str | None = None) -> bool:
    """Install :class:`ImmediateSqliteConfiguration` if the server's database is SQLite.

    Args:
        url: the database URL; by default Prefect's ``PREFECT_API_DATABASE_CONNECTION_URL``.

    Returns:
        Whether it was installed (False for PostgreSQL, which needs nothing).
    """
    from prefect.server.database.dependencies import set_database_config
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = url or PREFECT_API_DATABASE_CONNECTION_URL.value()
    if url is None or not url.startswith("sqlite"):
        return False
    set_database_config(ImmediateSqliteConfiguration(connection_url=url))
    return True


def main(argv: list[str] | None = None) -> None:
    """``prefect server start`` with :func:`configure` applied first, in this process."""
    from prefect.cli import app

    options = sys.argv[1:] if argv is None else argv
    configure()
    sys.argv = ["prefect", "server", "start", *options]  # Prefect's CLI reads its arguments here
    app()


if __name__ == "__main__":
    main()
