"""Admin bearer tokens: minting, the stored hash, and the constant-time lookup.

A token is 32 random bytes (``kbx_`` + URL-safe base64); only its SHA-256 is kept
in the config file. A fast hash is the right one here: the token has 256 bits of
entropy, so no dictionary or brute-force attack on the hash is possible, and a slow
password hash (scrypt, argon2) would only make every API request cost tens of
milliseconds of CPU, which is a denial-of-service lever and buys nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "HASH_PREFIX",
    "ROLES",
    "TOKEN_PREFIX",
    "TokenEntry",
    "find_token",
    "hash_token",
    "is_token_hash",
    "mint_token",
]

#: Roles, weakest first: a viewer reads; an admin also starts jobs and repairs.
ROLES = ("viewer", "admin")
#: Tokens start with this, so that secret scanners and people can recognise one.
TOKEN_PREFIX = "kbx_"
#: The stored form is ``sha256:<64 hex>``; the prefix leaves room for another hash later.
HASH_PREFIX = "sha256:"
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_TOKEN = 512


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One configured token: who presents it, with which role, and its stored hash."""

    actor: str
    role: str
    sha256: str

    def __repr__(self) -> str:
        return f"TokenEntry(actor={self.actor!r}, role={self.role!r}, sha256=***)"


def mint_token() -> str:
    """A new random token (shown once to the person who minted it)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of ``token``: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_token_hash(text: str) -> bool:
    """Whether ``text`` is a stored token hash (``sha256:`` and 64 lowercase hex digits)."""
    return bool(_HASH_RE.match(text))


def find_token(entries: Sequence[TokenEntry], presented: str) -> TokenEntry | None:
    """The entry whose hash matches ``presented``, or None.

    Every entry is compared (in constant time each), so the time taken does not
    tell which entry, or how much of a hash, matched.
    """
    if not presented or len(presented) > _MAX_TOKEN:
        return None
    try:
        digest = hash_token(presented).encode("ascii")
    except UnicodeEncodeError:  # a lone surrogate cannot be a token we minted
        return None
    found: TokenEntry | None = None
    for entry in entries:
        if hmac.compare_digest(digest, entry.sha256.encode("ascii")) and found is None:
            found = entry
    return found
