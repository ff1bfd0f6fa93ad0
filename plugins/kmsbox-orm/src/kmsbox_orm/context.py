"""What a stored value is bound to: its table, column and row.

A value is encrypted with the engine under a one-entry context,
``{"kmsbox:orm-value": "<n>:<scope><n>:<table><n>:<column><row>"}``, where each ``<n>`` is
the length in characters of the name after it (so the text is unambiguous: no table,
column or row name can be shifted into another) and ``<scope>`` is empty unless one is
configured. A ciphertext copied to another row, column or table fails to decrypt. One
entry rather than four because the engine encodes a context it has not seen on every
message, and every row's context is new: it costs a third less per value. Both ORM plugins
build it here, so a row written through one reads through the other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["CONTEXT_KEY", "MAX_ROW_ID", "column_prefix", "row_id", "value_context"]

#: The one key of a value's engine context.
CONTEXT_KEY = "kmsbox:orm-value"

#: The longest row identifier accepted (UTF-8 bytes); the engine takes context values up to 65,535.
MAX_ROW_ID = 4096


def _key_part(value: Any) -> str:
    # bool is an int subclass, but True and 1 must not name the same row.
    if isinstance(value, bool) or value is None:
        raise TypeError(f"a primary key value of type {type(value).__name__} cannot identify a row")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "hex:" + bytes(value).hex()
    raise TypeError(
        f"a primary key value of type {type(value).__name__} cannot identify a row (use int, str, UUID or bytes)"
    )


def row_id(key: Sequence[Any]) -> str:
    """The canonical text of a primary key: ``"42"`` for one column, a JSON list for several.

    Raises TypeError for a key value of an unsupported type (or None: a row without its
    key cannot be bound), ValueError for a key longer than :data:`MAX_ROW_ID` bytes.
    """
    if len(key) == 1 and type(key[0]) is int:
        return str(key[0])  # the common case, on every row a job or a load handles
    parts = [_key_part(value) for value in key]
    if not parts:
        raise ValueError("a primary key has at least one column")
    text = parts[0] if len(parts) == 1 else json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ROW_ID:
        raise ValueError(f"a primary key longer than {MAX_ROW_ID} bytes cannot identify a row")
    return text


def column_prefix(table: str, column: str, scope: str | None = None) -> str:
    """The part of a value's context its column fixes: ``"<n>:<scope><n>:<table><n>:<column>"``."""
    scope = scope or ""
    return f"{len(scope)}:{scope}{len(table)}:{table}{len(column)}:{column}"


def value_context(table: str, column: str, row: str, scope: str | None = None) -> dict[str, str]:
    """The engine context of one stored value."""
    return {CONTEXT_KEY: column_prefix(table, column, scope) + row}
