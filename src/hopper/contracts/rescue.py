"""Rescue bad values instead of refusing their file or setting their rows aside.

With ``bad_rows: rescue`` (after Databricks Auto Loader's ``_rescued_data``) every row of a
file the :mod:`~hopper.contracts.verdict` lets in is kept. A value that does not convert to
its column's type, or fails one of the column's checks (``min``, ``max``, ``allowed``,
``pattern``, ``unique``), becomes the column's ``default`` — or null without one, and always
null in a ``unique`` column, where one default in several rows would break uniqueness again
— and the value as read goes into the row's :data:`~hopper.lineage.RESCUED_DATA` column: a
JSON object text from the column's name in the file to that value (null when nothing in the
row was rescued). Keys follow the contract's column order.

The value kept is the file's text for values that did not convert and for columns read as
text (``string`` columns, columns with a ``format``, zoned timestamps). A value that
converted and then failed a check in a column the CSV reader parses directly (numbers,
booleans, dates without a ``format``) is kept as Arrow's text of the converted value (``7``
for ``007``): such a column's text is only read when some value of the file fails to parse,
and a row's rescued data must depend neither on other rows nor on whether the file was
streamed. Each value is cut to :data:`RESCUE_MAX_CHARS` characters.

Only a column that can take the replacement can be rescued: a bad value in a column that is
not nullable and has no ``default`` (or is ``unique``, whose rescued values are null), and a
null in a non-nullable column without ``default``, make the verdict refuse the whole file,
as ``bad_rows: reject`` would (:func:`unrescuable` says why). Everything is Arrow compute,
a column at a time; the JSON text is built for the rescued rows only.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hopper.contracts.arrow_types import to_arrow_scalar
from hopper.contracts.checks import Inspection
from hopper.contracts.convert import as_chunked, false_mask
from hopper.contracts.model import ColumnSpec, Contract
from hopper.contracts.read.csv import fast_type
from hopper.contracts.results import Violation
from hopper.errors import ContractViolation
from hopper.lineage import RESCUED_DATA

RESCUE_MAX_CHARS = 1_000
"""Characters of a rescued value kept in ``_rescued_data``; longer values are cut."""

# JSON's short escapes; the other control characters are written \u00XX.
_SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def unrescuable(violation: Violation, contract: Contract) -> str | None:
    """Why a row-level violation cannot be rescued under ``contract``, or None if it can.

    Args:
        violation: a row-level violation of a declared column.
        contract: a contract with ``bad_rows: rescue``.
    """
    if violation.column is None:
        return None
    spec = contract.column(violation.column)
    if violation.kind == "null":
        return (
            f"column {spec.name!r} has null value(s) but is not nullable and has no default, "
            "so there is nothing to rescue them with"
        )
    if spec.nullable or _takes_default(spec):
        return None
    kept = "unique, so its rescued values become null" if spec.unique else "has no default"
    return (
        f"column {spec.name!r}'s bad value(s) would be rescued as null, but the column is not "
        f"nullable and {kept}"
    )


def rescue_rows(table: pa.Table, found: Inspection, contract: Contract) -> pa.Table:
    """Replace the bad values of ``table`` and add the ``_rescued_data`` column.

    Args:
        table: every row of ``found`` in output form (see :func:`~hopper.contracts.split.
            output_table`).
        found: its inspection; every issue in it is rescuable (the verdict saw to that).
        contract: a contract with ``bad_rows: rescue``.

    Returns:
        ``table`` with each rescued value replaced by its column's default or null, and
        ``_rescued_data`` last (null on rows where nothing was rescued).
    """
    masks: dict[str, pa.ChunkedArray] = {}
    for issue in found.issues:
        if issue.violation.column is not None:
            before = masks.get(issue.violation.column, false_mask(table.num_rows))
            masks[issue.violation.column] = as_chunked(pc.or_(before, issue.mask))
    rescued = [(spec, masks[spec.name]) for spec in contract.columns if spec.name in masks]
    if not rescued:
        return table.append_column(RESCUED_DATA, pa.nulls(table.num_rows, pa.string()))
    anywhere = false_mask(table.num_rows)
    for _spec, mask in rescued:
        anywhere = as_chunked(pc.or_(anywhere, mask))
    rows = pc.indices_nonzero(anywhere)
    entries = []
    for spec, mask in rescued:
        typed = table.column(spec.output_name)
        shown = _shown(spec, found.raw.column(spec.name).take(rows), typed.take(rows))
        entry = pc.binary_join_element_wise(f",{json.dumps(spec.name)}:", _json_text(shown), "")
        entries.append(pc.if_else(mask.take(rows), entry, ""))
        index = table.schema.get_field_index(spec.output_name)
        table = table.set_column(
            index, spec.output_name, pc.if_else(mask, _fill(spec, typed), typed)
        )
    joined = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*entries, ""), 1)
    objects = pc.binary_join_element_wise("{", joined, "}", "")
    column = pc.replace_with_mask(
        pa.nulls(table.num_rows, pa.string()), anywhere.combine_chunks(), _array(objects)
    )
    return table.append_column(RESCUED_DATA, as_chunked(column))


def place_rescued(table: pa.Table, contract: Contract, source: str) -> pa.Table:
    """After the contract's transforms: ``_rescued_data`` last, as text, and only with rescue.

    Args:
        table: the transformed rows.
        contract: the dataset contract.
        source: the file's name or URI, for messages.

    Raises:
        ContractViolation: the contract's Python transform dropped ``_rescued_data`` (its
            rescued values would be lost), changed it to something that is not text, or
            made one for a dataset without ``bad_rows: rescue``.
    """
    names = table.column_names
    fix = f"Fix: correct the transform {contract.transform!r}; then replay the file."
    if contract.bad_rows != "rescue":
        if RESCUED_DATA in names:
            raise ContractViolation(
                f"{source}: the output has a column {RESCUED_DATA!r}, which Hopper writes only "
                f"for bad_rows: rescue. {fix}"
            )
        return table
    if names.count(RESCUED_DATA) != 1:
        raise ContractViolation(
            f"{source}: the output has {names.count(RESCUED_DATA)} column(s) "
            f"{RESCUED_DATA!r}, where bad_rows: rescue keeps exactly one (the rescued values "
            f"as read). {fix}"
        )
    column = table.column(RESCUED_DATA)
    try:
        column = column.cast(pa.string())  # a pandas round trip may give null or large text
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ContractViolation(
            f"{source}: column {RESCUED_DATA!r} is {column.type}, not text: {exc}. {fix}"
        ) from exc
    return table.drop_columns([RESCUED_DATA]).append_column(RESCUED_DATA, column)


def rows_rescued(table: pa.Table) -> int:
    """Rows of ``table`` with a rescued value (0 without a ``_rescued_data`` column)."""
    if RESCUED_DATA not in table.column_names:
        return 0
    column = table.column(RESCUED_DATA)
    return len(column) - int(column.null_count)


def _takes_default(spec: ColumnSpec) -> bool:
    return spec.default is not None and not spec.unique


def _fill(spec: ColumnSpec, typed: pa.ChunkedArray) -> pa.Scalar:
    if _takes_default(spec):
        return to_arrow_scalar(spec.default, typed.type)
    return pa.scalar(None, typed.type)


def _shown(spec: ColumnSpec, raw: pa.ChunkedArray, typed: pa.ChunkedArray) -> pa.ChunkedArray:
    """The rescued values as text, as kept in ``_rescued_data`` (see the module docstring)."""
    text = _as_text(raw)
    if pa.types.is_string(fast_type(spec)):
        return text
    converted = pc.and_(pc.is_valid(raw), pc.is_valid(typed))
    return as_chunked(pc.if_else(converted, _as_text(typed), text))


def _json_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each value as a JSON string (cut to :data:`RESCUE_MAX_CHARS`), a null as ``null``."""
    text = pc.utf8_slice_codeunits(values, 0, RESCUE_MAX_CHARS)
    text = pc.replace_substring(text, "\\", "\\\\")
    text = pc.replace_substring(text, '"', '\\"')
    if pc.any(pc.match_substring_regex(text, r"[\x00-\x1f]")).as_py():
        for code in range(0x20):
            escape = _SHORT_ESCAPES.get(code, f"\\u{code:04x}")
            text = pc.replace_substring(text, chr(code), escape)
    return as_chunked(pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null"))


def _as_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Values as text: Arrow's cast, or Python's ``str`` for types Arrow cannot cast."""
    if pa.types.is_string(values.type):
        return values
    try:
        return as_chunked(pc.cast(values, pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        items: list[Any] = values.to_pylist()
        return pa.chunked_array([[None if v is None else str(v) for v in items]], pa.string())


def _array(values: Any) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


__all__ = ["RESCUE_MAX_CHARS", "place_rescued", "rescue_rows", "rows_rescued", "unrescuable"]
