"""The KEK provider protocol and the key-URI registry.

A KEK provider wraps and unwraps key bytes (namespace keys, engine data keys,
the audit key) with a context bound as associated data, and reports the KEK
version it used. Providers are chosen by the scheme of their key URI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kmsbox.errors import KeyUnavailable, PluginError
from kmsbox.plugins import kek_factories, missing_scheme_error, scheme_of

__all__ = ["BaseKekProvider", "Context", "KekProvider", "WrappedKey", "open_kek"]

#: A context: string keys and values bound to a ciphertext as associated data.
Context = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """Key bytes wrapped by a KEK: which KEK, which of its versions, the ciphertext."""

    kek_uri: str
    key_version: str
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(kek_uri={self.kek_uri!r}, key_version={self.key_version!r}, ciphertext=<{len(self.ciphertext)} bytes>)"


@runtime_checkable
class KekProvider(Protocol):
    """What kmsbox needs of a key-encryption key.

    Errors: ``KeyUnavailable`` when the version that wrapped is gone,
    ``IntegrityError`` when the ciphertext or context does not authenticate,
    ``ProviderError`` (transient or permanent) when the KMS fails.
    """

    @property
    def uri(self) -> str:
        """The key URI this provider was opened with (never contains key material)."""
        ...

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Wrap ``key`` under the primary KEK version, binding ``context``."""
        ...

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Unwrap with the KEK version recorded in ``wrapped``; ``context`` must match."""
        ...

    def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """Wrap several keys; providers whose KMS batches override it."""
        ...

    def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """Unwrap several keys; providers whose KMS batches override it."""
        ...

    def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """Re-wrap under the current primary version (inside the KMS where it can)."""
        ...

    def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """Re-wrap several keys under the current primary version."""
        ...

    def primary_version(self) -> str:
        """The KEK version new wraps use."""
        ...

    def version_available(self, version: str) -> bool | None:
        """Whether the KEK can still unwrap ``version`` (None when it cannot tell)."""
        ...

    def describe(self) -> dict[str, str]:
        """A short description for status output: provider kind, key, primary version."""
        ...

    def close(self) -> None:
        """Release clients and connections."""
        ...


class BaseKekProvider(ABC):
    """Convenient base: subclasses implement wrap, unwrap, primary_version, describe.

    The batch forms loop; override them where the KMS has a batch API.
    """

    #: True for a provider whose calls never leave the process and never block (a local
    #: key): the async store calls it on the event loop instead of a worker thread.
    in_process = False

    def __init__(self, uri: str) -> None:
        self._uri = uri

    @property
    def uri(self) -> str:
        """The key URI this provider was opened with."""
        return self._uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uri={self._uri!r})"

    @abstractmethod
    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Wrap ``key`` under the primary version."""

    @abstractmethod
    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Unwrap ``wrapped``."""

    @abstractmethod
    def primary_version(self) -> str:
        """The version new wraps use."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """A description for status output."""

    def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """Wrap each item in turn."""
        return [self.wrap(key, context) for key, context in items]

    def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """Unwrap each item in turn."""
        return [self.unwrap(wrapped, context) for wrapped, context in items]

    def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """Unwrap then wrap under the primary version."""
        return self.wrap(self.unwrap(wrapped, context), context)

    def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """Rewrap each item (unwrap many, then wrap many)."""
        keys = self.unwrap_many(items)
        return self.wrap_many([(k, ctx) for k, (_, ctx) in zip(keys, items, strict=True)])

    def version_available(self, version: str) -> bool | None:
        """Unknown by default."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Nothing to release by default."""

    def _check_uri(self, wrapped: WrappedKey) -> None:
        if wrapped.kek_uri != self._uri:
            raise KeyUnavailable(f"key was wrapped by another KEK ({wrapped.kek_uri!r}), not {self._uri!r}")


def open_kek(uri: str) -> KekProvider:
    """Open the KEK provider that serves ``uri``'s scheme.

    Raises ``ConfigError`` for a malformed URI or bad key settings and
    ``PluginError`` when no installed plugin serves the scheme (naming the
    package to install when kmsbox knows it).
    """
    scheme = scheme_of(uri, "KEK URI")
    factories = kek_factories()
    registration = factories.get(scheme)
    if registration is None:
        raise missing_scheme_error(scheme, "KEK provider", factories)
    provider = registration.factory(uri)
    if not isinstance(provider, KekProvider):
        raise PluginError(f"plugin {registration.plugin!r} returned a KEK provider that lacks the protocol's methods")
    return provider
