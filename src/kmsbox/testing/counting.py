"""A KEK provider wrapper that counts calls, for tests and benchmarks."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from kmsbox.kek import Context, KekProvider, WrappedKey

__all__ = ["CountingKek"]


class CountingKek:
    """Delegates to ``inner`` and counts each call (a batch call counts once)."""

    def __init__(self, inner: KekProvider) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CountingKek({self.inner!r})"

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    @property
    def total(self) -> int:
        """All calls counted."""
        with self._lock:
            return sum(self.calls.values())

    @property
    def wraps(self) -> int:
        """Single ``wrap`` calls counted."""
        return self.calls.get("wrap", 0)

    @property
    def unwraps(self) -> int:
        """Single ``unwrap`` calls counted."""
        return self.calls.get("unwrap", 0)

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.calls.clear()

    @property
    def uri(self) -> str:
        """The inner provider's URI."""
        return self.inner.uri

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Counted wrap."""
        self._count("wrap")
        return self.inner.wrap(key, context)

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Counted unwrap."""
        self._count("unwrap")
        return self.inner.unwrap(wrapped, context)

    def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """Counted batch wrap."""
        self._count("wrap_many")
        return self.inner.wrap_many(items)

    def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """Counted batch unwrap."""
        self._count("unwrap_many")
        return self.inner.unwrap_many(items)

    def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """Counted rewrap."""
        self._count("rewrap")
        return self.inner.rewrap(wrapped, context)

    def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """Counted batch rewrap."""
        self._count("rewrap_many")
        return self.inner.rewrap_many(items)

    def primary_version(self) -> str:
        """Not counted: providers answer it locally or from a cache."""
        return self.inner.primary_version()

    def version_available(self, version: str) -> bool | None:
        """Counted: may be a KMS call."""
        self._count("version_available")
        return self.inner.version_available(version)

    def describe(self) -> dict[str, str]:
        """The inner description."""
        return self.inner.describe()

    def close(self) -> None:
        """Close the inner provider."""
        self.inner.close()
