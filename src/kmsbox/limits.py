"""The bounds every layer checks outside input against: counts, spans of time, text.

One definition each, so that the CLI, the config file, the store and the storage
rows agree on where a value stops being acceptable. A value outside them is a
``ValueError`` that names what was wrong, never the value itself.
"""

from __future__ import annotations

import datetime as _dt
import math

__all__ = [
    "LONGEST_SPAN",
    "MAX_COUNT",
    "check_count",
    "check_text",
    "seconds_of",
]

#: The largest version, sequence number, cursor or count a call may name: far beyond
#: any store, and a 64-bit column still holds it plus one.
MAX_COUNT = 2**62 - 1
#: The longest span of time accepted (an expiry, a retention): 1000 years, in seconds.
LONGEST_SPAN = 1000 * 365.25 * 86400.0


def check_count(value: object, what: str, lowest: int = 1) -> int:
    """``value`` if it is an int (not a bool) from ``lowest`` to :data:`MAX_COUNT`, else ValueError."""
    if type(value) is not int or not lowest <= value <= MAX_COUNT:
        raise ValueError(f"{what} must be an integer from {lowest} to {MAX_COUNT}")
    return value


def seconds_of(value: object, what: str, *, allow_zero: bool) -> float:
    """A span given as a timedelta or a number of seconds, checked to be finite, at
    most :data:`LONGEST_SPAN` and positive (or zero, when allowed); else ValueError."""
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    else:
        raise ValueError(f"{what} must be a timedelta or a number of seconds, got {type(value).__name__}")
    low_ok = seconds >= 0 if allow_zero else seconds > 0
    if not (low_ok and seconds <= LONGEST_SPAN):  # false for NaN too
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{what} must be a {sign} time of at most 1000 years")
    return seconds


def check_text(value: object, what: str, limit: int) -> str:
    """``value`` if it is a string of at most ``limit`` characters that every backend
    can store (no NUL, valid UTF-8), else ValueError naming ``what``."""
    if type(value) is not str:
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    if not value.isascii() and not _utf8(value):
        raise ValueError(f"{what} contains a lone surrogate (not valid UTF-8)")
    return value


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
