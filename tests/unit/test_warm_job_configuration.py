"""The warm worker's start: its job configuration made once, Prefect's models completed."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings
from prefect.workers.base import BaseJobConfiguration
from prefect.workers.process import ProcessJobConfiguration

with warnings.catch_warnings():  # the warm worker takes over Prefect's "process" type
    warnings.simplefilter("ignore", UserWarning)
    from hopper.worker import WarmJobConfiguration, WarmWorker


@pytest.fixture
def serialisations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how often Prefect's own serialisation of the settings runs."""
    calls: list[int] = []
    original = BaseJobConfiguration._base_environment.__func__  # type: ignore[attr-defined]

    def counted(cls: Any) -> dict[str, str]:
        calls.append(1)
        return original(cls)  # type: ignore[no-any-return]

    monkeypatch.setattr(BaseJobConfiguration, "_base_environment", classmethod(counted))
    monkeypatch.setattr(WarmJobConfiguration, "_settings_environment", None)
    return calls


def test_the_warm_worker_uses_it() -> None:
    assert WarmWorker.job_configuration is WarmJobConfiguration
    assert issubclass(WarmJobConfiguration, ProcessJobConfiguration)


def test_the_settings_are_serialised_once_for_every_run(serialisations: list[int]) -> None:
    first = WarmJobConfiguration._base_environment()
    second = WarmJobConfiguration._base_environment()
    assert first == second == ProcessJobConfiguration._base_environment()
    assert len(serialisations) == 2  # once for the warm runs, once for the comparison


def test_a_run_cannot_change_what_the_next_gets(serialisations: list[int]) -> None:
    first = WarmJobConfiguration._base_environment()
    first["HOPPER_TEST_ONLY"] = "changed"
    assert "HOPPER_TEST_ONLY" not in WarmJobConfiguration._base_environment()


def test_other_settings_in_effect_are_serialised_anew(serialisations: list[int]) -> None:
    outside = WarmJobConfiguration._base_environment()
    with temporary_settings({PREFECT_LOGGING_LEVEL: "DEBUG"}):
        inside = WarmJobConfiguration._base_environment()
        assert inside["PREFECT_LOGGING_LEVEL"] == "DEBUG"
        assert inside == ProcessJobConfiguration._base_environment()
    assert WarmJobConfiguration._base_environment() == outside
    assert outside.get("PREFECT_LOGGING_LEVEL") != "DEBUG"


def test_prefect_models_are_completed_before_the_first_run() -> None:
    from prefect.client.schemas.responses import WorkerFlowRunResponse

    from hopper.worker import complete_prefect_models

    complete_prefect_models()
    assert WorkerFlowRunResponse.__pydantic_complete__  # the worker's poll validates these
    assert complete_prefect_models() == 0  # nothing left the second time
