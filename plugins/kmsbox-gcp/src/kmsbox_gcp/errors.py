"""Mapping Cloud KMS failures onto kmsbox's error tree.

gRPC status codes decide: UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and
INTERNAL are transient; FAILED_PRECONDITION (a disabled or destroyed version) is
``KeyUnavailable``; INVALID_ARGUMENT from Decrypt (bad ciphertext or AAD) is
``IntegrityError``, except Cloud KMS's "The checksum in field ... did not match"
answer, which means the request was corrupted in transit and is retried. A reply
the client cannot parse (the sync gRPC client reports it as INTERNAL "Exception
deserializing response!", grpc.aio hands back None: :class:`UnparsableReply`) is not
the service's and retrying does not fix it: a permanent ``BAD_RESPONSE``. Everything else (PERMISSION_DENIED, NOT_FOUND, UNAUTHENTICATED...)
is permanent.
"""

from __future__ import annotations

import re

import grpc
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from kmsbox.errors import IntegrityError, KeyUnavailable, KmsboxError, ProviderError

__all__ = ["TRANSIENT_CODES", "ChecksumMismatch", "UnparsableReply", "classify", "status_of", "translate"]

TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    }
)

_TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})

# Cloud KMS's wording when a request checksum does not match its data.
_CHECKSUM_RE = re.compile(r"The checksum in field \S+ did not match the data in field \S+")
# grpc's wording when the client cannot parse a reply into the response message.
_UNPARSABLE_REPLY = "Exception deserializing response"


class ChecksumMismatch(Exception):
    """A CRC32C integrity field did not verify: the request or response was corrupted in transit."""


class UnparsableReply(Exception):
    """The client could not parse a reply into the response message (grpc.aio returns None for it)."""


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code of a client exception, or None if it carries none."""
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        code = exc.grpc_status_code
        return code if isinstance(code, grpc.StatusCode) else None
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        return exc.code()
    return None


def _message_of(exc: BaseException) -> str:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return str(exc.message)
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        return str(exc.details() or "")
    return str(exc)


def translate(exc: BaseException, *, decrypting: bool, resource: str) -> KmsboxError | None:
    """The kmsbox error that is not a ProviderError for ``exc`` (KeyUnavailable, IntegrityError), or None."""
    code = status_of(exc)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return KeyUnavailable(f"Cloud KMS key {resource} cannot be used: {_message_of(exc)}")
    if decrypting and code is grpc.StatusCode.INVALID_ARGUMENT and not _CHECKSUM_RE.search(_message_of(exc)):
        # Opaque on purpose: which of ciphertext, context or key was wrong is not said.
        return IntegrityError("the wrapped key or its context did not authenticate (Cloud KMS rejected the ciphertext)")
    return None


def classify(exc: BaseException) -> ProviderError | None:
    """Map a client exception to a transient or permanent ProviderError; None if it is not Cloud KMS's."""
    if isinstance(exc, ChecksumMismatch):
        return ProviderError(f"Cloud KMS integrity check failed: {exc}", transient=True, code="CRC32C_MISMATCH")
    if isinstance(exc, UnparsableReply):
        return _bad_response()
    if isinstance(exc, auth_exceptions.TransportError):
        return ProviderError(f"could not reach Google's token service: {exc}", transient=True, code="UNAVAILABLE")
    if isinstance(exc, auth_exceptions.RefreshError):
        transient = bool(getattr(exc, "retryable", False))
        return ProviderError(
            f"could not refresh Google credentials: {exc}", transient=transient, code="UNAUTHENTICATED"
        )
    code = status_of(exc)
    if code is None:
        if isinstance(exc, api_exceptions.GoogleAPICallError) and isinstance(exc.code, int):
            # An HTTP-only error (no gRPC status): judge by the HTTP status.
            transient = exc.code in _TRANSIENT_HTTP
            return ProviderError(
                f"Cloud KMS HTTP {exc.code}: {exc.message}", transient=transient, code=f"HTTP_{exc.code}"
            )
        return None
    message = _message_of(exc)
    if code is grpc.StatusCode.INVALID_ARGUMENT and _CHECKSUM_RE.search(message):
        return ProviderError(f"Cloud KMS: {message}", transient=True, code="CRC32C_MISMATCH")
    if code is grpc.StatusCode.INTERNAL and _UNPARSABLE_REPLY in message:
        return _bad_response()
    return ProviderError(f"Cloud KMS {code.name}: {message}", transient=code in TRANSIENT_CODES, code=code.name)


def _bad_response() -> ProviderError:
    return ProviderError("Cloud KMS replied with bytes that are not its response", transient=False, code="BAD_RESPONSE")
