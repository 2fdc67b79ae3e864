"""A Hopper home, opened: its config, the process's settings, its ledger and its clients.

Every command, the watcher and every flow run start the same way: read the settings, load
``hopper.yaml``, open the ledger, and later perhaps reach S3 or the Prefect API. :class:`Home`
does that once and owns what it opened, as a context manager (``with Home.open(...) as
home:``), so nothing is closed by hand and nothing is opened twice. Settings are read here,
once, and passed down from here.

A long-lived process that opens the same home for every flow run (the warm worker) keeps its
ledgers open between runs (:func:`keep_ledgers`): a ledger opened per run paid its migration
check, its connections and SQLAlchemy's compilation of every statement each time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hopper.config import HopperConfig, load_config
from hopper.ledger import Lease, Ledger, sqlite_url
from hopper.models import FileRef
from hopper.settings import HopperSettings

if TYPE_CHECKING:
    from hopper.isolate import ReaderPool
    from hopper.prefect_api import PrefectAPI


_kept: dict[str, Ledger] | None = None  # ledgers by URL, while this process keeps them
_kept_lock = threading.Lock()


def keep_ledgers() -> None:
    """From now on, :meth:`Home.open` in this process reuses one open ledger per URL.

    For a process that opens a home per flow run and runs many (the warm worker): a fresh
    ledger per run cost it about 50 ms (the migration check, new connections, and SQLAlchemy
    compiling each statement again for the new engine). A kept ledger is never closed by a
    home; it lives as long as the process. Its engine serves concurrent runs as it serves
    concurrent threads, one connection each.
    """
    global _kept
    with _kept_lock:
        if _kept is None:
            _kept = {}


def _ledger(url: str) -> tuple[Ledger, bool]:
    """The ledger at ``url``, and whether the home that asked owns it (must close it)."""
    with _kept_lock:
        if _kept is None:
            return Ledger(url), True
        if url not in _kept:
            _kept[url] = Ledger(url)
        return _kept[url], False


@dataclass
class Home:
    """An opened Hopper home (see the module docstring).

    Attributes:
        config: the home's ``hopper.yaml``.
        ledger: its ledger.
        settings: the process's environment settings, read once.
    """

    config: HopperConfig
    ledger: Ledger
    settings: HopperSettings = field(default_factory=HopperSettings)
    _api: PrefectAPI | None = field(default=None, repr=False)
    _owns_ledger: bool = field(default=True, repr=False)

    @classmethod
    def open(
        cls, config_path: Path | str | None = None, settings: HopperSettings | None = None
    ) -> Home:
        """Load ``hopper.yaml`` (argument, else ``HOPPER_CONFIG``) and open its ledger.

        Args:
            config_path: the home's ``hopper.yaml``.
            settings: the process's settings, if already read.

        Raises:
            ConfigError: the config file is missing or invalid.
        """
        settings = settings or HopperSettings()
        config = load_config(Path(config_path) if config_path else settings.config)
        url = settings.ledger_url or sqlite_url(config.state_dir)
        ledger, owned = _ledger(url)
        return cls(config=config, ledger=ledger, settings=settings, _owns_ledger=owned)

    @cached_property
    def s3(self) -> Any:
        """The S3 client for the lake, the quarantine and S3 sources (connects on first use)."""
        from hopper.lazy_s3 import LazyS3Client

        return LazyS3Client(self.config.s3.endpoint_url, self.config.s3.region)

    def s3_for(self, ref: FileRef) -> Any:
        """The S3 client for ``ref`` and its outputs; it connects only if one is on S3."""
        return self.s3

    @property
    def api(self) -> PrefectAPI:
        """The Prefect API client (made on first use, closed with the home)."""
        if self._api is None:
            from hopper.prefect_api import PrefectAPI

            self._api = PrefectAPI()
        return self._api

    @property
    def readers(self) -> ReaderPool:
        """The process's reader processes, as many as the ``readers`` setting says."""
        from hopper.isolate import shared_pool

        return shared_pool(self.settings.readers)

    @property
    def ui_url(self) -> str:
        """The Prefect UI's base URL (from the ``PREFECT_API_URL`` this process uses)."""
        from hopper.prefect_api import ui_url_of

        return ui_url_of(self.settings.api_url)

    def lease(self, flow_run_id: str) -> Lease:
        """Hold ``flow_run_id``'s claimed files while it works (see :class:`Lease`)."""
        return Lease(self.ledger, flow_run_id, self.settings.lease_seconds)

    def close(self) -> None:
        """Close the Prefect client (if one was made) and the ledger (unless it is kept)."""
        try:
            if self._api is not None:
                self._api.close()
                self._api = None
        finally:
            if self._owns_ledger:
                self.ledger.close()

    def __enter__(self) -> Home:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
