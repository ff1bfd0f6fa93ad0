"""WSGI middleware in front of moto's KMS: fault and latency injection, and real-KMS behaviour moto lacks.

Every KMS request (``X-Amz-Target: TrentService.<Operation>``) passes the fake's
:class:`~kmsbox.testing.fakes.FaultInjector`. Injected faults answer with the JSON error
shapes AWS KMS uses. Moto's answers are corrected where they differ from AWS for what a
KEK provider relies on: a disabled or pending-deletion key refuses cryptographic calls,
and ``Decrypt``'s ``KeyId`` / ``ReEncrypt``'s ``SourceKeyId`` naming another key than the
ciphertext's is ``IncorrectKeyException``.
"""

from __future__ import annotations

import hmac
import io
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kmsbox.testing.fakes import FaultInjector

__all__ = ["ADMIN_HEADER", "KmsFaultMiddleware"]

#: Requests carrying the fake's admin token in this header bypass faults and call counts.
ADMIN_HEADER = "X-Kmsbox-Fake-Admin"
_ADMIN_ENVIRON = "HTTP_" + ADMIN_HEADER.upper().replace("-", "_")

_CRYPTO_OPERATIONS = frozenset(
    {"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext"}
)
# Operator calls where moto (unlike AWS) needs a bare key ID rather than a key ARN.
_BARE_KEY_ID_OPERATIONS = frozenset({"DisableKey", "EnableKey", "ScheduleKeyDeletion", "CancelKeyDeletion"})
_STATE_WORDS = {
    "PendingDeletion": "pending deletion",
    "PendingImport": "pending import",
    "PendingReplicaDeletion": "pending replica deletion",
    "Unavailable": "unavailable",
    "Creating": "being created",
    "Updating": "being updated",
}
_INCORRECT_KEY = "The key ID in the request does not identify a KMS key that can perform this operation."
_THROTTLED = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
KeyStateLookup = Callable[[str], str | None]
KeyResolver = Callable[[str], str | None]


def _error(status: str, code: str, message: str | None) -> tuple[str, list[tuple[str, str]], bytes]:
    body: dict[str, str] = {"__type": code}
    if message is not None:
        body["message"] = message
    data = json.dumps(body).encode()
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))], data


def fault_response(kind: str, operation: str, params: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """The reply AWS KMS gives for an injected fault of ``kind`` (not ``timeout``)."""
    if kind == "throttle":
        return _error("400 Bad Request", "ThrottlingException", _THROTTLED)
    if kind == "denied":
        resource = params.get("KeyId") or params.get("DestinationKeyId") or "*"
        return _error(
            "400 Bad Request",
            "AccessDeniedException",
            f"User: arn:aws:iam::123456789012:user/kmsbox-fake is not authorized to perform: kms:{operation} "
            f"on resource: {resource} because no identity-based policy allows the kms:{operation} action",
        )
    return _error("500 Internal Server Error", "KMSInternalException", "An internal error occurred.")


class KmsFaultMiddleware:
    """Wraps moto's WSGI app: counts KMS calls, injects latency and faults, fixes moto's gaps."""

    def __init__(
        self,
        app: WsgiApp,
        faults: FaultInjector,
        *,
        admin_token: str,
        stopping: threading.Event,
        timeout_delay: Callable[[], float],
        key_state: KeyStateLookup,
        resolve_key: KeyResolver,
    ) -> None:
        self._app = app
        self._faults = faults
        self._admin_token = admin_token
        self._stopping = stopping
        self._timeout_delay = timeout_delay
        self._key_state = key_state
        self._resolve_key = resolve_key

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        admin = hmac.compare_digest(str(environ.get(_ADMIN_ENVIRON, "")), self._admin_token)
        if admin or not target.startswith("TrentService."):
            return self._app(environ, start_response)
        operation = target.partition(".")[2]
        body = _read_body(environ)
        params = _json_object(body)
        if operation in _BARE_KEY_ID_OPERATIONS and ":key/" in str(params.get("KeyId", "")):
            # AWS accepts a key ARN here; moto looks the value up as a bare key ID.
            params["KeyId"] = str(params["KeyId"]).split(":key/", 1)[1]
            body = json.dumps(params).encode()
            environ["CONTENT_LENGTH"] = str(len(body))
        fault = self._faults.before_call(operation)
        if fault == "timeout":
            # Hold the reply past the client's read time-out; stop() cuts the wait short.
            self._stopping.wait(self._timeout_delay())
        elif fault is not None:
            return _respond(start_response, fault_response(fault, operation, params))
        status, headers, data = self._run(environ, body)
        return _respond(start_response, self._as_aws(operation, params, status, headers, data))

    def _run(self, environ: dict[str, Any], body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
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

    def _as_aws(
        self, operation: str, params: dict[str, Any], status: str, headers: list[tuple[str, str]], data: bytes
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        if operation not in _CRYPTO_OPERATIONS:
            return status, headers, data
        reply = _json_object(data)
        if operation == "Decrypt" and params.get("KeyId") and reply.get("__type") == "AccessDeniedException":
            # moto's (message-less) answer when KeyId names another key than the ciphertext's.
            return _error("400 Bad Request", "IncorrectKeyException", _INCORRECT_KEY)
        if not status.startswith("200"):
            return status, headers, data
        source = params.get("SourceKeyId")
        if operation == "ReEncrypt" and isinstance(source, str):
            resolved = self._resolve_key(source)
            if resolved is None:
                kind = "Alias" if "alias/" in source else "Key"
                return _error("400 Bad Request", "NotFoundException", f"{kind} '{source}' does not exist")
            if resolved != reply.get("SourceKeyId"):
                return _error("400 Bad Request", "IncorrectKeyException", _INCORRECT_KEY)
        for arn in (reply.get("SourceKeyId"), reply.get("KeyId")):
            if isinstance(arn, str):
                state = self._key_state(arn)
                if state == "Disabled":
                    return _error("400 Bad Request", "DisabledException", f"{arn} is disabled.")
                if state is not None and state != "Enabled":
                    words = _STATE_WORDS.get(state, state)
                    return _error("400 Bad Request", "KMSInvalidStateException", f"{arn} is {words}.")
        return status, headers, data


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


def _respond(start_response: StartResponse, reply: tuple[str, list[tuple[str, str]], bytes]) -> list[bytes]:
    status, headers, data = reply
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(data)))]
    start_response(status, headers)
    return [data]
