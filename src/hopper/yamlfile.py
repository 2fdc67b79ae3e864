"""YAML files written by people, read so that every error can name its key and its line.

``hopper.yaml`` (:mod:`hopper.config`) and the dataset contracts
(:mod:`hopper.contracts.yaml_io`) are edited by hand and validated by pydantic models. A
pydantic error knows the key path of a problem (``columns[2].type``) but not where that key
is in the file, so both are read here: once as data, once as the YAML node tree that still
knows its lines, and :meth:`YamlFile.line_of` maps a key path back to the line of its key.
Unreadable files and YAML syntax errors are reported the same way for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hopper.errors import ConfigError


@dataclass(frozen=True)
class YamlFile:
    """A parsed YAML file.

    Attributes:
        path: where it was read from.
        data: its content as Python data (None for an empty file).
        root: its node tree, for line numbers (None for an empty file).
    """

    path: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Sequence[Any]) -> int | None:
        """Line (1-based) of the key at ``loc``, or of its deepest existing parent.

        Args:
            loc: a key path such as pydantic's error location, e.g. ``("columns", 2,
                "type")``; parts that are not in the file (union tags, a missing key) end
                the walk.

        Returns:
            The line, or None for an empty file.
        """
        if self.root is None:
            return None
        line = int(self.root.start_mark.line) + 1
        node = self.root
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                match = next((kv for kv in node.value if kv[0].value == part), None)
                if match is None:
                    break
                line, node = int(match[0].start_mark.line) + 1, match[1]
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and part < len(node.value)
            ):
                node = node.value[part]
                line = int(node.start_mark.line) + 1
            else:
                break
        return line


def read_yaml(path: Path, what: str) -> YamlFile:
    """Read and parse a YAML file.

    Args:
        path: the file.
        what: what the file is, for the message when it cannot be read (``"contract
            file"``).

    Returns:
        Its data and node tree.

    Raises:
        ConfigError: the file cannot be read, or is not valid YAML (naming the line and
            column of the problem).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from exc
    return YamlFile(Path(path), data, root)


def key_path(loc: Sequence[Any]) -> str:
    """A key path as people write it: ``columns[2].type`` (empty for the top level)."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else f"{part}")
    return text


def existing_loc(loc: Sequence[Any], data: Any) -> list[str | int]:
    """Keep the leading part of a pydantic error location that exists in the YAML data.

    pydantic appends union-member tags (e.g. ``int``, ``function-after[...]``) that are not
    YAML keys; a missing key is kept as the last element so the message names it.
    """
    clean: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            clean.append(part)
            if part not in node:
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            clean.append(part)
            node = node[part]
        else:
            break
    return clean


__all__ = ["YamlFile", "existing_loc", "key_path", "read_yaml"]
