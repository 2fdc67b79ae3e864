"""A dataset's table schema and partition spec, from its rows and its contract.

Rows reach a table as Arrow. Most Arrow types are Iceberg types as they are; the rest are
mapped to the Iceberg type that holds every value exactly (:func:`iceberg_arrow_type`):
timestamps in any zone become UTC instants (``timestamptz``, microseconds), ``date64`` a
date, ``time32`` a ``time``, ``uint32`` a ``long``, ``uint64`` a ``decimal(20, 0)``.

The table is made from the first batch's schema, with the contract's ``partition_by`` as its
partition spec (identity, or ``year``/``month``/``day`` of a date or timestamp). Later
batches may add columns (a contract that evolves, ``extra_columns: evolve``) and widen types
as Iceberg allows (int → long, float → double, a larger decimal precision); anything else —
a column whose type changed in a way no reader could follow — is refused with the way out
(:class:`SchemaConflict`), never written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from hopper.contracts.partitions import PartitionKey, parse_partition
from hopper.errors import TerminalError

if TYPE_CHECKING:
    from pyiceberg.table import Table


class SchemaConflict(TerminalError):
    """A source's columns cannot be written to its table without breaking it."""


def iceberg_arrow_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type a value of type ``t`` is written to a table as (see the module doc)."""
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_time(t):
        return pa.time64("us")
    if pa.types.is_uint64(t):
        return pa.decimal128(20, 0)
    if pa.types.is_uint32(t):  # pyiceberg would make it an int, too small for its values
        return pa.int64()
    if pa.types.is_dictionary(t):
        return iceberg_arrow_type(t.value_type)
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_decimal256(t) and t.precision <= 38:
        return pa.decimal128(t.precision, t.scale)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(iceberg_arrow_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, iceberg_arrow_type(f.type)) for f in t])
    return t


def for_table(table: pa.Table) -> pa.Table:
    """``table`` with every column cast to its :func:`iceberg_arrow_type`.

    Values are kept, except what the table's units cannot hold: a timestamp's nanoseconds
    (Iceberg keeps microseconds) and a ``date64``'s time of day.
    """
    columns = []
    changed = False
    for column, field in zip(table.columns, table.schema, strict=True):
        target = iceberg_arrow_type(field.type)
        if not target.equals(field.type):
            cut = pa.types.is_temporal(field.type)  # sub-units only; other casts stay safe
            column = pc.cast(column, target, safe=not cut)
            changed = True
        columns.append(column)
    return pa.table(columns, names=table.column_names) if changed else table


def _transform(name: str) -> Any:
    from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform, YearTransform

    return {
        "identity": IdentityTransform,
        "year": YearTransform,
        "month": MonthTransform,
        "day": DayTransform,
    }[name]()


def partition_keys(partition_by: list[str]) -> list[PartitionKey]:
    """The contract's ``partition_by`` entries, parsed."""
    return [parse_partition(text) for text in partition_by]


def create_table(
    catalog: Any,
    identifier: str,
    location: str,
    schema: pa.Schema,
    partition_by: list[str],
    properties: dict[str, str],
) -> Table:
    """Create a dataset's table: schema, partition spec and properties in one commit."""
    txn = catalog.create_table_transaction(
        identifier, schema=schema, location=location, properties=properties
    )
    keys = partition_keys(partition_by)
    if keys:
        with txn.update_spec() as spec:
            for key in keys:
                spec.add_field(key.source, _transform(key.transform), key.name)
    return txn.commit_transaction()  # type: ignore[no-any-return]


def evolve(table: Table, schema: pa.Schema) -> Table:
    """Add ``schema``'s new columns to ``table`` and widen what Iceberg lets widen.

    Returns:
        The table after the change (itself if nothing changed).

    Raises:
        SchemaConflict: a column's type cannot become the table's, or the reverse.
    """
    current = table.schema().as_arrow()
    changes = [
        f
        for f in schema
        if current.get_field_index(f.name) < 0 or not _fits(f.type, current.field(f.name).type)
    ]
    if not changes:
        return table
    try:
        with table.update_schema() as update:
            update.union_by_name(pa.schema(changes))
    except Exception as exc:  # pyiceberg raises ValueError or its own ValidationError
        names = ", ".join(f"{f.name} ({f.type})" for f in changes)
        raise SchemaConflict(
            f"{names}: cannot become columns of table {'.'.join(table.name())} ({exc}). "
            "Iceberg can add columns and widen int → long, float → double and a decimal's "
            "precision, nothing else. To change a column's type or name, write the new "
            "one as a new column (rename or derive it in the contract), or make a new "
            "dataset and move the rows over; see docs/tables.md, 'Migrating a table'."
        ) from exc
    return table


def _fits(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether values of ``source`` go into a column of ``target`` as they are or widened."""
    if source.equals(target):
        return True
    if pa.types.is_string(source) or pa.types.is_large_string(source):
        return bool(pa.types.is_string(target) or pa.types.is_large_string(target))
    if pa.types.is_binary(source) or pa.types.is_large_binary(source):
        return bool(pa.types.is_binary(target) or pa.types.is_large_binary(target))
    if pa.types.is_integer(source) and pa.types.is_integer(target):
        return bool(source.bit_width <= target.bit_width)
    if pa.types.is_floating(source) and pa.types.is_floating(target):
        return bool(source.bit_width <= target.bit_width)
    if pa.types.is_decimal(source) and pa.types.is_decimal(target):
        return bool(source.scale == target.scale and source.precision <= target.precision)
    return False


def conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` as the table's Arrow ``schema``: its columns in order, absent ones null.

    Raises:
        SchemaConflict: a column cannot be cast to the table's type.
    """
    columns = []
    for field in schema:
        if rows.schema.get_field_index(field.name) < 0:
            columns.append(pa.nulls(rows.num_rows, field.type))
            continue
        column = rows.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = pc.cast(column, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaConflict(
                    f"column {field.name!r} ({column.type}) cannot be written as the "
                    f"table's {field.type}: {exc}"
                ) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


class ColumnVsTable(BaseModel):
    """How one column of a file's rows meets its dataset's table (``hopper contract diff``)."""

    column: str = Field(description="The output column's name.")
    status: Literal["ok", "widens", "new", "absent", "conflict"] = Field(
        description="ok: written as is; widens: the table's type is widened (int → long, "
        "float → double, a decimal's precision); new: added to the table; absent: the table "
        "has it, these rows get nulls; conflict: the file would be quarantined."
    )
    rows_type: str | None = Field(description="The type the rows bring (None: absent).")
    table_type: str | None = Field(description="The table's type (None: new).")


def _widens(table_type: pa.DataType, rows_type: pa.DataType) -> bool:
    """Whether Iceberg can widen a column of ``table_type`` to hold ``rows_type``."""
    if pa.types.is_decimal(table_type) and pa.types.is_decimal(rows_type):
        return bool(
            table_type.scale == rows_type.scale and table_type.precision <= rows_type.precision
        )
    return _fits(table_type, rows_type)


def compare_to_table(
    rows: pa.Schema, table: pa.Schema, ignore: tuple[str, ...]
) -> list[ColumnVsTable]:
    """Each column of ``rows`` (and of ``table``) as ingesting those rows would treat it.

    Args:
        rows: the rows' schema, as a file's contract outputs them.
        table: the table's Arrow schema now.
        ignore: columns Hopper adds itself (lineage), left out.
    """
    found: list[ColumnVsTable] = []
    for field in rows:
        if field.name in ignore:
            continue
        mine = iceberg_arrow_type(field.type)
        index = table.get_field_index(field.name)
        if index < 0:
            found.append(ColumnVsTable(column=field.name, status="new", rows_type=str(mine),
                                       table_type=None))  # fmt: skip
            continue
        theirs = table.field(index).type
        status: Literal["ok", "widens", "conflict"] = (
            "ok" if _fits(mine, theirs) else "widens" if _widens(theirs, mine) else "conflict"
        )
        found.append(
            ColumnVsTable(
                column=field.name, status=status, rows_type=str(mine), table_type=str(theirs)
            )
        )
    for field in table:
        if field.name not in ignore and rows.get_field_index(field.name) < 0:
            found.append(ColumnVsTable(column=field.name, status="absent", rows_type=None,
                                       table_type=str(field.type)))  # fmt: skip
    return found
