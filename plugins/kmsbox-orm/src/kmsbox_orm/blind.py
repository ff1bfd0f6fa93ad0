"""Blind indexes: an HMAC of a column's normalised value, in a companion column, for equality lookups.

What a blind index leaks: which rows hold equal values (and so how often each value
occurs), to anyone who can read the index column, and, to anyone who can also compute
the HMAC (who holds the KEK), whether a row holds a guessed value. Truncating the HMAC
(``length`` bytes) makes unequal values collide now and then, which hides a little of the
frequency and makes lookups return a few extra rows (check them after decrypting).
"""

from __future__ import annotations

from typing import Any

from kmsbox_orm.codecs import ValueCodec
from kmsbox_orm.index_keys import IndexKeyring, check_index_name
from kmsbox_orm.normalize import get_normalizer

__all__ = ["DEFAULT_INDEX_LENGTH", "Blind", "BlindIndexSpec", "blind"]

#: Default bytes of HMAC kept (16: no accidental collisions at any table size).
DEFAULT_INDEX_LENGTH = 16


class Blind:
    """A value to look up through a blind index (``Model.email_index == blind("a@b.c")``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        if value is None:
            raise ValueError("blind(None): look up NULL with IS NULL on the index column")
        self.value = value

    def __repr__(self) -> str:
        return "blind(***)"


def blind(value: Any) -> Blind:
    """Mark ``value`` for a blind-index lookup."""
    return Blind(value)


class BlindIndexSpec:
    """A blind index: its index-key name, HMAC ``length`` (1-32 bytes) and text normaliser."""

    __slots__ = ("length", "name", "normalize", "normalize_name")

    def __init__(self, name: str, *, length: int = DEFAULT_INDEX_LENGTH, normalize: str = "nfc") -> None:
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 32:
            raise ValueError("a blind index keeps 1 to 32 bytes of HMAC (length)")
        self.name = check_index_name(name)
        self.length = length
        self.normalize_name = normalize
        self.normalize = get_normalizer(normalize)

    def __repr__(self) -> str:
        return f"BlindIndexSpec({self.name!r}, length={self.length}, normalize={self.normalize_name!r})"

    @property
    def stored_size(self) -> int:
        """Bytes of a stored index value (2-byte version + HMAC)."""
        return 2 + self.length

    def data(self, codec: ValueCodec, value: Any) -> bytes:
        """The bytes that are HMACed for ``value``: normalised text, raw bytes, canonical JSON."""
        if codec.kind == "text" and isinstance(value, str):
            value = self.normalize(value)
        return codec.encode(value)

    def digest(self, keyring: IndexKeyring, codec: ValueCodec, value: Any) -> bytes | None:
        """The index value to store beside ``value`` (None for None)."""
        if value is None:
            return None
        return keyring.digest(self.name, self.data(codec, value), self.length)

    def digests(self, keyring: IndexKeyring, codec: ValueCodec, value: Any) -> list[bytes]:
        """The index values a lookup of ``value`` matches (one per readable index-key version)."""
        if isinstance(value, Blind):
            value = value.value
        return keyring.digests(self.name, self.data(codec, value), self.length)

    def is_current(self, keyring: IndexKeyring, stored: bytes | None) -> bool:
        """Whether a stored index value is made with the version now writing, at this length."""
        if stored is None or len(stored) != self.stored_size:
            return False
        return int.from_bytes(stored[:2], "big") == keyring.writer(self.name).version
