"""Which dataset does a file belong to? Pure functions, no I/O.

Explicit glob rules from ``hopper.yaml`` are tried first, in order; otherwise the first folder
under the watched root names the dataset (``inbox/<dataset>/file.csv``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import PurePosixPath

from hopper.config import DATASET_NAME, RoutingRule


def is_ignored(name: str, patterns: list[str]) -> bool:
    """Whether a file name matches one of the ignore globs (temporary, hidden, partial files)."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def route(relative: str, rules: list[RoutingRule]) -> str | None:
    """The dataset of a file, given its path relative to the watched root.

    Args:
        relative: POSIX path relative to the source root, e.g. ``sales/2024/jan.csv``.
        rules: explicit glob rules, tried in order.

    Returns:
        The dataset name, or None when no rule matches and the file is not in a sub-folder
        whose name is a valid dataset name.
    """
    rel = PurePosixPath(relative)
    for rule in rules:
        if rel.match(rule.glob) or fnmatchcase(relative, rule.glob):
            return rule.dataset
    if len(rel.parts) < 2:
        return None
    folder = rel.parts[0]
    return folder if DATASET_NAME.match(folder) else None
