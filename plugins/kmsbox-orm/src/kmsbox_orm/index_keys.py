"""Index keys: versioned HMAC keys of blind indexes, each wrapped by the KEK and kept in the user's database.

An index key is 32 random bytes. Its row holds the name of the index it serves, its
version, when it becomes the key new values are indexed with (``active_from``, Unix
seconds), whether it is retired, and the key sealed with the engine under the context
``{"kmsbox:purpose": "orm-index-key", "index": name, "version": v, "active-from": t,
"retired": "no"|"yes"}``. Every field that decides which key is used is in that context,
so someone with only database access cannot swap in a key of their choosing, move a key
to another index or version, or change when it takes over, without the keyring failing
to load (IntegrityError).

Rotation is two-phase so that every process can look up every version that anyone writes
with: a new version is readable at once (lookups match it as soon as a process reloads
its keyring, at most ``refresh`` seconds later) but indexes new values only from
``active_from`` = now + ``grace``, which must be longer than ``refresh`` plus clock skew.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes, hmac

from kmsbox.errors import ConfigError, IntegrityError
from kmsbox_orm.encryption import ColumnEncryption

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_REFRESH",
    "MAX_INDEX_NAME",
    "MAX_INDEX_VERSION",
    "IndexKey",
    "IndexKeyRecord",
    "IndexKeyStore",
    "IndexKeyring",
    "check_index_name",
]

DEFAULT_REFRESH = 60.0
DEFAULT_GRACE = 300.0
MAX_INDEX_NAME = 200
MAX_INDEX_VERSION = 65535
_KEY_SIZE = 32
_DOMAIN = b"kmsbox-orm-index\x00"


def check_index_name(name: str) -> str:
    """``name`` if it is a usable index name (1-200 characters, no control characters), else ValueError."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_INDEX_NAME or not name.isprintable():
        raise ValueError(f"an index name is 1 to {MAX_INDEX_NAME} printable characters")
    return name


@dataclass(frozen=True, slots=True)
class IndexKeyRecord:
    """One stored index-key row, as the database holds it."""

    name: str
    version: int
    active_from: int
    retired: bool
    sealed_key: bytes

    def __repr__(self) -> str:
        return f"IndexKeyRecord(name={self.name!r}, version={self.version}, active_from={self.active_from}, retired={self.retired})"


class IndexKeyStore(Protocol):
    """Where an ORM keeps index-key rows (a small table in the user's database)."""

    def load_index_keys(self) -> list[IndexKeyRecord]:
        """Every row."""
        ...

    def add_index_key(self, record: IndexKeyRecord) -> bool:
        """Insert a row in its own committed transaction; False when (name, version) exists."""
        ...

    def replace_index_key(self, old: IndexKeyRecord, new: IndexKeyRecord) -> bool:
        """Replace ``old`` by ``new`` (same name and version) if ``old`` is still stored; commit."""
        ...


class IndexKey:
    """One unwrapped index-key version: computes blind-index digests."""

    __slots__ = ("_hmac", "active_from", "name", "retired", "version")

    def __init__(self, name: str, version: int, key: bytes, active_from: int, retired: bool) -> None:
        self.name = name
        self.version = version
        self.active_from = active_from
        self.retired = retired
        self._hmac = hmac.HMAC(key, hashes.SHA256())

    def __repr__(self) -> str:
        return f"IndexKey(name={self.name!r}, version={self.version}, key=***)"

    def digest(self, data: bytes, length: int) -> bytes:
        """The stored index value: 2-byte version, then the first ``length`` bytes of the HMAC."""
        mac = self._hmac.copy()
        mac.update(_DOMAIN + data)
        return self.version.to_bytes(2, "big") + mac.finalize()[:length]


def _context(name: str, version: int, active_from: int, retired: bool) -> dict[str, str]:
    return {
        "kmsbox:purpose": "orm-index-key",
        "index": name,
        "version": str(version),
        "active-from": str(active_from),
        "retired": "yes" if retired else "no",
    }


class IndexKeyring:
    """The index keys of one database, loaded from its :class:`IndexKeyStore` and reloaded every ``refresh`` seconds.

    Invariant: ``writer(name)`` returns a version that every process's ``readers(name)``
    already includes, provided processes reload at least every ``refresh`` seconds and
    ``grace`` exceeds that (plus clock skew). Thread-safe.
    """

    def __init__(
        self,
        encryption: ColumnEncryption,
        store: IndexKeyStore | None = None,
        *,
        refresh: float = DEFAULT_REFRESH,
        grace: float = DEFAULT_GRACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not refresh > 0 or not grace >= 0 or refresh != refresh or grace != grace:
            raise ValueError("refresh must be positive and grace zero or more (seconds)")
        self.encryption = encryption
        self.store = store
        self.refresh_seconds = refresh
        self.grace = grace
        self._clock = clock
        self._keys: dict[str, list[IndexKey]] = {}  # newest version first
        self._records: dict[tuple[str, int], IndexKeyRecord] = {}
        self._loaded_at: float | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"IndexKeyring(indexes={sorted(self._keys)!r}, refresh={self.refresh_seconds}, grace={self.grace})"

    def bind(self, store: IndexKeyStore) -> None:
        """Use ``store`` from now on (and forget what was loaded from another)."""
        with self._lock:
            self.store = store
            self._loaded_at = None

    def _store(self) -> IndexKeyStore:
        if self.store is None:
            raise ConfigError("blind indexes need their index-key table: bind the keyring to the database first")
        return self.store

    def reload(self) -> None:
        """Load every index key now (IntegrityError if a row was altered, KeyUnavailable if its KEK version is gone)."""
        records = self._store().load_index_keys()
        keys: dict[str, list[IndexKey]] = {}
        by_id: dict[tuple[str, int], IndexKeyRecord] = {}
        for record in records:
            context = _context(record.name, record.version, record.active_from, record.retired)
            key = self.encryption.decrypt(record.sealed_key, context)
            if len(key) != _KEY_SIZE:
                raise IntegrityError(f"index key {record.name!r} v{record.version} is malformed")
            keys.setdefault(record.name, []).append(
                IndexKey(record.name, record.version, key, record.active_from, record.retired)
            )
            by_id[(record.name, record.version)] = record
        for versions in keys.values():
            versions.sort(key=lambda k: k.version, reverse=True)
        with self._lock:
            self._keys, self._records, self._loaded_at = keys, by_id, self._clock()

    def _fresh(self) -> dict[str, list[IndexKey]]:
        loaded = self._loaded_at
        if loaded is None or self._clock() - loaded >= self.refresh_seconds:
            with self._lock:
                if self._loaded_at is loaded:
                    self.reload()
        return self._keys

    def _versions(self, name: str) -> list[IndexKey]:
        versions = self._fresh().get(name)
        if not versions:
            raise ConfigError(f"blind index {name!r} has no index key yet: create it (ensure_index_keys) first")
        return versions

    def writer(self, name: str) -> IndexKey:
        """The version new values of index ``name`` are indexed with: the newest active, unretired one."""
        now = self._clock()
        for key in self._versions(name):
            if not key.retired and key.active_from <= now:
                return key
        raise ConfigError(f"blind index {name!r} has no active index key")

    def readers(self, name: str) -> list[IndexKey]:
        """Every version a lookup of index ``name`` must match (unretired, pending ones included)."""
        return [key for key in self._versions(name) if not key.retired]

    def digest(self, name: str, data: bytes, length: int) -> bytes:
        """The index value to store for ``data``."""
        return self.writer(name).digest(data, length)

    def digests(self, name: str, data: bytes, length: int) -> list[bytes]:
        """The index values a lookup of ``data`` matches, one per readable version."""
        return [key.digest(data, length) for key in self.readers(name)]

    def stored_version(self, name: str, stored: bytes) -> int | None:
        """The version a stored index value was made with (None when it is too short to say)."""
        return int.from_bytes(stored[:2], "big") if len(stored) >= 2 else None

    # --- management (each step commits on its own) ---------------------------------------

    def _seal(self, name: str, version: int, active_from: int, retired: bool, key: bytes) -> IndexKeyRecord:
        sealed = self.encryption.encrypt(key, _context(name, version, active_from, retired))
        return IndexKeyRecord(name, version, active_from, retired, sealed)

    def ensure(self, names: Iterable[str]) -> list[str]:
        """Create version 1 (active at once) of every index in ``names`` that has no key; return those created."""
        created: list[str] = []
        self.reload()
        for name in dict.fromkeys(check_index_name(n) for n in names):
            if name in self._keys:
                continue
            record = self._seal(name, 1, int(self._clock()), False, os.urandom(_KEY_SIZE))
            if self._store().add_index_key(record):
                created.append(name)
        self.reload()
        return created

    def rotate(self, name: str, *, grace: float | None = None) -> int:
        """Add a new version of index ``name``; it indexes new values from now + ``grace`` seconds. Returns it."""
        check_index_name(name)
        delay = self.grace if grace is None else grace
        if not delay >= 0:
            raise ValueError("grace must be zero or more seconds")
        self.reload()
        newest = self._keys.get(name, [])
        version = newest[0].version + 1 if newest else 1
        if version > MAX_INDEX_VERSION:
            raise ValueError(f"index {name!r} has used all {MAX_INDEX_VERSION} versions")
        record = self._seal(name, version, int(self._clock() + delay), False, os.urandom(_KEY_SIZE))
        if not self._store().add_index_key(record):
            raise ConfigError(f"index {name!r} v{version} was created by someone else meanwhile; try again")
        self.reload()
        return version

    def retire(self, name: str, version: int) -> None:
        """Mark a version retired: lookups stop matching it (run only once no row uses it)."""
        self.reload()
        record = self._records.get((name, version))
        if record is None:
            raise ValueError(f"index {name!r} has no version {version}")
        if record.retired:
            return
        if self.writer(name).version == version:
            raise ValueError(f"index {name!r} v{version} is the version new values use; rotate first")
        unsealed = self.encryption.decrypt(record.sealed_key, _context(name, version, record.active_from, False))
        new = self._seal(name, version, record.active_from, True, unsealed)
        if not self._store().replace_index_key(record, new):
            raise ConfigError(f"index {name!r} v{version} changed meanwhile; try again")
        self.reload()

    def rewrap(self) -> int:
        """Re-seal every index key under the primary KEK (after a KEK rotation or migration); returns how many."""
        self.reload()
        count = 0
        for record in list(self._records.values()):
            context = _context(record.name, record.version, record.active_from, record.retired)
            key = self.encryption.decrypt(record.sealed_key, context)
            new = self._seal(record.name, record.version, record.active_from, record.retired, key)
            if self._store().replace_index_key(record, new):
                count += 1
        self.reload()
        return count

    def status(self) -> list[dict[str, object]]:
        """Every index-key version: name, version, active_from, retired, and whether it is the writer now."""
        self.reload()
        now = self._clock()
        out: list[dict[str, object]] = []
        for name in sorted(self._keys):
            writer = next((k.version for k in self._keys[name] if not k.retired and k.active_from <= now), None)
            for key in self._keys[name]:
                out.append(
                    {
                        "index": name,
                        "version": key.version,
                        "active_from": key.active_from,
                        "retired": key.retired,
                        "writing": key.version == writer,
                    }
                )
        return out
