"""Apply ``prefect.yaml`` to a Prefect server: work pool, deployments, triggers — idempotently.

``prefect deploy`` replaces the automations of the deployments it touches, but an automation
outlives a deleted deployment and keeps firing, so :func:`remove_stale_automations` deletes
every automation owned by a deployment that no longer exists. Freshness automations follow
the contracts the same way (:func:`apply_freshness`): one per contract with ``expect``,
updated when it changes, removed with the ``expect`` or the contract.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from hopper import events
from hopper.config import HopperConfig
from hopper.contracts.freshness import Freshness
from hopper.errors import ConfigError, HopperError

log = logging.getLogger(__name__)


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool ``name`` if missing; True if it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            return False
    log.info("created work pool %s", name)
    return True


def apply_prefect_yaml(project_dir: Path, work_pool: str, env: dict[str, str] | None = None) -> str:
    """Run ``prefect deploy --all`` for ``project_dir/prefect.yaml``; return its output.

    Raises:
        HopperError: with the tail of Prefect's output when deploying fails.
    """
    prefect_yaml = project_dir / "prefect.yaml"
    if not prefect_yaml.is_file():
        raise HopperError(
            f"{prefect_yaml} not found: set HOPPER_PROJECT_DIR to the folder holding "
            "prefect.yaml and flows/"
        )
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    if work_pool != "hopper":
        cmd += ["--pool", work_pool]
    proc = subprocess.run(
        cmd,
        cwd=project_dir,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise HopperError(f"`prefect deploy --all` failed in {project_dir}:\n{tail}")
    return output


def remove_stale_automations() -> list[str]:
    """Delete automations that would run a deployment that no longer exists.

    Returns:
        The names of the deleted automations.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.exceptions import ObjectNotFound

    removed: list[str] = []
    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            targets = [
                action.deployment_id
                for action in automation.actions
                if isinstance(action, RunDeployment) and action.deployment_id is not None
            ]
            missing = []
            for deployment_id in targets:
                try:
                    client.read_deployment(deployment_id)
                except ObjectNotFound:
                    missing.append(deployment_id)
            if missing:
                client.delete_automation(automation.id)
                removed.append(automation.name)
                log.info(
                    "deleted stale automation %r (deployment %s is gone)",
                    automation.name,
                    missing[0],
                )
    return removed


@dataclass
class FreshnessChanges:
    """What :func:`apply_freshness` did, by dataset."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def contract_expectations(datasets_dir: Path) -> tuple[dict[str, Freshness], set[str]]:
    """Each contract's ``expect`` (contracts without one left out), and unreadable contracts.

    A contract that does not load is named (by file stem) in the second value, so its
    automation is left as it is rather than removed; the error is logged.
    """
    from hopper.contracts.yaml_io import load_contract

    expected: dict[str, Freshness] = {}
    broken: set[str] = set()
    for path in sorted(datasets_dir.glob("*.yaml")) if datasets_dir.is_dir() else []:
        try:
            contract = load_contract(path)
        except ConfigError as exc:
            log.error("freshness of %s left as it was: %s", path.stem, exc)
            broken.add(path.stem)
            continue
        if contract.expect is not None:
            expected[contract.name] = contract.expect
    return expected, broken


def apply_freshness(
    datasets_dir: Path,
    blocks: Mapping[str, UUID],
    emit: events.Emitter = events.emit,
) -> FreshnessChanges:
    """Make the freshness automations match the contracts: create, update, keep or remove.

    A created or changed automation is armed (``hopper.freshness.armed``), which starts its
    first window now, so a dataset that never gets a file still alerts once. An unchanged
    one is left alone, its window running on.

    Args:
        datasets_dir: the folder of ``<name>.yaml`` contracts.
        blocks: the notification blocks to send through (from ``apply_alerting``).
        emit: what sends the arming events.
    """
    from prefect.client.orchestration import get_client

    from hopper.alerts import FRESHNESS_PREFIX, freshness_automation

    expected, broken = contract_expectations(datasets_dir)
    if expected and not blocks:
        log.warning(
            "datasets %s expect files, but there are no alert targets: no freshness alerts",
            ", ".join(sorted(expected)),
        )
        expected = {}
    changes = FreshnessChanges()
    with get_client(sync_client=True) as client:
        existing = {
            a.name.removeprefix(FRESHNESS_PREFIX): a
            for a in client.read_automations()
            if a.name.startswith(FRESHNESS_PREFIX)
        }
        for dataset, automation in existing.items():
            if dataset not in expected and dataset not in broken:
                client.delete_automation(automation.id)
                changes.removed.append(dataset)
                log.info("removed the freshness alert of %s", dataset)
    for dataset, freshness in expected.items():
        wanted = freshness_automation(
            dataset, freshness.every, freshness.seconds, list(blocks.values())
        )
        old = existing.get(dataset)
        if old is not None and old.description == wanted.description and old.enabled:
            changes.kept.append(dataset)
            continue
        if old is None:
            wanted.create()
            changes.created.append(dataset)
        else:
            wanted.id = old.id
            wanted.update()
            changes.updated.append(dataset)
        emit(events.freshness_armed_event(dataset, freshness.every))
        log.info("dataset %s alerts when no file lands for %s", dataset, freshness.every)
    return changes


def deploy(project_dir: Path, config: HopperConfig, env: dict[str, str] | None = None) -> list[str]:
    """Ensure the pool, apply ``prefect.yaml``, clean stale automations, set up alerting.

    Returns:
        Names of the automations that were removed.
    """
    from hopper.alerts import apply_alerting

    ensure_work_pool(config.work_pool)
    apply_prefect_yaml(project_dir, config.work_pool, env)
    removed = remove_stale_automations()
    blocks = apply_alerting(config, {**os.environ, **(env or {})})
    apply_freshness(config.datasets_dir, blocks)
    return removed
