"""The Cloud KMS KEK provider: ``gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K``.

Wrapping is Cloud KMS Encrypt under the key's primary version, with the context
sent as additional authenticated data; unwrapping is Decrypt, which finds the
version from the ciphertext, so old wraps open after the primary changes. Every
call carries and checks the CRC32C integrity fields as Google's data-integrity
guidelines ask; a mismatch is retried like any transient failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import google_crc32c
import grpc
from google.cloud.kms_v1 import KeyManagementServiceClient
from google.cloud.kms_v1.types import CryptoKeyVersion

from kmsbox import format as fmt
from kmsbox.errors import KeyUnavailable, ProviderError
from kmsbox.kek import BaseKekProvider, Context, WrappedKey
from kmsbox.retry import RetryPolicy, call_with_retry
from kmsbox_gcp.client import ClientSettings, make_client
from kmsbox_gcp.errors import ChecksumMismatch, classify, status_of, translate
from kmsbox_gcp.names import SCHEME, CryptoKeyName, parse_kek_uri, version_id

__all__ = ["GcpKekProvider", "crc32c", "open_gcp_kek"]

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Cloud KMS has no batch API; a few calls in flight at once speed up batch forms.
_BATCH_WORKERS = 8
# Never hand the client a per-call timeout shorter than this, even at the end of the deadline.
_MIN_CALL_TIMEOUT = 0.2


def crc32c(data: bytes) -> int:
    """CRC32C of ``data``, as Cloud KMS's integrity fields carry it."""
    return int(google_crc32c.value(data))


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
        self._key: CryptoKeyName = parse_kek_uri(uri)
        self._settings = settings or ClientSettings.from_env()
        self._policy = policy or RetryPolicy.from_env()
        self._client = client or make_client(self._settings)

    @property
    def key_name(self) -> str:
        """The crypto key's resource name."""
        return self._key.path

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Encrypt ``key`` under the primary version with ``context`` as AAD.

        Raises KeyUnavailable if the primary version is disabled or destroyed and
        ProviderError for other Cloud KMS failures (transient ones after retries).
        """
        aad = fmt.encode_context(context)
        request = {
            "name": self._key.path,
            "plaintext": key,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": crc32c(key),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def encrypt(timeout: float) -> WrappedKey:
            response = self._client.encrypt(request=request, retry=None, timeout=timeout)
            if not response.verified_plaintext_crc32c or not response.verified_additional_authenticated_data_crc32c:
                raise ChecksumMismatch("Encrypt request checksums were not verified by Cloud KMS")
            if response.ciphertext_crc32c is None or response.ciphertext_crc32c != crc32c(response.ciphertext):
                raise ChecksumMismatch("Encrypt response ciphertext does not match ciphertext_crc32c")
            version = version_id(response.name, self._key)
            if version is None:
                # Google asks callers to check that the intended key did the encryption.
                raise ProviderError(
                    f"Cloud KMS encrypted with {response.name!r}, not a version of {self._key.path}",
                    transient=False,
                    code="WRONG_KEY",
                )
            return WrappedKey(self.uri, version, bytes(response.ciphertext))

        return self._call(encrypt, decrypting=False)

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Decrypt ``wrapped`` with ``context`` as AAD (Cloud KMS picks the version from the ciphertext).

        Raises IntegrityError for a wrong context or altered ciphertext, KeyUnavailable
        when the version is disabled, destroyed or not of this key, ProviderError otherwise.
        """
        self._check_uri(wrapped)
        if version_id(wrapped.key_version, self._key) is None:
            raise KeyUnavailable(f"{wrapped.key_version!r} is not a version of Cloud KMS key {self._key.path}")
        aad = fmt.encode_context(context)
        request = {
            "name": self._key.path,
            "ciphertext": wrapped.ciphertext,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": crc32c(wrapped.ciphertext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def decrypt(timeout: float) -> bytes:
            response = self._client.decrypt(request=request, retry=None, timeout=timeout)
            if response.plaintext_crc32c is None or response.plaintext_crc32c != crc32c(response.plaintext):
                raise ChecksumMismatch("Decrypt response plaintext does not match plaintext_crc32c")
            return bytes(response.plaintext)

        return self._call(decrypt, decrypting=True)

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

        def get_key(timeout: float) -> str:
            crypto_key = self._client.get_crypto_key(name=self._key.path, retry=None, timeout=timeout)
            version = version_id(crypto_key.primary.name, self._key) if crypto_key.primary.name else None
            if version is None:
                raise KeyUnavailable(f"Cloud KMS key {self._key.path} has no primary version")
            return version

        return self._call(get_key, decrypting=False)

    def version_available(self, version: str) -> bool:
        """True when ``version`` (short id or full name) of this key exists and is ENABLED."""
        short = version_id(version, self._key)
        if short is None:
            return False

        def get_version(timeout: float) -> bool:
            try:
                found = self._client.get_crypto_key_version(
                    name=self._key.version_path(short), retry=None, timeout=timeout
                )
            except Exception as exc:
                if status_of(exc) is grpc.StatusCode.NOT_FOUND:
                    return False
                raise
            return bool(found.state == CryptoKeyVersion.CryptoKeyVersionState.ENABLED)

        return self._call(get_version, decrypting=False)

    def describe(self) -> dict[str, str]:
        """Provider kind, key name, endpoint and primary version (never key material)."""
        try:
            primary = self.primary_version()
        except (ProviderError, KeyUnavailable) as exc:
            primary = f"unknown ({type(exc).__name__})"
        return {
            "provider": SCHEME,
            "key": self._key.path,
            "endpoint": self._settings.describe(),
            "primary_version": primary,
        }

    def close(self) -> None:
        """Close the client's gRPC channel."""
        self._client.transport.close()  # type: ignore[no-untyped-call]  # gapic's close() is unannotated

    def _call(self, rpc: Callable[[float], T], *, decrypting: bool) -> T:
        """Run ``rpc(timeout)`` under the retry policy, keeping each timeout inside the deadline."""
        start = time.monotonic()

        def attempt() -> T:
            remaining = self._policy.deadline - (time.monotonic() - start)
            try:
                return rpc(max(_MIN_CALL_TIMEOUT, min(self._policy.timeout, remaining)))
            except ChecksumMismatch:
                raise
            except Exception as exc:
                typed = translate(exc, decrypting=decrypting, resource=self._key.path)
                if typed is not None:
                    raise typed from exc
                raise

        return call_with_retry(attempt, classify, self._policy)

    @staticmethod
    def _parallel(call: Callable[[ItemT], ResultT], items: Sequence[ItemT]) -> list[ResultT]:
        """``[call(item) for item in items]``, a few at a time; the first failure (in order) is raised."""
        if len(items) <= 1:
            return [call(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(_BATCH_WORKERS, len(items))) as pool:
            return list(pool.map(call, items))


def open_gcp_kek(uri: str) -> GcpKekProvider:
    """Open a ``gcp-kms://`` KEK; ConfigError for a malformed URI, settings or missing credentials."""
    return GcpKekProvider(uri)
