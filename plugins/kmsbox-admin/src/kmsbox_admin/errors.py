"""Errors of the admin API and the HTTP status each one (and each kmsbox error) maps to.

A response body is always ``{"error": {"code": ..., "message": ...}}``. Messages of
kmsbox errors never hold a value or key material (kmsbox's contract); an error of
any other type is shown by its type name only, as the CLI does.
"""

from __future__ import annotations

from kmsbox.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    KeyUnavailable,
    KmsboxError,
    NamespaceNotFound,
    PluginError,
    ProviderError,
    SecretDisabled,
    SecretExpired,
    SecretNotFound,
    StorageError,
)

__all__ = [
    "ApiError",
    "JobConflict",
    "NotAllowed",
    "describe_error",
    "http_status",
]


class ApiError(Exception):
    """An error answered with ``status``, a short ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class NotAllowed(PermissionError):
    """The settings forbid this action (e.g. a KEK migration target not in ``kek_targets``)."""


class JobConflict(Exception):
    """A job on the same namespace (or a store-wide job) is already queued or running."""


#: kmsbox's error tree (and the plugin's own errors) to HTTP status and code; first match wins,
#: so NamespaceNotFound (a SecretNotFound) comes before it.
_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (NamespaceNotFound, 404, "namespace_not_found"),
    (SecretNotFound, 404, "secret_not_found"),
    (NotAllowed, 403, "not_allowed"),
    (JobConflict, 409, "job_running"),
    (ConflictError, 409, "conflict"),
    (SecretExpired, 409, "expired"),
    (SecretDisabled, 409, "disabled"),
    (KeyUnavailable, 409, "key_unavailable"),
    (IntegrityError, 500, "integrity"),
    (ProviderError, 502, "provider_error"),
    (StorageError, 503, "storage_error"),
    (ConfigError, 500, "config_error"),
    (PluginError, 500, "plugin_error"),
    (KmsboxError, 500, "kmsbox_error"),
    (ValueError, 400, "bad_request"),
)


def http_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code for ``exc`` (500 ``internal`` when unknown)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal"


def describe_error(exc: BaseException) -> dict[str, str]:
    """``{"type", "code", "message"}`` safe to show: only errors whose messages are
    known to hold no value keep their message."""
    _, code = http_status(exc)
    known = isinstance(exc, (ApiError, KmsboxError, ValueError, NotAllowed, JobConflict))
    message = str(exc) if known else f"internal error ({type(exc).__name__})"
    return {"type": type(exc).__name__, "code": code, "message": message}
