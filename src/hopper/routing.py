"""Which dataset does a file belong to? Pure functions, no I/O.

Explicit glob rules from ``hopper.yaml`` are tried first, in order; otherwise the first folder
under the watched root names the dataset (``inbox/<dataset>/file.csv``).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase, translate
from functools import lru_cache
from pathlib import PurePosixPath

from hopper.config import DATASET_NAME, RoutingRule


@lru_cache(maxsize=64)
def _ignore_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(translate(p) for p in patterns) or "(?!)")


def is_ignored(name: str, patterns: list[str]) -> bool:
    """Whether a file name matches one of the ignore globs (temporary, hidden, partial files)."""
    return _ignore_regex(tuple(patterns)).match(name) is not None


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
    return folder if DATASET_NAME.fullmatch(folder) else None
