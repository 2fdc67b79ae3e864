"""Propose a contract from a sample file, for ``hopper init``-style onboarding of a dataset.

The proposal keeps column names exactly as the file spells them and uses the types Arrow
infers. It stays deliberately permissive: it only adds checks the sample clearly supports
(non-nullable columns, small closed sets of labels) and never min/max bounds, which would
reject legitimate future data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from hopper.contracts.model import (
    ColumnSpec,
    Contract,
    ReaderOptions,
    parse_arrow_type,
    type_to_string,
)
from hopper.contracts.read import csv_delimiter, detect_format, read_head, read_table
from hopper.errors import ConfigError, UnreadableFileError

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
        UnreadableFileError: the file cannot be read (as UTF-8 nor Latin-1 for text).
        ConfigError: the dataset name or the file's header cannot make a valid contract
            (e.g. duplicate column names).
    """
    path = Path(path)
    kind = detect_format(path)
    reader = ReaderOptions()
    try:
        sample = read_table(path, reader, kind, max_rows=sample_rows)
    except UnreadableFileError:
        if kind == "parquet":
            raise
        logger.info("%s: not readable as UTF-8, retrying as Latin-1", path)
        reader = ReaderOptions(encoding="latin-1")
        sample = read_table(path, reader, kind, max_rows=sample_rows)
    if kind == "csv":
        delimiter = csv_delimiter(read_head(path), reader, kind)
        reader.delimiter = delimiter if delimiter != "," else None
    columns = [
        _propose_column(field.name, sample.column(i)) for i, field in enumerate(sample.schema)
    ]
    try:
        return Contract(name=dataset, format=kind, reader=reader, columns=columns)
    except ValidationError as exc:
        raise ConfigError(f"{path}: cannot propose a contract for {dataset!r}: {exc}") from exc


def _propose_column(name: str, values: pa.ChunkedArray) -> ColumnSpec:
    nullable = len(values) == 0 or values.null_count > 0
    return ColumnSpec(
        name=name,
        type=_type_name(values.type),
        nullable=nullable,
        allowed=_allowed_values(values),
    )


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
