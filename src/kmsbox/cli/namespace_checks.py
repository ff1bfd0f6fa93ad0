"""Namespace checks of the CLI: a typo of a namespace never becomes an action.

A namespace exists once it has keys or secrets. Commands on a namespace's keys refuse
one that does not exist (only ``rotate --create`` makes one); ``put`` and ``import``
make one unless its name is close to an existing one, then ``--create`` must confirm
it; reads of one say so (not "no secret"); and every refusal suggests the namespaces
whose names are close ("did you mean 'shop:prod'?").
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kmsbox.errors import NamespaceNotFound, SecretNotFound
from kmsbox.store.names import validate_namespace

__all__ = [
    "check_new_namespace",
    "close_namespaces",
    "known_namespace",
    "namespace_exists",
    "reads_of",
    "unknown_namespace",
]

#: How alike two names must be (difflib's ratio) to be offered as "did you mean".
_CLOSE = 0.6


def close_namespaces(store: Any, namespace: str, *, limit: int = 3) -> list[str]:
    """The existing namespaces whose names are closest to ``namespace``, best first."""
    return difflib.get_close_matches(namespace, store.namespaces(), n=limit, cutoff=_CLOSE)


def namespace_exists(store: Any, namespace: str) -> bool:
    """Whether ``namespace`` has keys or secrets (ValueError for an invalid name)."""
    if store.namespace_exists(namespace):
        return True
    try:
        return bool(store.list(namespace=namespace, limit=1).items)
    except NamespaceNotFound:
        return False


def unknown_namespace(store: Any, namespace: str, *, create: str | None = None) -> NamespaceNotFound:
    """The error for a namespace that does not exist, with the close names and, when the
    command can make it, how (``create``: the option that does)."""
    message = f"namespace {namespace!r} does not exist"
    close = close_namespaces(store, namespace)
    if close:
        message += f" (did you mean {' or '.join(repr(n) for n in close)}?)"
    if create:
        message += f"; to make it, run the command again with {create}"
    return NamespaceNotFound(message)


def check_new_namespace(store: Any, namespace: str, *, create: bool) -> None:
    """Before a write that makes a namespace that does not exist (``put``, ``import``): fine,
    unless its name is close to one that exists; then it is most likely a typo, and
    ``--create`` must confirm it."""
    ns = validate_namespace(namespace)
    if create or namespace_exists(store, ns):
        return
    if close_namespaces(store, ns):
        raise unknown_namespace(store, ns, create="--create")


@contextmanager
def reads_of(store: Any, namespace: str) -> Iterator[None]:
    """Around a read of one secret: a missing secret in a namespace that does not exist is
    reported as the namespace missing (with its close names), not as "no secret"."""
    try:
        yield
    except SecretNotFound as exc:
        if isinstance(exc, NamespaceNotFound) or not namespace_exists(store, namespace):
            raise unknown_namespace(store, namespace) from None
        raise


@contextmanager
def known_namespace(store: Any, namespace: str | None, *, create: str | None = None) -> Iterator[None]:
    """Around a command on one namespace: the store's NamespaceNotFound gains the close
    names (and, with ``create``, the option that would make it)."""
    try:
        yield
    except NamespaceNotFound:
        if namespace is None:
            raise
        raise unknown_namespace(store, namespace, create=create) from None
