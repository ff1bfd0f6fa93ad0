"""The Starlette app: per-tenant secrets over HTTP, read from kmsbox's async store.

- ``GET /tenants/{tenant}/secrets/{name}``: the secret's latest value, as JSON. The tenant
  is the kmsbox namespace; the caller named in ``X-Caller`` is the audit actor and the
  ``X-Request-Id`` (made up when absent) goes into the audit context, so each audit event
  says who read what for which request.
- ``GET /health``: answers at once, without touching the store or the KMS.

The store is opened when the server starts and closed when it stops (Starlette's
lifespan). Error answers carry a code and the request id, never a value.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import kmsbox.aio
from kmsbox.errors import KmsboxError
from kmsbox.store.names import validate_name, validate_namespace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["CALLER_HEADER", "REQUEST_ID_HEADER", "create_app"]

#: Who is asking: recorded as the audit actor (set it at your gateway, from the caller's authentication).
CALLER_HEADER = "X-Caller"
#: The request's id: recorded in the audit context and echoed in the answer.
REQUEST_ID_HEADER = "X-Request-Id"

log = logging.getLogger(__name__)

#: HTTP status and error code for each reason a read fails (``GetResult.reason``).
_FAILURES: dict[str, tuple[int, str]] = {
    "not_found": (404, "not_found"),
    "namespace_not_found": (404, "not_found"),  # a missing tenant looks like a missing secret
    "expired": (410, "expired"),
    "disabled": (403, "disabled"),
    "provider_error": (503, "kms_unavailable"),
    "key_unavailable": (500, "key_unavailable"),
    "integrity": (500, "integrity"),
}


class State(TypedDict):
    """What the lifespan hands to every request (``request.state``)."""

    store: kmsbox.aio.AsyncSecretStore


def create_app(url: str | None = None, kek: str | None = None, **open_options: Any) -> Starlette:
    """The app over the store at ``url`` with ``kek`` (both default to kmsbox's settings:
    ``KMSBOX_STORE``, ``KMSBOX_KEK``, ``kmsbox.toml``). ``open_options`` go to
    :func:`kmsbox.aio.open_store`. Use it as ``uvicorn --factory tenant_service:create_app``.

    The store opens at start-up: a missing setting or an unusable KEK stops the server
    from starting (``ConfigError``), rather than failing every request later."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        store = await kmsbox.aio.open_store(url, kek, **open_options)
        try:
            yield {"store": store}
        finally:
            await store.close()

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            # ``path``: a secret's name may hold slashes (``db/password``).
            Route("/tenants/{tenant}/secrets/{name:path}", read_secret, methods=["GET"]),
        ],
        exception_handlers={KmsboxError: store_failed},
        lifespan=lifespan,
    )


async def health(request: Request) -> Response:
    """The event loop is answering."""
    return JSONResponse({"status": "ok"})


async def read_secret(request: Request) -> Response:
    """The latest value of one tenant's secret."""
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    caller = request.headers.get(CALLER_HEADER)
    if not caller:
        return failure(401, "caller_required", request_id)
    try:
        tenant = validate_namespace(request.path_params["tenant"])
        name = validate_name(request.path_params["name"])
    except ValueError:
        return failure(400, "bad_name", request_id)
    store: kmsbox.aio.AsyncSecretStore = request.state.store
    try:
        with store.audit_context(actor=caller, request_id=request_id):
            result = await store.try_get(name, namespace=tenant)
    except ValueError:
        # The names were checked above: what is left is a header an audit event cannot hold.
        return failure(400, "bad_header", request_id)
    if not result.ok or result.secret is None:
        status, code = _FAILURES.get(result.reason or "", (500, "read_failed"))
        if status >= 500:
            log.warning("read failed: %s (tenant %s, request %s)", result.reason, tenant, request_id)
        return failure(status, code, request_id)
    secret = result.secret
    body: dict[str, Any] = {"tenant": tenant, "name": name, "version": secret.version}
    if isinstance(secret.value, bytes):
        body.update(value=base64.b64encode(secret.value).decode("ascii"), encoding="base64")
    else:
        body.update(value=secret.value, encoding="text")
    return JSONResponse(body, headers={"Cache-Control": "no-store", REQUEST_ID_HEADER: request_id})


async def store_failed(request: Request, exc: Exception) -> Response:
    """The store itself failed (its database is unreachable): 503, logged with the error's class only."""
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    log.warning("store failed: %s (request %s)", type(exc).__name__, request_id)
    return failure(503, "store_unavailable", request_id)


def failure(status: int, code: str, request_id: str) -> JSONResponse:
    """An error answer: a code and the request id, nothing from the store."""
    return JSONResponse(
        {"error": code, "request_id": request_id},
        status_code=status,
        headers={"Cache-Control": "no-store", REQUEST_ID_HEADER: request_id},
    )
