"""The CLI's local commands, run in-process as a user would type them."""

from pathlib import Path

import pytest

from tests.conftest import run_cli

SAMPLE = "id,full name,score\n1,Ada Lovelace,9.5\n2,Alan Turing,NA\n"


def test_init_infer_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert run_cli(capsys, "init", str(home))[0] == 0
    sample = tmp_path / "people.csv"
    sample.write_text(SAMPLE)
    code, out, _ = run_cli(capsys, "contract", "infer", str(sample), "--dataset", "people")
    assert code == 0 and "name: full name" in out and "type: int64" in out
    (home / "datasets" / "people.yaml").write_text(out)
    config = str(home / "hopper.yaml")
    assert (
        run_cli(capsys, "validate", str(sample), "--dataset", "people", "--config", config)[0] == 0
    )

    bad = tmp_path / "bad.csv"
    bad.write_text("id,full name,score\n1,x,1\nNOPE,y,2\n")
    code, out, _ = run_cli(capsys, "validate", str(bad), "--dataset", "people", "--config", config)
    assert code == 1 and "id" in out and "NOPE" in out and "row" in out


def test_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "x.csv"), "--dataset", "d")
    assert code == 1 and err.startswith("hopper: ") and "no such file" in err
    (tmp_path / "x.csv").write_text("a\n1\n")
    code, _, err = run_cli(
        capsys,
        "validate",
        str(tmp_path / "x.csv"),
        "--dataset",
        "d",
        "--config",
        str(tmp_path / "missing.yaml"),
    )
    assert code == 2 and "hopper init" in err


def test_validate_reports_a_file_over_its_memory_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert run_cli(capsys, "init", str(home))[0] == 0
    sample = tmp_path / "people.csv"
    sample.write_text(SAMPLE)
    _, contract, _ = run_cli(capsys, "contract", "infer", str(sample), "--dataset", "people")
    (home / "datasets" / "people.yaml").write_text(contract + "max_memory_mb: 16\n")
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("id,full name,score\n")
        f.writelines(f"{i},someone with a long enough name {i},{i}.5\n" for i in range(600_000))
    config = str(home / "hopper.yaml")
    code, out, _ = run_cli(capsys, "validate", str(big), "--dataset", "people", "--config", config)
    assert code == 1 and "[limit]" in out and "16 MiB memory limit" in out


def test_init_writes_the_defaults_a_home_without_a_watch_block_gets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hopper.config import WatchOptions, load_config

    assert run_cli(capsys, "init", str(tmp_path / "h"))[0] == 0
    text = (tmp_path / "h" / "hopper.yaml").read_text()
    assert "watch:\n  stable_seconds:" in text  # shown to the user, each value explained
    assert load_config(tmp_path / "h" / "hopper.yaml").watch == WatchOptions()
    # The repository's own home (the README's first command) shows the same values.
    repo_home = Path(__file__).resolve().parents[2] / "config" / "hopper.yaml"
    assert load_config(repo_home).watch == WatchOptions()


def test_commands_find_the_hopper_up_running_for_their_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hopper replay` beside `hopper up --port 4391` talks to that server, not to 4200."""
    import json
    import os
    import subprocess
    import sys
    import time

    from hopper.cli.run import _default_api_url
    from tests.conftest import make_home

    config = make_home(tmp_path)
    state = tmp_path / ".hopper"
    state.mkdir(exist_ok=True)
    monkeypatch.delenv("HOPPER_PORT", raising=False)

    def resolved() -> str:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        _default_api_url(config)
        return os.environ["PREFECT_API_URL"]

    assert resolved() == "http://127.0.0.1:4200/api"  # nothing running: the default
    # A live process standing in for `hopper up` (its command line names hopper).
    up = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "hopper", "up"])
    try:
        cmdline = Path(f"/proc/{up.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"\0up" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # the child shows its own command line once it has exec'd
        record = {"pid": up.pid, "api_url": "http://127.0.0.1:4391/api", "children": {}}
        (state / "up.json").write_text(json.dumps(record))
        assert resolved() == "http://127.0.0.1:4391/api"
        # An explicit PREFECT_API_URL still wins.
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4555/api")
        _default_api_url(config)
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4555/api"
    finally:
        up.kill()
        up.wait()
    # The file a dead `hopper up` left behind is ignored.
    assert resolved() == "http://127.0.0.1:4200/api"
    # So is one whose PID now belongs to another program (this test's own process).
    (state / "up.json").write_text(json.dumps({**record, "pid": os.getpid()}))
    assert resolved() == "http://127.0.0.1:4200/api"
