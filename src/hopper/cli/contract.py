"""``hopper contract infer|diff`` and ``hopper validate``: contracts without Prefect."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Table

from hopper.cli.run import ConfigOption, resolve_config
from hopper.contracts import (
    Contract,
    ContractDiff,
    Violation,
    diff_file,
    dump_contract,
    format_violations,
    infer_contract,
    load_contract,
    validate_file,
)
from hopper.errors import ConfigError, HopperError, ReaderCrashedError
from hopper.isolate import Limits, ReaderPool

if TYPE_CHECKING:
    from hopper.config import HopperConfig
    from hopper.tables.schema import ColumnVsTable

console = Console()
notes = Console(stderr=True)  # what is said beside a --json document, not in it
contract_app = App(name="contract", help="Create and inspect dataset contracts.")


@contract_app.command(name="infer")
def infer(file: Path, /, *, dataset: str) -> None:
    """Print a draft contract (YAML) inferred from a sample file.

    Column names are kept exactly as in the file; types, nullability and null markers come
    from the data. Text dates in a common spelling (2012/01/31, 31.01.2012, Jan 31 2012)
    get a date type and format; the encoding (UTF-8, UTF-16 with a byte-order mark,
    Windows-1252, Latin-1) and comment or title lines above the header (skip_rows) are
    proposed too. Review the draft, then save it as HOME/datasets/DATASET.yaml.

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
    row numbers (1 = first data row) and sample values. The contract's resource limits
    (max_file_mb, max_line_bytes, max_columns, max_memory_mb, max_seconds, ...) apply as
    they do when ingesting: the file is read in a child process, so a file that would crash
    a reader is reported, not fatal.

    Args:
        file: File to check.
        dataset: Dataset whose contract applies (datasets/DATASET.yaml in the home).
        config: hopper.yaml of the Hopper home.
    """
    contract = _dataset_contract(file, dataset, config)
    # Read in a child under the contract's limits, as ingestion does: a file that crashes a
    # reader or runs out of its memory is a violation here, not a dead command.
    readers = ReaderPool(1)
    limits = Limits(memory_mb=contract.max_memory_mb, cpu_seconds=contract.max_seconds)
    try:
        violations = readers.call(validate_file, file, contract, limits=limits, what=str(file))
    except ReaderCrashedError as exc:
        violations = [Violation(column=None, kind="limit", message=str(exc))]
    finally:
        readers.close()
    if not violations:
        console.print(f"[green]valid[/]: {file} matches the contract of {dataset!r}")
        return
    sys.stdout.write(format_violations(violations, str(file)) + "\n")
    raise SystemExit(1)


@contract_app.command(name="diff")
def diff(
    file: Path,
    /,
    *,
    dataset: str,
    config: ConfigOption = None,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> None:
    """Show how a file differs from its dataset's contract, column by column.

    Lists declared columns missing from the file, extra columns (with the type Arrow infers),
    columns whose type differs (and whether their values convert) and nulls in columns
    declared nullable: false. With an Iceberg lake, also how the file's rows meet the
    dataset's table as it is now: columns written as they are, new columns (added), widened
    types, columns the rows lack (null) and conflicts (the file would be quarantined; see
    docs/tables.md, "Migrating a table"). Exits 0 when the file matches, 1 when it differs.

    Args:
        file: File to compare (any supported format, optionally compressed).
        dataset: Dataset whose contract applies (datasets/DATASET.yaml in the home).
        config: hopper.yaml of the Hopper home.
        json_output: Print the diff as JSON (keys documented in docs/contracts.md).
    """
    contract = _dataset_contract(file, dataset, config)
    result = diff_file(file, contract)
    vs_table = _versus_table(file, contract, resolve_config(config))
    if json_output:
        doc = result.model_dump(mode="json")
        if vs_table is not None:
            doc["table"] = [c.model_dump() for c in vs_table]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _print_diff(result)
        if vs_table is not None:
            _print_versus_table(vs_table, f"{contract.name}")
    if not result.matches or any(c.status == "conflict" for c in vs_table or []):
        raise SystemExit(1)


def _versus_table(file: Path, contract: Contract, cfg: HopperConfig) -> list[ColumnVsTable] | None:
    """How ``file``'s rows meet its table; None without a table (or rows that fail)."""
    if not cfg.lake.is_table:
        return None
    from pyiceberg.exceptions import NoSuchTableError

    from hopper.contracts import read_and_conform
    from hopper.lineage import RESERVED_COLUMNS
    from hopper.tables import open_catalog, table_identifier
    from hopper.tables.schema import compare_to_table

    try:
        table = open_catalog(cfg).load_table(table_identifier(cfg, contract.name))
    except NoSuchTableError:
        console.print(
            f"no table {table_identifier(cfg, contract.name)} yet: the first batch makes it"
        )
        return None
    try:
        rows = read_and_conform(
            file, contract, source_name=str(file), ingested_at=datetime.now(UTC)
        )
    except HopperError as exc:
        notes.print(f"the file's rows cannot be compared with the table: {exc}")
        return None
    return compare_to_table(rows.table.schema, table.schema().as_arrow(), RESERVED_COLUMNS)


def _print_versus_table(columns: list[ColumnVsTable], dataset: str) -> None:
    table = Table(title=f"rows vs table of {dataset!r}", title_justify="left")
    for header in ("column", "status", "rows type", "table type"):
        table.add_column(header, overflow="fold")
    styles = {"ok": "green", "widens": "cyan", "new": "yellow", "absent": "yellow"}
    for c in columns:
        style = styles.get(c.status, "red")
        table.add_row(c.column, f"[{style}]{c.status}[/]", c.rows_type or "-", c.table_type or "-")
    console.print(table)


_STYLES = {"ok": "green", "compatible": "cyan", "extra": "yellow"}


def _print_diff(result: ContractDiff) -> None:
    table = Table(
        title=f"{result.file} vs contract {result.dataset!r} v{result.contract_version} "
        f"({result.format}, {result.rows} rows)",
        title_justify="left",
    )
    for header in ("column", "status", "contract type", "file type", "converts", "details"):
        table.add_column(header, overflow="fold")
    for column in result.columns:
        style = _STYLES.get(column.status, "red")
        converts = {True: "yes", False: "no", None: "-"}[column.converts]
        details = column.message
        if column.rows:
            details += f"; rows {', '.join(map(str, column.rows))}"
        if column.samples:
            details += f"; samples {', '.join(repr(s) for s in column.samples)}"
        table.add_row(
            column.column,
            f"[{style}]{column.status}[/]",
            column.contract_type or "-",
            column.file_type or "-",
            converts,
            details,
        )
    console.print(table)
    if result.matches:
        console.print(f"[green]matches[/]: {result.file} has the columns of {result.dataset!r}")
    else:
        console.print(f"[red]differs[/]: {len(result.differences)} column(s) differ")


def _dataset_contract(file: Path, dataset: str, config: Path | None) -> Contract:
    """Load the contract of ``dataset`` from the home, after checking that ``file`` exists."""
    if not file.is_file():
        raise HopperError(f"{file}: no such file")
    cfg = resolve_config(config)
    path = cfg.contract_path(dataset)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no contract for dataset {dataset!r}; create one with "
            f"`hopper contract infer {file} --dataset {dataset} > {path}`"
        )
    return load_contract(path)


def register(app: App) -> None:
    """Add this module's commands to the CLI."""
    app.command(contract_app)
    app.command(validate)
