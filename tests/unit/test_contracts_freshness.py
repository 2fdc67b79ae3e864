"""Freshness in a contract: `expect.every` durations, Prefect's floor, the YAML errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hopper.contracts import load_contract
from hopper.contracts.freshness import MIN_EVERY_SECONDS, Freshness, parse_duration
from hopper.errors import ConfigError
from tests.conftest import CONTRACT


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("6h", 21_600),
        ("2d", 172_800),
        ("1w", 604_800),
        ("1h30m", 5_400),
        (" 24H ", 86_400),
        ("1.5h", 5_400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "3 hours", "10x", "-5m", "1h 30"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_every_accepts_bare_seconds_and_keeps_the_text() -> None:
    assert Freshness(every=" 6h ").every == "6h"
    assert Freshness.model_validate({"every": 30}).seconds == 30
    assert Freshness(every="2d").seconds == 172_800


def test_every_below_prefects_floor_is_refused() -> None:
    assert MIN_EVERY_SECONDS == 10  # EventTrigger refuses a shorter proactive `within`
    with pytest.raises(ValidationError, match="shorter than 10s"):
        Freshness(every="5s")
    with pytest.raises(ValidationError, match="duration"):
        Freshness.model_validate({"every": True})


def test_contract_expect_is_optional_and_checked_with_its_line(tmp_path: Path) -> None:
    plain = tmp_path / "people.yaml"
    plain.write_text(CONTRACT)
    assert load_contract(plain).expect is None
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(CONTRACT.replace("name: people", "name: fresh") + "expect:\n  every: 24h\n")
    assert load_contract(fresh).expect == Freshness(every="24h")
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONTRACT + "expect:\n  every: 3s\n")
    with pytest.raises(ConfigError, match=r"expect\.every \(line 14\).*shorter than 10s"):
        load_contract(bad)
