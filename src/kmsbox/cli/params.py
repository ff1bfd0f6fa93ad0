"""Option values of the CLI: bounded durations, versions and finite numbers, and labels.

Every number a user types is checked here, at parse time, so that a huge or
non-finite one is a usage error (exit 2) and never an overflow deeper down.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

import click

from kmsbox.limits import LONGEST_SPAN, MAX_COUNT

__all__ = ["LONGEST_DURATION", "VERSION", "FiniteFloatRange", "parse_duration", "parse_labels"]

#: A secret version or a namespace-key version (1 and up).
VERSION = click.IntRange(1, MAX_COUNT)

#: The longest duration accepted: the store takes expiries at most 1000 years ahead.
LONGEST_DURATION = _dt.timedelta(seconds=LONGEST_SPAN)

# ASCII digits only (``\d`` would take any script's digits), and few enough of them
# that the product below can never overflow a timedelta before the bound is checked.
_DURATION_RE = re.compile(r"^([0-9]{1,15})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, *, allow_zero: bool = False) -> _dt.timedelta:
    """Parse ``90s``, ``15m``, ``12h``, ``30d`` or ``2w`` (at most 1000 years).

    Raises ValueError (a usage error in the CLI) for anything else, for zero unless
    ``allow_zero``, and for a duration longer than :data:`LONGEST_DURATION`.
    """
    match = _DURATION_RE.match(text.strip())
    if not match or (int(match.group(1)) == 0 and not allow_zero):
        raise ValueError(f"duration {text!r} must look like 90s, 15m, 12h, 30d or 2w")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > LONGEST_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is longer than 1000 years")
    return _dt.timedelta(seconds=seconds)


class FiniteFloatRange(click.FloatRange):
    """A ``click.FloatRange`` that also refuses ``nan`` and ``inf`` (which compare false to any bound)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Convert like FloatRange, then fail on a non-finite number."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def parse_labels(items: tuple[str, ...]) -> dict[str, str] | None:
    """``--label KEY=VALUE`` options as a mapping (None when none are given); ValueError
    for one that is not ``key=value`` (the store checks their length and characters)."""
    if not items:
        return None
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} must look like key=value")
        labels[key] = value
    return labels
