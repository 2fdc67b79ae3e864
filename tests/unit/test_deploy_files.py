"""The deployment files a user reaches for agree with the code (they cannot be run here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import prefect.settings
import pytest
import yaml
from prefect_redis.client import RedisMessagingSettings
from prefect_redis.messaging import RedisMessagingPublisherSettings

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
            elif name.startswith("PREFECT_REDIS_MESSAGING_PUBLISHER_"):
                field = name.removeprefix("PREFECT_REDIS_MESSAGING_PUBLISHER_").lower()
                assert field in RedisMessagingPublisherSettings.model_fields, name
            elif name.startswith("PREFECT_REDIS_MESSAGING_"):
                field = name.removeprefix("PREFECT_REDIS_MESSAGING_").lower()
                assert field in RedisMessagingSettings.model_fields, name
            elif name.startswith("PREFECT_"):
                assert hasattr(prefect.settings, name), name


@pytest.mark.parametrize("line", (ROOT / "deploy" / "Dockerfile").read_text().splitlines())
def test_dockerfile_copies_files_that_exist(line: str) -> None:
    if line.startswith("COPY "):
        for source in line.split()[1:-1]:
            assert (ROOT / source).exists(), source


def test_services_have_health_checks_or_dependencies() -> None:
    services = _compose()["services"]
    assert {"db", "redis", "server", "server-a", "server-b", "services"} <= set(services)
    assert {"worker", "watcher"} <= set(services)
    for name in ("db", "redis", "server", "server-a", "server-b"):
        assert "healthcheck" in services[name], name
    assert services["worker"]["stop_signal"] == "SIGINT"  # workers stop on SIGINT
    ledger = services["worker"]["environment"]["HOPPER_LEDGER_URL"]
    assert ledger.startswith("postgresql+psycopg://")


def test_api_replicas_and_services_share_one_database_and_redis() -> None:
    """The replicas run no services, one process runs them, all with the same settings."""
    services = _compose()["services"]
    servers = {name: services[name] for name in ("migrate", "server-a", "server-b", "services")}
    environments = [s["environment"] for s in servers.values()]
    assert all(env == environments[0] for env in environments)
    env = environments[0]
    assert env["PREFECT_MESSAGING_BROKER"] == env["PREFECT_MESSAGING_CACHE"]
    assert env["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
    assert env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"  # `migrate` does it
    for name in ("server-a", "server-b"):
        assert "--no-services" in servers[name]["command"], name
    assert servers["services"]["command"][-2:] == ["services", "start"]
    # The load balancer (the `server` every client names) sends to both replicas.
    haproxy = (ROOT / "deploy" / "haproxy.cfg").read_text()
    for name in ("server-a", "server-b"):
        assert f"server {name} {name}:4200 check" in haproxy, name
    assert services["worker"]["environment"]["PREFECT_API_URL"] == "http://server:4200/api"


def test_prometheus_and_grafana_see_what_hopper_serves() -> None:
    """The compose home serves metrics where Prometheus scrapes, and Grafana gets the board."""
    from hopper.config import load_config

    services = _compose()["services"]
    home = load_config(ROOT / "deploy" / "hopper.yaml")
    assert home.metrics.enabled and home.metrics.host == "0.0.0.0"
    for name in ("watcher", "worker", "deploy"):
        assert "./hopper.yaml:/etc/hopper/hopper.yaml:ro" in services[name]["volumes"], name
        assert services[name]["environment"]["HOPPER_CONFIG"] == "/etc/hopper/hopper.yaml"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus-compose.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["hopper-watcher"]["static_configs"][0]["targets"] == [
        f"watcher:{home.metrics.watcher_port}"
    ]
    assert jobs["hopper-worker"]["dns_sd_configs"][0]["port"] == home.metrics.worker_port
    prometheus = services["prometheus"]
    assert "./prometheus-compose.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    grafana = services["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    provisioning = (
        ROOT
        / "deploy"
        / mounts["./grafana/provisioning"].replace(
            "/etc/grafana/provisioning", "grafana/provisioning"
        )
    )
    dashboards = yaml.safe_load((provisioning / "dashboards" / "hopper.yml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    board = mounts["./grafana/hopper-dashboard.json"]
    assert board.startswith(folder + "/")
    assert json.loads((ROOT / "deploy" / "grafana" / "hopper-dashboard.json").read_text())["panels"]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
