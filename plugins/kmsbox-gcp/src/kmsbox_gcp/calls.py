"""The Cloud KMS calls of the gcp-kms provider, apart from how they are sent.

Each KEK operation is one RPC. This module builds its request (the context as AAD,
the CRC32C integrity fields), checks its reply (the checksums, that a version of
the intended key answered) and says what a failure means (``KeyUnavailable``,
``IntegrityError``, a missing version). The sync provider sends these calls with the
blocking client and the async one with the grpc.aio client, so both behave the same
by construction; only the sending and the waiting between retries differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import google_crc32c
import grpc
from google.cloud.kms_v1.types import CryptoKeyVersion

from kmsbox import format as fmt
from kmsbox.errors import KeyUnavailable, ProviderError
from kmsbox.kek import Context, WrappedKey
from kmsbox.retry import RetryPolicy
from kmsbox_gcp.client import ClientSettings
from kmsbox_gcp.errors import ChecksumMismatch, UnparsableReply, status_of, translate
from kmsbox_gcp.names import SCHEME, CryptoKeyName, parse_kek_uri, version_id

__all__ = [
    "BATCH_CONCURRENCY",
    "DESCRIBE_FAILURES",
    "CallBudget",
    "KeyCalls",
    "KmsCall",
    "Rpc",
    "crc32c",
]

T = TypeVar("T")

#: The client method that sends a call; the sync and async clients share these names.
Rpc = Literal["encrypt", "decrypt", "get_crypto_key", "get_crypto_key_version"]

#: Calls in flight at once in a batch form (Cloud KMS has no batch API).
BATCH_CONCURRENCY = 8
#: What ``describe()`` reports as an unknown primary version instead of raising.
DESCRIBE_FAILURES = (ProviderError, KeyUnavailable)

# Never hand the client a per-call timeout shorter than this, even at the end of the deadline.
_MIN_CALL_TIMEOUT = 0.2


def crc32c(data: bytes) -> int:
    """CRC32C of ``data``, as Cloud KMS's integrity fields carry it."""
    return int(google_crc32c.value(data))


class CallBudget:
    """The per-call timeouts of one operation: the policy's timeout, cut to what is left of its deadline."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._start = clock()

    def timeout(self) -> float:
        """The timeout of the next attempt."""
        remaining = self._policy.deadline - (self._clock() - self._start)
        return max(_MIN_CALL_TIMEOUT, min(self._policy.timeout, remaining))


@dataclass(frozen=True, slots=True)
class KmsCall(Generic[T]):
    """One RPC of a KEK operation: the client method, its request, and how to read the outcome.

    ``read`` checks a reply and turns it into the operation's result. ``decrypting``
    makes an INVALID_ARGUMENT an ``IntegrityError``. ``if_not_found`` is the result
    when Cloud KMS answers NOT_FOUND (``version_available``); None raises it.
    """

    rpc: Rpc
    request: dict[str, Any]
    read: Callable[[Any], T]
    resource: str
    decrypting: bool = False
    if_not_found: T | None = None

    def answer(self, reply: Any) -> T:
        """The result of a reply; ChecksumMismatch or UnparsableReply (both retried or mapped by ``classify``)."""
        if reply is None:  # grpc.aio hands back None for a reply it cannot parse (grpc/grpc#33955)
            raise UnparsableReply(f"Cloud KMS {self.rpc} reply could not be parsed")
        return self.read(reply)

    def failed(self, exc: Exception) -> T:
        """What the client's exception means: a result, a typed kmsbox error, or ``exc`` itself (for ``classify``).

        Call it inside the ``except`` block that caught ``exc``.
        """
        if self.if_not_found is not None and status_of(exc) is grpc.StatusCode.NOT_FOUND:
            return self.if_not_found
        typed = translate(exc, decrypting=self.decrypting, resource=self.resource)
        if typed is not None:
            raise typed from exc
        raise exc


class KeyCalls:
    """The calls a provider makes for the crypto key ``uri`` names (ConfigError when it is malformed)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.key: CryptoKeyName = parse_kek_uri(uri)

    def encrypt(self, key: bytes, context: Context) -> KmsCall[WrappedKey]:
        """Encrypt under the primary version with ``context`` as AAD; the reply gives the version used."""
        aad = fmt.encode_context(context)
        request = {
            "name": self.key.path,
            "plaintext": key,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": crc32c(key),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }
        return KmsCall("encrypt", request, self._read_encrypt, self.key.path)

    def _read_encrypt(self, reply: Any) -> WrappedKey:
        if not reply.verified_plaintext_crc32c or not reply.verified_additional_authenticated_data_crc32c:
            raise ChecksumMismatch("Encrypt request checksums were not verified by Cloud KMS")
        if reply.ciphertext_crc32c is None or reply.ciphertext_crc32c != crc32c(reply.ciphertext):
            raise ChecksumMismatch("Encrypt response ciphertext does not match ciphertext_crc32c")
        version = version_id(reply.name, self.key)
        if version is None:
            # Google asks callers to check that the intended key did the encryption.
            raise ProviderError(
                f"Cloud KMS encrypted with {reply.name!r}, not a version of {self.key.path}",
                transient=False,
                code="WRONG_KEY",
            )
        return WrappedKey(self.uri, version, bytes(reply.ciphertext))

    def decrypt(self, wrapped: WrappedKey, context: Context) -> KmsCall[bytes]:
        """Decrypt with ``context`` as AAD; KeyUnavailable at once for another KEK's or a non-version key."""
        if wrapped.kek_uri != self.uri:
            raise KeyUnavailable(f"key was wrapped by another KEK ({wrapped.kek_uri!r}), not {self.uri!r}")
        if version_id(wrapped.key_version, self.key) is None:
            raise KeyUnavailable(f"{wrapped.key_version!r} is not a version of Cloud KMS key {self.key.path}")
        aad = fmt.encode_context(context)
        request = {
            "name": self.key.path,
            "ciphertext": wrapped.ciphertext,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": crc32c(wrapped.ciphertext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }
        return KmsCall("decrypt", request, _read_decrypt, self.key.path, decrypting=True)

    def get_primary(self) -> KmsCall[str]:
        """GetCryptoKey, read as the primary version's short id (KeyUnavailable when there is none)."""
        return KmsCall("get_crypto_key", {"name": self.key.path}, self._read_primary, self.key.path)

    def _read_primary(self, crypto_key: Any) -> str:
        version = version_id(crypto_key.primary.name, self.key) if crypto_key.primary.name else None
        if version is None:
            raise KeyUnavailable(f"Cloud KMS key {self.key.path} has no primary version")
        return version

    def get_version(self, version: str) -> KmsCall[bool] | None:
        """GetCryptoKeyVersion, read as "exists and is ENABLED"; None when ``version`` is not one of this key's."""
        short = version_id(version, self.key)
        if short is None:
            return None
        return KmsCall(
            "get_crypto_key_version",
            {"name": self.key.version_path(short)},
            _read_enabled,
            self.key.path,
            if_not_found=False,
        )

    def describe(self, settings: ClientSettings, primary: str | BaseException) -> dict[str, str]:
        """Provider kind, key name, endpoint and primary version (or why it is unknown); never key material."""
        return {
            "provider": SCHEME,
            "key": self.key.path,
            "endpoint": settings.describe(),
            "primary_version": primary if isinstance(primary, str) else f"unknown ({type(primary).__name__})",
        }


def _read_decrypt(reply: Any) -> bytes:
    if reply.plaintext_crc32c is None or reply.plaintext_crc32c != crc32c(reply.plaintext):
        raise ChecksumMismatch("Decrypt response plaintext does not match plaintext_crc32c")
    return bytes(reply.plaintext)


def _read_enabled(version: Any) -> bool:
    return bool(version.state == CryptoKeyVersion.CryptoKeyVersionState.ENABLED)
