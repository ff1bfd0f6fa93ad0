"""Value codecs: how a column's Python value becomes the bytes the engine encrypts.

``text`` is UTF-8, ``bytes`` is itself, ``json`` is compact, key-sorted JSON (no NaN or
infinity). Encoding checks the type and the column's size limit and raises before
anything is encrypted or written; decoding authenticated bytes that do not fit the codec
(a column whose type was changed) is an :class:`~kmsbox.IntegrityError`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from kmsbox.errors import IntegrityError
from kmsbox_orm.errors import ValueTooLarge, WrongValueType

__all__ = ["DEFAULT_MAX_BYTES", "MAX_BYTES_LIMIT", "CodecKind", "ValueCodec", "codec_for"]

CodecKind = Literal["text", "bytes", "json"]

#: Default largest plaintext a column takes (64 KiB).
DEFAULT_MAX_BYTES = 64 * 1024
#: The largest ``max_bytes`` a column may set (64 MiB): a value is encrypted in memory in one piece.
MAX_BYTES_LIMIT = 64 * 1024 * 1024


class ValueCodec:
    """Encode and decode one column's values (``kind`` is text, bytes or json)."""

    __slots__ = ("kind", "max_bytes")

    def __init__(self, kind: CodecKind, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if kind not in ("text", "bytes", "json"):
            raise ValueError(f"value kind must be text, bytes or json, not {kind!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 1 <= max_bytes <= MAX_BYTES_LIMIT:
            raise ValueError(f"max_bytes must be an integer from 1 to {MAX_BYTES_LIMIT}")
        self.kind = kind
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"ValueCodec({self.kind!r}, max_bytes={self.max_bytes})"

    def encode(self, value: Any) -> bytes:
        """The plaintext bytes of ``value``; WrongValueType or ValueTooLarge when it does not fit."""
        data = self._encode(value)
        if len(data) > self.max_bytes:
            # The size, never the value.
            raise ValueTooLarge(f"value of {len(data)} bytes is larger than the column's max_bytes ({self.max_bytes})")
        return data

    def _encode(self, value: Any) -> bytes:
        if self.kind == "text":
            if not isinstance(value, str):
                raise WrongValueType(f"a text column takes str, not {type(value).__name__}")
            try:
                return value.encode("utf-8")
            except UnicodeEncodeError:
                raise WrongValueType("a text column takes valid Unicode (this str holds a lone surrogate)") from None
        if self.kind == "bytes":
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise WrongValueType(f"a bytes column takes bytes, not {type(value).__name__}")
            return bytes(value)
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            # json's own message names the offending type or says "Out of range float"; never the value.
            reason = "NaN or infinity" if isinstance(exc, ValueError) else type(exc).__name__
            raise WrongValueType(f"a JSON column takes JSON-serialisable values ({reason})") from None
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise WrongValueType("a JSON column takes valid Unicode (a str holds a lone surrogate)") from None

    def decode(self, data: bytes) -> Any:
        """The Python value of authenticated plaintext bytes (IntegrityError if they do not fit)."""
        kind = self.kind
        if kind == "bytes":
            return data
        try:
            return data.decode("utf-8") if kind == "text" else json.loads(data.decode("utf-8"))
        except ValueError:
            raise IntegrityError(f"stored plaintext is not {self.kind} (was the column's type changed?)") from None

    def coerce_legacy(self, value: Any) -> Any:
        """A value read from a legacy format, as this codec's Python type (WrongValueType if it is not one)."""
        if self.kind == "text" and isinstance(value, (bytes, bytearray)):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise WrongValueType("a legacy value is not UTF-8 text") from None
        if self.kind == "json" and isinstance(value, (str, bytes, bytearray)):
            try:
                return json.loads(value)
            except ValueError:
                raise WrongValueType("a legacy value is not JSON text") from None
        self._encode(value)  # type check only
        return value


def codec_for(kind: CodecKind, max_bytes: int = DEFAULT_MAX_BYTES) -> ValueCodec:
    """A codec of ``kind`` with ``max_bytes`` (ValueError for either out of range)."""
    return ValueCodec(kind, max_bytes)
