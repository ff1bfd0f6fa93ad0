"""The exit codes of the ``kmsbox`` command, and which one each kmsbox error ends in.

An error's exit code is found through its ``reason`` (defined once, on its class in
:mod:`kmsbox.errors`), so a new error class or a renamed reason cannot drift from the
table: a reason the table does not know falls back to its base class's.
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

__all__ = ["EXIT_CODES", "EXIT_FOR_REASON", "exit_code_for", "exit_name_for"]

#: Exit codes of the kmsbox command (also documented in docs/cli.md).
EXIT_CODES = {
    "ok": 0,
    "error": 1,
    "usage": 2,
    "not_found": 3,
    "denied": 4,
    "integrity": 5,
    "key_unavailable": 6,
    "config": 7,
    "provider": 8,
    "storage": 9,
    "verify_failed": 10,
    # 70 is EX_SOFTWARE (sysexits.h), 130 the shell's 128 + SIGINT: both mean the same elsewhere.
    "internal": 70,
    "interrupted": 130,
}

# Which exit code each error class's reason ends in. A provider outage at open (a
# ProviderError) is "provider", never "config": a script must tell an outage from a mistake.
_EXITS: tuple[tuple[type[KmsboxError], str], ...] = (
    (KmsboxError, "error"),
    (SecretNotFound, "not_found"),
    (NamespaceNotFound, "not_found"),
    (SecretExpired, "denied"),
    (SecretDisabled, "denied"),
    (IntegrityError, "integrity"),
    (KeyUnavailable, "key_unavailable"),
    (ConfigError, "config"),
    (PluginError, "config"),
    (ProviderError, "provider"),
    (StorageError, "storage"),
    (ConflictError, "storage"),
)

#: The exit-code name of each error reason (``ProviderError.reason`` -> ``"provider"``).
EXIT_FOR_REASON: dict[str, str] = {cls.reason: name for cls, name in _EXITS}


def exit_name_for(exc: KmsboxError) -> str:
    """The exit-code name of ``exc``: its reason's, else the nearest base class's."""
    for cls in type(exc).__mro__:
        reason = cls.__dict__.get("reason")
        if isinstance(reason, str) and reason in EXIT_FOR_REASON:
            return EXIT_FOR_REASON[reason]
    return "error"


def exit_code_for(exc: KmsboxError) -> int:
    """The exit code ``exc`` ends the command with."""
    return EXIT_CODES[exit_name_for(exc)]
