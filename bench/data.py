"""Deterministic test data for the benchmarks: small CSV files, big CSV files, contracts.

Everything here is pure apart from writing the files it is asked to write: the same seed and
size always give the same bytes, so two runs (or two machines) measure the same work.
Every file has the same four typed columns — ``id`` (int64, never null), ``amount``
(float64), ``city`` (string) and ``day`` (date32, ISO) — with about 5 % ``NA`` nulls in the
nullable ones.
"""

from __future__ import annotations

import math
import os
import random
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

HEADER = "id,amount,city,day\n"
CITIES = ("Lisbon", "Oslo", "Tunis", "Quito", "Hanoi", "Perth", "Cusco", "Accra", "Riga", "Pune")
NULL_SHARE = 0.05
_EPOCH = date(2020, 1, 1)
_DAYS = 1500
_BYTES_PER_ROW_GUESS = 36
_CHUNK_ROWS = 250_000

CONTRACT_TEMPLATE = """\
name: {name}
version: 1
format: csv
columns:
  - name: id
    type: int64
    nullable: false
  - name: amount
    type: float64
  - name: city
    type: string
  - name: day
    type: date32
"""


def contract_yaml(dataset: str) -> str:
    """The contract (``datasets/<dataset>.yaml``) every benchmark file satisfies.

    Args:
        dataset: the dataset name, which is also the inbox folder the files are dropped into.
    """
    return CONTRACT_TEMPLATE.format(name=dataset)


def small_csv(index: int, seed: int = 0, min_rows: int = 50, max_rows: int = 100) -> bytes:
    """One small CSV file (``min_rows``–``max_rows`` data rows), a pure function of its inputs.

    Args:
        index: which file of a series (file ``i`` always has the same content).
        seed: the series' seed.
        min_rows: fewest data rows.
        max_rows: most data rows.
    """
    rng = random.Random(f"hopper-bench:{seed}:{index}")
    rows = rng.randint(min_rows, max_rows)
    lines = [HEADER]
    for i in range(rows):
        amount = "NA" if rng.random() < NULL_SHARE else f"{rng.uniform(0, 10_000):.2f}"
        city = "NA" if rng.random() < NULL_SHARE else rng.choice(CITIES)
        day = (
            "NA"
            if rng.random() < NULL_SHARE
            else (_EPOCH + timedelta(days=rng.randrange(_DAYS))).isoformat()
        )
        lines.append(f"{index * 1000 + i},{amount},{city},{day}\n")
    return "".join(lines).encode()


def write_small_files(folder: Path, count: int, prefix: str, seed: int = 0) -> list[Path]:
    """Write ``count`` small CSV files named ``<prefix>-00000.csv`` … into ``folder``.

    Args:
        folder: where to write (created if missing).
        count: how many files.
        prefix: file-name prefix; it becomes the stem of each lake output's name.
        seed: the series' seed.

    Returns:
        The paths written, in index order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / small_name(prefix, i)
        path.write_bytes(small_csv(i, seed))
        paths.append(path)
    return paths


def settle_disk() -> None:
    """Write every dirty page out now (``sync``), so that a timed phase starts on a quiet disk.

    Writing thousands of small files leaves them in the page cache; the kernel writes them
    back a few seconds later, and charges the waits to whoever writes then. Without this, a
    burst pays for the writing of its own input, and the bare loop that follows it for the
    burst's outputs.
    """
    os.sync()


def small_name(prefix: str, index: int) -> str:
    """File name of small file ``index`` of a series: ``<prefix>-<index, 5 digits>.csv``."""
    return f"{prefix}-{index:05d}.csv"


def _with_nulls(values: pa.Array, mask: np.ndarray) -> pa.Array:
    """``values`` as strings, with ``NA`` where ``mask`` is true."""
    text = pc.cast(values, pa.string())
    return pc.if_else(pa.array(mask), pa.scalar("NA"), text)


def big_chunk(rows: int, first_id: int, seed: int, chunk: int) -> pa.Table:
    """One chunk of a big CSV file as a table of string columns (``NA`` for nulls).

    Args:
        rows: rows in the chunk.
        first_id: value of ``id`` in the chunk's first row.
        seed: the file's seed.
        chunk: the chunk's index (each chunk has its own random stream).
    """
    rng = np.random.default_rng([seed, chunk])
    ids = pa.array(np.arange(first_id, first_id + rows, dtype=np.int64))
    amount = pa.array(np.round(rng.uniform(0, 10_000, rows), 2))
    city = pa.array(CITIES).take(pa.array(rng.integers(0, len(CITIES), rows)))
    day = pa.array(rng.integers(0, _DAYS, rows, dtype=np.int32) + _days_since_epoch(_EPOCH))
    day = day.cast(pa.date32())
    return pa.table(
        {
            "id": pc.cast(ids, pa.string()),
            "amount": _with_nulls(amount, rng.random(rows) < NULL_SHARE),
            "city": _with_nulls(city, rng.random(rows) < NULL_SHARE),
            "day": _with_nulls(day, rng.random(rows) < NULL_SHARE),
        }
    )


def _days_since_epoch(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def write_big_csv(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Write a CSV file of about ``size_bytes`` (within one row), deterministically.

    The file is written to a hidden name next to ``path`` and renamed at the end, so a run
    that is interrupted never leaves a truncated file under the final name.

    Args:
        path: the file to write.
        size_bytes: target size; the file ends at the first row boundary at or past it, give
            or take the estimate of the last chunk's row count (well under 1 %).
        seed: the file's seed.

    Returns:
        The number of data rows written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    rows_done = chunk = 0
    with open(tmp, "wb") as out:
        written = out.write(HEADER.encode())
        while written < size_bytes:
            per_row = (written - len(HEADER)) / rows_done if rows_done else _BYTES_PER_ROW_GUESS
            rows = min(_CHUNK_ROWS, max(1, math.ceil((size_bytes - written) / per_row)))
            sink = pa.BufferOutputStream()
            pacsv.write_csv(big_chunk(rows, rows_done, seed, chunk), sink, write_options=options)
            written += out.write(sink.getvalue().to_pybytes())
            rows_done += rows
            chunk += 1
    os.replace(tmp, path)
    return rows_done
