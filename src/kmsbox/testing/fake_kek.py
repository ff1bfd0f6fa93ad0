"""An in-process fake KEK for unit tests: no server, no plugin, no socket.

Like Tink's ``fake_kms``: versioned AES-256-GCM keys held in memory, plus the same
:class:`~kmsbox.testing.fakes.FaultInjector` the KMS fakes use, so a test can add
latency, throttling, outages or access-denied errors to every wrap and unwrap::

    kek = FakeKek()
    store = kmsbox.open_store("memory://", kek=kek)
    kek.faults.configure(rate=1.0, kind="unavailable")   # the KMS is down
    kek.rotate()                                         # a new primary version
    kek.destroy_version("v1")                            # unwraps under v1 now fail

Keys are generated at run time and never leave the object.
"""

from __future__ import annotations

import itertools
import threading

from kmsbox import format as fmt
from kmsbox._crypto import Aead, random_key
from kmsbox.errors import KeyUnavailable, ProviderError
from kmsbox.kek import BaseKekProvider, Context, WrappedKey
from kmsbox.retry import RetryPolicy, call_with_retry
from kmsbox.testing.fakes import FaultInjector

__all__ = ["FakeKek"]

_names = itertools.count(1)
_TRANSIENT = {
    "throttle": "ThrottlingException",
    "unavailable": "ServiceUnavailable",
    "timeout": "DeadlineExceeded",
    "reset": "ConnectionReset",
}


class _InjectedFault(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class FakeKek(BaseKekProvider):
    """An in-memory KEK with versions and fault injection (``faults``)."""

    def __init__(self, name: str | None = None, *, seed: int | None = None) -> None:
        super().__init__(f"fake-kek://{name or f'kek-{next(_names)}'}")
        self._lock = threading.Lock()
        self._keys: dict[str, Aead] = {"v1": Aead(random_key())}
        self._primary = "v1"
        self.faults = FaultInjector(seed=seed)
        self.retry = RetryPolicy.from_env()

    def _call(self, operation: str) -> None:
        # Retried like a real provider's call, so tests see the same behaviour.
        call_with_retry(lambda: self._attempt(operation), self._classify, self.retry)

    def _attempt(self, operation: str) -> None:
        kind = self.faults.before_call(operation)
        if kind is not None:
            raise _InjectedFault(kind)

    def _classify(self, exc: BaseException) -> ProviderError | None:
        if not isinstance(exc, _InjectedFault):
            return None
        if exc.kind == "denied":
            return ProviderError(f"{self.uri}: access denied (injected)", transient=False, code="AccessDenied")
        if exc.kind == "malformed":
            return ProviderError(f"{self.uri}: malformed reply (injected)", transient=False, code="BadResponse")
        return ProviderError(f"{self.uri}: {exc.kind} (injected)", transient=True, code=_TRANSIENT[exc.kind])

    def _aad(self, version: str, context: Context) -> bytes:
        return b"kmsbox-fake-kek\x00" + version.encode("ascii") + b"\x00" + fmt.encode_context(context)

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Wrap under the primary version."""
        self._call("wrap")
        with self._lock:
            version, aead = self._primary, self._keys[self._primary]
        nonce, ciphertext = aead.seal(key, self._aad(version, context))
        return WrappedKey(self.uri, version, fmt.encode_local_wrap(nonce, ciphertext))

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Unwrap; KeyUnavailable if the version was destroyed."""
        self._call("unwrap")
        with self._lock:
            aead = self._keys.get(wrapped.key_version)
        if aead is None:
            raise KeyUnavailable(f"{self.uri} has no version {wrapped.key_version!r}")
        nonce, ciphertext = fmt.parse_local_wrap(wrapped.ciphertext)
        return aead.open(nonce, ciphertext, self._aad(wrapped.key_version, context))

    def primary_version(self) -> str:
        """The version new wraps use."""
        return self._primary

    def version_available(self, version: str) -> bool:
        """True until the version is destroyed."""
        with self._lock:
            return version in self._keys

    def rotate(self) -> str:
        """Add a new primary version; older ones still unwrap. Returns its name."""
        with self._lock:
            version = f"v{max(int(v[1:]) for v in self._keys) + 1}"
            self._keys[version] = Aead(random_key())
            self._primary = version
        return version

    def destroy_version(self, version: str) -> None:
        """Forget a (non-primary) version, as a KMS's destroy would."""
        with self._lock:
            if version == self._primary:
                raise ValueError("cannot destroy the primary version; rotate first")
            self._keys.pop(version, None)

    def describe(self) -> dict[str, str]:
        """Kind, URI and versions (never key bytes)."""
        with self._lock:
            versions = ",".join(sorted(self._keys))
        return {"provider": "fake", "uri": self.uri, "primary_version": self._primary, "versions": versions}
