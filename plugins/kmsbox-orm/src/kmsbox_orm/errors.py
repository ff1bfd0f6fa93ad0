"""The errors of encrypted columns: kmsbox errors that are also the Python error they mean."""

from __future__ import annotations

from kmsbox.errors import KmsboxError

__all__ = ["ValueTooLarge", "WrongValueType"]


class ValueTooLarge(KmsboxError, ValueError):
    """A value is larger than its column's ``max_bytes`` (raised before anything is written)."""


class WrongValueType(KmsboxError, TypeError):
    """A value of the wrong Python type for its column (a text column given ``bytes``, a JSON
    column given an object JSON cannot hold, ...). Raised before anything is written."""
