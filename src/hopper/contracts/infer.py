"""Propose a contract from a sample file, for ``hopper init``-style onboarding of a dataset.

The proposal keeps column names exactly as the file spells them and uses the types Arrow
infers. It stays deliberately permissive: it only adds checks the sample clearly supports
(non-nullable columns, small closed sets of labels) and never min/max bounds, which would
reject legitimate future data.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from hopper.contracts.arrow_types import parse_arrow_type, type_to_string
from hopper.contracts.model import ColumnSpec, Contract, ReaderOptions
from hopper.contracts.read import (
    DELIMITERS,
    bom_encoding,
    csv_delimiter,
    detect_format,
    read_head,
    read_table,
    sniff_delimiter,
)
from hopper.errors import ConfigError, UndecodableTextError
from hopper.lineage import reserved_name

logger = logging.getLogger(__name__)

ALLOWED_MIN_ROWS = 50
ALLOWED_MAX_VALUES = 10
ALLOWED_MIN_REPEATS = 5


def infer_contract(path: Path, dataset: str, *, sample_rows: int = 100_000) -> Contract:
    """Read a file and propose a contract for its dataset.

    Args:
        path: a representative file (any supported format, possibly compressed).
        dataset: the dataset name for the contract.
        sample_rows: rows to look at for nullability and allowed-value checks.

    Returns:
        A contract that the file itself satisfies.

    Raises:
        UnreadableFileError: the file cannot be read.
        ConfigError: the dataset name or the file's header cannot make a valid contract
            (e.g. duplicate column names).
    """
    path = Path(path)
    kind = detect_format(path)
    reader = ReaderOptions()
    head = read_head(path)
    if kind != "parquet":
        reader.encoding = text_encoding(head)
    if kind in ("csv", "tsv"):
        reader.skip_rows = preamble_lines(head, reader, kind)
    try:
        sample = read_table(path, reader, kind, max_rows=sample_rows)
    except UndecodableTextError:
        if reader.encoding != "utf-8":
            raise
        logger.info("%s: not UTF-8 beyond its first bytes, retrying as Latin-1", path)
        reader.encoding = "latin-1"
        sample = read_table(path, reader, kind, max_rows=sample_rows)
    if reader.skip_rows:
        logger.info("%s: skipping %d line(s) above the header", path, reader.skip_rows)
    if kind == "csv":
        delimiter = csv_delimiter(head, reader, kind)
        reader.delimiter = delimiter if delimiter != "," else None
    columns = [
        _propose_column(field.name, sample.column(i)) for i, field in enumerate(sample.schema)
    ]
    try:
        return Contract(name=dataset, format=kind, reader=reader, columns=columns)
    except ValidationError as exc:
        raise ConfigError(f"{path}: cannot propose a contract for {dataset!r}: {exc}") from exc


def text_encoding(head: bytes) -> str:
    """The encoding of a text file, judged from its first bytes.

    A UTF-16/UTF-32 byte-order mark (a spreadsheet's "Unicode text") names its encoding;
    text that is valid UTF-8 is UTF-8; otherwise Latin-1, which decodes anything — unless
    bytes 0x80–0x9F (control characters in Latin-1) occur and all mean something in
    Windows-1252 (€, curly quotes, dashes: a Windows export), which is then proposed.
    """
    bom = bom_encoding(head)
    if bom is not None:
        return bom
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not (exc.reason == "unexpected end of data" and exc.start >= len(head) - 3):
            return "cp1252" if _windows_1252(head) else "latin-1"
    return "utf-8"


def _windows_1252(head: bytes) -> bool:
    if not any(0x80 <= byte <= 0x9F for byte in head):
        return False
    try:
        head.decode("cp1252")
    except UnicodeDecodeError:
        return False
    return True


PREAMBLE_MAX_LINES = 20
"""Most lines skipped above a CSV header by :func:`preamble_lines`."""


def preamble_lines(head: bytes, reader: ReaderOptions, kind: str) -> int:
    """Lines above a CSV's header that are not part of its table: comments, titles, blanks.

    A line counts only if it is blank, starts with ``#`` or holds none of the delimiters,
    and only when the lines after it split evenly (header and rows with one field count);
    otherwise nothing is skipped and reading reports the file as it is.
    """
    text = head.decode(reader.encoding, errors="replace")
    lines = text.splitlines()
    if lines and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # cut short by the sample
    skip = 0
    while (
        skip < min(PREAMBLE_MAX_LINES, len(lines))
        and _preamble_like(lines[skip])
        and not _splits_evenly(lines[skip:], kind)
    ):
        skip += 1
    return skip if skip and _splits_evenly(lines[skip:], kind) else 0


def _preamble_like(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#") or not any(d in line for d in DELIMITERS)


def _splits_evenly(lines: list[str], kind: str) -> bool:
    """Whether a header and at least two rows below it have one number (≥ 2) of fields."""
    rows = [line for line in lines[:50] if line.strip()]
    if len(rows) < 3:
        return False
    delimiter = "\t" if kind == "tsv" else sniff_delimiter("\n".join(rows) + "\n")
    counts = {len(fields) for fields in csv.reader(rows, delimiter=delimiter)}
    return len(counts) == 1 and counts.pop() >= 2


def _propose_column(name: str, values: pa.ChunkedArray) -> ColumnSpec:
    nullable = len(values) == 0 or values.null_count > 0
    # A column named like Hopper's own (_source_uri…) must be renamed to be kept at all.
    rename = (name.strip().strip("_") or "column") if reserved_name(name) else None
    temporal = _temporal_format(name, values)
    if temporal is not None:
        return ColumnSpec(
            name=name, type=temporal[0], format=temporal[1], nullable=nullable, rename=rename
        )
    return ColumnSpec(
        name=name,
        type=_type_name(values.type),
        nullable=nullable,
        allowed=_allowed_values(values),
        rename=rename,
    )


# Date spellings Arrow does not infer by itself (it reads ISO 8601 only), unambiguous first.
DATE_FORMATS = [
    "%Y/%m/%d", "%Y.%m.%d", "%d.%m.%Y",
    "%b %d %Y", "%b %d, %Y", "%d %b %Y", "%d-%b-%Y", "%B %d %Y", "%B %d, %Y", "%d %B %Y",
    "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%m-%d-%Y",
]  # fmt: skip
"""Tried on string columns by :func:`_temporal_format`, bare and followed by a time."""

_DAY_MONTH_SWAPS = {"%d/%m/%Y": "%m/%d/%Y", "%d-%m-%Y": "%m-%d-%Y"}
_PROBE_VALUES = 20


def _temporal_format(name: str, values: pa.ChunkedArray) -> tuple[str, str] | None:
    """``(type, format)`` if every value of a text column is a date or timestamp in one format.

    A format is first tried on a few distinct values, then on all of them. Dates that read
    both day-first and month-first (no day above 12 in the sample) are left as text, with
    a warning: guessing would silently swap days and months.
    """
    if not pa.types.is_string(values.type) or len(values) == values.null_count:
        return None
    distinct = pc.unique(values.drop_null())
    probe = distinct.slice(0, _PROBE_VALUES)
    found: list[tuple[str, str]] = []
    for date_format in DATE_FORMATS:
        for fmt, kind in (
            (date_format, "date32"),
            (f"{date_format} %H:%M:%S", "timestamp[s]"),
            (f"{date_format} %H:%M", "timestamp[s]"),
        ):
            if _all_parse(probe, fmt) and _all_parse(distinct, fmt):
                found.append((kind, fmt))
    if not found:
        return None
    kind, fmt = found[0]
    swapped = _DAY_MONTH_SWAPS.get(fmt.split(" ", 1)[0])
    if swapped is not None and any(f.startswith(swapped) for _, f in found):
        logger.warning(
            "column %r holds dates that read both day-first and month-first (%s or %s); "
            "proposing string: set its type and format yourself",
            name,
            fmt,
            fmt.replace(fmt.split(" ", 1)[0], swapped),
        )
        return None
    return kind, fmt


def _all_parse(values: pa.Array, fmt: str) -> bool:
    parsed = pc.strptime(values, format=fmt, unit="s", error_is_null=True)
    return bool(parsed.null_count == 0)


def _type_name(data_type: pa.DataType) -> str:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_null(data_type) or pa.types.is_large_string(data_type):
        return "string"
    text = type_to_string(data_type)
    try:
        parse_arrow_type(text)
    except ValueError:
        logger.warning("type %s has no contract spelling; proposing string", text)
        return "string"
    return text


def _allowed_values(values: pa.ChunkedArray) -> list[str] | None:
    """A closed set of labels, when a string column clearly repeats a few values."""
    if not pa.types.is_string(values.type):
        return None
    if len(values) - values.null_count < ALLOWED_MIN_ROWS:
        return None
    counts = pc.value_counts(values.drop_null())
    if len(counts) > ALLOWED_MAX_VALUES:
        return None
    if pc.min(counts.field("counts")).as_py() < ALLOWED_MIN_REPEATS:
        return None
    return sorted(counts.field("values").to_pylist())
