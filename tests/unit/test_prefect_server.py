"""The Prefect server `hopper up` starts: SQLite write transactions wait for the lock.

The race is SQLite's own, reproduced on a real database file: a transaction reads, another
connection commits a write, then the first one writes. With Prefect's stock configuration the
first write fails at once ("database is locked", which Prefect's server turns into a 503 and
its clients into a 2 s retry); with Hopper's, the second writer waits and both commit.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.server.database import dependencies
from prefect.server.database.configurations import AioSqliteConfiguration
from sqlalchemy.exc import OperationalError

from hopper.prefect_server import ImmediateSqliteConfiguration, configure


async def _read_then_write_while_another_commits(config: AioSqliteConfiguration) -> int:
    engine = await config.engine()
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS runs (id INTEGER)")

        async def other_writer() -> None:
            async with await config.session(engine) as session, config.begin_transaction(session):
                await session.execute(sa.text("INSERT INTO runs VALUES (2)"))

        async with await config.session(engine) as session:
            async with config.begin_transaction(session):
                await session.execute(sa.text("SELECT count(*) FROM runs"))
                other = asyncio.create_task(other_writer())
                await asyncio.sleep(0.3)  # the other writer commits now, or waits for us
                await session.execute(sa.text("INSERT INTO runs VALUES (1)"))
            await other
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text("SELECT count(*) FROM runs"))).scalar_one())
    finally:
        await engine.dispose()


def test_stock_configuration_fails_the_write_that_read_first(tmp_path: Path) -> None:
    stock = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(OperationalError, match="database is locked"):
        asyncio.run(_read_then_write_while_another_commits(stock))


def test_hoppers_configuration_makes_the_other_writer_wait(tmp_path: Path) -> None:
    config = ImmediateSqliteConfiguration(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    assert asyncio.run(_read_then_write_while_another_commits(config)) == 2


@pytest.fixture
def restore_database_config() -> object:
    saved = dependencies.MODELS_DEPENDENCIES["database_config"]
    yield
    dependencies.set_database_config(saved)


@pytest.mark.usefixtures("restore_database_config")
def test_configure_installs_it_for_sqlite_only(tmp_path: Path) -> None:
    assert configure(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") is True
    installed = dependencies.provide_database_interface().database_config
    assert isinstance(installed, ImmediateSqliteConfiguration)

    dependencies.set_database_config(None)
    assert configure("postgresql+asyncpg://localhost/prefect") is False
    assert dependencies.MODELS_DEPENDENCIES["database_config"] is None
