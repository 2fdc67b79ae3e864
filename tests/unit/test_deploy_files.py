"""The deployment files a user reaches for agree with the code (they cannot be run here)."""

from __future__ import annotations

import re
from pathlib import Path

import prefect.settings
import pytest
import yaml

from hopper.alerts import WEBHOOK_ENV
from hopper.cli import _register, app
from hopper.settings import HopperSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def _hopper_commands() -> list[list[str]]:
    commands = [s["command"] for s in _compose()["services"].values() if "command" in s]
    docs = (ROOT / "docs" / "deploy.md").read_text()
    commands += [line.split() for line in re.findall(r"`(hopper [^`]+)`", docs)]
    return [c[1:] for c in commands if c[0] == "hopper"]


def test_hopper_commands_parse() -> None:
    _register()
    commands = _hopper_commands()
    assert {c[0] for c in commands} >= {"worker", "watch", "deploy"}
    for argv in commands:
        command, _bound, _ignored = app.parse_args(argv)
        assert callable(command), argv


def test_environment_names_are_real_settings() -> None:
    hopper_vars = {f"HOPPER_{name.upper()}" for name in HopperSettings.model_fields}
    hopper_vars.add(WEBHOOK_ENV)
    for service in _compose()["services"].values():
        for name in service.get("environment", {}) or {}:
            if name.startswith("HOPPER_"):
                assert name in hopper_vars, name
            elif name.startswith("PREFECT_"):
                assert hasattr(prefect.settings, name), name


@pytest.mark.parametrize("line", (ROOT / "deploy" / "Dockerfile").read_text().splitlines())
def test_dockerfile_copies_files_that_exist(line: str) -> None:
    if line.startswith("COPY "):
        for source in line.split()[1:-1]:
            assert (ROOT / source).exists(), source


def test_services_have_health_checks_or_dependencies() -> None:
    services = _compose()["services"]
    assert {"db", "server", "worker", "watcher"} <= set(services)
    assert "healthcheck" in services["db"] and "healthcheck" in services["server"]
    assert services["worker"]["stop_signal"] == "SIGINT"  # workers stop on SIGINT
    ledger = services["worker"]["environment"]["HOPPER_LEDGER_URL"]
    assert ledger.startswith("postgresql+psycopg://")
