"""The JSON API under ``/v1/admin``: one handler per route, each declaring the role it needs.

Handlers authenticate, read and check their input, call :class:`StoreOperations`
(or the job registry) and answer JSON. Every error becomes ``{"error": {...}}``
with the status of :func:`kmsbox_admin.errors.http_status`; nothing a handler
refuses has changed anything.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kmsbox_admin.auth import Authenticator, Principal
from kmsbox_admin.errors import ApiError, describe_error, http_status
from kmsbox_admin.inputs import query_int, query_text, query_time, read_body
from kmsbox_admin.jobs import JobRegistry
from kmsbox_admin.openapi import openapi_document
from kmsbox_admin.operations import AUDIT_ACTIONS, AUDIT_RESULTS, Caller, JobSpec, StoreOperations
from kmsbox_admin.settings import AdminSettings

__all__ = ["AdminState", "api_routes"]

log = logging.getLogger("kmsbox_admin.access")

PREFIX = "/v1/admin"
_MAX_STREAMS = 100
_NAMESPACE_PAGE = 1000


@dataclass
class AdminState:
    """What every handler shares: settings, the store operations, jobs and authentication."""

    settings: AdminSettings
    operations: StoreOperations
    jobs: JobRegistry
    auth: Authenticator
    streams: int = 0


Handler = Callable[[Request, AdminState, Principal, Caller], Awaitable[Response]]


def _error(exc: BaseException) -> JSONResponse:
    status, _ = http_status(exc)
    headers = exc.headers if isinstance(exc, ApiError) else {}
    described = describe_error(exc)
    return JSONResponse({"error": {"code": described["code"], "message": described["message"]}}, status, headers)


def _state(request: Request) -> AdminState:
    state: AdminState = request.app.state.admin
    return state


def endpoint(role: str | None) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler: authenticate (unless ``role`` is None), check the role, build
    the audit caller, map every error to its status, and log the request."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            state = _state(request)
            actor = "-"
            try:
                if role is None:
                    principal = Principal("-", "viewer", "none")
                else:
                    principal = state.auth.authenticate(request, request.method)
                    actor = principal.actor
                    if not principal.can(role):
                        raise ApiError(403, "forbidden", f"this needs the {role} role; {actor} is a {principal.role}")
                caller = Caller(
                    principal.actor,
                    principal.role,
                    {
                        "via": "kmsbox-admin",
                        "request_id": secrets.token_hex(8),
                        "client": Authenticator.client(request),
                        "auth": principal.via,
                    },
                )
                response = await handler(request, state, principal, caller)
            except Exception as exc:
                status, _ = http_status(exc)
                if status >= 500 and not isinstance(exc, ApiError):
                    # The type only: the message of an unexpected error might hold anything.
                    log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
                    if os.environ.get("KMSBOX_DEBUG", "") not in ("", "0"):
                        log.exception("traceback")
                response = _error(exc)
            log.info("%s %s %s -> %s", actor, request.method, request.url.path, response.status_code)
            return response

        run.__doc__ = handler.__doc__
        return run

    return wrap


def _job_response(job: Any) -> JSONResponse:
    return JSONResponse(job.to_dict(), 202, {"Location": f"{PREFIX}/jobs/{job.id}"})


# --- session ------------------------------------------------------------------------------


@endpoint(None)
async def login(request: Request, state: AdminState, _: Principal, __: Caller) -> Response:
    """Log the console in with a token: sets the session cookie, returns the CSRF token."""
    body = await read_body(request, ("token",))
    token = body.text("token", required=True, limit=512)
    assert token is not None
    session_id, session = state.auth.login(request, token)
    response = JSONResponse(
        {"actor": session.actor, "role": session.role, "csrf_token": session.csrf_token, "via": "session"}
    )
    response.set_cookie(
        state.auth.cookie_name,
        session_id,
        max_age=int(state.auth.sessions.lifetime),
        path="/",
        secure=state.settings.tls,
        httponly=True,
        samesite="strict",
    )
    return response


@endpoint("viewer")
async def whoami(request: Request, state: AdminState, principal: Principal, _: Caller) -> Response:
    """Who is logged in (and, for a console session, its CSRF token again after a reload)."""
    out: dict[str, Any] = {"actor": principal.actor, "role": principal.role, "via": principal.via}
    if principal.via == "session":
        session = state.auth.sessions.get(request.cookies.get(state.auth.cookie_name))
        out["csrf_token"] = session.csrf_token if session else None
    return JSONResponse(out)


@endpoint("viewer")
async def logout(request: Request, state: AdminState, _: Principal, __: Caller) -> Response:
    """End the console session."""
    state.auth.sessions.end(request.cookies.get(state.auth.cookie_name))
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(
        state.auth.cookie_name, path="/", secure=state.settings.tls, httponly=True, samesite="strict"
    )
    return response


# --- status, namespaces, secrets ----------------------------------------------------------


@endpoint("viewer")
async def encryption_status(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """The store's status as ``kmsbox --json status [NAMESPACE]`` prints it."""
    namespace = query_text(request, "namespace", limit=256)
    return JSONResponse(await state.operations.status(caller, namespace))


@endpoint("admin")
async def rotate(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Start a rotation of a namespace key (then its DEKs are rewrapped): a job, 202."""
    body = await read_body(request, ("namespace", "dry_run"))
    spec = JobSpec("rotate", body.text("namespace", required=True, limit=256), dry_run=body.flag("dry_run", False))
    await state.operations.check_job(caller, spec)
    return _job_response(state.jobs.start(caller, spec))


@endpoint("viewer")
async def list_namespaces(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Namespaces, sorted, a page at a time (``cursor`` is the last name of the page before)."""
    limit = query_int(request, "limit", 100, 1, _NAMESPACE_PAGE)
    cursor = query_text(request, "cursor", limit=256)
    names = await state.operations.namespaces(caller)
    if cursor is not None:
        names = [n for n in names if n > cursor]
    page = names[:limit]
    return JSONResponse({"namespaces": page, "next_cursor": page[-1] if len(names) > limit else None})


@endpoint("viewer")
async def namespace_overview(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """The console's cards for one namespace."""
    return JSONResponse(await state.operations.overview(caller, request.path_params["namespace"]))


@endpoint("viewer")
async def key_history(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Every key version of a namespace with its status, use, wraps and times."""
    keys = await state.operations.key_history(caller, request.path_params["namespace"])
    return JSONResponse({"namespace": request.path_params["namespace"], "keys": keys})


@endpoint("viewer")
async def list_secrets(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """A page of secret metadata, filtered like ``kmsbox list``; never values."""
    page = await state.operations.list_secrets(
        caller,
        request.path_params["namespace"],
        category=query_text(request, "category", limit=128),
        label=query_text(request, "label", limit=650),
        limit=query_int(request, "limit", 100, 1, 10_000),
        cursor=query_text(request, "cursor", limit=255),
    )
    return JSONResponse(page)


@endpoint("viewer")
async def secret_info(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """One secret's metadata (``kmsbox info``)."""
    params = request.path_params
    return JSONResponse(await state.operations.secret_info(caller, params["namespace"], params["name"]))


@endpoint("viewer")
async def secret_history(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Every version of one secret (``kmsbox history``)."""
    params = request.path_params
    versions = await state.operations.secret_history(caller, params["namespace"], params["name"])
    return JSONResponse({"namespace": params["namespace"], "name": params["name"], "versions": versions})


# --- jobs -----------------------------------------------------------------------------------


@endpoint("viewer")
async def list_jobs(request: Request, state: AdminState, _: Principal, __: Caller) -> Response:
    """Jobs of this server, newest first (finished ones while the history keeps them)."""
    return JSONResponse({"jobs": [job.to_dict() for job in state.jobs.all()]})


@endpoint("admin")
async def start_job(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Start a rotate, rewrap-deks, reencrypt, rewrap-namespace-keys, migrate-kek or repair job: 202."""
    body = await read_body(request, ("kind", "namespace", "dry_run", "to", "drop_old", "confirm_delete"))
    spec = JobSpec(
        kind=body.text("kind", required=True, limit=64) or "",
        namespace=body.text("namespace", limit=256),
        dry_run=body.flag("dry_run", False),
        to=body.text("to", limit=2048),
        drop_old=body.flag("drop_old", False),
        confirm_delete=body.flag("confirm_delete", False),
    )
    await state.operations.check_job(caller, spec)
    return _job_response(state.jobs.start(caller, spec))


def _job_of(request: Request, state: AdminState) -> Any:
    job = state.jobs.get(request.path_params["job_id"])
    if job is None:
        raise ApiError(404, "job_not_found", "no such job (finished jobs are kept only for a while)")
    return job


@endpoint("viewer")
async def get_job(request: Request, state: AdminState, _: Principal, __: Caller) -> Response:
    """One job's state, progress and report (or typed error): poll this, or follow the events."""
    return JSONResponse(_job_of(request, state).to_dict())


@endpoint("admin")
async def stop_job(request: Request, state: AdminState, _: Principal, __: Caller) -> Response:
    """Stop a job by cancelling its task (a batch in flight commits whole or not at all); started again, it resumes."""
    job = _job_of(request, state)
    state.jobs.stop(job.id)
    return JSONResponse(job.to_dict(), 202)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"id: {data['revision']}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@endpoint("viewer")
async def job_events(request: Request, state: AdminState, _: Principal, __: Caller) -> Response:
    """Server-sent events: ``progress`` with the job's state on every change, ``end`` once it finished."""
    job = _job_of(request, state)
    if state.streams >= _MAX_STREAMS:
        raise ApiError(503, "too_many_streams", "too many event streams open; poll the job instead")

    async def stream() -> AsyncIterator[str]:
        state.streams += 1
        try:
            yield "retry: 2000\n\n"
            async for snapshot in state.jobs.watch(job):
                if snapshot is None:
                    yield ": keep-alive\n\n"
                elif snapshot["state"] in ("succeeded", "failed", "stopped"):
                    yield _sse("end", snapshot)
                else:
                    yield _sse("progress", snapshot)
        finally:
            state.streams -= 1

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


# --- audit, diagnosis, repair -------------------------------------------------------------


@endpoint("viewer")
async def audit_list(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Audit events with ``kmsbox audit list``'s filters in the store-wide order; ``cursor``: a ``next_cursor``."""
    action = query_text(request, "action", limit=32)
    result = query_text(request, "result", limit=32)
    if action is not None and action not in AUDIT_ACTIONS:
        raise ApiError(400, "bad_request", f"query parameter 'action' must be one of {list(AUDIT_ACTIONS)}")
    if result is not None and result not in AUDIT_RESULTS:
        raise ApiError(400, "bad_request", f"query parameter 'result' must be one of {list(AUDIT_RESULTS)}")
    page = await state.operations.audit_events(
        caller,
        namespace=query_text(request, "namespace", limit=255),
        name=query_text(request, "name", limit=255),
        action=action,
        result=result,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        after=query_text(request, "cursor", limit=64),
        limit=query_int(request, "limit", 100, 1, 10_000),
    )
    return JSONResponse(page)


@endpoint("viewer")
async def audit_checkpoint(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Every audit chain's head now; keep it outside the database and verify against it later."""
    return JSONResponse(await state.operations.audit_checkpoint(caller))


@endpoint("viewer")
async def audit_verify(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Verify the audit chains, cross-check secrets and namespaces, and check a checkpoint saved earlier if given."""
    body = await read_body(request, ("checkpoint",))
    return JSONResponse(await state.operations.verify_audit(caller, body.mapping("checkpoint")))


@endpoint("viewer")
async def diagnose(request: Request, state: AdminState, _: Principal, caller: Caller) -> Response:
    """Key drift and a suggested action per issue (``kmsbox diagnose``); never decrypts a value."""
    body = await read_body(request, ("namespace", "keys_only"))
    report = await state.operations.diagnose(
        caller, body.text("namespace", limit=256), keys_only=body.flag("keys_only", False)
    )
    return JSONResponse(report)


@endpoint("viewer")
async def repair(request: Request, state: AdminState, principal: Principal, caller: Caller) -> Response:
    """A repair dry run (200, the plan); with ``dry_run: false`` a repair job (202, admin only),
    which deletes what can never be opened again only with ``confirm_delete: true``."""
    body = await read_body(request, ("namespace", "dry_run", "confirm_delete"))
    namespace = body.text("namespace", limit=256)
    dry_run = body.flag("dry_run", True)
    confirm_delete = body.flag("confirm_delete", False)
    if dry_run:
        if confirm_delete:
            raise ApiError(400, "bad_request", "confirm_delete needs dry_run false (a dry run deletes nothing)")
        return JSONResponse(await state.operations.repair_plan(caller, namespace))
    if not principal.can("admin"):
        raise ApiError(
            403, "forbidden", f"a repair that changes the store needs the admin role; {principal.actor} is a viewer"
        )
    spec = JobSpec("repair", namespace, confirm_delete=confirm_delete)
    await state.operations.check_job(caller, spec)
    return _job_response(state.jobs.start(caller, spec))


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 description of this API."""
    return JSONResponse(openapi_document())


def api_routes() -> list[Route]:
    """Every route of the JSON API."""
    p = PREFIX
    return [
        Route(f"{p}/openapi.json", openapi, methods=["GET"]),
        Route(f"{p}/session", login, methods=["POST"]),
        Route(f"{p}/session", whoami, methods=["GET"]),
        Route(f"{p}/session", logout, methods=["DELETE"]),
        Route(f"{p}/encryption", encryption_status, methods=["GET"]),
        Route(f"{p}/encryption/rotate", rotate, methods=["POST"]),
        Route(f"{p}/namespaces", list_namespaces, methods=["GET"]),
        Route(f"{p}/namespaces/{{namespace}}", namespace_overview, methods=["GET"]),
        Route(f"{p}/namespaces/{{namespace}}/keys", key_history, methods=["GET"]),
        Route(f"{p}/namespaces/{{namespace}}/secrets", list_secrets, methods=["GET"]),
        Route(f"{p}/namespaces/{{namespace}}/secrets/{{name:path}}", secret_info, methods=["GET"]),
        Route(f"{p}/namespaces/{{namespace}}/history/{{name:path}}", secret_history, methods=["GET"]),
        Route(f"{p}/jobs", list_jobs, methods=["GET"]),
        Route(f"{p}/jobs", start_job, methods=["POST"]),
        Route(f"{p}/jobs/{{job_id}}", get_job, methods=["GET"]),
        Route(f"{p}/jobs/{{job_id}}/stop", stop_job, methods=["POST"]),
        Route(f"{p}/jobs/{{job_id}}/events", job_events, methods=["GET"]),
        Route(f"{p}/audit", audit_list, methods=["GET"]),
        Route(f"{p}/audit/checkpoint", audit_checkpoint, methods=["GET"]),
        Route(f"{p}/audit/verify", audit_verify, methods=["POST"]),
        Route(f"{p}/diagnose", diagnose, methods=["POST"]),
        Route(f"{p}/repair", repair, methods=["POST"]),
    ]
