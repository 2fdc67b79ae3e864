"""Apply ``prefect.yaml`` to a Prefect server: work pool, deployments, triggers — idempotently.

``prefect deploy`` replaces the automations of the deployments it touches, but an automation
outlives a deleted deployment and keeps firing, so :func:`remove_stale_automations` deletes
every automation owned by a deployment that no longer exists.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from hopper.config import HopperConfig
from hopper.errors import HopperError

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


def deploy(project_dir: Path, config: HopperConfig, env: dict[str, str] | None = None) -> list[str]:
    """Ensure the pool, apply ``prefect.yaml``, clean stale automations, set up alerting.

    Returns:
        Names of the automations that were removed.
    """
    from hopper.alerts import apply_alerting

    ensure_work_pool(config.work_pool)
    apply_prefect_yaml(project_dir, config.work_pool, env)
    removed = remove_stale_automations()
    apply_alerting(config, {**os.environ, **(env or {})})
    return removed
