"""Map Vault's answers (hvac and requests exceptions, per-item batch errors) to kmsbox errors.

Vault reports user mistakes as HTTP 400 with ``{"errors": ["..."]}``; the text is
the only thing that tells a failed authentication tag from a retired key version,
so the mapping matches the messages of Vault's ``keysutil`` package.
"""

from __future__ import annotations

import hvac.exceptions as hvac_exc
import requests

from kmsbox.errors import IntegrityError, KeyUnavailable, KmsboxError, ProviderError

__all__ = ["classify_transport", "error_for_message", "error_for_status"]

# Messages meaning "these bytes do not authenticate / do not parse" (keysutil, Go crypto, Go base64).
_INTEGRITY_MARKERS = (
    "message authentication failed",
    "invalid ciphertext",
    "illegal base64 data",
)
# Messages meaning "the key version that wrapped is gone or not allowed".
_UNAVAILABLE_MARKERS = (
    "version is disallowed by policy",
    "no such key version",
    "version is too new",
    "invalid key version",
)
_KEY_NOT_FOUND = "encryption key not found"


def error_for_message(message: str, what: str) -> KmsboxError:
    """The kmsbox error for a Vault 400 (or per-item batch) error message about ``what``."""
    lowered = message.lower()
    if any(marker in lowered for marker in _INTEGRITY_MARKERS):
        # Opaque on purpose: never echo which part failed.
        return IntegrityError(f"Vault could not authenticate the wrapped key for {what}")
    if any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return KeyUnavailable(f"{what}: Vault no longer allows that key version ({message})")
    if _KEY_NOT_FOUND in lowered:
        return ProviderError(f"{what}: Vault has no such transit key", transient=False, code="key_not_found")
    return ProviderError(f"{what}: Vault rejected the request: {message}", transient=False, code="invalid_request")


def _messages(exc: hvac_exc.VaultError) -> str:
    errors = exc.errors if isinstance(exc.errors, list) else []
    text = "; ".join(str(e).strip() for e in errors if str(e).strip())
    return " ".join(text.split()) or type(exc).__name__


def error_for_status(exc: hvac_exc.VaultError, what: str) -> KmsboxError:
    """The kmsbox error for an hvac exception raised by an HTTP status."""
    message = _messages(exc)
    if isinstance(exc, hvac_exc.InvalidRequest):
        return error_for_message(message, what)
    if isinstance(exc, hvac_exc.Forbidden | hvac_exc.Unauthorized):
        return ProviderError(
            f"{what}: Vault denied the request (bad or expired token, or a policy without this path): {message}",
            transient=False,
            code="permission_denied",
        )
    if isinstance(exc, hvac_exc.InvalidPath):
        return ProviderError(f"{what}: Vault has no such path or key ({message})", transient=False, code="not_found")
    if isinstance(exc, hvac_exc.RateLimitExceeded):
        return ProviderError(f"{what}: Vault is throttling requests", transient=True, code="throttled")
    if isinstance(exc, hvac_exc.PreconditionFailed):
        # A performance standby not yet caught up: retrying is Vault's own advice.
        return ProviderError(f"{what}: Vault standby is not up to date", transient=True, code="precondition_failed")
    if isinstance(exc, hvac_exc.VaultDown):
        return ProviderError(f"{what}: Vault is sealed or unavailable ({message})", transient=True, code="unavailable")
    if isinstance(exc, hvac_exc.InternalServerError | hvac_exc.BadGateway):
        return ProviderError(f"{what}: Vault server error ({message})", transient=True, code="server_error")
    if isinstance(exc, hvac_exc.VaultNotInitialized):
        return ProviderError(f"{what}: Vault is not initialized", transient=False, code="not_initialized")
    return ProviderError(f"{what}: unexpected Vault answer ({message})", transient=True, code="unexpected")


def classify_transport(exc: BaseException, what: str) -> ProviderError | None:
    """Classify an exception that escaped a Vault call, for ``call_with_retry``.

    Returns None for exceptions that are not Vault's or the network's.
    """
    if isinstance(exc, hvac_exc.VaultError):
        mapped = error_for_status(exc, what)
        if isinstance(mapped, ProviderError):
            return mapped
        return ProviderError(str(mapped), transient=False, code="invalid_request")
    if isinstance(exc, requests.exceptions.SSLError):
        # A certificate problem does not heal by retrying.
        return ProviderError(f"{what}: TLS handshake with Vault failed: {exc}", transient=False, code="tls_error")
    if isinstance(exc, requests.exceptions.Timeout):
        return ProviderError(f"{what}: Vault did not answer in time", transient=True, code="timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ProviderError(f"{what}: cannot reach Vault ({type(exc).__name__})", transient=True, code="connection")
    if isinstance(exc, requests.exceptions.RequestException):
        return ProviderError(f"{what}: HTTP error talking to Vault: {exc}", transient=False, code="http_error")
    return None
