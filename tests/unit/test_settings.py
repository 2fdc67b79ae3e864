"""Process settings: where the Prefect API and its UI are, as each process sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hopper.config import HopperConfig
from hopper.home import Home
from hopper.ledger import Ledger
from hopper.settings import HopperSettings
from tests.conftest import make_home


def test_the_api_url_is_prefects_own_setting_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "https://prefect.example.com/api/")
    assert HopperSettings().api_url == "https://prefect.example.com/api/"


def test_the_api_url_defaults_to_the_server_hopper_up_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("HOPPER_PORT", "4311")
    assert HopperSettings().api_url == "http://127.0.0.1:4311/api"


def test_the_home_links_runs_to_the_ui_of_its_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://10.0.0.5:4200/api")
    settings = HopperSettings()
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:1/api")  # read once, not again
    config = HopperConfig.model_validate({"sources": [{"path": "inbox"}]})
    home = Home(config=config, ledger=Ledger("sqlite://"), settings=settings)
    with home:
        assert home.ui_url == "http://10.0.0.5:4200"


def test_each_home_opens_its_own_ledger_unless_the_process_keeps_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hopper import home as home_module

    config = make_home(tmp_path)
    monkeypatch.delenv("HOPPER_LEDGER_URL", raising=False)
    with Home.open(config) as first:
        pass
    with Home.open(config) as second:
        assert second.ledger is not first.ledger  # each home its own, closed with it

    monkeypatch.setattr(home_module, "_kept", None)
    home_module.keep_ledgers()  # as the warm worker does
    with Home.open(config) as first:
        ledger = first.ledger
    with Home.open(config) as second:
        assert second.ledger is ledger  # kept open between homes
        assert second.ledger.dispatched_under("none") == []  # and still usable
