"""Partition keys: what a contract's ``partition_by`` entries mean, and the values they give.

An entry is an output column (``region``: its values name the folders) or a time transform
of one (``day(order_ts)``, ``month(created_at)``, ``year(shipped)``). Every lake format reads
the same entries: the Parquet lake names Hive folders after them (:mod:`hopper.sink.names`),
an Iceberg table builds its partition spec from them. The values match Apache Iceberg's
transforms, so both formats agree on which partition a row is in:

- ``day``: the date (``date32``) of a date or timestamp;
- ``month``: the text ``YYYY-MM``;
- ``year``: the year (``int32``);
- ``identity``: the column as it is.

Timestamps with a time zone are taken in UTC; naive timestamps as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

from hopper.errors import ContractViolation

Transform = Literal["identity", "year", "month", "day"]
TRANSFORMS: tuple[Transform, ...] = get_args(Transform)
TIME_TRANSFORMS: tuple[Transform, ...] = tuple(t for t in TRANSFORMS if t != "identity")
PARTITION_FORMS = (
    "a column name (region), or year(column), month(column) or day(column) of a date or "
    "timestamp column (identity(column) is the same as the bare name)"
)
"""The allowed spellings of a ``partition_by`` entry, for error messages."""

_BY_NAME: dict[str, Transform] = {name: name for name in TRANSFORMS}
_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class PartitionKey:
    """One ``partition_by`` entry: the column it is computed from, and how."""

    source: str
    """The output column the partition value is computed from."""
    transform: Transform
    """``identity`` (the column's own values) or a time transform."""

    @property
    def name(self) -> str:
        """The partition's name: the column for identity, else ``<source>_<transform>``."""
        return self.source if self.transform == "identity" else f"{self.source}_{self.transform}"

    @property
    def text(self) -> str:
        """The entry as a contract spells it: ``region`` or ``day(order_ts)``."""
        if self.transform == "identity" and not ("(" in self.source or ")" in self.source):
            return self.source
        return f"{self.transform}({self.source})"


def parse_partition(text: str) -> PartitionKey:
    """Read one ``partition_by`` entry.

    Args:
        text: ``region`` (identity), or ``day(order_ts)``, ``month(x)``, ``year(x)`` (spaces
            around the column name are ignored); ``identity(x)`` is the same as ``x``.

    Returns:
        The partition key.

    Raises:
        ValueError: an unknown transform (``week(x)``, ``bucket(4, x)``) or malformed text;
            the message names the allowed forms.
    """
    call = _CALL.match(text)
    if call is None:
        if not text.strip() or "(" in text or ")" in text:
            raise ValueError(f"partition_by entry {text!r} is not {PARTITION_FORMS}")
        return PartitionKey(text, "identity")
    transform, source = _BY_NAME.get(call.group(1)), call.group(2).strip()
    if transform is None:
        raise ValueError(
            f"partition_by entry {text!r}: unknown transform {call.group(1)!r}; use "
            f"{PARTITION_FORMS}"
        )
    if not source or (transform != "identity" and any(c in source for c in "(),")):
        raise ValueError(
            f"partition_by entry {text!r}: {transform}() takes one column name; use "
            f"{PARTITION_FORMS}"
        )
    return PartitionKey(source, transform)


def parse_partitions(texts: list[str]) -> list[PartitionKey]:
    """Read every ``partition_by`` entry (see :func:`parse_partition`)."""
    return [parse_partition(text) for text in texts]


def is_time_type(data_type: pa.DataType) -> bool:
    """Whether a time transform applies to a column of this type (a date or a timestamp)."""
    return bool(pa.types.is_date(data_type) or pa.types.is_timestamp(data_type))


def transform_type_error(key: PartitionKey, data_type: pa.DataType) -> str | None:
    """Why ``key`` cannot be computed from a column of ``data_type``, or None if it can."""
    if key.transform == "identity" or is_time_type(data_type):
        return None
    return (
        f"partition_by {key.text!r}: column {key.source!r} is {data_type}, not a date or "
        f"timestamp, so {key.transform}() does not apply. Fix: declare {key.source!r} with a "
        f"date or timestamp type (with its format), or partition by the column itself"
    )


def partition_values(table: pa.Table, keys: list[PartitionKey]) -> pa.Table:
    """The partition values of ``table``'s rows: one column per key, named ``key.name``.

    Args:
        table: output rows holding every key's source column.
        keys: the partition keys, in order.

    Returns:
        A table of ``table.num_rows`` rows; nulls stay null.

    Raises:
        ContractViolation: a source column is missing, or a time transform's is not a date
            or timestamp.
    """
    columns = []
    for key in keys:
        if key.source not in table.column_names:
            raise ContractViolation(
                f"partition_by {key.text!r}: column {key.source!r} is not in the output "
                f"{table.column_names}. Fix: change partition_by in the contract (or the "
                "transform that drops it); then replay the file."
            )
        column = table[key.source]
        error = transform_type_error(key, column.type)
        if error is not None:
            raise ContractViolation(
                f"{error}; then replay the file.",
                violations=[
                    {"column": key.source, "kind": "partition", "message": error, "count": 0}
                ],
            )
        columns.append(_transformed(column, key.transform))
    return pa.Table.from_arrays(columns, names=[key.name for key in keys])


def _transformed(column: pa.ChunkedArray, transform: Transform) -> pa.ChunkedArray:
    if transform == "identity":
        return column
    day = _utc_day(column)
    if transform == "day":
        return day
    if transform == "month":
        return pc.strftime(day, format="%Y-%m")
    return pc.cast(pc.year(day), pa.int32())


def _utc_day(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The ``date32`` of each date or timestamp (zoned timestamps in UTC, naive as they are)."""
    data_type = column.type
    if pa.types.is_timestamp(data_type) and data_type.tz is not None:
        # A zoned timestamp stores UTC instants: read them as naive UTC wall-clock times, so
        # no compute function below applies the zone.
        column = pc.cast(pc.cast(column, pa.int64()), pa.timestamp(data_type.unit))
    return pc.cast(column, pa.date32())


__all__ = [
    "PARTITION_FORMS",
    "TIME_TRANSFORMS",
    "TRANSFORMS",
    "PartitionKey",
    "Transform",
    "is_time_type",
    "parse_partition",
    "parse_partitions",
    "partition_values",
    "transform_type_error",
]
