"""The HTTP side of the Vault fake: requests in, Vault-shaped answers out, faults injected on the way.

Each request is routed (:class:`~kmsbox_vault.fake_routes.Router`), passes the fake's
fault injector by its operation name, is refused while sealed, authorized against the
token's policies, and answered with Vault's envelope or ``{"errors": [...]}``.
"""

from __future__ import annotations

import json
import uuid
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from kmsbox.testing.fakes import abort_connection
from kmsbox_vault.fake_routes import Call
from kmsbox_vault.fake_state import DENIED
from kmsbox_vault.fake_transit import VaultHTTPError

if TYPE_CHECKING:
    from kmsbox_vault.fake import VaultFake

__all__ = ["VaultRequestHandler"]

_ERROR_FAULTS = {"throttle": 429, "unavailable": 503, "denied": 403}


class VaultRequestHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into fake operations; one thread per connection. ``server.fake`` is the VaultFake."""

    server_version = "kmsbox-vault-fake"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (it would only add noise to test output)."""

    def do_GET(self) -> None:
        """GET (``?list=true`` means LIST)."""
        self._handle("GET")

    def do_HEAD(self) -> None:
        """HEAD: what hvac's ``read_health_status`` sends by default."""
        self._handle("HEAD")

    def do_POST(self) -> None:
        """POST: create or update."""
        self._handle("POST")

    def do_PUT(self) -> None:
        """PUT is the same as POST in Vault."""
        self._handle("POST")

    def do_DELETE(self) -> None:
        """DELETE."""
        self._handle("DELETE")

    def do_LIST(self) -> None:
        """Vault's LIST verb."""
        self._handle("LIST")

    def _handle(self, method: str) -> None:
        fake: VaultFake = self.server.fake  # type: ignore[attr-defined]
        self._malformed = False
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if method == "GET" and query.get("list", "").lower() == "true":
            method = "LIST"
        if not parts.path.startswith("/v1/"):
            self._reply(404, None, [], method)
            return
        path = parts.path[len("/v1/") :].strip("/")
        namespace = (self.headers.get("X-Vault-Namespace") or "").strip("/")
        namespace = "" if namespace == "root" else namespace
        route = fake.router.route("GET" if method == "HEAD" else method, path, namespace)
        fault = fake.faults.before_call(route.operation)
        if fault is not None and fault != "malformed":
            self._fault(fake, fault, path)
            return
        self._malformed = fault == "malformed"
        try:
            body = self._body()
            fake.state.refuse_when_sealed(path)
            token = None
            if route.needs_token:
                token_id = self.headers.get("X-Vault-Token")
                token = fake.state.authorize(method, path, namespace, token_id, route.creates)
            status, data = route.handler(Call(body, token, namespace, query))
        except VaultHTTPError as exc:
            if exc.data is not None:
                self._reply(exc.status, exc.data, None, method)
            else:
                self._reply(exc.status, None, exc.errors, method)
            return
        except Exception as exc:  # a bug in the fake: answer like Vault's internal errors, do not hang the client
            self._reply(500, None, [f"1 error occurred:\n\t* internal error: {type(exc).__name__}\n\n"], method)
            return
        self._reply(status, data, None, method, bare=route.bare)

    def _fault(self, fake: VaultFake, kind: str, path: str) -> None:
        if kind == "timeout":
            fake.sleep(fake.timeout_delay())
            self.close_connection = True  # drop the request without an answer
            return
        if kind == "reset":
            self.close_connection = True
            abort_connection(self.connection)  # the RST goes out when the handler's files close
            return
        messages = {
            "throttle": f'request path "{path}": rate limit quota exceeded',
            "unavailable": "Vault is sealed",
            "denied": DENIED,
        }
        self._reply(_ERROR_FAULTS[kind], None, [messages[kind]], "POST")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return {}
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise VaultHTTPError(400, f"failed to parse JSON input: {exc}") from None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise VaultHTTPError(400, "failed to parse JSON input: expected an object")
        return body

    def _reply(
        self, status: int, data: dict[str, Any] | None, errors: list[str] | None, method: str, *, bare: bool = False
    ) -> None:
        payload: bytes = b""
        if errors is not None:
            payload = json.dumps({"errors": errors}).encode()
        elif bare:
            payload = json.dumps(data).encode()
        elif status != 204:
            payload = json.dumps(envelope(data)).encode()
        if self._malformed:
            # The real reply, cut short behind a 200: what a client gets from a broken proxy.
            status, payload = 200, payload[: len(payload) // 2] if len(payload) > 1 else b"{"
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and method != "HEAD":
            self.wfile.write(payload)


def envelope(data: dict[str, Any] | None) -> dict[str, Any]:
    """Vault's response envelope around ``data`` (``__auth__`` and ``__data__`` say where parts go)."""
    auth = data.pop("__auth__", None) if data is not None else None
    if data is not None and "__data__" in data:
        legacy = dict(data)
        inner = legacy.pop("__data__")
        body: dict[str, Any] = {**legacy, "data": inner}
    else:
        body = {"data": data if data else None}
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        **body,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }
