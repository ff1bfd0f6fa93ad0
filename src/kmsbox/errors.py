"""The one exception tree of kmsbox.

Every error kmsbox raises derives from :class:`KmsboxError`. Messages name the
thing that went wrong (a variable, a file, a namespace, a secret name) and never
contain a secret value or key material.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConflictError",
    "IntegrityError",
    "KeyUnavailable",
    "KmsboxError",
    "NamespaceNotFound",
    "PluginError",
    "ProviderError",
    "SecretDisabled",
    "SecretExpired",
    "SecretNotFound",
    "StorageError",
]


class KmsboxError(Exception):
    """Base of every error kmsbox raises on purpose.

    ``reason`` is the error's one name in the store's vocabulary: the ``reason`` of a
    failed ``try_get`` and of a failure's audit event, and the key of the CLI's
    exit-code table. Defined here once; everything else derives from it.
    """

    reason = "error"


class ConfigError(KmsboxError):
    """Settings are bad or missing: raised at open so that kmsbox fails closed.

    Examples: a KEK variable that is unset, short or not hex; a keyring file with a
    duplicated version; a storage URL nobody serves; a schema newer than the code.
    """

    reason = "config"


class PluginError(KmsboxError):
    """A plugin is broken, conflicts with another, or is not installed.

    Raised when a URI scheme has no provider (the message names the package that
    serves it, when one is known), when two plugins register the same scheme, or
    when a hook implementation does not match its specification.
    """

    reason = "plugin"


class ProviderError(KmsboxError):
    """A KEK provider (a KMS) failed.

    ``transient`` is True for failures worth retrying later (throttling, 5xx,
    unavailable, timeouts) and False for permanent ones (access denied, unknown
    key, a ciphertext the KMS rejects). ``code`` carries the service's own error
    code when there is one. The SDK's exception is chained as ``__cause__``.
    """

    reason = "provider_error"

    def __init__(self, message: str, *, transient: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code

    def __repr__(self) -> str:
        return f"ProviderError({str(self)!r}, transient={self.transient}, code={self.code!r})"


class KeyUnavailable(KmsboxError):
    """The key needed to unwrap is gone: a KEK version was removed or destroyed,
    a namespace key was deleted, or no configured KEK can unwrap a namespace key.

    The seeds call this ``key_version_unavailable``.
    """

    code = "key_version_unavailable"
    reason = "key_unavailable"


class IntegrityError(KmsboxError):
    """Stored bytes are malformed or fail authentication.

    Raised for a truncated, extended, altered or moved ciphertext, a wrong context,
    or a wrong key. Deliberately opaque: it never says which byte or key was wrong.
    Also raised by ``audit verify`` when the event chain was changed.
    """

    reason = "integrity"


class SecretNotFound(KmsboxError):
    """No secret (or no such version of it) exists under that namespace and name."""

    reason = "not_found"


class SecretExpired(KmsboxError):
    """The secret exists but its expiry time has passed (checked at read time)."""

    reason = "expired"


class SecretDisabled(KmsboxError):
    """The secret exists but was disabled; enable it to read it again."""

    reason = "disabled"


class ConflictError(KmsboxError):
    """A compare-and-set lost: someone else changed the row first. Retry the call."""

    reason = "conflict"


class StorageError(KmsboxError):
    """The storage backend failed (I/O, lock time-out, lost connection)."""

    reason = "storage"


class NamespaceNotFound(SecretNotFound):
    """The namespace itself does not exist (no key and no secret was ever made in it):
    often a typo of another namespace's name."""

    reason = "namespace_not_found"
