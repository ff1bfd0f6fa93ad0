"""Per-block settings carried in contextvars: namespace, actor, request context.

Safe across threads and asyncio tasks: each task sees the values of the block
it runs in.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from kmsbox.limits import check_text
from kmsbox.store.names import validate_namespace

__all__ = [
    "audit_context",
    "check_actor",
    "check_merged",
    "check_request",
    "current_actor",
    "current_namespace",
    "current_request",
    "namespace_block",
]

MAX_ACTOR = 256
MAX_REQUEST_ENTRIES = 32

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
    """Set the actor and request context recorded on audit events inside the block.

    ValueError for an actor or request value that is not a short string."""
    check_actor(actor)
    check_request(request)
    token_a = _actor.set(actor if actor is not None else _actor.get())
    merged = {**(_request.get() or {}), **request}
    check_merged(merged)
    token_r = _request.set(merged)
    try:
        yield
    finally:
        _actor.reset(token_a)
        _request.reset(token_r)


def check_actor(actor: object) -> str | None:
    """``actor`` if None or a string an audit event can hold, else ValueError."""
    return None if actor is None else check_text(actor, "actor", MAX_ACTOR)


def check_request(request: object) -> Mapping[str, str]:
    """``request`` if None or a small mapping of strings to strings, else ValueError."""
    if request is None:
        return {}
    if not isinstance(request, Mapping):
        raise ValueError(f"request context must be a mapping of strings, got {type(request).__name__}")
    if len(request) > MAX_REQUEST_ENTRIES:
        raise ValueError(f"request context has more than {MAX_REQUEST_ENTRIES} entries")
    for key, value in request.items():
        check_text(key, "a request context key", 64)
        check_text(value, f"request context {key!r}", 1024)
    return request


def check_merged(merged: Mapping[str, str]) -> None:
    """Nested blocks and a per-call context together hold at most as many entries as one."""
    if len(merged) > MAX_REQUEST_ENTRIES:
        raise ValueError(f"request context has more than {MAX_REQUEST_ENTRIES} entries (nested blocks included)")


def current_namespace() -> str | None:
    """The namespace set by the innermost block, if any."""
    return _namespace.get()


def current_actor() -> str | None:
    """The actor set by the innermost block, if any."""
    return _actor.get()


def current_request() -> Mapping[str, str]:
    """The request context set by enclosing blocks."""
    return _request.get() or {}
