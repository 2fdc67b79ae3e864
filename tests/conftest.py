"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hopper.config import FolderSource, HopperConfig, load_config
from hopper.models import FileRef

# The session-wide moto server fixture (`moto`), for S3/SQS tests and `hopper up`.
pytest_plugins = ["tests.moto_server"]


# Integration modules whose tests share the session-wide `hopper up` (the `up` fixture of
# tests/integration/conftest.py); the other integration modules start servers of their own.
SHARED_UP_MODULES = {
    "test_end_to_end.py",
    "test_failures.py",
    "test_hostile.py",
    "test_hostile_corpus.py",
    "test_replay_deployment.py",
    "test_s3_end_to_end.py",
}


def lane(nodeid: str) -> str:
    """The lane of a test when pytest-xdist runs the suite in two (``-n 2``).

    Lane ``shared``: the unit tests and every test of the session-wide `hopper up`, in the
    order written (some rely on what earlier ones left there). Lane ``apart``: the modules
    that start servers of their own (chaos, scale-out, freshness, tables, metrics, moto's S3
    and SQS). Each lane runs in one worker, one test after another, so no two bursts compete
    for the two cores and the session-wide `hopper up` starts once; much of either lane is
    waiting on real clocks (alert holds, freshness windows, leases), which the other fills.
    """
    module = nodeid.split("::", 1)[0]
    if module.startswith("tests/integration/") and module.rsplit("/", 1)[-1] not in (
        SHARED_UP_MODULES
    ):
        return "apart"
    return "shared"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule by :func:`lane` (xdist's own ``loadgroup`` marks do not survive pytest 9)."""
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane(nodeid)

    return Lanes(config, log)


CONTRACT = """\
name: people
version: 1
format: csv
columns:
  - name: id
    type: int64
    nullable: false
  - name: full name
    type: string
    rename: full_name
  - name: score
    type: float64
"""


ICEBERG_LAKE = "lake:\n  path: lake\n  format: iceberg\n"
"""``lake:`` of a home whose datasets are Iceberg tables (for :func:`make_home`)."""


def make_home(
    root: Path,
    contracts: dict[str, str] | None = None,
    extra: str = "",
    lake: str = "lake: lake\n",
) -> Path:
    """Write a small Hopper home (hopper.yaml + contracts) and return its config path.

    ``lake`` is the ``lake:`` entry: Parquet files in ``lake/`` unless it says otherwise
    (:data:`ICEBERG_LAKE`).
    """
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    (root / "inbox").mkdir(exist_ok=True)
    for name, text in (contracts or {"people": CONTRACT}).items():
        (root / "datasets" / f"{name}.yaml").write_text(text, encoding="utf-8")
    config = root / "hopper.yaml"
    config.write_text(
        "sources:\n  - path: inbox\n"
        + lake
        + "quarantine: quarantine\ndatasets_dir: datasets\nstate_dir: .hopper\n"
        "watch:\n  stable_seconds: 0.2\n  rescan_seconds: 2\n  confirm_seconds: 5\n" + extra,
        encoding="utf-8",
    )
    return config


@pytest.fixture
def home(tmp_path: Path) -> HopperConfig:
    """A loaded Hopper home in a temporary folder, with the `people` contract."""
    return load_config(make_home(tmp_path))


def drop_file(home: HopperConfig, dataset: str, name: str, text: str) -> FileRef:
    """Write ``inbox/<dataset>/<name>`` in ``home`` and return its ref, as the watcher would."""
    source = home.sources[0]
    assert isinstance(source, FolderSource)
    path = source.path / dataset / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    return FileRef(uri=path.as_uri(), size=st.st_size, mtime=st.st_mtime, dataset=dataset)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``hopper *argv`` in this process: its exit code, standard output and error."""
    from hopper.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
