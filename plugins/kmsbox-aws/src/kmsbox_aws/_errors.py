"""Classify botocore failures as kmsbox errors: transient, permanent or left to the caller."""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from kmsbox.errors import ProviderError

__all__ = [
    "CREDENTIAL_ERRORS",
    "INTEGRITY_CODES",
    "KEY_STATE_CODES",
    "NOT_FOUND",
    "client_error_code",
    "client_error_message",
    "classifier",
]

#: Retryable KMS error codes (AWS documents these as "the request can be retried").
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: The ciphertext or its encryption context does not authenticate under the key.
INTEGRITY_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
#: The key exists but is disabled, pending deletion, pending import or unavailable.
KEY_STATE_CODES = frozenset({"DisabledException", "KMSInvalidStateException"})
NOT_FOUND = "NotFoundException"
#: Left to the caller, whose meaning depends on the operation (wrap versus unwrap).
_CALLER_CODES = INTEGRITY_CODES | KEY_STATE_CODES | {NOT_FOUND}

CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError)


def client_error_code(exc: ClientError) -> str:
    """The service's error code of a ClientError ('' when missing)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def client_error_message(exc: ClientError) -> str:
    """The service's error message of a ClientError ('' when missing)."""
    return str(exc.response.get("Error", {}).get("Message", ""))


def _status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status if isinstance(status, int) else 0


def classifier(operation: str, key: str) -> Callable[[BaseException], ProviderError | None]:
    """A ``classify`` for :func:`kmsbox.retry.call_with_retry` of one KMS operation on ``key``.

    Returns None for errors the caller maps itself (integrity, key state, not found,
    missing credentials) and for exceptions that are not botocore's.
    """

    def classify(exc: BaseException) -> ProviderError | None:
        where = f"AWS KMS {operation} on {key}"
        if isinstance(exc, ClientError):
            code = client_error_code(exc)
            if code in _CALLER_CODES:
                return None
            status = _status(exc)
            transient = code in TRANSIENT_CODES or status >= 500 or status == 429
            message = client_error_message(exc) or f"HTTP {status}"
            return ProviderError(
                f"{where} failed: {code or 'error'}: {message}", transient=transient, code=code or None
            )
        if isinstance(exc, CREDENTIAL_ERRORS):
            return None
        if isinstance(exc, SSLError):
            # A TLS failure is a trust or configuration problem; retrying will not fix it.
            return ProviderError(f"{where} failed: TLS error reaching the endpoint", transient=False, code="SSLError")
        if isinstance(exc, (HTTPClientError, BotoConnectionError, IncompleteReadError)):
            # Connection refused or reset, connect and read time-outs: the endpoint may come back.
            return ProviderError(f"{where} failed: {type(exc).__name__}", transient=True, code=type(exc).__name__)
        if isinstance(exc, BotoCoreError):
            # An unparseable reply or a client-side validation failure; the text may quote
            # request parameters, so only the class name is kept here (the cause is chained).
            return ProviderError(f"{where} failed: {type(exc).__name__}", transient=False, code=type(exc).__name__)
        return None

    return classify
