"""One encrypted column: seal a value for its row, open a stored value, classify it for the rewrite job.

Stored forms: ``binary`` columns hold the engine message itself; ``text`` columns hold
``"kb1:"`` followed by its base64 (for a column that must stay text, such as one migrated
in place from sqlalchemy-utils' ``StringEncryptedType``). A stored value that is not in
the kmsbox form is read with the column's legacy format, when it has one.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

from kmsbox.engine import Envelope
from kmsbox.errors import IntegrityError
from kmsbox_orm.codecs import ValueCodec
from kmsbox_orm.context import CONTEXT_KEY, column_prefix
from kmsbox_orm.encryption import ColumnEncryption
from kmsbox_orm.legacy import LegacyFormat
from kmsbox_orm.message import ENGINE_MAGIC, is_engine_message

__all__ = ["TEXT_PREFIX", "EncryptedColumn", "Sealed", "StoredAs", "StoredState"]

StoredAs = Literal["binary", "text"]
#: What the rewrite job finds in a stored value.
StoredState = Literal["current", "old-kek", "legacy"]
#: The prefix of a value stored in a text column.
TEXT_PREFIX = "kb1:"


_LEADS = 64  # row-id lengths remembered per column


class Sealed:
    """A stored (encrypted) column value as the database holds it; never shows its bytes.

    An ORM hands these to the database; a query that selects an encrypted column on its
    own (without its row's key) gets one back, to open with :meth:`EncryptedColumn.open`.
    """

    __slots__ = ("stored",)

    def __init__(self, stored: bytes | str) -> None:
        self.stored = stored

    def __repr__(self) -> str:
        return f"Sealed(<{len(self.stored)} {'bytes' if isinstance(self.stored, bytes) else 'chars'}>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealed) and other.stored == self.stored

    def __hash__(self) -> int:
        return hash(self.stored)


@dataclass(frozen=True, eq=False)
class EncryptedColumn:
    """An encrypted column of ``table``: its codec, stored form and optional legacy format."""

    table: str
    column: str
    codec: ValueCodec
    encryption: ColumnEncryption
    stored_as: StoredAs = "binary"
    legacy: LegacyFormat | None = None
    _prefix: str = field(init=False, repr=False, default="")
    _aad_head: bytes = field(init=False, repr=False, default=b"")
    _aad_prefix: bytes = field(init=False, repr=False, default=b"")
    _envelope: Envelope = field(init=False, repr=False)
    # Everything before the row id, by the row id's length in bytes (few lengths occur).
    _aad_leads: dict[int, bytes] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.stored_as not in ("binary", "text"):
            raise ValueError("stored_as must be 'binary' or 'text'")
        for label, name in (("table", self.table), ("column", self.column)):
            if not isinstance(name, str) or not name:
                raise ValueError(f"{label} name must be a non-empty string")
        # Computed once: the per-value context is this prefix and the row id.
        object.__setattr__(self, "_prefix", column_prefix(self.table, self.column, self.encryption.scope))
        # The fixed parts of encode_context({CONTEXT_KEY: prefix + row}): one entry, its key.
        key = CONTEXT_KEY.encode("utf-8")
        object.__setattr__(self, "_aad_head", b"\x00\x01" + len(key).to_bytes(2, "big") + key)
        object.__setattr__(self, "_aad_prefix", self._prefix.encode("utf-8"))
        object.__setattr__(self, "_envelope", self.encryption.envelope)

    def context(self, row: str) -> dict[str, str]:
        """The engine context of this column's value in ``row`` (see kmsbox_orm.context)."""
        return {CONTEXT_KEY: self._prefix + row}

    def encoded_context(self, row: str) -> bytes:
        """``kmsbox.format.encode_context(self.context(row))``, built from its fixed parts:
        encoding a new one-entry mapping per row is a large part of the cost of a small value."""
        if type(row) is not str:
            raise TypeError("a row identifier must be str")
        tail = row.encode("utf-8")
        lead = self._aad_leads.get(len(tail))
        if lead is None:
            size = len(self._aad_prefix) + len(tail)
            if size > 0xFFFF:
                raise ValueError("a context key or value is longer than 65535 bytes")
            lead = self._aad_head + size.to_bytes(2, "big") + self._aad_prefix
            if len(self._aad_leads) < _LEADS:
                self._aad_leads[len(tail)] = lead
        return lead + tail

    def seal(self, value: Any, row: str) -> Sealed:
        """Encrypt ``value`` for ``row`` (WrongValueType, ValueTooLarge or ProviderError; nothing is written)."""
        return self.seal_plaintext(self.codec.encode(value), row)

    def seal_plaintext(self, data: bytes, row: str) -> Sealed:
        """Encrypt already-encoded plaintext for ``row``."""
        blob = self._envelope.encrypt_encoded(data, self.encoded_context(row))
        if self.stored_as == "text":
            return Sealed(TEXT_PREFIX + base64.b64encode(blob).decode("ascii"))
        return Sealed(blob)

    def message(self, stored: bytes | str | memoryview) -> bytes | None:
        """The engine message inside a stored value, or None when it is not in the kmsbox form."""
        if isinstance(stored, str):
            if not stored.startswith(TEXT_PREFIX):
                return None
            try:
                return base64.b64decode(stored[len(TEXT_PREFIX) :], validate=True)
            except (binascii.Error, ValueError):
                raise IntegrityError("malformed or unauthentic ciphertext") from None
        data = bytes(stored)
        return data if is_engine_message(data) else None

    def open(self, stored: bytes | str | memoryview, row: str) -> Any:
        """The value stored in ``row``.

        Raises IntegrityError when it is malformed, altered or moved from another row,
        column or table; KeyUnavailable when the KEK version that wrapped it is gone.
        """
        if type(stored) is bytes and stored[:4] == ENGINE_MAGIC:
            # The common case (a binary column in the kmsbox form), without the general checks below.
            return self.codec.decode(self._envelope.decrypt_encoded(stored, self.encoded_context(row)))
        message = self.message(stored)
        if message is not None:
            return self.codec.decode(self._envelope.decrypt_encoded(message, self.encoded_context(row)))
        return self.codec.coerce_legacy(self.open_legacy(stored))

    def open_legacy(self, stored: bytes | str | memoryview) -> Any:
        """The value of a legacy ciphertext (IntegrityError when the column has no legacy format)."""
        if self.legacy is None:
            raise IntegrityError("malformed or unauthentic ciphertext")
        return self.legacy.decode(stored if isinstance(stored, str) else bytes(stored))

    def state(self, stored: bytes | str | memoryview) -> StoredState:
        """Whether a stored value is current, under an older KEK (or another one), or legacy.

        Reads only the message header (IntegrityError when it is malformed).
        """
        message = self.message(stored)
        if message is None:
            if self.legacy is None:
                raise IntegrityError("malformed or unauthentic ciphertext")
            return "legacy"
        return "current" if self.encryption.message_is_current(message) else "old-kek"
