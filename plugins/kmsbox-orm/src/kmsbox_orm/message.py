"""Read the header of an engine message, as ``docs/format.md`` specifies it (kind 0x01).

The rewrite job looks at which KEK version wrapped a stored value's data key without
decrypting the value. Only the header is read here; the engine itself decrypts.

    KB 01 01 | vlen (1) | KEK version (vlen) | wlen (2) | wrapped data key (wlen) | CRC-32 (4) | nonce | ciphertext+tag
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from kmsbox.errors import IntegrityError

__all__ = ["ENGINE_MAGIC", "MessageHeader", "header_length", "is_engine_message", "read_header"]

#: The first four bytes of every engine message of format version 1.
ENGINE_MAGIC = b"KB\x01\x01"
_NONCE_AND_TAG = 12 + 16


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The authenticated-later part of an engine message that names its data key."""

    header: bytes
    kek_version: str
    wrapped_key: bytes

    def __repr__(self) -> str:
        return f"MessageHeader(kek_version={self.kek_version!r}, wrapped_key=<{len(self.wrapped_key)} bytes>)"


def is_engine_message(blob: bytes) -> bool:
    """Whether ``blob`` starts like an engine message of any format version (it may still be malformed).

    A later engine may write a newer format version; the engine opens it, and the rewrite
    job treats it as current (there is nothing newer to move it to).
    """
    return blob[:2] == b"KB" and blob[3:4] == b"\x01"


def header_length(blob: bytes) -> int:
    """The length of the header (CRC included) that ``blob`` claims, or 0 when too short to say.

    Nothing is checked: use it only to look up a header already read by :func:`read_header`.
    """
    if len(blob) < 7:
        return 0
    vlen = blob[4]
    return 11 + vlen + int.from_bytes(blob[5 + vlen : 7 + vlen], "big")


def read_header(blob: bytes) -> MessageHeader:
    """The header of an engine message; IntegrityError (opaque) when it is malformed."""
    try:
        if blob[:4] != ENGINE_MAGIC:
            raise ValueError
        vlen = blob[4]
        wlen = int.from_bytes(blob[5 + vlen : 7 + vlen], "big")
        end = 7 + vlen + wlen
        if vlen == 0 or wlen == 0 or len(blob) < end + 4 + _NONCE_AND_TAG:
            raise ValueError
        if zlib.crc32(blob[:end]) != int.from_bytes(blob[end : end + 4], "big"):
            raise ValueError
        version = blob[5 : 5 + vlen].decode("ascii")
    except (ValueError, IndexError):
        raise IntegrityError("malformed or unauthentic ciphertext") from None
    return MessageHeader(bytes(blob[: end + 4]), version, bytes(blob[7 + vlen : end]))
