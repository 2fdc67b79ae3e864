"""The warm worker's changes to how Prefect's engine starts the runs it hosts."""

from __future__ import annotations

import threading
import uuid

import prefect.flow_engine as engine
import pytest

from hopper import prefect_api


def test_a_warm_run_starts_without_a_watch_for_suspension(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the test does to the engine's module is undone after it.
    monkeypatch.setattr(engine, "observe_flow_run_suspension", engine.observe_flow_run_suspension)
    assert prefect_api.skip_suspension_watch()
    threads = threading.active_count()
    with engine.observe_flow_run_suspension(uuid.uuid4(), object()):
        assert threading.active_count() == threads  # no watcher thread, client or stream
    assert engine.observe_flow_run_suspension is prefect_api._no_suspension_watch
