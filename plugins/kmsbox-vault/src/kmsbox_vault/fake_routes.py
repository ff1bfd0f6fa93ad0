"""Request routing of the Vault fake: which handler serves a path, under which operation name, needing what.

Operation names (:data:`OPERATIONS`) are what faults are aimed at and calls counted by.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kmsbox_vault.fake_auth import Token
from kmsbox_vault.fake_state import VaultState
from kmsbox_vault.fake_sys import UNSUPPORTED_OPERATION, SysApi
from kmsbox_vault.fake_transit import Reply, TransitMount, VaultHTTPError, hash_data, random_bytes

__all__ = ["OPERATIONS", "Call", "Route", "Router"]

_UNSUPPORTED_PATH = "1 error occurred:\n\t* unsupported path\n\n"

#: The fake's operation names, by which faults are aimed and calls counted.
OPERATIONS = frozenset(
    {
        "sys.health",
        "sys.seal-status",
        "sys.init",
        "sys.mounts",
        "sys.mounts.list",
        "sys.mounts.enable",
        "sys.mounts.disable",
        "sys.namespaces",
        "sys.policies.list",
        "sys.policies.read",
        "sys.policies.write",
        "sys.policies.delete",
        "sys.capabilities-self",
        "auth.approle",
        "auth.approle.login",
        "auth.approle.role",
        "auth.token.create",
        "auth.token.lookup",
        "auth.token.revoke-self",
        "keys.list",
        "keys.read",
        "keys.create",
        "keys.delete",
        "keys.config",
        "keys.rotate",
        "keys.trim",
        "encrypt",
        "decrypt",
        "rewrap",
        "datakey",
        "random",
        "hash",
        "hmac",
        "verify",
        "unknown",
    }
)


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it: the JSON body, the caller's token, the namespace, the query."""

    body: dict[str, Any]
    token: Token | None
    namespace: str
    query: dict[str, str]


Handler = Callable[[Call], Reply]
TransitHandler = Callable[[dict[str, Any]], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: its operation name, handler and what it needs.

    ``creates`` says, for a POST, whether the target is missing, so that the token
    needs ``create`` rather than ``update`` (Vault's existence check, as on
    ``encrypt``, which creates a missing key). ``bare`` replies skip Vault's envelope.
    """

    operation: str
    handler: Handler
    needs_token: bool = True
    creates: Callable[[], bool] | None = None
    bare: bool = False


def _raiser(error: VaultHTTPError) -> Handler:
    def handler(call: Call) -> Reply:
        raise error

    return handler


def _unsupported_operation(call: Call) -> Reply:
    raise VaultHTTPError(405, UNSUPPORTED_OPERATION)


def _unsupported_path(call: Call) -> Reply:
    raise VaultHTTPError(404, _UNSUPPORTED_PATH)


def _self(call: Call) -> Token:
    assert call.token is not None  # routes that use it need a token
    return call.token


class Router:
    """Maps ``(method, path, namespace)`` to a :class:`Route` over the fake's state."""

    def __init__(self, state: VaultState) -> None:
        self._state = state
        self._sys = SysApi(state)

    def __repr__(self) -> str:
        return f"Router({self._state!r})"

    def route(self, method: str, path: str, namespace: str) -> Route:
        """The route of a request to ``/v1/<path>`` (HEAD is routed as GET)."""
        sys_api, segments = self._sys, path.split("/")
        if path == "sys/health":
            return Route("sys.health", lambda call: sys_api.health(call.query), needs_token=False, bare=True)
        if path == "sys/seal-status":
            return Route("sys.seal-status", lambda call: sys_api.seal_status(), needs_token=False, bare=True)
        if path == "sys/init":
            return Route("sys.init", lambda call: (200, {"initialized": True}), needs_token=False, bare=True)
        if segments[:2] == ["sys", "mounts"]:
            return self._mounts(method, "/".join(segments[2:]).strip("/"), namespace)
        if segments[:2] == ["sys", "namespaces"]:
            name = "/".join(segments[2:]).strip("/")
            return Route("sys.namespaces", lambda call: sys_api.namespaces(method, name))
        if segments[:2] == ["sys", "policy"] or segments[:3] == ["sys", "policies", "acl"]:
            legacy = segments[1] == "policy"
            return self._policies(method, "/".join(segments[2 if legacy else 3 :]), namespace, legacy)
        if path == "sys/capabilities-self":
            if method != "POST":
                return Route("sys.capabilities-self", _unsupported_operation)
            return Route(
                "sys.capabilities-self", lambda call: sys_api.capabilities_self(_self(call), namespace, call.body)
            )
        if segments[:2] == ["sys", "tools"] and len(segments) >= 3 and segments[2] in ("random", "hash"):
            return self._tools(method, segments[2], segments[3:])
        if segments[:2] == ["auth", "approle"]:
            return self._approle(method, segments[2:])
        if segments[:2] == ["auth", "token"]:
            return self._token(method, segments[2:])
        return self._transit(method, path, namespace)

    def _mounts(self, method: str, path: str, namespace: str) -> Route:
        sys_api = self._sys
        if not path:
            if method == "GET":
                return Route("sys.mounts.list", lambda call: sys_api.list_mounts(namespace))
            return Route("sys.mounts", _unsupported_operation)
        if method == "POST":
            return Route("sys.mounts.enable", lambda call: sys_api.enable_mount(namespace, path, call.body))
        if method == "DELETE":
            return Route("sys.mounts.disable", lambda call: sys_api.disable_mount(namespace, path))
        return Route("sys.mounts", _unsupported_operation)

    def _policies(self, method: str, name: str, namespace: str, legacy: bool) -> Route:
        sys_api, name = self._sys, name.strip("/").lower()
        if not name:
            if method in ("GET", "LIST"):
                return Route("sys.policies.list", lambda call: sys_api.list_policies(namespace, legacy))
            return Route("sys.policies.list", _unsupported_operation)
        if method == "GET":
            return Route("sys.policies.read", lambda call: sys_api.read_policy(namespace, name, legacy))
        if method == "POST":
            return Route("sys.policies.write", lambda call: sys_api.write_policy(namespace, name, call.body))
        if method == "DELETE":
            return Route("sys.policies.delete", lambda call: sys_api.delete_policy(namespace, name))
        return Route("sys.policies.list", _unsupported_operation)

    @staticmethod
    def _tools(method: str, tool: str, rest: list[str]) -> Route:
        if method != "POST":
            return Route(tool, _unsupported_operation)
        if tool == "random":
            return Route(tool, lambda call: random_bytes(rest, call.body))
        return Route(tool, lambda call: hash_data(rest[0] if rest else None, call.body))

    def _approle(self, method: str, segments: list[str]) -> Route:
        state = self._state
        if segments == ["login"] and method == "POST":

            def login(call: Call) -> Reply:
                with state.lock:
                    token = state.approles.login(call.body, call.namespace)
                    return 200, {"__auth__": token.auth(state.now())}

            return Route("auth.approle.login", login, needs_token=False)
        if len(segments) >= 2 and segments[0] == "role":
            role, rest = segments[1], segments[2:]
            return Route("auth.approle.role", lambda call: self._approle_role(method, role, rest, call.body))
        return Route("auth.approle", _unsupported_path)

    def _approle_role(self, method: str, role: str, rest: list[str], body: dict[str, Any]) -> Reply:
        approles = self._state.approles
        with self._state.lock:
            if not rest and method == "POST":
                approles.write_role(role, body)
                return 204, None
            entry = approles.role(role)
            if entry is None:
                raise VaultHTTPError(400, f'role "{role}" does not exist') if rest else VaultHTTPError(404)
            if rest == ["role-id"] and method == "GET":
                return 200, {"role_id": entry.role_id}
            if rest == ["secret-id"] and method == "POST":
                return 200, {
                    "secret_id": approles.new_secret_id(role),
                    "secret_id_accessor": str(uuid.uuid4()),
                    "secret_id_ttl": 0,
                    "secret_id_num_uses": 0,
                }
        raise VaultHTTPError(405, UNSUPPORTED_OPERATION)

    def _token(self, method: str, segments: list[str]) -> Route:
        state = self._state

        def create(call: Call) -> Reply:
            with state.lock:
                child = state.tokens.create_child(_self(call), call.body, call.namespace)
                return 200, {"__auth__": child.auth(state.now())}

        def lookup_self(call: Call) -> Reply:
            return 200, _self(call).lookup(state.now())

        def revoke_self(call: Call) -> Reply:
            with state.lock:
                state.tokens.revoke(_self(call).id)
            return 204, None

        routes = {
            ("create", "POST"): Route("auth.token.create", create),
            ("lookup-self", "GET"): Route("auth.token.lookup", lookup_self),
            ("revoke-self", "POST"): Route("auth.token.revoke-self", revoke_self),
        }
        name = "/".join(segments)
        route = routes.get((name, method))
        if route is not None:
            return route
        known = {n: r.operation for (n, _), r in routes.items()}
        return Route(known.get(name, "unknown"), _unsupported_operation if name in known else _unsupported_path)

    def _transit(self, method: str, path: str, namespace: str) -> Route:
        state = self._state
        with state.lock:
            ns = state.namespaces.get(namespace)
            candidates = [m for m in ns.mounts if path == m or path.startswith(m + "/")] if ns is not None else []
            if ns is None or not candidates:
                return Route(
                    "unknown", _raiser(VaultHTTPError(404, f'no handler for route "{path}". route entry not found.'))
                )
            mount_path = max(candidates, key=len)
            mount = ns.mounts[mount_path]
        seg = path[len(mount_path) + 1 :].split("/")
        op, handler = _transit_route(mount, method, seg)

        def locked(call: Call) -> Reply:
            with state.lock:
                mount.rotate_due_keys()
                return handler(call.body)

        def key_missing() -> bool:
            with state.lock:
                return seg[1] not in mount.keys

        # encrypt has Vault's existence check: writing to a missing key needs "create", not "update".
        return Route(op, locked, creates=key_missing if op == "encrypt" else None)


def _transit_route(mount: TransitMount, method: str, seg: list[str]) -> tuple[str, TransitHandler]:
    """Operation name and handler for a path inside a transit mount."""
    head, n = seg[0], len(seg)

    def unsupported(body: dict[str, Any]) -> Reply:
        raise VaultHTTPError(405, UNSUPPORTED_OPERATION)

    def only(allowed: str, op: str, fn: TransitHandler) -> tuple[str, TransitHandler]:
        return (op, fn) if method == allowed else (op, unsupported)

    if head == "keys" and n == 1:
        return only("LIST", "keys.list", lambda body: mount.list_keys())
    if head == "keys" and n == 2:
        if method == "GET":
            return "keys.read", lambda body: mount.read_key(seg[1])
        if method == "DELETE":
            return "keys.delete", lambda body: mount.delete_key(seg[1])
        return only("POST", "keys.create", lambda body: mount.create_key(seg[1], body))
    if head == "keys" and n == 3 and seg[2] in ("config", "rotate", "trim"):
        actions: dict[str, TransitHandler] = {
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

    def unsupported_path(body: dict[str, Any]) -> Reply:
        raise VaultHTTPError(404, _UNSUPPORTED_PATH)

    return "unknown", unsupported_path
