"""The ASGI application: the JSON API, the console's files, security headers and host checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from kmsbox_admin.api import PREFIX, AdminState, api_routes
from kmsbox_admin.auth import Authenticator
from kmsbox_admin.headers import SecurityHeaders
from kmsbox_admin.jobs import JobRegistry
from kmsbox_admin.operations import StoreOperations
from kmsbox_admin.sessions import SessionStore
from kmsbox_admin.settings import AdminSettings
from kmsbox_admin.throttle import AuthThrottle

__all__ = ["SESSION_COOKIE", "OperationsFactory", "create_app"]

#: The console's session cookie (``__Host-`` prefixed under TLS: then a browser
#: accepts it only when Secure, for this host alone, on path /).
SESSION_COOKIE = "kmsbox_admin_session"

#: Opens the store operations on the server's event loop (e.g. ``lambda: StoreOperations.open(...)``).
OperationsFactory = Callable[[], Awaitable[StoreOperations]]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method): JSON under the API, text elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(PREFIX + "/"):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": exc.detail}}, exc.status_code, exc.headers)
    return PlainTextResponse(exc.detail, exc.status_code, exc.headers)


def create_app(
    settings: AdminSettings, operations: StoreOperations | OperationsFactory, *, running_jobs: int = 2
) -> Starlette:
    """The admin app over ``operations``, with at most ``running_jobs`` jobs running at once.

    ``operations`` is either open already, on the loop the app will be served from (the
    caller keeps it and closes it after the server stops), or a factory the app awaits at
    start-up and closes at shutdown (for an ASGI server that imports the app: the store
    must be opened on that server's loop). Either way the shutdown first stops the
    running jobs (each batch commits whole or not at all). Serve it with lifespan on.
    """
    auth = Authenticator(
        settings.tokens,
        SessionStore(idle=settings.session_minutes * 60.0),
        AuthThrottle(failures=settings.auth_failures, lockout=settings.auth_lockout),
        cookie_name=("__Host-" if settings.tls else "") + SESSION_COOKIE,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = not isinstance(operations, StoreOperations)
        ops = operations if isinstance(operations, StoreOperations) else await operations()
        jobs = JobRegistry(ops, history=settings.job_history, running=running_jobs)
        app.state.admin = AdminState(settings, ops, jobs, auth)
        try:
            yield
        finally:
            try:
                await jobs.shutdown()
            finally:
                if owned:
                    await ops.close()

    console = StaticFiles(packages=[("kmsbox_admin", "console")], html=True)
    return Starlette(
        routes=[*api_routes(), Mount("/", app=console, name="console")],
        middleware=[
            Middleware(SecurityHeaders, tls=settings.tls),
            # A DNS-rebinding page reaches a loopback server under its own host name: refused here.
            Middleware(TrustedHostMiddleware, allowed_hosts=settings.hosts()),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
