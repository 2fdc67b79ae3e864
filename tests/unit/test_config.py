from pathlib import Path

import pytest

from hopper.config import load_config
from hopper.errors import ConfigError


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "hopper.yaml").write_text("lake: out/lake\nsources:\n  - path: in\n")
    cfg = load_config(tmp_path / "hopper.yaml")
    assert cfg.lake.path == str(tmp_path / "out" / "lake")
    assert cfg.lake.format == "parquet"
    assert cfg.sources[0].path == tmp_path / "in"
    assert cfg.contract_path("sales") == tmp_path / "datasets" / "sales.yaml"


def test_error_names_key_and_line(tmp_path: Path) -> None:
    (tmp_path / "hopper.yaml").write_text(
        "lake: lake\nwatch:\n  stable_seconds: soon\n"
        "routing:\n  - glob: '*.csv'\n    dataset: Bad Name\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "hopper.yaml")
    text = str(err.value)
    assert "hopper.yaml:3: watch.stable_seconds" in text
    assert "hopper.yaml:6: routing[0].dataset" in text


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "hopper.yaml").write_text("lake: lake\nlakes: typo\n")
    with pytest.raises(ConfigError, match=r"hopper\.yaml:2: lakes"):
        load_config(tmp_path / "hopper.yaml")


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hopper init"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "hopper.yaml").write_text("lake: [unclosed\n")
    with pytest.raises(ConfigError, match=r"hopper\.yaml: line 2, column 1: invalid YAML"):
        load_config(tmp_path / "hopper.yaml")


def test_s3_locations_and_sources(tmp_path: Path) -> None:
    (tmp_path / "hopper.yaml").write_text(
        "lake: s3://lake/tables/\nquarantine: q\nsources:\n  - path: in\n"
        "  - type: s3\n    bucket: landing\n    prefix: incoming\n"
        "    mode: notifications\n    queue_url: http://127.0.0.1:1/q\n"
    )
    cfg = load_config(tmp_path / "hopper.yaml")
    assert cfg.lake.path == "s3://lake/tables" and cfg.quarantine == str(tmp_path / "q")
    assert [s.type for s in cfg.sources] == ["folder", "s3"]
    assert cfg.folders == [cfg.sources[0]]


def test_notifications_need_a_queue(tmp_path: Path) -> None:
    (tmp_path / "hopper.yaml").write_text(
        "sources:\n  - type: s3\n    bucket: landing\n    mode: notifications\n"
    )
    with pytest.raises(ConfigError, match="queue_url"):
        load_config(tmp_path / "hopper.yaml")
