"""The burst's bare baseline: the same small files converted by one plain Python process.

What Hopper's burst is measured against (``python -m bench --only burst``): no Prefect, no
ledger, no reader processes, no staging — for each file, ``pyarrow.csv.read_csv`` with the
contract's column types and null markers, the contract's checks done with Arrow compute
(every declared column present, no null in a non-nullable column, ``allowed`` values), and
``pyarrow.parquet.write_table`` with the contract's compression. This is the floor the
conversion itself sets on this machine; the ratio of Hopper's files/s to it is the cost of
everything that makes Hopper trustworthy (exactly once, isolation, orchestration).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench.data import settle_disk
from hopper.contracts.model import Contract

log = logging.getLogger(__name__)


class BareError(Exception):
    """A file the bare loop refused (it should not happen with the benchmark's files)."""


def convert(path: Path, contract: Contract, out: Path) -> int:
    """Read, check and write one file as plainly as pyarrow allows; return its rows."""
    types = {c.name: c.arrow_type() for c in contract.columns}
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=contract.reader.delimiter or ","),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            null_values=list(contract.reader.null_values),
            strings_can_be_null=True,
        ),
    )
    for column in contract.columns:
        if column.name not in table.column_names:
            raise BareError(f"{path.name}: no column {column.name!r}")
        values = table[column.name]
        if not column.nullable and values.null_count:
            raise BareError(f"{path.name}: nulls in {column.name!r}")
        if column.allowed is not None:
            allowed = pa.array(column.allowed, values.type)
            if not pc.all(pc.is_in(values.drop_null(), value_set=allowed)).as_py():
                raise BareError(f"{path.name}: a value of {column.name!r} not allowed")
    compression = None if contract.compression == "none" else contract.compression
    pq.write_table(table, out, compression=compression)
    return int(table.num_rows)


def bare_burst(files: list[Path], contract_yaml: str, out: Path, passes: int = 2) -> dict[str, Any]:
    """Convert ``files`` one after another in this process; files/s (the best pass) and rows.

    The machine has just run a burst: each pass starts once the disk has written back what
    came before it (:func:`~bench.data.settle_disk`, as the burst itself does), and of
    ``passes`` passes over the same files the fastest is the baseline, so that a slow moment
    of the loop makes Hopper's ratio smaller, never larger.

    Args:
        files: the burst's files (the same bytes Hopper is given).
        contract_yaml: their contract's text.
        out: an empty folder for the Parquet files (one sub-folder per pass).
        passes: how many times to convert them all.
    """
    import yaml

    contract = Contract.model_validate(yaml.safe_load(contract_yaml))
    timings: list[float] = []
    rows = 0
    for n in range(max(1, passes)):
        folder = out / f"pass-{n + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = 0
        settle_disk()  # the burst's outputs, and the last pass's, are not this pass's to write
        began = time.monotonic()
        for path in files:
            rows += convert(path, contract, folder / f"{path.stem}.parquet")
        timings.append(time.monotonic() - began)
        log.info("bare burst, pass %d: %d files in %.2fs", n + 1, len(files), timings[-1])
    seconds = min(timings)
    return {
        "files": len(files),
        "rows": rows,
        "seconds": round(seconds, 2),
        "pass_seconds": [round(t, 2) for t in timings],
        "files_per_s": len(files) / seconds if seconds > 0 else 0.0,
    }


def fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One baseline from several :func:`bare_burst` results: the fastest, with every pass.

    Args:
        runs: results over the same files (e.g. one pass before a burst, one after).
    """
    if not runs:
        raise ValueError("no bare run to choose from")
    best = min(runs, key=lambda run: run["seconds"])
    return {**best, "pass_seconds": [t for run in runs for t in run["pass_seconds"]]}
