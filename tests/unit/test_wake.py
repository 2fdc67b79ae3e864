"""The warm worker's wake-up: what makes it poll its pool at once, and when the clock does."""

import anyio
from prefect.events import Event

from hopper.wake import SCHEDULED, Wake, names_pool


def _scheduled(pool: str) -> Event:
    return Event(
        event=SCHEDULED,
        resource={"prefect.resource.id": "prefect.flow-run.1"},
        related=[
            {"prefect.resource.id": "prefect.deployment.2", "prefect.resource.role": "deployment"},
            {
                "prefect.resource.id": "prefect.work-pool.3",
                "prefect.resource.name": pool,
                "prefect.resource.role": "work-pool",
            },
        ],
    )


def test_only_a_run_of_its_own_pool_wakes_the_worker() -> None:
    assert names_pool(_scheduled("hopper"), "hopper")
    assert not names_pool(_scheduled("other"), "hopper")
    bare = Event(event=SCHEDULED, resource={"prefect.resource.id": "prefect.flow-run.1"})
    assert not names_pool(bare, "hopper")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_regular_poll_is_slow_while_the_stream_is_up_and_always_due_while_it_is_down() -> None:
    clock = Clock()
    wake = Wake(quiet_seconds=5.0, clock=clock)
    assert wake.regular_poll_due()  # never polled
    wake.polled()
    assert wake.regular_poll_due()  # stream down: every poll interval
    wake.stream_up = True
    clock.now += 4.9
    assert not wake.regular_poll_due()
    clock.now += 0.1
    assert wake.regular_poll_due()
    wake.polled()
    assert not wake.regular_poll_due()
    wake.stream_up = False  # lost: the clock takes over at once
    assert wake.regular_poll_due()


def test_requests_while_a_poll_is_due_fold_into_one() -> None:
    wake = Wake()

    async def main() -> int:
        for _ in range(5):
            wake.request()
        got = 0
        with anyio.move_on_after(0.2):
            async for _ in wake.requests:
                got += 1
        return got

    assert anyio.run(main) == 1


def test_a_freed_slot_polls_only_if_runs_were_left_waiting_for_one() -> None:
    wake = Wake()

    async def requested() -> int:
        got = 0
        with anyio.move_on_after(0.1):
            async for _ in wake.requests:
                got += 1
        return got

    wake.slot_freed()
    assert anyio.run(requested) == 0  # every run found a slot: nothing to fetch
    wake.runs_waiting = True
    wake.slot_freed()
    assert anyio.run(requested) == 1
