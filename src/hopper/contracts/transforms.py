"""Contract transforms: what happens to validated rows before they are written.

Validation says whether a file keeps its promise; these steps shape what lands in the lake,
in a fixed order so a contract reads top to bottom:

1. ``derived`` columns, computed with :mod:`hopper.contracts.expr` (Arrow compute);
2. ``transform``, a Python callable named ``"package.module:function"`` for anything the
   expression language cannot say;
3. ``drop``, columns that are used above but not written;
4. the ``_ingest_date`` pseudo-column, when ``partition_by`` names it;
5. a check that ``partition_by``'s columns are there, with a date or timestamp type under a
   time transform (``day(order_ts)``), so a file that cannot be partitioned is refused here,
   with its name, rather than when it is written.

Column defaults are applied earlier, during conversion, so that ``nullable: false`` columns
with a ``default`` are filled rather than rejected. Every failure here is a
:class:`~hopper.errors.TerminalError`: retrying the same file with the same contract cannot
succeed, so the file is quarantined with a reason naming the step and how to fix it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hopper.contracts.expr import ExpressionError, parse_expression
from hopper.contracts.model import INGEST_DATE, Contract
from hopper.contracts.partitions import PartitionKey, transform_type_error
from hopper.errors import ContractViolation, TerminalError, TransientError

logger = logging.getLogger(__name__)


def has_transforms(contract: Contract) -> bool:
    """Whether the contract asks for any step of :func:`apply_transforms`."""
    return bool(
        contract.derived
        or contract.transform
        or contract.drop
        or any(
            key.source == INGEST_DATE or key.transform != "identity"
            for key in contract.partition_keys
        )
    )


def apply_transforms(
    table: pa.Table, contract: Contract, *, source: str, ingested_at: dt.datetime
) -> pa.Table:
    """Apply a contract's derived columns, transform, drops and ingestion-date partition.

    Then check that the partitions can be computed from the result (see the module
    docstring).

    Args:
        table: validated, typed rows with output column names.
        contract: the dataset contract.
        source: the file's name or URI, for messages.
        ingested_at: when the file is ingested; its UTC date fills ``_ingest_date``.

    Returns:
        The table to write.

    Raises:
        ContractViolation: a derived column cannot be computed or cast, a ``drop`` or
            ``partition_by`` column is absent after the transform, a time transform's column
            is not a date or timestamp, or its partition name is also a column's.
        TerminalError: the transform cannot be imported, raises, or returns something else
            than a pyarrow Table or a pandas DataFrame.
    """
    for derived in contract.derived:
        try:
            values = parse_expression(derived.expr).evaluate(table)
            target = derived.arrow_type()
            if target is not None:
                values = pc.cast(values, target)
        except (ExpressionError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ContractViolation(
                f"{source}: derived column {derived.name!r} = {derived.expr!r} failed: "
                f"{str(exc).splitlines()[0]}. Fix: correct the expression or its type in the "
                "contract's derived section (or the data it reads), then replay the file.",
                violations=[
                    {"column": derived.name, "kind": "derived", "message": str(exc), "count": 0}
                ],
            ) from exc
        table = table.append_column(derived.name, values)
    if contract.transform:
        table = _run_transform(table, contract, source)
    table = _drop(table, contract, source)
    keys = contract.partition_keys
    if any(key.source == INGEST_DATE for key in keys):
        day = pa.scalar(ingested_at.astimezone(dt.UTC).date(), pa.date32())
        table = table.append_column(INGEST_DATE, pa.repeat(day, table.num_rows))
    _check_partitions(table, keys, contract, source)
    return table


def _check_partitions(
    table: pa.Table, keys: list[PartitionKey], contract: Contract, source: str
) -> None:
    """Check that every partition can be computed from ``table`` (see the module docstring)."""
    missing = list(dict.fromkeys(k.source for k in keys if k.source not in table.column_names))
    if missing:
        raise ContractViolation(
            f"{source}: partition_by column(s) {missing} are not in the output "
            f"{table.column_names}. Fix: make the transform {contract.transform!r} keep them, "
            "or change partition_by in the contract; then replay the file."
        )
    columns = {name.casefold(): name for name in table.column_names}
    for key in keys:
        if key.transform == "identity":
            continue
        error = transform_type_error(key, table.schema.field(key.source).type)
        if error is not None:
            raise ContractViolation(
                f"{source}: {error}; then replay the file.",
                violations=[
                    {"column": key.source, "kind": "partition", "message": error, "count": 0}
                ],
            )
        clash = columns.get(key.name.casefold())
        if clash is not None:
            raise ContractViolation(
                f"{source}: partition_by {key.text!r} makes folders named {key.name!r}, but "
                f"the output has a column {clash!r} too (names compare ignoring case), so "
                "readers would see it twice. Fix: rename or drop that column (or make the "
                "transform do so); then replay the file."
            )


def _drop(table: pa.Table, contract: Contract, source: str) -> pa.Table:
    absent = [name for name in contract.drop if name not in table.column_names]
    if absent:
        raise ContractViolation(
            f"{source}: drop names column(s) {absent} that are not in the output "
            f"{table.column_names}. Fix: correct drop in the contract (or the transform "
            f"{contract.transform!r}); then replay the file."
        )
    return table.drop_columns(contract.drop) if contract.drop else table


def load_transform(spec: str) -> Callable[[Any], Any]:
    """Import the callable a contract's ``transform`` names.

    Args:
        spec: ``"package.module:function"``; the module must be importable by the worker
            (installed, or on ``PYTHONPATH``).

    Returns:
        The callable.

    Raises:
        TerminalError: the module or the function cannot be found or imported, or it is not
            callable.
    """
    module_name, _, function_name = spec.partition(":")
    hint = (
        "Fix: check the transform key in the contract and that its module is importable by "
        "the worker (installed or on PYTHONPATH); then replay the file."
    )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the module's own code may raise anything while importing
        raise TerminalError(
            f"transform {spec!r}: cannot import module {module_name!r}: "
            f"{type(exc).__name__}: {exc}. {hint}"
        ) from exc
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        what = "has no attribute" if function is None else "has a non-callable"
        raise TerminalError(
            f"transform {spec!r}: module {module_name!r} {what} {function_name!r}. {hint}"
        )
    return function  # type: ignore[no-any-return]


def _run_transform(table: pa.Table, contract: Contract, source: str) -> pa.Table:
    spec = contract.transform or ""
    try:
        function = load_transform(spec)
    except TerminalError as exc:
        raise TerminalError(f"{source}: {exc}") from exc
    data: Any = table.to_pandas() if contract.transform_input == "pandas" else table
    try:
        result = function(data)
    except (TransientError, TerminalError):
        raise  # the transform classified its own fault: retry or quarantine as it says
    except Exception as exc:  # user code: otherwise, the file cannot go through
        raise TerminalError(
            f"{source}: transform {spec!r} raised {type(exc).__name__}: {exc}. Fix: correct "
            "the function (or the data it rejects), then replay the file."
        ) from exc
    if isinstance(result, pa.Table):
        return result
    import pandas as pd  # only needed here; pandas is slow to import

    if isinstance(result, pd.DataFrame):
        try:
            return pa.Table.from_pandas(result, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise TerminalError(
                f"{source}: transform {spec!r} returned a DataFrame Arrow cannot convert: "
                f"{exc}. Fix: give its columns one type each, then replay the file."
            ) from exc
    raise TerminalError(
        f"{source}: transform {spec!r} returned {type(result).__name__}, not a pyarrow Table "
        "or pandas DataFrame. Fix: return the transformed table, then replay the file."
    )


__all__ = ["apply_transforms", "has_transforms", "load_transform"]
