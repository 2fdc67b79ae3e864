"""Process-level settings, read from the environment (prefix ``HOPPER_``) and nowhere else.

These say *where things are* (which hopper.yaml, which ledger, which Prefect port) and how
the processes behave; *what to ingest and how* lives in ``hopper.yaml`` (see :mod:`hopper.config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_project_dir() -> Path:
    """The folder holding ``prefect.yaml`` and ``flows/``: the source checkout, else the cwd."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "prefect.yaml").is_file() and (checkout / "flows").is_dir():
        return checkout
    return Path.cwd()


LEASE_SECONDS = 60.0
"""Default of ``HOPPER_LEASE_SECONDS``."""


class HopperSettings(BaseSettings):
    """Environment settings shared by the CLI, the watcher and the flows."""

    model_config = SettingsConfigDict(env_prefix="HOPPER_", extra="ignore")

    config: Path = Field(
        default=Path("config/hopper.yaml"),
        description="hopper.yaml to use when --config is not given.",
    )
    project_dir: Path = Field(
        default_factory=_default_project_dir,
        description="Folder with prefect.yaml and flows/ (deployments are made from here).",
    )
    ledger_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the ledger; default: SQLite in the config's state_dir.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the Prefect server binds to.")
    port: int = Field(default=4200, description="Port of the Prefect server `hopper up` starts.")
    prefect_api_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_API_URL"),
        description="Prefect's own PREFECT_API_URL, which Hopper's processes talk to; "
        "default: the server `hopper up` starts on host and port.",
    )
    worker_poll_seconds: float = Field(
        default=0.5,
        description="How often the worker started by `hopper up` polls for runs while "
        "Prefect's event stream is down (while it is up, the worker takes a run as soon as "
        "the stream announces one, and polls every 5 s besides).",
    )
    worker: Literal["warm", "process"] = Field(
        default="warm",
        description="Worker `hopper up` starts: 'warm' runs flows in-process (fast); "
        "'process' is Prefect's process worker (a new Python per run).",
    )
    worker_limit: int = Field(
        default=4, ge=1, description="Flow runs the worker started by `hopper up` runs at once."
    )
    lease_seconds: float = Field(
        default=LEASE_SECONDS,
        ge=1.0,
        description="A running file whose flow run has not renewed its lease in the ledger "
        "for this long is taken as lost (its worker died) and dispatched again; runs renew "
        "every quarter of it.",
    )
    readers: int = Field(
        default=0,
        ge=0,
        description="Child processes per worker that read and write files, each under its "
        "dataset's max_memory_mb and max_seconds (a reader that crashes quarantines its "
        "file only); 0: one per CPU core.",
    )
    log_level: str = Field(default="INFO", description="Log level of Hopper's processes.")
    server_start_timeout: float = Field(
        default=120.0, description="Seconds to wait for a Prefect server to answer /api/health."
    )

    @property
    def api_url(self) -> str:
        """The Prefect API this process talks to: ``PREFECT_API_URL``, else host and port."""
        return self.prefect_api_url or f"http://{self.host}:{self.port}/api"
