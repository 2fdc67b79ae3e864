"""Contract files: ``datasets/<name>.yaml`` read into a :class:`Contract`, and written back.

People write contracts, so :func:`load_contract` reports every problem at once, each naming
the file, the key path (``columns[2].type``), its line (through :mod:`hopper.yamlfile`, the
same reading as ``hopper.yaml``'s), the column concerned and what was expected.
:func:`dump_contract` writes the YAML that ``hopper contract infer`` proposes: the keys in a
fixed order, defaults left out, so a draft is short and reads back identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hopper.contracts.model import ColumnSpec, Contract
from hopper.errors import ConfigError
from hopper.yamlfile import YamlFile, existing_loc, key_path, read_yaml


def load_contract(path: Path) -> Contract:
    """Load and validate a contract file.

    Args:
        path: a ``datasets/<name>.yaml`` file.

    Returns:
        The validated contract.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or does not validate; the message
            names the file, the key path (e.g. ``columns[2].type``), its line and what is
            expected.
    """
    doc = read_yaml(path, "contract file")
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{path}: a contract must be a YAML mapping with name and columns")
    try:
        return Contract.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(path, exc, doc)) from exc


def _describe_errors(path: Path, exc: ValidationError, doc: YamlFile) -> str:
    lines = [f"{path}: invalid contract ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        loc = existing_loc(error["loc"], doc.data)
        where = key_path(loc) or "(top level)"
        line = doc.line_of(loc)
        where = f"{where} (line {line})" if line else where
        column = _column_name(doc.data, loc)
        about = f" [column {column!r}]" if column else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (typo?); remove it or check the spelling"
        lines.append(f"  - {where}{about}: {message}")
    return "\n".join(lines)


def _column_name(data: Any, loc: list[str | int]) -> str | None:
    if len(loc) >= 2 and loc[0] == "columns" and isinstance(loc[1], int):
        column = data["columns"][loc[1]]
        if isinstance(column, dict) and isinstance(column.get("name"), str):
            return str(column["name"])
    return None


_KEY_ORDER = [
    "name",
    "version",
    "description",
    "format",
    "reader",
    "columns",
    "extra_columns",
    "bad_rows",
    "derived",
    "transform",
    "transform_input",
    "drop",
    "partition_by",
    "compression",
    "stream_threshold_mb",
    "max_file_mb",
    "max_decompression_ratio",
    "max_columns",
    "max_line_bytes",
    "max_json_depth",
    "max_memory_mb",
    "max_seconds",
    "retries",
    "retry_backoff_seconds",
]


def dump_contract(contract: Contract) -> str:
    """Render a contract as readable YAML that :func:`load_contract` reads back identically.

    Defaults and unset options are left out, except ``name``, ``version``, ``format`` and each
    column's ``name`` and ``type``.

    Args:
        contract: the contract to render.

    Returns:
        YAML text.
    """
    data = contract.model_dump(mode="python", exclude_defaults=True, exclude_none=True)
    data["name"] = contract.name
    data["version"] = contract.version
    data["format"] = contract.format
    data["columns"] = [_dump_column(c) for c in contract.columns]
    if not data.get("reader"):
        data.pop("reader", None)
    ordered = {key: data[key] for key in _KEY_ORDER if key in data}
    return str(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100))


def _dump_column(column: ColumnSpec) -> dict[str, Any]:
    data = column.model_dump(mode="python", exclude_defaults=True, exclude_none=True)
    return {"name": column.name, "type": column.type, **data}


__all__ = ["dump_contract", "load_contract"]
