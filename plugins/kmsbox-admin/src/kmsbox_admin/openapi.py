"""The OpenAPI 3.1 description of the admin API, served at ``/v1/admin/openapi.json``.

Written out here rather than derived, so that it says what each operation means;
a test checks that it lists exactly the routes the app serves and that it is valid.
"""

from __future__ import annotations

import functools
from typing import Any

from kmsbox_admin.operations import AUDIT_ACTIONS, AUDIT_RESULTS, JOB_KINDS

__all__ = ["openapi_document"]

_P = "/v1/admin"
_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {_JSON: {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any] | None = None, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {_JSON: {"schema": schema or {"type": "object"}}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "bad input (malformed JSON, an unknown field, a bad name or value)",
        401: "no token, or an unknown one",
        403: "the role does not allow it, a CSRF check failed, or a KEK target is not allowed",
        404: "unknown namespace, secret or job",
        409: "a job is already running on that namespace (or the whole store)",
        413: "the request body is too large",
        415: "the request body is not application/json",
        429: "too many failed authentications from this client: see Retry-After",
    }
    return {
        str(s): {"description": reasons[s], "content": {_JSON: {"schema": _ref("Error")}}} for s in sorted(statuses)
    }


_READ = (401, 429)
_NS = "namespace, like app:production"
_JOB_ACCEPTED = {
    "202": {
        "description": "the job is queued; follow it at Location (poll) or its /events (server-sent events)",
        "headers": {"Location": {"schema": {"type": "string"}}},
        "content": {_JSON: {"schema": _ref("Job")}},
    }
}


def _op(summary: str, role: str | None, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    op["security"] = [] if role is None else [{"bearer": []}, {"session": []}]
    if role is not None:
        op["x-kmsbox-role"] = role
    return op


@functools.cache
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        f"{_P}/openapi.json": {"get": _op("This document", None, _ok("the OpenAPI description"))},
        f"{_P}/session": {
            "post": _op(
                "Log the console in with a token: sets the session cookie and returns the CSRF token",
                None,
                {**_ok("logged in", _ref("Session")), **_errors(400, 401, 403, 415, 429)},
                requestBody=_body({"token": {"type": "string"}}, ["token"]),
            ),
            "get": _op(
                "Who is calling (a session also gets its CSRF token again)",
                "viewer",
                {**_ok("the caller", _ref("Session")), **_errors(*_READ)},
            ),
            "delete": _op("Log the console session out", "viewer", {**_ok("logged out"), **_errors(401, 403)}),
        },
        f"{_P}/encryption": {
            "get": _op(
                "Store status, as `kmsbox --json status [NAMESPACE]`: KEKs, key versions per namespace, counts, pending work",
                "viewer",
                {**_ok("the status"), **_errors(400, 404, *_READ)},
                parameters=[_q("namespace", "only this namespace")],
            )
        },
        f"{_P}/encryption/rotate": {
            "post": _op(
                "Rotate a namespace key and rewrap its DEKs (as `kmsbox rotate`), as a job",
                "admin",
                {**_JOB_ACCEPTED, **_errors(400, 401, 403, 404, 409, 415, 429)},
                requestBody=_body({"namespace": {"type": "string"}, "dry_run": {"type": "boolean"}}, ["namespace"]),
            )
        },
        f"{_P}/namespaces": {
            "get": _op(
                "Namespaces, sorted",
                "viewer",
                {
                    **_ok(
                        "a page of names",
                        {
                            "type": "object",
                            "properties": {
                                "namespaces": {"type": "array", "items": {"type": "string"}},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    **_errors(400, *_READ),
                },
                parameters=[
                    _q("limit", "page size, 1-1000", {"type": "integer"}),
                    _q("cursor", "next_cursor of the page before"),
                ],
            )
        },
        f"{_P}/namespaces/{{namespace}}": {
            "get": _op(
                "The console's cards: active key version, secret versions, those under older keys, pending work, keys",
                "viewer",
                {**_ok("the overview"), **_errors(400, 404, *_READ)},
                parameters=[_path("namespace", _NS)],
            )
        },
        f"{_P}/namespaces/{{namespace}}/keys": {
            "get": _op(
                "Key history: every key version with status, secret versions, wraps, when it was made (created_at) and when it took its status (updated_at)",
                "viewer",
                {**_ok("the key versions, oldest first"), **_errors(400, 404, *_READ)},
                parameters=[_path("namespace", _NS)],
            )
        },
        f"{_P}/namespaces/{{namespace}}/secrets": {
            "get": _op(
                "A page of secret metadata, as `kmsbox list` (never values)",
                "viewer",
                {**_ok("items and next_cursor"), **_errors(400, 404, *_READ)},
                parameters=[
                    _path("namespace", _NS),
                    _q("category", "only this category"),
                    _q("label", "only secrets with this label, key=value"),
                    _q("limit", "page size, 1-10000", {"type": "integer"}),
                    _q("cursor", "next_cursor of the page before"),
                ],
            )
        },
        f"{_P}/namespaces/{{namespace}}/secrets/{{name}}": {
            "get": _op(
                "One secret's metadata, as `kmsbox info` (never the value; not counted as a read)",
                "viewer",
                {**_ok("the metadata"), **_errors(400, 404, *_READ)},
                parameters=[_path("namespace", _NS), _path("name", "secret name; may contain /")],
            )
        },
        f"{_P}/namespaces/{{namespace}}/history/{{name}}": {
            "get": _op(
                "Every version of one secret, as `kmsbox history` (no values)",
                "viewer",
                {**_ok("the versions, oldest first"), **_errors(400, 404, *_READ)},
                parameters=[_path("namespace", _NS), _path("name", "secret name; may contain /")],
            )
        },
        f"{_P}/jobs": {
            "get": _op(
                "Jobs of this server, newest first",
                "viewer",
                {
                    **_ok(
                        "the jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": _ref("Job")}}}
                    ),
                    **_errors(*_READ),
                },
            ),
            "post": _op(
                "Start a job: rotate, rewrap-deks, reencrypt, rewrap-namespace-keys, migrate-kek (to a KEK listed in [admin] kek_targets) or repair (confirm_delete to delete what can never be opened)",
                "admin",
                {**_JOB_ACCEPTED, **_errors(400, 401, 403, 404, 409, 415, 429)},
                requestBody=_body(
                    {
                        "kind": {"enum": list(JOB_KINDS)},
                        "namespace": {"type": "string"},
                        "dry_run": {"type": "boolean"},
                        "to": {"type": "string"},
                        "drop_old": {"type": "boolean"},
                        "confirm_delete": {"type": "boolean"},
                    },
                    ["kind"],
                ),
            ),
        },
        f"{_P}/jobs/{{job_id}}": {
            "get": _op(
                "One job: state, progress, report or typed error",
                "viewer",
                {**_ok("the job", _ref("Job")), **_errors(404, *_READ)},
                parameters=[_path("job_id", "job id")],
            )
        },
        f"{_P}/jobs/{{job_id}}/stop": {
            "post": _op(
                "Stop a job by cancelling it: a batch in flight commits whole or not at all (start it again to resume)",
                "admin",
                {**_ok("the job", _ref("Job"), "202"), **_errors(401, 403, 404, 429)},
                parameters=[_path("job_id", "job id")],
            )
        },
        f"{_P}/jobs/{{job_id}}/events": {
            "get": _op(
                "Server-sent events: `progress` (the job as JSON) on every change, `end` when it finished",
                "viewer",
                {
                    "200": {
                        "description": "an event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(404, *_READ),
                },
                parameters=[_path("job_id", "job id")],
            )
        },
        f"{_P}/audit": {
            "get": _op(
                "Audit events in the store-wide order (time, chain, seq), with `kmsbox audit list`'s filters",
                "viewer",
                {**_ok("events and next_cursor"), **_errors(400, *_READ)},
                parameters=[
                    _q("namespace", "only this namespace"),
                    _q("name", "only this secret name"),
                    _q("action", "only this action", {"enum": list(AUDIT_ACTIONS)}),
                    _q("result", "only this result", {"enum": list(AUDIT_RESULTS)}),
                    _q("since", "ISO 8601 time (UTC when no zone is given)"),
                    _q("until", "ISO 8601 time"),
                    _q("limit", "page size, 1-10000", {"type": "integer"}),
                    _q("cursor", "next_cursor of the page before (opaque)"),
                ],
            )
        },
        f"{_P}/audit/checkpoint": {
            "get": _op(
                "Every audit chain's head now (keep it outside the database)",
                "viewer",
                {**_ok("the checkpoint", _ref("Checkpoint")), **_errors(*_READ)},
            )
        },
        f"{_P}/audit/verify": {
            "post": _op(
                "Verify every audit chain and cross-check secrets and namespaces against their last recorded state, and a checkpoint saved earlier",
                "viewer",
                {**_ok("the verification", _ref("Verification")), **_errors(400, 401, 403, 415, 429)},
                requestBody=_body({"checkpoint": _ref("Checkpoint")}),
            )
        },
        f"{_P}/diagnose": {
            "post": _op(
                "Key drift with a suggested action per issue, as `kmsbox diagnose` (never decrypts a value)",
                "viewer",
                {**_ok("ok and issues"), **_errors(400, 401, 403, 404, 415, 429)},
                requestBody=_body({"namespace": {"type": "string"}, "keys_only": {"type": "boolean"}}),
            )
        },
        f"{_P}/repair": {
            "post": _op(
                "Repair: a dry run by default (200, the plan); dry_run false starts a repair job (202, admin role), which deletes what can never be opened only with confirm_delete true",
                "viewer",
                {**_ok("the plan (dry run)"), **_JOB_ACCEPTED, **_errors(400, 401, 403, 404, 409, 415, 429)},
                requestBody=_body(
                    {
                        "namespace": {"type": "string"},
                        "dry_run": {"type": "boolean"},
                        "confirm_delete": {"type": "boolean"},
                    }
                ),
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kmsbox admin API",
            "version": "1",
            "description": "Status, key history, jobs with progress, audit and diagnosis of a kmsbox store. No response ever holds a secret value or key material.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token from [[admin.tokens]]"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "kmsbox_admin_session",
                    "description": "the console's session; requests that change something also need the X-CSRF-Token header",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                            "required": ["code", "message"],
                        }
                    },
                    "required": ["error"],
                },
                "Session": {
                    "type": "object",
                    "properties": {
                        "actor": {"type": "string"},
                        "role": {"enum": ["viewer", "admin"]},
                        "via": {"enum": ["token", "session"]},
                        "csrf_token": {"type": ["string", "null"]},
                    },
                },
                "Checkpoint": {
                    "type": "object",
                    "description": "every chain's head (the single-chain form {seq, mac} of earlier releases is read too)",
                    "properties": {
                        "kmsbox_checkpoint": {"type": "integer"},
                        "taken_at": {"type": "number"},
                        "chains": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "chain": {"type": "integer"},
                                    "seq": {"type": "integer"},
                                    "mac": {"type": "string"},
                                },
                                "required": ["chain", "seq", "mac"],
                            },
                        },
                        "seq": {"type": "integer"},
                        "mac": {"type": "string"},
                    },
                },
                "Verification": {
                    "type": "object",
                    "properties": {
                        "ok": {"type": "boolean"},
                        "events_checked": {"type": "integer"},
                        "chains": {"type": "integer"},
                        "secrets_checked": {"type": "integer"},
                        "namespaces_checked": {"type": "integer"},
                        "records_checked": {"type": "integer"},
                        "problems": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "kind": {"type": "string"},
                        "namespace": {"type": ["string", "null"]},
                        "params": {"type": "object"},
                        "actor": {"type": "string"},
                        "state": {"enum": ["queued", "running", "succeeded", "failed", "stopped"]},
                        "done": {"type": "integer"},
                        "total": {"type": ["integer", "null"]},
                        "created_at": {"type": "number"},
                        "started_at": {"type": ["number", "null"]},
                        "finished_at": {"type": ["number", "null"]},
                        "stop_requested": {"type": "boolean"},
                        "result": {"type": ["object", "null"]},
                        "error": {
                            "type": ["object", "null"],
                            "properties": {
                                "type": {"type": "string"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                        "revision": {"type": "integer"},
                    },
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (built once)."""
    return _document()
