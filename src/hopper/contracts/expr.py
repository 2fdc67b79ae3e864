"""Derived-column expressions: a tiny, safe language evaluated column-at-a-time with Arrow.

Contracts may add columns computed from others (``derived: [{name: total, expr: "qty *
price"}]``). Contract files come from people, not programs, so expressions are parsed with
:mod:`ast` and only a handful of node kinds are accepted: column names, numbers, quoted text,
``+ - * /``, unary minus and the functions in :data:`FUNCTIONS`. Nothing is ever passed to
``eval``; every accepted node maps to a ``pyarrow.compute`` kernel, so a derived column costs
one vectorised pass per operation, whatever the number of rows.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

# An Arrow array, chunked array or scalar (pyarrow ships no type hints, so this is Any).
Value: TypeAlias = Any


class ExpressionError(ValueError):
    """An expression that does not parse, uses something not allowed, or fails on the data."""


def _text(value: Value) -> Value:
    if pa.types.is_string(value.type) or pa.types.is_large_string(value.type):
        return value
    return pc.cast(value, pa.string())


def _concat(*args: Value) -> Value:
    return pc.binary_join_element_wise(*[_text(a) for a in args], "")


def _round(value: Value, digits: Value | None = None) -> Value:
    ndigits = 0 if digits is None else int(digits.as_py())
    return pc.round(value, ndigits=ndigits)


@dataclass(frozen=True)
class _Function:
    apply: Callable[..., Value]
    min_args: int
    max_args: int | None  # None: any number
    help: str


FUNCTIONS: dict[str, _Function] = {
    "upper": _Function(lambda v: pc.utf8_upper(_text(v)), 1, 1, "upper(text)"),
    "lower": _Function(lambda v: pc.utf8_lower(_text(v)), 1, 1, "lower(text)"),
    "strip": _Function(lambda v: pc.utf8_trim_whitespace(_text(v)), 1, 1, "strip(text)"),
    "length": _Function(lambda v: pc.utf8_length(_text(v)), 1, 1, "length(text)"),
    "concat": _Function(_concat, 1, None, "concat(a, b, ...)"),
    "year": _Function(pc.year, 1, 1, "year(date)"),
    "month": _Function(pc.month, 1, 1, "month(date)"),
    "day": _Function(pc.day, 1, 1, "day(date)"),
    "abs": _Function(pc.abs_checked, 1, 1, "abs(number)"),
    "round": _Function(_round, 1, 2, "round(number[, digits])"),
    "coalesce": _Function(pc.coalesce, 1, None, "coalesce(a, b, ...)"),
    "col": _Function(lambda v: v, 1, 1, 'col("column name")'),
}
_ALLOWED = (
    "column names, numbers, quoted text, + - * /, parentheses and the functions "
    + ", ".join(f.help for f in FUNCTIONS.values())
)


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression.

    Attributes:
        text: the expression as written in the contract.
        columns: the column names it reads, in order of first use.
    """

    text: str
    columns: tuple[str, ...]
    _tree: ast.expr

    def evaluate(self, table: pa.Table) -> pa.ChunkedArray:
        """Compute the expression for every row of ``table``.

        Args:
            table: rows holding (at least) the referenced columns.

        Returns:
            One value per row.

        Raises:
            ExpressionError: a referenced column is absent, or Arrow cannot apply an operation
                to these types or values (e.g. ``upper`` of a number's overflow, ``+`` on text).
        """
        missing = [name for name in self.columns if name not in table.column_names]
        if missing:
            raise ExpressionError(f"{self.text!r}: unknown column(s) {missing}")
        try:
            result = _evaluate(self._tree, table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ExpressionError(f"{self.text!r}: {str(exc).splitlines()[0]}") from exc
        if isinstance(result, pa.Scalar):
            result = pa.repeat(result, table.num_rows)
        if isinstance(result, pa.Array):
            result = pa.chunked_array([result], result.type)
        return result


def parse_expression(text: str) -> Expression:
    """Parse and check an expression.

    Args:
        text: e.g. ``"qty * price"``, ``'concat(upper(country), "-", col("store id"))'``,
            ``"year(order_date)"``.

    Returns:
        The checked expression, ready to :meth:`~Expression.evaluate`.

    Raises:
        ExpressionError: the text is not valid syntax or uses anything outside the language.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r} is not a valid expression: {exc.msg}") from exc
    columns: list[str] = []
    _check(tree, text, columns)
    return Expression(text, tuple(dict.fromkeys(columns)), tree)


def _check(node: ast.expr, text: str, columns: list[str]) -> None:
    if isinstance(node, ast.Name):
        columns.append(node.id)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float | str):
            raise ExpressionError(f"{text!r}: literal {node.value!r} is not a number or text")
    elif isinstance(node, ast.BinOp) and isinstance(
        node.op, ast.Add | ast.Sub | ast.Mult | ast.Div
    ):
        _check(node.left, text, columns)
        _check(node.right, text, columns)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _check(node.operand, text, columns)
    elif isinstance(node, ast.Call):
        _check_call(node, text, columns)
    else:
        snippet = ast.get_source_segment(text.strip(), node) or type(node).__name__
        raise ExpressionError(f"{text!r}: {snippet!r} is not allowed; use {_ALLOWED}")


def _check_call(node: ast.Call, text: str, columns: list[str]) -> None:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    function = FUNCTIONS.get(name or "")
    if name is None or function is None:
        raise ExpressionError(
            f"{text!r}: unknown function {ast.unparse(node.func)!r}; "
            f"available: {', '.join(FUNCTIONS)}"
        )
    count = len(node.args)
    too_many = function.max_args is not None and count > function.max_args
    if node.keywords or count < function.min_args or too_many:
        raise ExpressionError(f"{text!r}: call {function.help} (got {ast.unparse(node)})")
    if name == "col":
        [arg] = node.args
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise ExpressionError(f'{text!r}: col() takes a quoted column name, e.g. col("a b")')
        columns.append(arg.value)
        return
    if name == "round" and count == 2:
        digits = node.args[1]
        if not (isinstance(digits, ast.Constant) and type(digits.value) is int):
            raise ExpressionError(f"{text!r}: round()'s digits must be a whole number")
    for arg in node.args:
        _check(arg, text, columns)


def _evaluate(node: ast.expr, table: pa.Table) -> Value:
    if isinstance(node, ast.Name):
        return table.column(node.id)
    if isinstance(node, ast.Constant):
        return pa.scalar(node.value)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, table)
        return pc.negate_checked(operand) if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _binary(node.op, _evaluate(node.left, table), _evaluate(node.right, table))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # ensured by _check
    if node.func.id == "col":
        return table.column(_constant(node.args[0]))
    args = [_evaluate(arg, table) for arg in node.args]
    return FUNCTIONS[node.func.id].apply(*args)


def _constant(node: ast.expr) -> Any:
    assert isinstance(node, ast.Constant)
    return node.value


def _binary(op: ast.operator, left: Value, right: Value) -> Value:
    if any(pa.types.is_string(v.type) for v in (left, right)):
        raise pa.ArrowTypeError("+ - * / apply to numbers and dates; join text with concat()")
    if isinstance(op, ast.Add):
        return pc.add_checked(left, right)
    if isinstance(op, ast.Sub):
        return pc.subtract_checked(left, right)
    if isinstance(op, ast.Mult):
        return pc.multiply_checked(left, right)
    # "/" is true division, as in Python and SQL's decimal world: 7 / 2 is 3.5, not 3.
    if pa.types.is_integer(left.type):
        left = pc.cast(left, pa.float64())
    if pa.types.is_integer(right.type):
        right = pc.cast(right, pa.float64())
    return pc.divide(left, right)


__all__ = ["FUNCTIONS", "Expression", "ExpressionError", "parse_expression"]
