"""Which Iceberg catalog holds the lake's tables, and where each dataset's table lives.

By default the catalog is embedded: pyiceberg's SQL catalog named ``hopper`` on the SQLite
file ``<state_dir>/catalog.db``, its warehouse the lake's location, so ``hopper up`` needs
nothing running. ``lake.catalog`` in ``hopper.yaml`` passes any other pyiceberg catalog's
properties through (the SQL catalog on PostgreSQL for scale-out, REST, Glue, Hive). Secrets
never come from ``hopper.yaml``: pyiceberg adds ``PYICEBERG_CATALOG__HOPPER__<PROPERTY>``
from the environment, and S3 credentials come from the AWS chain.

Each dataset is the table ``<namespace>.<dataset>``, at ``<lake>/<namespace>/<dataset>``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hopper.config import HopperConfig

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

log = logging.getLogger(__name__)

CATALOG_NAME = "hopper"
"""The catalog's name (the SQL catalog's ``catalog_name`` column; the environment's prefix)."""
CATALOG_FILE = "catalog.db"
"""The embedded catalog's SQLite file, in the home's state folder (a promise to users)."""


def location_uri(location: str) -> str:
    """A lake location as pyiceberg's FileIO wants it: ``s3://…`` as is, a folder as ``file://``."""
    if "://" in location:
        return location.rstrip("/")
    return Path(location).absolute().as_uri()


def table_location(config: HopperConfig, dataset: str) -> str:
    """Where ``dataset``'s table keeps its data and metadata: ``<lake>/<namespace>/<dataset>``."""
    return f"{location_uri(config.lake.path)}/{config.lake.namespace}/{dataset}"


def table_identifier(config: HopperConfig, dataset: str) -> str:
    """``<namespace>.<dataset>``, the table's name in the catalog."""
    return f"{config.lake.namespace}.{dataset}"


def catalog_properties(config: HopperConfig) -> dict[str, str]:
    """The pyiceberg properties of the home's catalog (without the environment's).

    The embedded SQLite catalog unless ``lake.catalog`` names another; the lake's location
    as warehouse; S3 endpoint and region from ``hopper.yaml``'s ``s3:`` block; then
    ``lake.catalog`` itself, which wins.
    """
    props: dict[str, str] = {}
    if "type" not in config.lake.catalog and "uri" not in config.lake.catalog:
        props = {"type": "sql", "uri": f"sqlite:///{config.state_dir / CATALOG_FILE}"}
    props["warehouse"] = location_uri(config.lake.path)
    if config.s3.endpoint_url:  # for an S3 warehouse; a local one never reads them
        props["s3.endpoint"] = config.s3.endpoint_url
    if config.s3.region:
        props["s3.region"] = config.s3.region
    props.update(config.lake.catalog)
    return props


_catalogs: dict[tuple[tuple[str, str], ...], Catalog] = {}
_lock = threading.Lock()


def open_catalog(config: HopperConfig) -> Catalog:
    """The home's catalog, made once per process and properties (the namespace is ensured).

    Raises:
        ConfigError: the catalog cannot be reached or its properties are wrong.
    """
    from hopper.errors import ConfigError

    props = catalog_properties(config)
    key = tuple(sorted(props.items()))
    with _lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            if props.get("uri", "").startswith("sqlite:///"):
                config.state_dir.mkdir(parents=True, exist_ok=True)
            try:
                catalog = _first_open(props, config.lake.namespace)
            except (ValueError, NotImplementedError, ImportError) as exc:
                raise ConfigError(f"lake.catalog {_shown(props)}: {exc}") from exc
            _catalogs[key] = catalog
        return catalog


def _first_open(props: dict[str, str], namespace: str, attempts: int = 5) -> Catalog:
    """Load the catalog and ensure the namespace, riding out a race with another process.

    The SQL catalog creates its own tables on first use; two workers starting on a new
    database both try, and one of them fails on the other's table. Trying again finds them.
    """
    from pyiceberg.catalog import load_catalog
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            catalog = load_catalog(CATALOG_NAME, **props)
            catalog.create_namespace_if_not_exists(namespace)
            return catalog
        except SQLAlchemyError as exc:
            if attempt == attempts - 1:
                raise
            log.info("catalog %s not ready (%s); trying again", _shown(props), exc)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _shown(props: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(props.items()) if k in ("type", "uri"))
