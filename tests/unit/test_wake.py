"""The warm worker's wake-up: which of Prefect's events make it poll its pool at once."""

from prefect.events import Event

from hopper.prefect_api import SCHEDULED, names_pool


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
