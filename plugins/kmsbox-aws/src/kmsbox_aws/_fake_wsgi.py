"""WSGI dispatch of the fake AWS KMS: faults and latency, the fake's own operations, moto for the rest.

Every KMS request (``X-Amz-Target: TrentService.<Operation>``) passes the fake's
:class:`~kmsbox.testing.fakes.FaultInjector`, by its operation name. Injected faults
answer as AWS KMS does (``ThrottlingException``, ``KMSInternalException``,
``AccessDeniedException``), hold the reply past the client's time-out, reset the TCP
connection, or garble the real reply. Then the operations of
:mod:`kmsbox_aws._fake_operations` are answered there, and everything else by moto.
Requests with the fake's admin token (its own set-up calls) skip faults and counts.
"""

from __future__ import annotations

import hmac
import io
import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kmsbox.testing.fakes import FaultInjector
from kmsbox_aws._fake_operations import POLICY_CHECKED_OPERATIONS, Caller, KmsError, KmsOperations
from kmsbox_aws._fake_policy import caller_arn

__all__ = ["ABORT_ENVIRON", "ADMIN_HEADER", "KmsFaultMiddleware", "fault_response"]

#: Requests carrying the fake's admin token in this header bypass faults and call counts.
ADMIN_HEADER = "X-Kmsbox-Fake-Admin"
_ADMIN_ENVIRON = "HTTP_" + ADMIN_HEADER.upper().replace("-", "_")
#: The WSGI environ key of a callable that resets the request's TCP connection (set by the fake's handler).
ABORT_ENVIRON = "kmsbox.abort_connection"
_JSON = "application/x-amz-json-1.1"
_THROTTLED = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
# SigV4: Credential=ACCESS_KEY/DATE/REGION/SERVICE/aws4_request
_REGION_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/kms/aws4_request")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Reply = tuple[str, list[tuple[str, str]], bytes]


def _error(status: int, code: str, message: str | None) -> Reply:
    body: dict[str, str] = {"__type": code}
    if message is not None:
        body["message"] = message
    phrase = {400: "Bad Request", 500: "Internal Server Error"}.get(status, "Error")
    return f"{status} {phrase}", [("Content-Type", _JSON)], json.dumps(body).encode()


def fault_response(kind: str, operation: str, params: dict[str, Any], account: str) -> Reply:
    """The reply AWS KMS gives for an injected fault of ``kind`` (throttle, denied or unavailable)."""
    if kind == "throttle":
        return _error(400, "ThrottlingException", _THROTTLED)
    if kind == "denied":
        resource = params.get("KeyId") or params.get("DestinationKeyId") or "*"
        return _error(
            400,
            "AccessDeniedException",
            f"User: {caller_arn(account)} is not authorized to perform: kms:{operation} "
            f"on resource: {resource} because no identity-based policy allows the kms:{operation} action",
        )
    return _error(500, "KMSInternalException", "An internal error occurred.")


def garbled(reply: Reply) -> Reply:
    """A 200 reply whose JSON body is cut short: what a client gets from a broken proxy."""
    _, headers, data = reply
    return "200 OK", headers, data[: len(data) // 2] if len(data) > 1 else b"{"


class KmsFaultMiddleware:
    """The fake's WSGI app: counts KMS calls, injects latency and faults, answers or forwards to moto."""

    def __init__(
        self,
        app: WsgiApp,
        faults: FaultInjector,
        operations: KmsOperations,
        *,
        admin_token: str,
        stopping: threading.Event,
        timeout_delay: Callable[[], float],
        account: str,
        region: str,
    ) -> None:
        self._app = app
        self._faults = faults
        self._operations = operations
        self._admin_token = admin_token
        self._stopping = stopping
        self._timeout_delay = timeout_delay
        self._account = account
        self._region = region

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target.startswith("TrentService."):
            return self._app(environ, start_response)
        admin = hmac.compare_digest(str(environ.get(_ADMIN_ENVIRON, "")), self._admin_token)
        operation = target.partition(".")[2]
        body = _read_body(environ)
        params = _json_object(body)
        fault = None if admin else self._faults.before_call(operation)
        if fault == "timeout":
            # Hold the reply past the client's read time-out; stop() cuts the wait short.
            self._stopping.wait(self._timeout_delay())
        elif fault == "reset":
            environ[ABORT_ENVIRON]()
            # werkzeug treats this as a dropped connection: nothing is written back.
            raise ConnectionResetError("kmsbox fake: injected connection reset")
        elif fault in ("throttle", "unavailable", "denied"):
            return _respond(start_response, fault_response(fault, operation, params, self._account))
        reply = self._answer(operation, params, environ, body)
        return _respond(start_response, garbled(reply) if fault == "malformed" else reply)

    def _caller(self, environ: dict[str, Any]) -> Caller:
        match = _REGION_RE.search(str(environ.get("HTTP_AUTHORIZATION", "")))
        return Caller(self._account, match.group(1) if match else self._region)

    def _answer(self, operation: str, params: dict[str, Any], environ: dict[str, Any], body: bytes) -> Reply:
        try:
            if operation in POLICY_CHECKED_OPERATIONS:
                self._operations.check_policy_parameter(params)
            if operation == "CreateKey":
                params = self._operations.with_create_key_defaults(params)
                body = json.dumps(params).encode()
                environ["CONTENT_LENGTH"] = str(len(body))
            if self._operations.handles(operation):
                data = self._operations.handle(operation, params, self._caller(environ))
                return "200 OK", [("Content-Type", _JSON)], b"" if data is None else json.dumps(data).encode()
        except KmsError as exc:
            return _error(exc.status, exc.code, exc.message)
        return self._run_moto(environ, body)

    def _run_moto(self, environ: dict[str, Any], body: bytes) -> Reply:
        environ["wsgi.input"] = io.BytesIO(body)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _chunk: None

        result = self._app(environ, capture)
        try:
            data = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return captured["status"], list(captured["headers"]), data


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    return bytes(stream.read(length)) if length > 0 else b""


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _respond(start_response: StartResponse, reply: Reply) -> list[bytes]:
    status, headers, data = reply
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(data)))]
    start_response(status, headers)
    return [data]
