"""Per-block settings carried in contextvars: namespace, actor, request context.

Safe across threads and asyncio tasks: each task sees the values of the block
it runs in.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from kmsbox.store.names import validate_namespace

__all__ = ["audit_context", "current_actor", "current_namespace", "current_request", "namespace_block"]

_namespace: contextvars.ContextVar[str | None] = contextvars.ContextVar("kmsbox_namespace", default=None)
_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("kmsbox_actor", default=None)
_request: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("kmsbox_request", default=None)


@contextmanager
def namespace_block(namespace: str) -> Iterator[str]:
    """Make ``namespace`` the default for calls inside the block."""
    token = _namespace.set(validate_namespace(namespace))
    try:
        yield namespace
    finally:
        _namespace.reset(token)


@contextmanager
def audit_context(actor: str | None = None, **request: str) -> Iterator[None]:
    """Set the actor and request context recorded on audit events inside the block."""
    for key, value in request.items():
        if not isinstance(value, str):
            raise TypeError(f"request context value for {key!r} must be a string")
    token_a = _actor.set(actor if actor is not None else _actor.get())
    merged = {**(_request.get() or {}), **request}
    token_r = _request.set(merged)
    try:
        yield
    finally:
        _actor.reset(token_a)
        _request.reset(token_r)


def current_namespace() -> str | None:
    """The namespace set by the innermost block, if any."""
    return _namespace.get()


def current_actor() -> str | None:
    """The actor set by the innermost block, if any."""
    return _actor.get()


def current_request() -> Mapping[str, str]:
    """The request context set by enclosing blocks."""
    return _request.get() or {}
