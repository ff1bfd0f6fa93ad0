"""The only module that calls AES-GCM, HMAC or the random source.

A thin, safe layer: keys are 32 random bytes, nonces are 96 random bits, and an
authentication failure is an opaque :class:`~kmsbox.errors.IntegrityError`.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kmsbox.errors import IntegrityError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "Aead",
    "HmacSha256",
    "open_once",
    "seal_once",
    "constant_time_equal",
    "derive_key",
    "random_bytes",
    "random_key",
    "random_nonce",
]


def random_key() -> bytes:
    """Return a fresh 256-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_SIZE)


def random_nonce() -> bytes:
    """Return a fresh 96-bit AES-GCM nonce."""
    return os.urandom(NONCE_SIZE)


def random_bytes(n: int) -> bytes:
    """Return ``n`` random bytes."""
    return os.urandom(n)


def seal_once(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt once under a fresh 256-bit key (a DEK) with a fresh random nonce."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def open_once(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt once under a key just unwrapped (a DEK); any failure is an opaque IntegrityError."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError):
        raise IntegrityError("authentication failed") from None


class HmacSha256:
    """HMAC-SHA256 under one key, keyed once. ``repr`` never shows the key."""

    __slots__ = ("_base",)

    def __init__(self, key: bytes) -> None:
        # Copying a keyed state skips re-deriving the inner and outer pads per message.
        self._base = crypto_hmac.HMAC(key, hashes.SHA256())

    def __repr__(self) -> str:
        return "HmacSha256(key=***)"

    def digest(self, data: bytes) -> bytes:
        """The MAC of ``data``."""
        mac = self._base.copy()
        mac.update(data)
        return mac.finalize()


def derive_key(root: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from ``root`` with HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=purpose.encode("ascii")).derive(root)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two MACs without leaking where they differ."""
    return hmac.compare_digest(a, b)


class Aead:
    """AES-256-GCM under one key. ``repr`` never shows the key."""

    __slots__ = ("_aesgcm",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise IntegrityError("key has the wrong length")
        self._aesgcm = AESGCM(key)

    def __repr__(self) -> str:
        return "Aead(key=***)"

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Encrypt under a fresh nonce; return ``(nonce, ciphertext_and_tag)``."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce, self._aesgcm.encrypt(nonce, plaintext, aad)

    def seal_with_nonce(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under a caller-supplied fresh random nonce (from :func:`random_bytes`)."""
        return self._aesgcm.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes | memoryview, aad: bytes) -> bytes:
        """Decrypt and authenticate; any failure is an opaque IntegrityError."""
        try:
            return self._aesgcm.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError):
            raise IntegrityError("authentication failed") from None
