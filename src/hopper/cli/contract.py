"""``hopper contract infer`` and ``hopper validate``: contracts without Prefect."""

from __future__ import annotations

import sys
from pathlib import Path

from cyclopts import App
from rich.console import Console

from hopper.cli.run import ConfigOption, resolve_config
from hopper.contracts import (
    dump_contract,
    format_violations,
    infer_contract,
    load_contract,
    validate_file,
)
from hopper.errors import ConfigError, HopperError

console = Console()
contract_app = App(name="contract", help="Create and inspect dataset contracts.")


@contract_app.command(name="infer")
def infer(file: Path, /, *, dataset: str) -> None:
    """Print a draft contract (YAML) inferred from a sample file.

    Column names are kept exactly as in the file; types, nullability and null markers come
    from the data. Review the draft, then save it as <home>/datasets/<dataset>.yaml.

    Args:
        file: Sample CSV, TSV, JSON-lines, JSON or Parquet file (optionally compressed).
        dataset: Dataset name (lowercase letters, digits, '-' and '_').
    """
    if not file.is_file():
        raise HopperError(f"{file}: no such file")
    sys.stdout.write(dump_contract(infer_contract(file, dataset)))


def validate(file: Path, /, *, dataset: str, config: ConfigOption = None) -> None:
    """Check a file against its dataset's contract, without Prefect.

    Exits 0 when the file is valid; otherwise 1, listing every violation by column with
    row numbers (1 = first data row) and sample values.

    Args:
        file: File to check.
        dataset: Dataset whose contract applies (<home>/datasets/<dataset>.yaml).
        config: hopper.yaml of the Hopper home.
    """
    if not file.is_file():
        raise HopperError(f"{file}: no such file")
    cfg = resolve_config(config)
    path = cfg.contract_path(dataset)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no contract for dataset {dataset!r}; create one with "
            f"`hopper contract infer {file} --dataset {dataset} > {path}`"
        )
    violations = validate_file(file, load_contract(path))
    if not violations:
        console.print(f"[green]valid[/]: {file} matches the contract of {dataset!r}")
        return
    sys.stdout.write(format_violations(violations, str(file)) + "\n")
    raise SystemExit(1)


def register(app: App) -> None:
    """Add this module's commands to the CLI."""
    app.command(contract_app)
    app.command(validate)
