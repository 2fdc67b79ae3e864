"""The ``hopper`` command line: thin commands over the library, one module per group.

Errors Hopper raises on purpose are shown as one clear line (exit 1; 2 for configuration);
``--help`` on every command explains its options.
"""

from __future__ import annotations

import logging
import sys

from cyclopts import App, Parameter

from hopper import __version__
from hopper.errors import ConfigError, HopperError
from hopper.settings import HopperSettings

app = App(
    name="hopper",
    help=(
        "Hopper turns files dropped into watched folders or S3 buckets into validated, typed "
        "Parquet files or Apache Iceberg tables, orchestrated by Prefect.\n\n"
        "Start with `hopper init DIR`, write a contract with `hopper contract infer`, then "
        "`hopper up --config DIR/hopper.yaml` and drop files into DIR/inbox/DATASET/."
    ),
    version=__version__,
    default_parameter=Parameter(negative=()),
)


_registered = False


def _register() -> None:
    """Attach the command modules (imported lazily, so `--help` stays fast)."""
    global _registered
    if _registered:
        return
    from hopper.cli import contract, files, home, maintain, run

    for module in (home, run, contract, files, maintain):
        module.register(app)
    _registered = True


def configure_logging() -> None:
    """Log to stderr at the level of ``HOPPER_LOG_LEVEL``; quieten chatty libraries."""
    level = HopperSettings().log_level.upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "watchdog", "botocore", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    configure_logging()
    _register()
    try:
        app(argv)
    except ConfigError as exc:
        sys.stderr.write(f"hopper: configuration error: {exc}\n")
        raise SystemExit(2) from None
    except HopperError as exc:
        sys.stderr.write(f"hopper: {exc}\n")
        raise SystemExit(1) from None
