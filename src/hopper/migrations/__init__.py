"""Ledger schema migrations (Alembic): every ledger is brought to the current schema on open.

Revisions live in ``versions/``; :func:`upgrade` runs them programmatically (no alembic.ini),
so SQLite and PostgreSQL ledgers follow the same path. Ledgers created before migrations
existed (tables present, no ``alembic_version``) are stamped with the initial revision first.
To change the schema: edit :mod:`hopper.ledger`'s tables and add a revision here with the
same change (``tests/unit/test_migrations.py`` checks that the two agree).
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

INITIAL = "0001"
_LOCK_KEY = 0x486F70706572  # "Hopper": one advisory lock for every migrating process
_done: set[str] = set()
_guard = threading.Lock()


def alembic_config() -> Config:
    """An Alembic configuration pointing at this package's scripts."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    return config


def head() -> str:
    """The newest revision."""
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def current(engine: Engine) -> str | None:
    """The revision a ledger database is at (None: not under migrations yet)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the ledger behind ``engine`` to the newest revision (once per process and URL).

    Several processes may open a new ledger at once (``hopper up`` starts a watcher and a
    worker together): on PostgreSQL they queue on an advisory lock; on SQLite on a lock file
    beside the database (two processes racing through the revisions could otherwise both
    record one), and the loser of any other race retries once the winner is done.
    """
    key = engine.url.render_as_string(hide_password=False)
    with _guard:
        if key in _done:
            return
        for attempt in range(5):
            try:
                with _sqlite_lock(engine):
                    _upgrade(engine)
                break
            except DBAPIError as exc:  # a concurrent first open (SQLite): try again
                if attempt == 4:
                    raise
                log.debug("ledger migration raced (%s); retrying", exc)
                time.sleep(0.2 * (attempt + 1))
        _done.add(key)


@contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[None]:
    """Hold ``<database>.migrate.lock`` while migrating a SQLite file (nothing otherwise)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with open(f"{database}.migrate.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _upgrade(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        config.attributes["connection"] = conn
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None and sa.inspect(conn).has_table("files"):
            log.info("ledger %s predates migrations: stamping it %s", engine.url, INITIAL)
            command.stamp(config, INITIAL)
        command.upgrade(config, "head")
