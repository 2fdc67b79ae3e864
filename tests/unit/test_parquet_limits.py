"""Memory limits for readers: Parquet footers are judged before Arrow allocates anything, and
Parquet is decoded batch by batch against ``max_memory_mb``.

Hostile files are built here, small on disk; anything that could allocate a lot runs in a
child process under ``RLIMIT_AS`` so that a regression fails the test, not the test run."""

from __future__ import annotations

from pathlib import Path

import pytest

from hopper.contracts import load_contract
from hopper.contracts.model import Contract, dump_contract
from hopper.errors import ConfigError
from tests.conftest import CONTRACT


def _contract(tmp_path: Path, extra: str = "") -> Contract:
    path = tmp_path / "people.yaml"
    path.write_text(CONTRACT + extra)
    return load_contract(path)


# --------------------------------------------------------------------------- contract keys


def test_memory_and_time_limits_have_safe_defaults(tmp_path: Path) -> None:
    contract = _contract(tmp_path)
    assert contract.max_memory_mb == 2048 and contract.max_seconds == 600
    assert "max_memory_mb" not in dump_contract(contract)  # defaults stay out of the YAML


def test_memory_and_time_limits_round_trip(tmp_path: Path) -> None:
    contract = _contract(tmp_path, "max_memory_mb: 512\nmax_seconds: 30\n")
    assert (contract.max_memory_mb, contract.max_seconds) == (512, 30)
    text = dump_contract(contract)
    assert "max_memory_mb: 512" in text and "max_seconds: 30" in text
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert load_contract(again) == contract


@pytest.mark.parametrize("line", ["max_memory_mb: 0\n", "max_seconds: -1\n"])
def test_memory_and_time_limits_must_be_positive(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError, match=line.split(":")[0]):
        _contract(tmp_path, line)
