"""A local fake of Vault's HTTP API (transit engine, mounts, AppRole) for tests and ``kmsbox fake-kms serve``.

The official client (hvac) talks to it over a real loopback socket. It checks
``X-Vault-Token``, keeps ``X-Vault-Namespace`` namespaces as separate keyspaces,
and answers with Vault's status codes and ``{"errors": [...]}`` bodies. A
:class:`~kmsbox.testing.fakes.FaultInjector` sits in front of every request.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kmsbox.testing.fakes import FaultInjector
from kmsbox_vault.fake_transit import Reply, TransitMount, VaultHTTPError, hash_data, random_bytes
from kmsbox_vault.uri import parse_key_uri

__all__ = ["READY_KEY", "VaultFake", "start_vault_fake"]

#: Name of the key created at start, in the ``transit`` mount (a derived aes256-gcm96 key).
READY_KEY = "kmsbox-kek"
_VAULT_VERSION = "1.17.0"
_RESERVED_MOUNTS = ("sys", "cubbyhole", "identity", "auth")
_BAD_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
_DENIED = "1 error occurred:\n\t* permission denied\n\n"
_UNSUPPORTED_PATH = "1 error occurred:\n\t* unsupported path\n\n"
_UNSUPPORTED_OPERATION = "1 error occurred:\n\t* unsupported operation\n\n"

Handler = Callable[[dict[str, Any]], Reply]


def _token() -> str:
    return "hvs." + secrets.token_urlsafe(18).replace("-", "A").replace("_", "B")


@dataclass
class _Namespace:
    mounts: dict[str, TransitMount] = field(default_factory=dict)
    accessors: dict[str, str] = field(default_factory=dict)


@dataclass
class _Role:
    role_id: str
    secret_ids: set[str] = field(default_factory=set)
    token_ttl: int = 3600


class VaultFake:
    """A started fake Vault. Thread-safe; call :meth:`stop` to release the port."""

    name = "vault"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: FaultInjector | None = None,
        timeout_delay: float | None = None,
    ) -> None:
        self._faults = faults or FaultInjector()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._timeout_delay = timeout_delay
        self.root_token = _token()
        self._tokens: dict[str, float | None] = {self.root_token: None}
        self._namespaces: dict[str, _Namespace] = {"": _Namespace()}
        self._roles: dict[str, _Role] = {}
        self._mount("", "transit")
        self._namespaces[""].mounts["transit"].create_key(READY_KEY, {"type": "aes256-gcm96", "derived": True})
        self._server = ThreadingHTTPServer((host, port), _RequestHandler)
        self._server.daemon_threads = False  # server_close() then joins every handler thread
        self._server.block_on_close = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="kmsbox-vault-fake", daemon=True)
        self._thread.start()

    # -- the FakeServer protocol ----------------------------------------------------

    @property
    def address(self) -> str:
        """``http://HOST:PORT`` of this fake."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def kek_uri(self) -> str:
        """URI of the ready key (works with :meth:`env`)."""
        return self.key_uri(READY_KEY)

    @property
    def faults(self) -> FaultInjector:
        """The fault and latency injector in front of every request."""
        return self._faults

    def key_uri(self, name: str, mount: str = "transit") -> str:
        """The ``hcvault://`` URI of a key in this fake."""
        return f"hcvault://{self.address.removeprefix('http://')}/{mount}/keys/{name}"

    def env(self) -> dict[str, str]:
        """``VAULT_ADDR`` (plain HTTP, so the provider uses HTTP for this host) and the root ``VAULT_TOKEN``."""
        return {"VAULT_ADDR": self.address, "VAULT_TOKEN": self.root_token}

    def create_key(self, name: str, *, derived: bool = True, mount: str = "transit", namespace: str = "") -> str:
        """Create an aes256-gcm96 key (derived by default, as kmsbox recommends) and return its URI."""
        with self._lock:
            transit = self._namespace(namespace).mounts[mount]
            transit.create_key(name, {"type": "aes256-gcm96", "derived": derived})
        return self.key_uri(name, mount)

    def rotate_key(self, kek_uri: str) -> str:
        """Rotate the key behind ``kek_uri``; return the new version as ``vN``."""
        ref = parse_key_uri(kek_uri)
        with self._lock:
            _, data = self._namespace("").mounts[ref.mount].rotate_key(ref.name)
        assert data is not None
        return f"v{data['latest_version']}"

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and join every thread."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- operator helpers for tests -------------------------------------------------

    def create_namespace(self, path: str) -> None:
        """Create a namespace (its own mounts and keys, with a ``transit`` mount)."""
        with self._lock:
            self._namespaces.setdefault(path.strip("/"), _Namespace())
            self._mount(path.strip("/"), "transit")

    def create_approle(self, role: str, *, token_ttl: int = 3600) -> tuple[str, str]:
        """Create an AppRole role; return ``(role_id, secret_id)``."""
        with self._lock:
            entry = self._roles.setdefault(role, _Role(role_id=str(uuid.uuid4()), token_ttl=token_ttl))
            secret_id = str(uuid.uuid4())
            entry.secret_ids.add(secret_id)
            return entry.role_id, secret_id

    def expire_tokens(self) -> None:
        """Revoke every token except the root token (AppRole clients must log in again)."""
        with self._lock:
            self._tokens = {self.root_token: None}

    # -- request handling -----------------------------------------------------------

    def _namespace(self, path: str) -> _Namespace:
        namespace = self._namespaces.get(path)
        if namespace is None:
            raise VaultHTTPError(404, f'no handler for route "{path}". route entry not found.')
        return namespace

    def _mount(self, namespace: str, path: str) -> None:
        ns = self._namespaces[namespace]
        ns.mounts[path] = TransitMount(path)
        ns.accessors[path] = f"transit_{secrets.token_hex(4)}"

    def timeout_delay(self) -> float:
        """How long a ``timeout`` fault sleeps: past the client's time-out (KMSBOX_KMS_TIMEOUT + 1 s by default)."""
        if self._timeout_delay is not None:
            return self._timeout_delay
        try:
            return float(os.environ.get("KMSBOX_KMS_TIMEOUT", "10")) + 1.0
        except ValueError:
            return 11.0

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the fake stops."""
        self._stopping.wait(seconds)

    def check_token(self, token: str | None) -> None:
        """403 for a missing, unknown or expired token."""
        if not token:
            raise VaultHTTPError(403, "permission denied")
        with self._lock:
            expiry = self._tokens.get(token, 0.0)
            if expiry is not None and expiry <= time.time():
                raise VaultHTTPError(403, _BAD_TOKEN)

    def route(self, method: str, path: str, namespace: str) -> tuple[str, bool, Handler]:
        """``(operation name, needs a token, handler)`` for a request to ``/v1/<path>``."""
        segments = path.split("/")
        if path == "sys/health":
            return "sys.health", False, self._health
        if segments[:2] == ["sys", "mounts"]:
            return self._route_mounts(method, "/".join(segments[2:]), namespace)
        if segments[:2] == ["sys", "namespaces"]:
            return "sys.namespaces", True, self._bind(self._namespaces_op, method, "/".join(segments[2:]))
        if segments[:2] == ["sys", "tools"] and len(segments) >= 3 and segments[2] in ("random", "hash"):
            op = segments[2]
            if method != "POST":
                return op, True, self._unsupported_operation
            if op == "random":
                return op, True, lambda body: random_bytes(segments[3:], body)
            return op, True, lambda body: hash_data(segments[3] if len(segments) > 3 else None, body)
        if segments[:2] == ["auth", "approle"]:
            return self._route_approle(method, segments[2:])
        if path == "auth/token/lookup-self":
            return "auth.token.lookup", True, self._lookup_self
        return self._route_transit(method, path, namespace)

    def _bind(self, fn: Callable[[str, str, dict[str, Any]], Reply], method: str, rest: str) -> Handler:
        return lambda body: fn(method, rest, body)

    @staticmethod
    def _unsupported_operation(body: dict[str, Any]) -> Reply:
        raise VaultHTTPError(405, _UNSUPPORTED_OPERATION)

    @staticmethod
    def _unsupported_path(body: dict[str, Any]) -> Reply:
        raise VaultHTTPError(404, _UNSUPPORTED_PATH)

    def _health(self, body: dict[str, Any]) -> Reply:
        return 200, {
            "initialized": True,
            "sealed": False,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": _VAULT_VERSION,
            "cluster_name": "kmsbox-fake",
            "cluster_id": "00000000-0000-0000-0000-000000000000",
        }

    def _route_mounts(self, method: str, path: str, namespace: str) -> tuple[str, bool, Handler]:
        path = path.strip("/")
        if not path:
            return (
                ("sys.mounts.list", True, lambda body: self._list_mounts(namespace))
                if method == "GET"
                else (
                    "sys.mounts",
                    True,
                    self._unsupported_operation,
                )
            )
        if method == "POST":
            return "sys.mounts.enable", True, lambda body: self._enable_mount(namespace, path, body)
        if method == "DELETE":
            return "sys.mounts.disable", True, lambda body: self._disable_mount(namespace, path)
        return "sys.mounts", True, self._unsupported_operation

    def _list_mounts(self, namespace: str) -> Reply:
        with self._lock:
            ns = self._namespace(namespace)
            mounts: dict[str, Any] = {
                f"{p}/": {"type": p, "description": f"{p} mount", "accessor": f"{p}_00000000", "local": p != "identity"}
                for p in ("sys", "cubbyhole", "identity")
            }
            for path in ns.mounts:
                mounts[f"{path}/"] = {
                    "type": "transit",
                    "description": "",
                    "accessor": ns.accessors[path],
                    "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
                    "local": False,
                    "seal_wrap": False,
                    "external_entropy_access": False,
                    "options": None,
                    "plugin_version": "",
                    "running_plugin_version": f"v{_VAULT_VERSION}+builtin.vault",
                }
        # GET sys/mounts repeats the mounts at the top level (Vault's legacy shape) and under "data".
        return 200, {**mounts, "__data__": mounts}

    def _enable_mount(self, namespace: str, path: str, body: dict[str, Any]) -> Reply:
        engine = body.get("type")
        if not engine:
            raise VaultHTTPError(400, "backend type must be specified as a string")
        if path.split("/")[0] in _RESERVED_MOUNTS:
            raise VaultHTTPError(400, f"cannot mount under {path.split('/')[0]}/")
        if engine != "transit":
            raise VaultHTTPError(400, f"the kmsbox Vault fake only mounts the transit engine, not {engine!r}")
        with self._lock:
            ns = self._namespace(namespace)
            for existing in ns.mounts:
                if path == existing or path.startswith(existing + "/") or existing.startswith(path + "/"):
                    raise VaultHTTPError(400, f"path is already in use at {existing}/")
            self._mount(namespace, path)
        return 204, None

    def _disable_mount(self, namespace: str, path: str) -> Reply:
        if path.split("/")[0] in _RESERVED_MOUNTS:
            raise VaultHTTPError(400, f"cannot unmount {path.split('/')[0]}/")
        with self._lock:
            ns = self._namespace(namespace)
            ns.mounts.pop(path, None)
            ns.accessors.pop(path, None)
        return 204, None

    def _namespaces_op(self, method: str, rest: str, body: dict[str, Any]) -> Reply:
        name = rest.strip("/")
        with self._lock:
            if method == "LIST" and not name:
                names = sorted(f"{n}/" for n in self._namespaces if n)
                if not names:
                    raise VaultHTTPError(404)
                return 200, {"keys": names}
            if method == "POST" and name:
                if name not in self._namespaces:
                    self._namespaces[name] = _Namespace()
                return 200, {"id": secrets.token_hex(3), "path": f"{name}/", "custom_metadata": {}}
            if method == "DELETE" and name:
                self._namespaces.pop(name, None)
                return 204, None
        raise VaultHTTPError(405, _UNSUPPORTED_OPERATION)

    def _route_approle(self, method: str, segments: list[str]) -> tuple[str, bool, Handler]:
        if segments == ["login"] and method == "POST":
            return "auth.approle.login", False, self._approle_login
        if len(segments) >= 2 and segments[0] == "role":
            role, rest = segments[1], segments[2:]
            return "auth.approle.role", True, lambda body: self._approle_role(method, role, rest, body)
        return "auth.approle", True, self._unsupported_path

    def _approle_role(self, method: str, role: str, rest: list[str], body: dict[str, Any]) -> Reply:
        if not rest and method == "POST":
            ttl = body.get("token_ttl", 3600)
            with self._lock:
                entry = self._roles.setdefault(role, _Role(role_id=str(uuid.uuid4())))
                entry.token_ttl = int(ttl) if str(ttl).isdigit() else 3600
            return 204, None
        with self._lock:
            entry_or_none = self._roles.get(role)
        if entry_or_none is None:
            raise VaultHTTPError(400, f'role "{role}" does not exist') if rest else VaultHTTPError(404)
        if rest == ["role-id"] and method == "GET":
            return 200, {"role_id": entry_or_none.role_id}
        if rest == ["secret-id"] and method == "POST":
            _, secret_id = self.create_approle(role)
            return 200, {
                "secret_id": secret_id,
                "secret_id_accessor": str(uuid.uuid4()),
                "secret_id_ttl": 0,
                "secret_id_num_uses": 0,
            }
        raise VaultHTTPError(405, _UNSUPPORTED_OPERATION)

    def _approle_login(self, body: dict[str, Any]) -> Reply:
        role_id, secret_id = body.get("role_id"), body.get("secret_id")
        if not role_id:
            raise VaultHTTPError(400, "missing role_id")
        with self._lock:
            match = next((r for r in self._roles.values() if r.role_id == role_id), None)
            if match is None or secret_id not in match.secret_ids:
                raise VaultHTTPError(400, "invalid role or secret ID")
            token = _token()
            self._tokens[token] = time.time() + match.token_ttl
            name = next(n for n, r in self._roles.items() if r is match)
        auth = {
            "client_token": token,
            "accessor": secrets.token_urlsafe(18),
            "policies": ["default"],
            "token_policies": ["default"],
            "metadata": {"role_name": name},
            "lease_duration": match.token_ttl,
            "renewable": True,
            "entity_id": str(uuid.uuid4()),
            "token_type": "service",
            "orphan": True,
        }
        return 200, {"__auth__": auth}

    def _lookup_self(self, body: dict[str, Any]) -> Reply:
        return 200, {"policies": ["root"], "display_name": "token", "renewable": False}

    def _route_transit(self, method: str, path: str, namespace: str) -> tuple[str, bool, Handler]:
        with self._lock:
            ns = self._namespaces.get(namespace)
            mount_path = None
            if ns is not None:
                candidates = [m for m in ns.mounts if path == m or path.startswith(m + "/")]
                mount_path = max(candidates, key=len) if candidates else None
            if ns is None or mount_path is None:
                return (
                    "unknown",
                    True,
                    _raiser(VaultHTTPError(404, f'no handler for route "{path}". route entry not found.')),
                )
            mount = ns.mounts[mount_path]
        op, handler = _transit_route(mount, method, path[len(mount_path) + 1 :].split("/"))

        def locked(body: dict[str, Any]) -> Reply:
            with self._lock:
                return handler(body)

        return op, True, locked


def _raiser(error: VaultHTTPError) -> Handler:
    def handler(body: dict[str, Any]) -> Reply:
        raise error

    return handler


def _transit_route(mount: TransitMount, method: str, seg: list[str]) -> tuple[str, Handler]:
    """Operation name and handler for a path inside a transit mount."""
    head, n = seg[0], len(seg)

    def only(allowed: str, op: str, fn: Handler) -> tuple[str, Handler]:
        return (op, fn) if method == allowed else (op, VaultFake._unsupported_operation)

    if head == "keys" and n == 1:
        return only("LIST", "keys.list", lambda body: mount.list_keys())
    if head == "keys" and n == 2:
        if method == "GET":
            return "keys.read", lambda body: mount.read_key(seg[1])
        if method == "DELETE":
            return "keys.delete", lambda body: mount.delete_key(seg[1])
        return only("POST", "keys.create", lambda body: mount.create_key(seg[1], body))
    if head == "keys" and n == 3 and seg[2] in ("config", "rotate", "trim"):
        actions: dict[str, Handler] = {
            "config": lambda body: mount.configure_key(seg[1], body),
            "rotate": lambda body: mount.rotate_key(seg[1]),
            "trim": lambda body: mount.trim_key(seg[1], body),
        }
        return only("POST", f"keys.{seg[2]}", actions[seg[2]])
    if head in ("encrypt", "decrypt", "rewrap") and n == 2:
        operations: dict[str, Callable[[str, dict[str, Any]], Reply]] = {
            "encrypt": mount.encrypt,
            "decrypt": mount.decrypt,
            "rewrap": mount.rewrap,
        }
        return only("POST", head, lambda body: operations[head](seg[1], body))
    if head == "datakey" and n == 3:
        return only("POST", "datakey", lambda body: mount.datakey(seg[1], seg[2], body))
    if head == "random" and n <= 3:
        return only("POST", "random", lambda body: random_bytes(seg[1:], body))
    if head == "hash" and n <= 2:
        return only("POST", "hash", lambda body: hash_data(seg[1] if n == 2 else None, body))
    if head in ("hmac", "verify") and n in (2, 3):
        verify = head == "verify"
        return only("POST", head, lambda body: mount.hmac(seg[1], seg[2] if n == 3 else None, body, verify=verify))
    return "unknown", VaultFake._unsupported_path


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into fake operations; one thread per connection, one request each."""

    server_version = "kmsbox-vault-fake"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (it would only add noise to test output)."""

    def do_GET(self) -> None:
        """GET (``?list=true`` means LIST)."""
        self._handle("GET")

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
        parts = urlsplit(self.path)
        if method == "GET" and parse_qs(parts.query).get("list", [""])[0].lower() == "true":
            method = "LIST"
        if not parts.path.startswith("/v1/"):
            self._reply(404, None, [])
            return
        path = parts.path[len("/v1/") :].strip("/")
        namespace = (self.headers.get("X-Vault-Namespace") or "").strip("/")
        namespace = "" if namespace == "root" else namespace
        operation, needs_token, handler = fake.route(method, path, namespace)
        fault = fake.faults.before_call(operation)
        try:
            if fault is not None:
                self._fault(fake, fault, path)
                return
            body = self._body()
            if needs_token:
                fake.check_token(self.headers.get("X-Vault-Token"))
            status, data = handler(body)
        except VaultHTTPError as exc:
            if exc.data is not None:
                self._reply(exc.status, exc.data, None)
            else:
                self._reply(exc.status, None, exc.errors)
            return
        except Exception as exc:  # a bug in the fake: answer like Vault's internal errors, do not hang the client
            self._reply(500, None, [f"1 error occurred:\n\t* internal error: {type(exc).__name__}\n\n"])
            return
        self._reply(status, data, None)

    def _fault(self, fake: VaultFake, kind: str, path: str) -> None:
        if kind == "timeout":
            fake.sleep(fake.timeout_delay())
            self.close_connection = True  # drop the request without an answer
            return
        answers = {
            "throttle": (429, f'request path "{path}": rate limit quota exceeded'),
            "unavailable": (503, "Vault is sealed"),
            "denied": (403, _DENIED),
        }
        status, message = answers[kind]
        self._reply(status, None, [message])

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

    def _reply(self, status: int, data: dict[str, Any] | None, errors: list[str] | None) -> None:
        payload: bytes = b""
        if errors is not None:
            payload = json.dumps({"errors": errors}).encode()
        elif status != 204:
            payload = json.dumps(_envelope(data)).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)


def _envelope(data: dict[str, Any] | None) -> dict[str, Any]:
    if data is not None and "initialized" in data and "sealed" in data:
        return data  # sys/health answers bare
    auth = data.pop("__auth__", None) if data is not None else None
    if data is not None and "__data__" in data:
        legacy = dict(data)
        inner = legacy.pop("__data__")
        data = None
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


def start_vault_fake(
    host: str = "127.0.0.1",
    port: int = 0,
    latency: float = 0.0,
    fault_rate: float = 0.0,
    fault_kind: str = "unavailable",
    *,
    fault_count: int | None = None,
    timeout_delay: float | None = None,
    seed: int | None = None,
    **_ignored: Any,
) -> VaultFake:
    """Start the fake (the ``register_fake_servers`` factory); extra options from newer hosts are ignored."""
    faults = FaultInjector(latency=latency, rate=fault_rate, kind=fault_kind, seed=seed)
    if fault_count is not None:
        faults.configure(count=fault_count)
    return VaultFake(host, port, faults=faults, timeout_delay=timeout_delay)
