"""The watcher's dispatch logic, with a scripted stand-in for the Prefect server.

The real server path is covered by tests/integration; here the stand-in lets a test switch
the server off and on and decide when a flow run "exists".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from hopper import batching
from hopper.config import FolderSource, HopperConfig
from hopper.events import BatchDetected, FileAlert, FileDetected, HopperEvent
from hopper.home import Home
from hopper.ledger import Lease, Ledger, sqlite_url
from hopper.models import FileRef, FileState, IngestBatch, IngestOutcome
from hopper.prefect_api import RunState
from hopper.watch import daemon
from hopper.watch.daemon import DETECTED_ONE_BY_ONE, Watcher


class ScriptedServer:
    def __init__(self) -> None:
        self.up = False
        self.runs: dict[tuple[str, str], str] = {}
        self.states: dict[str, str] = {}
        self.emitted: list[HopperEvent] = []
        self.crashed: list[str] = []

    def healthy(self) -> bool:
        return self.up

    def runs_for_files(
        self,
        versions: set[tuple[str, str]],
        since: datetime,
        by_dispatch: dict[str, list[tuple[str, str]]] | None = None,
    ) -> dict[tuple[str, str], str]:
        return {v: r for v, r in self.runs.items() if v in versions}

    def run_states(self, flow_run_ids: set[str]) -> dict[str, RunState]:
        since = time.time() - 1
        return {
            i: RunState(type=self.states.get(i, "SCHEDULED"), since=since) for i in flow_run_ids
        }

    def mark_crashed(self, flow_run_id: str, message: str) -> None:
        self.crashed.append(flow_run_id)
        self.states[flow_run_id] = "CRASHED"

    def emit(self, event: HopperEvent) -> bool:
        self.emitted.append(event)
        return True

    def batches(self) -> list[IngestBatch]:
        """The batches emitted so far, in order."""
        return [e.payload.batch for e in self.emitted if isinstance(e, BatchDetected)]


def _drop(home: HopperConfig, *names: str) -> None:
    """Write small files into the inbox's ``people`` folder."""
    folder = home.sources[0].path / "people"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_text(f"id\n{i}\n")


def _scan(watcher: Watcher) -> None:
    """Make the watcher's folders see every file at once (no stability wait)."""
    for source in watcher.sources:
        source.stable_seconds = 0
        source.scan()


def _dispatch_id(event: HopperEvent) -> str:
    assert isinstance(event, FileDetected)
    return event.payload.request.dispatch_id


def test_outage_keeps_files_pending_then_dispatches_and_confirms(home: HopperConfig) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    watcher = Watcher(home, ledger, server, server.emit)
    config = home.model_copy(
        update={"watch": home.watch.model_copy(update={"confirm_seconds": 0.0})}
    )
    watcher.config = config
    _drop(home, "a.csv")
    _scan(watcher)
    assert len(watcher.detect()) == 1

    assert watcher.dispatch() == 0  # server down: nothing emitted, nothing lost
    assert server.emitted == []
    (record,) = ledger.records()
    assert record.state == FileState.DETECTED

    server.up = True
    assert watcher.dispatch() == 1
    first = _dispatch_id(server.emitted[-1])
    assert watcher.confirm() == 0  # no run yet (the event was lost)
    assert watcher.dispatch() == 1  # so it is emitted again
    second = _dispatch_id(server.emitted[-1])
    assert second != first

    server.runs[(record.uri, record.fingerprint)] = "run-42"
    assert watcher.confirm() == 1
    (record,) = ledger.records()
    assert record.state == FileState.QUEUED and record.flow_run_id == "run-42"
    assert watcher.dispatch() == 0
    assert [h["event"] for h in ledger.history(record.uri)] == [
        "detected",
        "dispatched",
        "dispatched",
        "queued",
    ]


def test_restart_does_not_dispatch_known_files_again(tmp_path: Path, home: HopperConfig) -> None:
    _drop(home, "a.csv")
    server = ScriptedServer()
    server.up = True
    for _ in range(2):  # two watcher lifetimes over the same ledger
        h = Home(config=home, ledger=Ledger(sqlite_url(home.state_dir)))
        watcher = Watcher(h.config, h.ledger, server, server.emit)
        _scan(watcher)
        watcher.detect()
        watcher.dispatch()
        h.ledger.close()
    assert len(server.emitted) == 1


def _five_detected(home: HopperConfig) -> tuple[Ledger, ScriptedServer, Watcher]:
    """A watcher (batches of at most 2) that has detected five files, and its server."""
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    server.up = True
    watch = home.watch.model_copy(update={"batch_max_files": 2})
    watcher = Watcher(home.model_copy(update={"watch": watch}), ledger, server, server.emit)
    _drop(home, *(f"{i}.csv" for i in range(5)))
    _scan(watcher)
    assert len(watcher.detect()) == 5
    return ledger, server, watcher


def test_files_due_together_are_dispatched_as_batches(home: HopperConfig) -> None:
    ledger, server, watcher = _five_detected(home)
    assert watcher.dispatch() == 5
    kinds = [event.event for event in server.emitted]
    assert sorted(kinds) == ["hopper.batch.detected"] * 2 + ["hopper.file.detected"]
    batches = server.batches()
    assert [b.count for b in batches] == [2, 2] and all(b.refs == [] for b in batches)
    # The event names the dispatch; its files are the ledger's versions taken under it.
    batched = [r.uri for b in batches for r in ledger.dispatched_under(b.dispatch_id)]
    assert len(batched) == 4 and len(set(batched)) == 4
    assert {r.state.value for r in ledger.records()} == {"dispatched"}


def test_while_a_burst_is_still_checked_only_full_batches_go(home: HopperConfig) -> None:
    ledger, server, watcher = _five_detected(home)
    _drop(home, "late-0.csv", "late-1.csv")
    for source in watcher.sources:  # the rest of the burst is still being checked
        source.stable_seconds = 60
        source.scan()
    assert sum(source.pending() for source in watcher.sources) == 2
    assert watcher.dispatch() == 4  # two full batches; the fifth file waits for the rest
    assert [b.count for b in server.batches()] == [2, 2]
    _scan(watcher)
    assert len(watcher.detect()) == 2
    assert watcher.dispatch() == 3  # nothing pending: all that is due goes
    assert [b.count for b in server.batches()] == [2, 2, 2]
    assert sum(isinstance(e, FileDetected) for e in server.emitted) == 1  # the one left over
    assert {r.state.value for r in ledger.records()} == {"dispatched"}


def test_a_bursts_last_batches_are_sized_by_the_whole_burst(
    home: HopperConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "BATCH_FLOOR", 1)  # a burst of n files: runs of n / 2
    monkeypatch.setattr(batching, "BURST_RUNS", 2)
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    server.up = True
    watcher = Watcher(home, ledger, server, server.emit)
    _drop(home, *(f"{i}.csv" for i in range(4)))
    _scan(watcher)
    assert len(watcher.detect()) == 4
    _drop(home, *(f"late-{i}.csv" for i in range(4)))
    for source in watcher.sources:  # half the burst is still being checked
        source.stable_seconds = 60
        source.scan()
    assert watcher.dispatch() == 4  # a burst of eight: a full batch of four goes
    _scan(watcher)
    assert len(watcher.detect()) == 4
    # The rest of the burst, four files, goes as one batch of four, not two of two.
    assert watcher.dispatch() == 4
    assert [b.count for b in server.batches()] == [4, 4]
    # Once nothing is due, the burst is over: the next files make a burst of their own.
    assert watcher.dispatch() == 0
    _drop(home, "next-0.csv", "next-1.csv")
    _scan(watcher)
    assert len(watcher.detect()) == 2
    assert watcher.dispatch() == 2
    assert [b.count for b in server.batches()] == [4, 4]
    assert sum(isinstance(e, FileDetected) for e in server.emitted) == 2  # runs of one each


def test_a_bursts_first_files_go_at_once_and_later_ones_wait_for_a_full_batch(
    home: HopperConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "BATCH_FLOOR", 1)  # a burst of n files: runs of n / 2
    monkeypatch.setattr(batching, "BURST_RUNS", 2)
    server = ScriptedServer()
    server.up = True
    watcher = Watcher(home, Ledger(sqlite_url(home.state_dir)), server, server.emit)
    _drop(home, "first.csv")
    _scan(watcher)
    assert len(watcher.detect()) == 1
    _drop(home, *(f"late-{i}.csv" for i in range(5)))
    for source in watcher.sources:  # the rest of the burst is still being checked
        source.stable_seconds = 60
        source.scan()
    assert watcher.dispatch() == 1  # its first run starts while the rest is checked
    assert [e.event for e in server.emitted] == ["hopper.file.detected"]
    _scan(watcher)
    assert len(watcher.detect()) == 5
    assert watcher.dispatch() == 5  # nothing pending: the rest goes, sized by the burst of six
    assert [b.count for b in server.batches()] == [3, 2]


def test_a_dispatch_that_left_due_files_unread_goes_on_at_the_next_step(
    home: HopperConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "DISPATCH_READ", 4)
    ledger, server, watcher = _five_detected(home)  # batches of at most two
    watcher.step()  # the dispatch clock is due at once: four of the five are read, and go
    assert [b.count for b in server.batches()] == [2, 2]
    assert {r.state.value for r in ledger.records()} == {"dispatched", "detected"}
    watcher.step()  # no clock due, no new file: it goes on because more were due
    assert {r.state.value for r in ledger.records()} == {"dispatched"}
    assert sum(isinstance(e, FileDetected) for e in server.emitted) == 1


def test_a_burst_is_logged_as_a_tally_and_a_few_files_one_by_one(
    home: HopperConfig, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = Watcher(home, Ledger(sqlite_url(home.state_dir)), ScriptedServer(), lambda _: True)
    caplog.set_level(logging.INFO, logger="hopper.watch.daemon")
    _drop(home, "one.csv", "two.csv")
    _scan(watcher)
    assert len(watcher.detect()) == 2
    assert sum("detected file://" in m for m in caplog.messages) == 2
    caplog.clear()
    _drop(home, *(f"b{i}.csv" for i in range(DETECTED_ONE_BY_ONE + 1)))
    _scan(watcher)
    assert len(watcher.detect()) == DETECTED_ONE_BY_ONE + 1  # every file recorded
    assert not any("detected file://" in m for m in caplog.messages)
    assert f"detected {DETECTED_ONE_BY_ONE + 1} files (people: {DETECTED_ONE_BY_ONE + 1})" in (
        caplog.messages
    )


def test_large_files_due_together_are_dispatched_within_the_byte_limit(
    home: HopperConfig,
) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    server.up = True
    watch = home.watch.model_copy(update={"batch_max_files": 100, "max_batch_bytes": 2000})
    watcher = Watcher(home.model_copy(update={"watch": watch}), ledger, server, server.emit)
    folder = home.sources[0].path / "people"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(5):  # 5 files of ~900 bytes: two per batch
        (folder / f"{i}.csv").write_text("id\n" + "\n".join(["1"] * 448) + "\n")
    (folder / "huge.csv").write_text("id\n" + "\n".join(["1"] * 1500) + "\n")
    _scan(watcher)
    assert len(watcher.detect()) == 6
    assert watcher.dispatch() == 6
    sizes = [[r.ref.size for r in ledger.dispatched_under(b.dispatch_id)] for b in server.batches()]
    sizes += [[e.payload.request.ref.size] for e in server.emitted if isinstance(e, FileDetected)]
    assert sorted(len(s) for s in sizes) == [1, 1, 2, 2]  # the huge file alone, the rest by 2
    assert all(sum(s) <= 2000 or len(s) == 1 for s in sizes)
    assert sum(len(s) for s in sizes) == 6


def test_two_watchers_sharing_a_ledger_dispatch_each_file_once(home: HopperConfig) -> None:
    server = ScriptedServer()
    server.up = True
    _drop(home, *(f"{i}.csv" for i in range(20)))
    watchers = [
        Watcher(home, Ledger(sqlite_url(home.state_dir)), server, server.emit) for _ in range(2)
    ]
    for watcher in watchers:
        _scan(watcher)
        watcher.detect()
    # Both see the same 20 due versions (read before either dispatches)...
    due = [w.ledger.due_for_dispatch(60) for w in watchers]
    assert [len(d) for d in due] == [20, 20]
    for watcher, records in zip(watchers, due, strict=True):
        watcher._dispatch(records)
    # ...but each version is emitted by exactly one of them.
    ledger = watchers[0].ledger
    uris = [r.uri for b in server.batches() for r in ledger.dispatched_under(b.dispatch_id)]
    uris += [e.payload.request.ref.uri for e in server.emitted if isinstance(e, FileDetected)]
    assert len(uris) == 20 and len(set(uris)) == 20


def test_watchers_sharing_a_ledger_each_send_only_their_own_folders_files(
    home: HopperConfig, tmp_path: Path
) -> None:
    """Each machine its own hopper.yaml and folder, one ledger: nobody sends another's file.

    A watcher sends its own ``hopper.yaml`` with every file, and a run refuses a file that
    hopper.yaml does not cover; so a file taken by the other watcher would fail.
    """
    server = ScriptedServer()
    server.up = True
    ledger_url = sqlite_url(home.state_dir)
    watchers = []
    for name in ("a", "b"):
        folder = tmp_path / f"inbox-{name}"
        (folder / "people").mkdir(parents=True)
        for i in range(3):
            (folder / "people" / f"{name}{i}.csv").write_text(f"id\n{i}\n")
        config = home.model_copy(
            update={"sources": [FolderSource(path=folder)], "path": tmp_path / f"{name}.yaml"}
        )
        watchers.append(Watcher(config, Ledger(ledger_url), server, server.emit))
    for watcher in watchers:
        _scan(watcher)
        assert len(watcher.detect()) == 3
    a, b = watchers
    assert {Path(r.ref.uri).name for r in a.ledger.due_for_dispatch(60)} == {
        "a0.csv", "a1.csv", "a2.csv", "b0.csv", "b1.csv", "b2.csv"
    }  # fmt: skip
    assert a.dispatch() == 3  # its own three, though all six are due
    assert b.dispatch() == 3
    sent = {
        (r.ref.uri.rsplit("/", 1)[-1], batch.config_path)
        for batch in server.batches()
        for r in a.ledger.dispatched_under(batch.dispatch_id)
    }
    assert sent == {
        *((f"a{i}.csv", str(tmp_path / "a.yaml")) for i in range(3)),
        *((f"b{i}.csv", str(tmp_path / "b.yaml")) for i in range(3)),
    }


def test_files_whose_run_crashed_before_starting_are_sent_again(home: HopperConfig) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    server.up = True
    watch = home.watch.model_copy(update={"confirm_seconds": 0.0})
    watcher = Watcher(home.model_copy(update={"watch": watch}), ledger, server, server.emit)
    _drop(home, "a.csv")
    _scan(watcher)
    watcher.detect()
    watcher.dispatch()
    (record,) = ledger.records()
    server.runs[(record.uri, record.fingerprint)] = "run-1"
    watcher.confirm()
    assert watcher.revive() == 0  # the run is scheduled: leave it alone
    server.states["run-1"] = "CRASHED"  # the worker could not submit it
    assert watcher.revive() == 1
    assert watcher.dispatch() == 1 and len(server.emitted) == 2
    events = [h["event"] for h in ledger.history(record.uri)]
    assert events == ["detected", "dispatched", "queued", "requeued", "dispatched"]


def test_files_of_a_lost_worker_are_sent_again_once_its_lease_lapses(home: HopperConfig) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    server.up = True
    watcher = Watcher(home, ledger, server, server.emit, lease_seconds=0.8)
    inbox = home.sources[0].path.resolve() / "people"
    refs = [FileRef(uri=(inbox / f"{n}.csv").as_uri(), size=1, mtime=1.0) for n in "abc"]
    ledger.record_many(refs)
    ledger.claim(refs[0], "run-alive")  # its worker renews the lease
    ledger.claim(refs[1], "run-lost")  # its worker was killed mid-run
    ledger.mark_dispatched(refs[2].uri, refs[2].fingerprint, "d1")
    ledger.mark_queued(refs[2].uri, refs[2].fingerprint, "run-waiting")  # no worker free yet
    server.states.update({"run-alive": "RUNNING", "run-lost": "RUNNING"})
    assert watcher.revive() == 0  # nothing has lapsed yet
    with Lease(ledger, "run-alive", seconds=0.8):
        time.sleep(1.0)
    assert watcher.revive() == 1
    assert server.crashed == ["run-lost"]  # shown as Crashed in Prefect, not running forever
    states = {r.uri: r.state for r in ledger.records()}
    assert states == {
        refs[0].uri: FileState.RUNNING,
        refs[1].uri: FileState.DETECTED,  # due for dispatch again
        refs[2].uri: FileState.QUEUED,  # its run is scheduled, not lost
    }
    assert watcher.dispatch() == 1


def test_run_says_ready_once_watching_and_sees_files_dropped_after(home: HopperConfig) -> None:
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    watcher = Watcher(home, ledger, server, server.emit, poll_seconds=0.05)
    for source in watcher.sources:
        source.stable_seconds = 0.05
    ready = threading.Event()
    thread = threading.Thread(target=watcher.run, kwargs={"on_ready": ready.set})
    thread.start()
    try:
        assert ready.wait(10), "the watcher never said it was ready"
        _drop(home, "after.csv")
        deadline = time.monotonic() + 10
        while not ledger.records() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [Path(r.uri).name for r in ledger.records()] == ["after.csv"]
    finally:
        watcher.stop()
        thread.join(10)
        ledger.close()
    assert not thread.is_alive()


class CountingServer(ScriptedServer):
    """A stand-in that counts health checks."""

    def __init__(self) -> None:
        super().__init__()
        self.health_checks = 0

    def healthy(self) -> bool:
        self.health_checks += 1
        return self.up


def _lost_run(
    home: HopperConfig, ledger: Ledger, server: ScriptedServer, name: str = "lost.csv"
) -> FileRef:
    """A file of ``home``'s inbox a killed worker was running: claimed, then never renewed."""
    uri = (home.sources[0].path.resolve() / "people" / name).as_uri()
    ref = FileRef(uri=uri, size=1, mtime=1.0, dataset="people")
    ledger.record_many([ref])
    ledger.mark_dispatched(ref.uri, ref.fingerprint, "d-old")
    ledger.claim(ref, "run-lost")
    server.states["run-lost"] = "RUNNING"  # Prefect still shows the dead worker's run
    return ref


def _run_until(watcher: Watcher, done: Callable[[], bool], seconds: float) -> bool:
    """Run the watcher's loop in a thread until ``done()`` or ``seconds`` pass."""
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.05)
        return done()
    finally:
        watcher.stop()
        thread.join(10)
        assert not thread.is_alive()


@pytest.mark.parametrize("last_seen", [None, False], ids=["fresh", "last-saw-server-down"])
def test_a_restarted_watcher_revives_lost_runs_with_nothing_new_to_dispatch(
    home: HopperConfig, last_seen: bool | None
) -> None:
    """After a crash every file is already dispatched: dispatch() finds nothing to do, yet
    the lost run's files must be sent again within one lease period."""
    ledger = Ledger(sqlite_url(home.state_dir))
    server = CountingServer()
    ref = _lost_run(home, ledger, server)
    time.sleep(0.6)  # the lease (0.5 s) lapses before the watcher starts
    watcher = Watcher(
        home, ledger, server, server.emit, poll_seconds=0.02, confirm_poll_seconds=0.1,
        lease_seconds=0.5,
    )  # fmt: skip
    watcher._server_up = last_seen  # what the watcher saw last, before the restart
    server.up = True

    def resent() -> bool:
        return any(h["event"] == "requeued" for h in ledger.history(ref.uri)) and bool(
            server.emitted
        )

    assert _run_until(watcher, resent, seconds=3.0), (
        f"{server.health_checks} health checks; file is "
        f"{ledger.get(ref.uri, ref.fingerprint).state}"  # type: ignore[union-attr]
    )
    assert server.health_checks > 0
    assert server.crashed == ["run-lost"]
    assert ledger.get(ref.uri, ref.fingerprint).state == FileState.DISPATCHED  # type: ignore[union-attr]
    ledger.close()


def test_held_alerts_go_out_without_anything_to_dispatch(home: HopperConfig) -> None:
    """An alert pending in the ledger is sent by a watcher that has nothing else to do."""
    ledger = Ledger(sqlite_url(home.state_dir))
    ref = FileRef(uri="file:///in/people/bad.csv", size=1, mtime=1.0, dataset="people")
    ledger.record_many([ref])
    ledger.finish(
        IngestOutcome(
            uri=ref.uri,
            fingerprint=ref.fingerprint,
            dataset="people",
            state=FileState.QUARANTINED,
            reason="bad.csv: column 'id' is not int64",
        ),
        "run-1",
    )
    policy = home.alert_policy.model_copy(update={"hold_seconds": 0.0})
    server = CountingServer()
    server.up = True
    watcher = Watcher(
        home.model_copy(update={"alert_policy": policy}),
        ledger,
        server,
        server.emit,
        poll_seconds=0.02,
        confirm_poll_seconds=0.1,
    )

    def alerted() -> bool:
        return any(isinstance(event, FileAlert) for event in server.emitted)

    assert _run_until(watcher, alerted, seconds=3.0), f"{server.health_checks} health checks"
    assert ledger.get(ref.uri, ref.fingerprint).alert == "sent"  # type: ignore[union-attr]
    ledger.close()


def test_a_lost_batch_is_sent_again_as_batches(home: HopperConfig) -> None:
    """Revival requeues; the normal dispatch then batches, like a fresh burst."""
    ledger = Ledger(sqlite_url(home.state_dir))
    server = ScriptedServer()
    server.up = True
    watch = home.watch.model_copy(update={"batch_max_files": 4})
    watcher = Watcher(
        home.model_copy(update={"watch": watch}), ledger, server, server.emit, lease_seconds=0.3
    )
    refs = [_lost_run(home, ledger, server, f"{i}.csv") for i in range(10)]
    time.sleep(0.4)
    assert watcher.revive() == 10
    assert watcher.dispatch() == 10
    kinds = sorted(event.event for event in server.emitted)
    assert kinds == ["hopper.batch.detected"] * 3  # 4 + 4 + 2, never one run per file
    batched = [r.uri for b in server.batches() for r in ledger.dispatched_under(b.dispatch_id)]
    assert sorted(batched) == sorted(r.uri for r in refs)
    ledger.close()
