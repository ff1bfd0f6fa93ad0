"""Validation of namespaces and secret names.

Namespace: 1 to 128 characters; one or more segments separated by ``:``, each
starting with a letter or digit and otherwise letters, digits, ``.``, ``_`` or
``-`` (``app:production``, ``tenant-123``, ``team-alpha:testing``).

Secret name: 1 to 255 characters; starts with a letter or digit, then letters,
digits, ``.``, ``_``, ``-`` or ``/`` (``db/password``, ``OPENAI_API_KEY``).

A bad value is a ``ValueError`` before anything is stored.
"""

from __future__ import annotations

import functools
import re

__all__ = ["MAX_NAME", "MAX_NAMESPACE", "NAMESPACE_PATTERN", "NAME_PATTERN", "validate_name", "validate_namespace"]

MAX_NAMESPACE = 128
MAX_NAME = 255
NAMESPACE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[A-Za-z0-9][A-Za-z0-9._-]*)*"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_NAMESPACE_RE = re.compile(NAMESPACE_PATTERN)
_NAME_RE = re.compile(NAME_PATTERN)


def _shown(value: object) -> str:
    # Show a bounded prefix: names are not secret, but may be long or binary junk.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.lru_cache(maxsize=4096)
def _valid_namespace(namespace: str) -> bool:
    return len(namespace) <= MAX_NAMESPACE and _NAMESPACE_RE.fullmatch(namespace) is not None


@functools.lru_cache(maxsize=8192)
def _valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME and _NAME_RE.fullmatch(name) is not None


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if valid, else raise ValueError saying why."""
    if type(namespace) is str and _valid_namespace(namespace):
        return namespace
    if not isinstance(namespace, str):
        raise ValueError(f"namespace must be a string, got {type(namespace).__name__}")
    if not namespace:
        raise ValueError("namespace is empty")
    if len(namespace) > MAX_NAMESPACE:
        raise ValueError(f"namespace is longer than {MAX_NAMESPACE} characters")
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(
            f"namespace {_shown(namespace)} is invalid: use segments of letters, digits, '.', '_', '-' joined by ':'"
        )
    return namespace


def validate_name(name: object) -> str:
    """Return ``name`` if valid, else raise ValueError saying why."""
    if type(name) is str and _valid_name(name):
        return name
    if not isinstance(name, str):
        raise ValueError(f"secret name must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("secret name is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"secret name is longer than {MAX_NAME} characters")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"secret name {_shown(name)} is invalid: start with a letter or digit; then letters, digits, '.', '_', '-', '/'"
        )
    return name
