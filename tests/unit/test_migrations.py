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


def test_a_new_ledger_is_at_head_and_matches_the_code(tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url(tmp_path))
    assert migrations.current(ledger.engine) == migrations.head() == "0002"
    with ledger.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_a_ledger_from_before_migrations_is_stamped_and_upgraded(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    engine = sa.create_engine(url)
    old = sa.MetaData()
    for table in metadata.tables.values():  # the tables as the first release created them
        table.to_metadata(old)
    old.tables["files"].indexes = {
        i for i in old.tables["files"].indexes if i.name != "ix_files_flow_run_id"
    }
    old.create_all(engine)
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
    assert "ix_files_flow_run_id" in indexes
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM files")).scalar() == 1
    ref = FileRef(uri="file:///b", size=1, mtime=1.0)
    assert ledger.record_detected(ref)  # and it works as before
