"""Namespace keys, DEKs and the bounded key cache.

A DEK (32 random bytes, one per secret version) encrypts a value and is wrapped
by its namespace key; the namespace key is wrapped by the KEK elsewhere. Rotating
a namespace key rewraps DEKs with :func:`rewrap_secret` without touching the value
ciphertext.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kmsbox import format as fmt
from kmsbox._crypto import KEY_SIZE, NONCE_SIZE, Aead, open_once, random_bytes, seal_once

__all__ = ["CacheStats", "KeyCache", "open_secret", "rewrap_secret", "seal_secret"]

V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    """Counters of a :class:`KeyCache`."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


@dataclass(slots=True)  # read on every cached encryption and decryption
class _Entry(Generic[V]):
    value: V
    expires: float  # on the cache's clock
    uses: int = 0


class KeyCache(Generic[V]):
    """A cache of unwrapped keys, bounded by age, uses per entry and entries.

    ``max_age`` is in seconds; an entry older than it, or used ``max_uses`` times,
    is dropped and the next lookup misses (and so calls the KEK again). Thread-safe.
    """

    def __init__(
        self,
        *,
        max_age: float = 300.0,
        max_uses: int = 1 << 24,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age <= 0 or max_uses <= 0 or max_entries <= 0:
            raise ValueError("key cache bounds must be positive")
        self.max_age = max_age
        self.max_uses = max_uses
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._lock = threading.Lock()
        # Counted on the cache itself: a hit is on every cached encryption and decryption.
        self._hits = self._misses = self._evictions = 0

    def __repr__(self) -> str:
        return f"KeyCache(entries={len(self._entries)}, max_age={self.max_age}, max_uses={self.max_uses}, max_entries={self.max_entries})"

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        # An empty cache is still a cache: `cache or KeyCache()` must keep the caller's.
        return True

    @property
    def stats(self) -> CacheStats:
        """Hits, misses and evictions so far (a snapshot)."""
        return CacheStats(self._hits, self._misses, self._evictions)

    def get(self, key: Hashable) -> V | None:
        """Return the cached value and count one use, or None on a miss."""
        # Lock-free hit path (a dict read is atomic under the GIL); the lock guards
        # eviction and insertion. Entries leave in insertion order when full.
        entry = self._entries.get(key)
        if entry is not None and entry.uses < self.max_uses and self._clock() < entry.expires:
            entry.uses += 1
            self._hits += 1
            return entry.value
        if entry is not None:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
                    self._evictions += 1
        self._misses += 1
        return None

    def put(self, key: Hashable, value: V) -> V:
        """Cache ``value`` under ``key`` (evicting the oldest entries if full)."""
        with self._lock:
            self._entries[key] = _Entry(value, self._clock() + self.max_age)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._evictions += 1
        return value

    def invalidate(self, key: Hashable) -> None:
        """Drop one entry."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()


def seal_secret(
    namespace_key: Aead, namespace_key_version: int, namespace: str, name: str, secret_version: int, value: bytes
) -> bytes:
    """Encrypt ``value`` under a fresh DEK wrapped by the namespace key; return the stored blob."""
    # One read of the random source for the DEK and both nonces.
    fresh = random_bytes(KEY_SIZE + 2 * NONCE_SIZE)
    dek, dek_nonce, nonce = fresh[:KEY_SIZE], fresh[KEY_SIZE : KEY_SIZE + NONCE_SIZE], fresh[KEY_SIZE + NONCE_SIZE :]
    dek_aad, value_aad = fmt.secret_aads(namespace, name, secret_version, namespace_key_version)
    wrapped_dek = namespace_key.seal_with_nonce(dek_nonce, dek, dek_aad)
    return fmt.encode_secret(
        namespace_key_version, dek_nonce, wrapped_dek, nonce, seal_once(dek, nonce, value, value_aad)
    )


def open_secret(
    blob: bytes,
    namespace_key_for: Callable[[int], Aead],
    namespace: str,
    name: str,
    secret_version: int,
    data_keys: KeyCache[tuple[Aead, Aead]] | None = None,
) -> bytes:
    """Decrypt a stored blob. ``namespace_key_for(version)`` supplies the namespace key.

    ``data_keys``, when given, keeps unwrapped DEKs for later reads of the same
    version. It is keyed by the wrapped DEK *and* its associated data, so a blob
    moved to another row misses it and fails exactly as without it; and an entry is
    used only while the namespace key that unwrapped it is the one still supplied, so
    it never outlives that key. Raises IntegrityError for anything malformed, moved
    or altered.
    """
    nkv, dek_nonce, wrapped_dek, nonce, ciphertext = fmt.split_secret(blob)
    dek_aad, value_aad = fmt.secret_aads(namespace, name, secret_version, nkv)
    namespace_key = namespace_key_for(nkv)
    if data_keys is None:
        return open_once(namespace_key.open(dek_nonce, wrapped_dek, dek_aad), nonce, ciphertext, value_aad)
    cache_key = (dek_aad, dek_nonce, wrapped_dek)
    cached = data_keys.get(cache_key)
    if cached is not None and cached[0] is namespace_key:
        data_key = cached[1]
    else:
        data_key = Aead(namespace_key.open(dek_nonce, wrapped_dek, dek_aad))
        data_keys.put(cache_key, (namespace_key, data_key))
    return data_key.open(nonce, ciphertext, value_aad)


def rewrap_secret(
    blob: bytes,
    old_key: Aead,
    new_key: Aead,
    new_version: int,
    namespace: str,
    name: str,
    secret_version: int,
) -> bytes:
    """Move a stored blob's DEK to another namespace-key version; the value ciphertext is kept."""
    env = fmt.parse_secret(blob)
    dek = old_key.open(
        env.dek_nonce, env.wrapped_dek, fmt.dek_aad(namespace, name, secret_version, env.namespace_key_version)
    )
    dek_nonce, wrapped = new_key.seal(dek, fmt.dek_aad(namespace, name, secret_version, new_version))
    return fmt.encode_secret(new_version, dek_nonce, wrapped, env.nonce, env.ciphertext)
