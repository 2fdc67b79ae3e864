"""Hold a large CSV/TSV file to its contract block by block, in bounded memory.

:class:`StreamingConform` is the streaming twin of
:func:`~hopper.contracts.validate.read_and_conform`: it reads the file in blocks
(:func:`~hopper.contracts.read.iter_csv_for_contract`, the same Arrow options as a whole
read), converts and checks each block with the very same code
(:func:`~hopper.contracts.checks.inspect_table` and :func:`~hopper.contracts.split.
split_rows`), applies the contract's derived columns, drops and ``_ingest_date`` to each
block, checks that its ``partition_by`` can be computed (a time transform such as
``day(order_ts)`` needs a date or timestamp column), and yields the valid rows. Violations
are merged across blocks with file-relative row numbers (1 = first data row), and the
decision the whole-file path takes at once (:func:`~hopper.contracts.verdict.decide`) is
taken at the end of the file:

- ``bad_rows: reject``: the first violation stops the yielding (the caller's output is
  abandoned), the rest of the file is still checked so the reason counts every violation,
  then :class:`~hopper.errors.ContractViolation` is raised;
- ``bad_rows: quarantine``: valid rows are yielded, bad rows are collected (as text, with
  ``_row`` and ``_reason``) in :attr:`StreamingConform.rejected`, so memory grows with the
  number of *bad* rows only; a column none of whose values converts anywhere in the file
  still rejects the whole file, at the end. Blocks read before the first value that fails
  to parse were read typed, so their rejected rows hold Arrow's text of the typed value
  (``1.5`` for ``1.50``), where the whole-file path would keep the original text;
- ``bad_rows: rescue``: every row is yielded, its bad values rescued into ``_rescued_data``
  block by block (:mod:`~hopper.contracts.rescue`, the same values the whole-file path
  keeps); a value that cannot be rescued stops the yielding as a violation does under
  ``reject``;
- structural problems (missing, duplicate or frozen extra columns) are known from the first
  block and stop the yielding; the file is still checked to the end, as above.

What is not streamed (:func:`stream_refusal` says why, and the caller reads the file whole):

- formats other than CSV and TSV (JSON lines and Parquet readers have no equivalent of the
  typed, block-wise CSV reader with the same options);
- contracts with ``unique`` columns: uniqueness needs every key of the file at once, and a
  set of seen keys grows with the file, which is the memory streaming exists to bound;
- contracts with a Python ``transform``: the callable receives the whole table and may
  aggregate, sort or deduplicate across rows, which blocks cannot reproduce.

An undeclared column whose Arrow-inferred type changes after the first block (a stream fixes
types from its first block, a whole read does not), or a row longer than a block, raises
:class:`~hopper.contracts.read.StreamFallback`; the caller then discards what it wrote and
reads the file whole, so that the output is the same as the whole-file path's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from hopper.contracts.checks import Inspection, Issue, inspect_table
from hopper.contracts.model import Contract
from hopper.contracts.read import (
    StreamFallback,
    detect_format,
    encoding_mismatch,
    iter_csv_for_contract,
    read_head,
)
from hopper.contracts.rescue import place_rescued, rows_rescued
from hopper.contracts.results import MAX_ROWS, MAX_SAMPLES, Violation
from hopper.contracts.split import split_rows
from hopper.contracts.transforms import apply_transforms, has_transforms
from hopper.contracts.verdict import decide, must_refuse
from hopper.errors import TerminalError

logger = logging.getLogger(__name__)

STREAM_THRESHOLD_MB = 64.0
"""Default size (MiB on disk) from which CSV/TSV files are streamed (``stream_threshold_mb``)."""
STREAM_BLOCK_BYTES = 4 << 20
"""Bytes of CSV read per block.

Arrow's streaming CSV reader reads ahead on its I/O thread, up to about 40 blocks when the
disk is faster than parsing: the block size, not the file size, bounds that memory (≈ 160 MiB
at 4 MiB, measured). Smaller blocks cost little: checks are vectorised per block and blocks
are gathered into large row groups before they are written.
"""
DIFF_SAMPLE_ROWS = 10_000
"""Rows re-read to infer a streamed file's own types for the diff in a rejection reason."""

_KIND_ORDER = ("type", "null", "min", "max", "allowed", "pattern", "unique")

__all__ = [
    "DIFF_SAMPLE_ROWS",
    "STREAM_BLOCK_BYTES",
    "STREAM_THRESHOLD_MB",
    "StreamFallback",
    "StreamingConform",
    "stream_refusal",
    "stream_threshold_bytes",
]


def stream_threshold_bytes(contract: Contract) -> int:
    """The size from which a file of this contract is streamed (``stream_threshold_mb``)."""
    mib = contract.stream_threshold_mb
    if mib is None:
        mib = STREAM_THRESHOLD_MB
    return int(mib * (1 << 20))


def stream_refusal(path: Path, contract: Contract) -> str | None:
    """Why ``path`` is read whole rather than streamed, or None when it is to be streamed.

    Args:
        path: the local file.
        contract: its dataset contract.

    Returns:
        A short reason (small file, format, ``unique``, ``transform``), or None.
    """
    threshold = stream_threshold_bytes(contract)
    size = path.stat().st_size
    if size < threshold:
        return f"{size} bytes, under the streaming threshold of {threshold}"
    if contract.transform:
        return "the contract's Python transform needs the whole table"
    unique = [spec.name for spec in contract.columns if spec.unique]
    if unique:
        return f"unique column(s) {unique} need every value of the file at once"
    try:
        kind = detect_format(path, contract.format)
    except TerminalError:
        return "the format cannot be detected (the whole-file read reports why)"
    if kind not in ("csv", "tsv"):
        return f"{kind} files are not streamed"
    try:
        if encoding_mismatch(read_head(path, 4), contract.reader):
            return "its encoding is not the contract's (the whole-file read reports why)"
    except TerminalError:
        return "the file cannot be read (the whole-file read reports why)"
    return None


@dataclass
class _Merged:
    """One (column, kind) violation accumulated over blocks."""

    column: str | None
    kind: str
    what: str
    rows: list[int] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, violation: Violation, offset: int) -> None:
        self.count += violation.count
        room = MAX_ROWS - len(self.rows)
        self.rows += [row + offset for row in violation.rows[:room]]
        for sample in violation.samples:
            if len(self.samples) < MAX_SAMPLES and sample not in self.samples:
                self.samples.append(sample)

    def violation(self) -> Violation:
        return Violation(
            column=self.column,
            kind=self.kind,
            message=f"{self.count} {self.what}",
            rows=list(self.rows),
            samples=list(self.samples),
            count=self.count,
        )


class StreamingConform:
    """Iterate over a CSV/TSV file's conformed rows, one block at a time.

    Iterating yields tables of valid, typed, transformed rows (output names, the same
    columns and types as :func:`~hopper.contracts.validate.read_and_conform`'s table).
    When the iteration ends normally, :attr:`rows_in`, :attr:`rows_out`, :attr:`rejected`,
    :attr:`rows_rescued`, :attr:`violations` and :attr:`extra_columns` describe the whole
    file, as a :class:`~hopper.contracts.results.ConformResult` does.

    Raises (from the iteration):
        UnreadableFileError: the file cannot be decoded (at any block).
        ContractViolation: as :func:`~hopper.contracts.validate.read_and_conform`, raised
            after the last block; row numbers are file-relative.
        TerminalError: a derived column, ``drop`` or ``partition_by`` step failed on a block
            (raised after the last block, unless the file also has violations).
        StreamFallback: the file must be read whole instead (see the module docstring).
    """

    def __init__(
        self,
        path: Path,
        contract: Contract,
        *,
        source_name: str | None = None,
        ingested_at: dt.datetime | None = None,
        block_size: int | None = None,
    ) -> None:
        """Prepare to stream ``path``.

        Args:
            path: a CSV or TSV file (possibly compressed).
            contract: its dataset contract (without ``transform`` or ``unique`` columns).
            source_name: how to name the file in messages (defaults to the path).
            ingested_at: ingestion time, whose UTC date fills ``_ingest_date``.
            block_size: bytes per block (defaults to :data:`STREAM_BLOCK_BYTES`).
        """
        self.path = path
        self.contract = contract
        self.source = source_name or str(path)
        self.ingested_at = ingested_at or dt.datetime.now(dt.UTC)
        self.block_size = block_size or STREAM_BLOCK_BYTES
        self.rows_in = 0
        self.rows_out = 0
        self.rows_rescued = 0
        self.blocks = 0
        self.rejected: pa.Table | None = None
        self.violations: list[Violation] = []
        self.extra_columns: list[str] = []

    def __iter__(self) -> Iterator[pa.Table]:
        """Yield the valid rows block by block; see the class docstring."""
        contract = self.contract
        merged: dict[tuple[str | None, str], _Merged] = {}
        valid: dict[str, int] = {}
        rejected: list[pa.Table] = []
        first: Inspection | None = None
        transform_error: TerminalError | None = None
        stopped = False
        for raw in iter_csv_for_contract(
            self.path, contract, source=self.source, block_size=self.block_size
        ):
            found = inspect_table(raw, contract)
            if first is None:
                first = found
                self.extra_columns = found.extras
            offset = self.rows_in
            self.rows_in += raw.num_rows
            self.blocks += 1
            for name, count in found.valid_values().items():
                valid[name] = valid.get(name, 0) + count
            for issue in found.issues:
                key = (issue.violation.column, issue.violation.kind)
                entry = merged.setdefault(key, _Merged(key[0], key[1], issue.what))
                entry.add(issue.violation, offset)
            if must_refuse(found, contract):  # type changes are only known at the end
                stopped = True
            if stopped:
                continue  # the file fails: keep checking, stop producing
            table, bad = split_rows(found, contract, first_row=offset + 1)
            if bad is not None:
                rejected.append(bad)
            try:
                if has_transforms(contract):
                    table = apply_transforms(
                        table, contract, source=self.source, ingested_at=self.ingested_at
                    )
                table = place_rescued(table, contract, self.source)
            except TerminalError as exc:
                transform_error, stopped = exc, True
                continue
            self.rows_out += table.num_rows
            self.rows_rescued += rows_rescued(table)
            yield table
        assert first is not None  # iter_csv_for_contract yields at least one table
        self._finish(first, merged, valid, rejected, transform_error)

    def _finish(
        self,
        first: Inspection,
        merged: dict[tuple[str | None, str], _Merged],
        valid: dict[str, int],
        rejected: list[pa.Table],
        transform_error: TerminalError | None,
    ) -> None:
        """Take the whole-file decision once every block has been checked."""
        contract = self.contract
        order = {spec.name: i for i, spec in enumerate(contract.columns)}
        entries = sorted(
            merged.values(),
            key=lambda m: (order.get(m.column or "", len(order)), _kind_rank(m.kind)),
        )
        issues = [
            Issue(entry.violation(), pa.chunked_array([], pa.bool_()), entry.what)
            for entry in entries
        ]
        whole = Inspection(first.raw.slice(0, 0), {}, first.extras, first.structural, issues)
        self.violations = whole.violations
        decide(
            self.path,
            contract,
            whole,
            self.source,
            valid,
            rows=self.rows_in,
            sample_rows=DIFF_SAMPLE_ROWS,
        )
        if transform_error is not None:
            raise transform_error
        if rejected:
            self.rejected = pa.concat_tables(rejected, promote_options="permissive")
            logger.warning("%s: %d row(s) quarantined", self.source, self.rejected.num_rows)
        if self.rows_rescued:
            logger.warning("%s: %d row(s) with rescued values", self.source, self.rows_rescued)
        logger.info(
            "%s: %d row(s) in, %d out (streamed in %d block(s))",
            self.source,
            self.rows_in,
            self.rows_out,
            self.blocks,
        )


def _kind_rank(kind: str) -> int:
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
