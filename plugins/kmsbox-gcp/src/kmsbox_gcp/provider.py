"""The Cloud KMS KEK provider: ``gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K``.

Wrapping is Cloud KMS Encrypt under the key's primary version, with the context
sent as additional authenticated data; unwrapping is Decrypt, which finds the
version from the ciphertext, so old wraps open after the primary changes. Every
call carries and checks the CRC32C integrity fields as Google's data-integrity
guidelines ask; a mismatch is retried like any transient failure. The calls
themselves live in :mod:`kmsbox_gcp.calls`, shared with the async form
(:meth:`GcpKekProvider.as_async`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from google.cloud.kms_v1 import KeyManagementServiceClient

from kmsbox.kek import BaseKekProvider, Context, WrappedKey
from kmsbox.retry import RetryPolicy, call_with_retry
from kmsbox_gcp.aio import AsyncGcpKekProvider
from kmsbox_gcp.calls import BATCH_CONCURRENCY, DESCRIBE_FAILURES, CallBudget, KeyCalls, KmsCall, crc32c
from kmsbox_gcp.client import ClientSettings, default_credentials, make_client
from kmsbox_gcp.errors import classify

__all__ = ["GcpKekProvider", "crc32c", "open_gcp_kek"]

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class GcpKekProvider(BaseKekProvider):
    """Wraps keys with a Cloud KMS symmetric (ENCRYPT_DECRYPT) crypto key.

    ``key_version`` in a WrappedKey is the short version id (``"3"``), the number
    after ``cryptoKeyVersions/`` in the name Encrypt returned.

    ``client``, ``settings`` and ``policy`` default to a client built from the
    environment (see :mod:`kmsbox_gcp.client`) and ``RetryPolicy.from_env()``.
    Raises ConfigError for a malformed URI, bad settings or missing credentials.
    Safe to share between threads.
    """

    def __init__(
        self,
        uri: str,
        *,
        client: KeyManagementServiceClient | None = None,
        settings: ClientSettings | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(uri)
        self._calls = KeyCalls(uri)
        self._settings = settings or ClientSettings.from_env()
        self._policy = policy or RetryPolicy.from_env()
        # Looked up here, off any event loop, for the async form's clients too; a caller's own
        # client brings its own credentials, so the async form looks them up when first made.
        self._credentials = default_credentials(self._settings) if client is None else None
        self._client = client or make_client(self._settings, self._credentials)
        self._async: AsyncGcpKekProvider | None = None
        self._async_lock = threading.Lock()

    @property
    def key_name(self) -> str:
        """The crypto key's resource name."""
        return self._calls.key.path

    def as_async(self) -> AsyncGcpKekProvider:
        """The native async form over ``KeyManagementServiceAsyncClient`` (one per provider; see :mod:`kmsbox_gcp.aio`).

        ``kmsbox.aio`` uses it instead of running this provider on a thread pool. It shares
        this provider's key, settings, credentials and retry policy; :meth:`close` closes
        its clients too. (A provider given its own ``client`` looks up Application Default
        Credentials here, for a TLS endpoint: call it once off the event loop first.)
        """
        with self._async_lock:
            if self._async is None:
                credentials = self._credentials or default_credentials(self._settings)
                self._async = AsyncGcpKekProvider(self._calls, self._settings, self._policy, credentials)
            return self._async

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Encrypt ``key`` under the primary version with ``context`` as AAD.

        Raises KeyUnavailable if the primary version is disabled or destroyed and
        ProviderError for other Cloud KMS failures (transient ones after retries).
        """
        return self._send(self._calls.encrypt(key, context))

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Decrypt ``wrapped`` with ``context`` as AAD (Cloud KMS picks the version from the ciphertext).

        Raises IntegrityError for a wrong context or altered ciphertext, KeyUnavailable
        when the version is disabled, destroyed or not of this key, ProviderError otherwise.
        """
        return self._send(self._calls.decrypt(wrapped, context))

    def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """Wrap each item, a few calls at a time (Cloud KMS has no batch Encrypt)."""
        return self._parallel(lambda item: self.wrap(*item), items)

    def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """Unwrap each item, a few calls at a time (Cloud KMS has no batch Decrypt)."""
        return self._parallel(lambda item: self.unwrap(*item), items)

    def primary_version(self) -> str:
        """The primary version's short id (one GetCryptoKey call).

        Raises KeyUnavailable when the key has no primary version.
        """
        return self._send(self._calls.get_primary())

    def version_available(self, version: str) -> bool:
        """True when ``version`` (short id or full name) of this key exists and is ENABLED."""
        call = self._calls.get_version(version)
        return False if call is None else self._send(call)

    def describe(self) -> dict[str, str]:
        """Provider kind, key name, endpoint and primary version (never key material)."""
        primary: str | BaseException
        try:
            primary = self.primary_version()
        except DESCRIBE_FAILURES as exc:
            primary = exc
        return self._calls.describe(self._settings, primary)

    def close(self) -> None:
        """Close the client's gRPC channel, and those of the async form's clients."""
        self._client.transport.close()  # type: ignore[no-untyped-call]  # gapic's close() is unannotated
        with self._async_lock:
            native = self._async
        if native is not None:
            native.close_from_any_thread()

    def _send(self, call: KmsCall[T]) -> T:
        """Send ``call`` under the retry policy, keeping each timeout inside the deadline."""
        budget = CallBudget(self._policy)
        method = getattr(self._client, call.rpc)

        def attempt() -> T:
            try:
                reply = method(request=call.request, retry=None, timeout=budget.timeout())
            except Exception as exc:
                return call.failed(exc)
            return call.answer(reply)

        return call_with_retry(attempt, classify, self._policy)

    @staticmethod
    def _parallel(call: Callable[[ItemT], ResultT], items: Sequence[ItemT]) -> list[ResultT]:
        """``[call(item) for item in items]``, a few at a time; the first failure (in order) is raised."""
        if len(items) <= 1:
            return [call(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(BATCH_CONCURRENCY, len(items))) as pool:
            return list(pool.map(call, items))


def open_gcp_kek(uri: str) -> GcpKekProvider:
    """Open a ``gcp-kms://`` KEK; ConfigError for a malformed URI, settings or missing credentials."""
    return GcpKekProvider(uri)
