"""Runs last (files run in name order): stop the shared `hopper up` and check it left nothing.

Every other integration module that uses the session's `hopper up` must sort before this one.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Running

pytestmark = pytest.mark.integration


def test_stop_leaves_no_process_behind(up: Running) -> None:
    children = up.state()["children"]
    assert set(children) == {"server", "worker", "watcher"}
    assert up.stop(timeout=40) == 0
    for name, pid in children.items():
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"{name} still runs"
    with pytest.raises(httpx.HTTPError):
        httpx.get(up.api_url + "/health", timeout=2)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
