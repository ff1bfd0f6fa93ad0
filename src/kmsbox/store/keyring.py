"""Namespace keys of a store: created on first write, wrapped by every KEK, cached.

One KEK call per namespace-key version per cache lifetime: unwrapped keys live
in a bounded :class:`~kmsbox.keys.KeyCache`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kmsbox import format as fmt
from kmsbox._crypto import Aead, random_key
from kmsbox.errors import ConfigError, ConflictError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import KekProvider, WrappedKey
from kmsbox.keys import KeyCache
from kmsbox.storage.base import NamespaceKeyRow, StorageBackend, Transaction

__all__ = [
    "ACTIVE",
    "AUDIT_NAMESPACE",
    "COMPROMISED",
    "KEY_STATUSES",
    "NamespaceKeyring",
    "RETIRED",
    "ROTATING",
]

ACTIVE = "active"
ROTATING = "rotating"
RETIRED = "retired"
COMPROMISED = "compromised"
KEY_STATUSES = (ACTIVE, ROTATING, RETIRED, COMPROMISED)

#: The reserved namespace that holds the audit HMAC key (invalid as a user namespace).
AUDIT_NAMESPACE = "!audit"


class NamespaceKeyring:
    """Creates, unwraps and caches the namespace keys of one store."""

    def __init__(self, backend: StorageBackend, keks: Sequence[KekProvider], cache: KeyCache[Aead]) -> None:
        if not keks:
            raise ConfigError("a store needs at least one KEK")
        self.backend = backend
        self.keks = list(keks)
        self.cache = cache
        self._by_uri = {k.uri: k for k in self.keks}
        self._known: set[str] = set()  # namespaces seen with a key (keys are never all deleted)
        self._last_active: dict[str, int] = {}

    @property
    def primary(self) -> KekProvider:
        """The KEK that wraps new namespace keys first."""
        return self.keks[0]

    def kek_for(self, uri: str) -> KekProvider | None:
        """The configured KEK with this URI, if any."""
        return self._by_uri.get(uri)

    def wrap_all(self, namespace: str, version: int, key: bytes) -> list[WrappedKey]:
        """Wrap a namespace key under every configured KEK."""
        context = fmt.namespace_key_context(namespace, version)
        return [kek.wrap(key, context) for kek in self.keks]

    def unwrap_row(self, row: NamespaceKeyRow) -> Aead:
        """The namespace key of ``row``, from the cache or through the first KEK that can.

        Raises KeyUnavailable when no configured KEK holds a usable wrap.
        """
        cache_key = (row.namespace, row.version)
        cached = self.cache.get(cache_key)
        if cached is not None:
            return cached
        return self.cache.put(cache_key, Aead(self.unwrap_bytes(row)))

    def unwrap_bytes(self, row: NamespaceKeyRow) -> bytes:
        """Unwrap the raw key bytes of ``row`` (one KEK call)."""
        context = fmt.namespace_key_context(row.namespace, row.version)
        failures: list[str] = []
        wraps = {w.kek_uri: w for w in row.wraps}
        for kek in self.keks:
            wrapped = wraps.get(kek.uri)
            if wrapped is None:
                continue
            try:
                return kek.unwrap(wrapped, context)
            except KeyUnavailable as exc:
                failures.append(f"{kek.uri}: {exc}")
            except IntegrityError:
                failures.append(f"{kek.uri}: wrap does not authenticate")
            except ProviderError as exc:
                if exc.transient:
                    raise
                failures.append(f"{kek.uri}: {exc}")
        where = f"namespace key {row.namespace!r} version {row.version}"
        if not failures:
            raise KeyUnavailable(
                f"{where} is not wrapped by any configured KEK (wrapped by: {', '.join(wraps) or 'none'})"
            )
        raise KeyUnavailable(f"{where} cannot be unwrapped: {'; '.join(failures)}")

    def key_for(self, tx: Transaction, namespace: str) -> Callable[[int], Aead]:
        """A lookup of namespace-key versions for reads inside ``tx``."""
        rows: dict[int, NamespaceKeyRow] | None = None

        def lookup(version: int) -> Aead:
            nonlocal rows
            cached = self.cache.get((namespace, version))
            if cached is not None:
                return cached
            if rows is None:
                rows = {r.version: r for r in tx.namespace_keys(namespace)}
            row = rows.get(version)
            if row is None:
                raise KeyUnavailable(f"namespace key {namespace!r} version {version} does not exist")
            return self.unwrap_row(row)

        return lookup

    def last_active(self, namespace: str) -> tuple[int, Aead] | None:
        """The active key version this keyring last read for ``namespace`` and its cached key:
        a guess, for writes that check it in the same statement (None if unknown or evicted)."""
        version = self._last_active.get(namespace)
        if version is None:
            return None
        key = self.cache.get((namespace, version))
        return None if key is None else (version, key)

    def ensure(self, namespace: str) -> None:
        """Create the first namespace key of ``namespace`` if it has none.

        The KEK calls happen outside any transaction; a concurrent creator wins
        and this one's key is discarded.
        """
        if namespace in self._known:
            return
        with self.backend.read() as tx:
            if tx.active_namespace_key_version(namespace) is not None or tx.namespace_keys(namespace):
                self._known.add(namespace)
                return
        key = random_key()
        now = time.time()
        row = NamespaceKeyRow(namespace, 1, ACTIVE, now, now, self.wrap_all(namespace, 1, key))
        try:
            with self.backend.transaction() as tx:
                if tx.namespace_keys(namespace):
                    self._known.add(namespace)
                    return
                tx.insert_namespace_key(row)
        except ConflictError:
            return
        self._known.add(namespace)
        self._last_active[namespace] = 1
        self.cache.put((namespace, 1), Aead(key))

    def active(self, tx: Transaction, namespace: str) -> tuple[int, Aead]:
        """The active namespace-key version and its key, read inside ``tx``.

        Raises KeyUnavailable when the namespace has no active key (for example
        every version was marked compromised and none rotated in).
        """
        return self.active_key(tx, namespace, tx.active_namespace_key_version(namespace))

    def active_key(self, tx: Transaction, namespace: str, version: int | None) -> tuple[int, Aead]:
        """:meth:`active` for an active version already read inside ``tx``."""
        if version is None:
            raise KeyUnavailable(f"namespace {namespace!r} has no active key: rotate one in")
        self._last_active[namespace] = version
        cached = self.cache.get((namespace, version))
        if cached is not None:
            return version, cached
        row = next(r for r in tx.namespace_keys(namespace) if r.version == version)
        return version, self.unwrap_row(row)
