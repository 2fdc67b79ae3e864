"""Several writers on one Iceberg table: optimistic commits retried, nothing lost or doubled.

Two processes (as two workers would) commit batches to the same table at the same moments,
through the embedded SQLite catalog and through the SQL catalog on PostgreSQL (the
scale-out setting; skipped, with the reason, where no PostgreSQL answers on 127.0.0.1).
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopper.config import HopperConfig, load_config
from hopper.ingest import ingest
from hopper.ledger import Ledger, sqlite_url
from hopper.models import FileRef, IngestRequest
from hopper.tables import land, open_catalog
from tests.conftest import drop_file, make_home
from tests.integration.conftest import postgres_database

pytestmark = pytest.mark.integration

ROUNDS = 6
PER_BATCH = 15


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_yaml(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
        return
    with postgres_database("hopper_catalog") as url:
        yield f"  catalog:\n    type: sql\n    uri: {url}\n"


def _writer(config_path: str, who: str, start: multiprocessing.synchronize.Barrier) -> None:
    """One worker's rounds: ingest a batch of its own files, wait for the other, land it."""
    home = load_config(Path(config_path))
    ledger = Ledger(sqlite_url(home.state_dir))
    try:
        for round_ in range(ROUNDS):
            refs = [_drop(home, f"{who}-{round_}-{i}.csv", i) for i in range(PER_BATCH)]
            outcomes = [
                ingest(IngestRequest(ref=r, dispatch_id=f"{who}{round_}"), home, isolate=False)
                for r in refs
            ]
            start.wait(timeout=60)  # both commit at the same moment: one must lose the race
            landed = land(home, ledger, outcomes, f"{who}{round_}")
            assert all(o.state.value == "ingested" for o in landed), landed
    finally:
        ledger.close()


def _drop(home: HopperConfig, name: str, i: int) -> FileRef:
    return drop_file(home, "people", name, f"id,full name,score\n{i},{name},1\n{i + 1},{name},2\n")


def test_two_writers_commit_to_one_table_exactly_once(tmp_path: Path, catalog_yaml: str) -> None:
    config_path = make_home(tmp_path)
    text = config_path.read_text().replace(
        "lake: lake\n", "lake:\n  path: lake\n  format: iceberg\n" + catalog_yaml
    )
    config_path.write_text(text)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    writers = [context.Process(target=_writer, args=(str(config_path), who, start)) for who in "ab"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
    assert [w.exitcode for w in writers] == [0, 0]
    home = load_config(config_path)
    table = open_catalog(home).load_table("hopper.people")
    rows = Counter(table.scan().to_arrow().column("_source_uri").to_pylist())
    assert len(rows) == 2 * ROUNDS * PER_BATCH
    assert set(rows.values()) == {2}  # every file's two rows, once
    appends = [s for s in table.snapshots() if s.summary.operation.value == "append"]
    assert len(appends) == 2 * ROUNDS  # one commit per batch
