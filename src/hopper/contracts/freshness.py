"""Freshness: how often a dataset's files are expected, as a contract's ``expect`` says.

``expect: {every: 24h}`` promises a file at least once a window; ``hopper deploy`` turns it
into a Prefect proactive automation (:mod:`hopper.alerts`) that alerts once when a window
passes without a file. Prefect refuses proactive windows shorter than
:data:`MIN_EVERY_SECONDS`, so a contract asking for less is rejected here, where the
person writing it sees the key and line.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIN_EVERY_SECONDS = 10.0
"""Prefect 3's floor for a proactive trigger's ``within`` (``EventTrigger`` refuses less)."""

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``6h``, ``2d`` or ``1h30m``.

    Raises:
        ValueError: for anything else, saying what is accepted.
    """
    compact = re.sub(r"\s+", "", text.lower())
    if not compact or _PART.sub("", compact):
        raise ValueError(
            f"{text!r} is not a duration: use numbers with units s, m, h, d or w, "
            "e.g. 90s, 15m, 6h, 2d, 1h30m"
        )
    return float(sum(float(n) * _UNIT[unit] for n, unit in _PART.findall(compact)))


class Freshness(BaseModel):
    """``expect``: how often files of the dataset must land."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: str = Field(
        description="Alert once when no file of the dataset lands for this long: a duration "
        f"such as 90s, 15m, 6h, 2d (at least {MIN_EVERY_SECONDS:g}s, Prefect's floor).",
    )

    @field_validator("every", mode="before")
    @classmethod
    def _duration(cls, value: object) -> str:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        text = f"{value}s" if number else value  # a bare number counts seconds
        if not isinstance(text, str):
            raise ValueError("every must be a duration such as 90s, 15m, 6h or 2d")
        seconds = parse_duration(text)
        if seconds < MIN_EVERY_SECONDS:
            raise ValueError(
                f"every {text!r} is shorter than {MIN_EVERY_SECONDS:g}s, the shortest window "
                "Prefect's proactive automations accept"
            )
        return text.strip()

    @property
    def seconds(self) -> float:
        """The window in seconds."""
        return parse_duration(self.every)
