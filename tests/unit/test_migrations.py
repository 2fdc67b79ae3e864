"""Ledger migrations: new ledgers reach the newest revision, old ones are upgraded in place,
and the revisions agree with the tables the code uses."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hopper import migrations
from hopper.ledger import Ledger, metadata, sqlite_url
from hopper.models import FileRef

# What later revisions added to the first release's tables (0002: an index; 0003: clean-up;
# 0004: an index for the day's summary).
LATER_COLUMNS = {"cleaned_at", "cleanup", "archived_uri"}
LATER_INDEXES = {"ix_files_flow_run_id", "ix_files_cleanup", "ix_files_dataset_day"}


def first_release_tables() -> sa.MetaData:
    """The tables as the first release created them: today's, less what came later."""
    old = sa.MetaData()
    for table in metadata.tables.values():
        columns = [
            sa.Column(
                c.name,
                c.type,
                primary_key=c.primary_key,
                nullable=c.nullable,
                autoincrement=c.autoincrement,
            )
            for c in table.columns
            if c.name not in LATER_COLUMNS
        ]
        uniques = [
            sa.UniqueConstraint(*(c.name for c in u.columns), name=u.name)
            for u in list(table.constraints)
            if isinstance(u, sa.UniqueConstraint)
        ]
        indexes = [
            sa.Index(i.name, *(c.name for c in i.columns))
            for i in table.indexes
            if i.name not in LATER_INDEXES
        ]
        sa.Table(table.name, old, *columns, *uniques, *indexes)
    return old


def test_a_new_ledger_is_at_head_and_matches_the_code(tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url(tmp_path))
    assert migrations.current(ledger.engine) == migrations.head() == "0004"
    with ledger.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_a_ledger_from_before_migrations_is_stamped_and_upgraded(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    engine = sa.create_engine(url)
    first_release_tables().create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO files (uri, fingerprint, ref, state, dispatch_count, detected_at,"
                " updated_at) VALUES ('file:///a', 'fp', '{}', 'ingested', 1, 1.0, 1.0)"
            )
        )
    engine.dispose()
    ledger = Ledger(url)
    assert migrations.current(ledger.engine) == migrations.head()
    indexes = {i["name"] for i in sa.inspect(ledger.engine).get_indexes("files")}
    assert indexes >= LATER_INDEXES
    columns = {c["name"] for c in sa.inspect(ledger.engine).get_columns("files")}
    assert columns >= LATER_COLUMNS
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM files")).scalar() == 1
    ref = FileRef(uri="file:///b", size=1, mtime=1.0)
    assert ledger.record_detected(ref)  # and it works as before


def _open_ledger(path: str, start: object) -> None:
    from hopper.ledger import Ledger

    start.wait()  # type: ignore[attr-defined]
    Ledger(f"sqlite:///{path}").close()


def test_processes_opening_a_new_sqlite_ledger_at_once_all_succeed(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for round_ in range(4):  # without the lock about one opener in eight failed
        start = context.Barrier(3)
        path = str(tmp_path / f"ledger-{round_}.db")
        openers = [context.Process(target=_open_ledger, args=(path, start)) for _ in range(3)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(timeout=120)
        assert [o.exitcode for o in openers] == [0, 0, 0]
