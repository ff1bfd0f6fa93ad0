"""The ``sys/`` endpoints of the Vault fake: health and seal status, mounts, namespaces, ACL policies, capabilities."""

from __future__ import annotations

import secrets
from typing import Any

from kmsbox_vault.fake_state import Namespace, VaultState
from kmsbox_vault.fake_transit import Reply, VaultHTTPError

__all__ = ["SysApi", "UNSUPPORTED_OPERATION", "VAULT_VERSION"]

VAULT_VERSION = "1.17.0"
UNSUPPORTED_OPERATION = "1 error occurred:\n\t* unsupported operation\n\n"
_RESERVED_MOUNTS = ("sys", "cubbyhole", "identity", "auth")
_CLUSTER = {"cluster_name": "kmsbox-fake", "cluster_id": "00000000-0000-0000-0000-000000000000"}


def _status_code(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 100 <= int(text) <= 599:
        raise VaultHTTPError(400, f"invalid status code {text!r}")
    return int(text)


class SysApi:
    """Handlers of ``sys/`` paths over the fake's state; each returns ``(status, data)`` or raises VaultHTTPError."""

    def __init__(self, state: VaultState) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"SysApi({self._state!r})"

    def health(self, query: dict[str, str]) -> Reply:
        """``sys/health``: 200 when unsealed, 503 when sealed (or ``activecode``/``sealedcode``)."""
        sealed = self._state.sealed
        status = _status_code(query.get("sealedcode" if sealed else "activecode"), 503 if sealed else 200)
        return status, {
            "initialized": True,
            "sealed": sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(self._state.now()),
            "version": VAULT_VERSION,
            **_CLUSTER,
        }

    def seal_status(self) -> Reply:
        """``sys/seal-status``: what ``hvac``'s ``is_sealed()`` reads."""
        return 200, {
            "type": "shamir",
            "initialized": True,
            "sealed": self._state.sealed,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": VAULT_VERSION,
            "build_date": "2024-06-01T00:00:00Z",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "inmem",
            **_CLUSTER,
        }

    def list_mounts(self, namespace: str) -> Reply:
        """``GET sys/mounts``."""
        with self._state.lock:
            ns = self._state.namespace(namespace)
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
                    "running_plugin_version": f"v{VAULT_VERSION}+builtin.vault",
                }
        # GET sys/mounts repeats the mounts at the top level (Vault's legacy shape) and under "data".
        return 200, {**mounts, "__data__": mounts}

    def enable_mount(self, namespace: str, path: str, body: dict[str, Any]) -> Reply:
        """``POST sys/mounts/PATH``: transit engines only."""
        engine = body.get("type")
        if not engine:
            raise VaultHTTPError(400, "backend type must be specified as a string")
        if path.split("/")[0] in _RESERVED_MOUNTS:
            raise VaultHTTPError(400, f"cannot mount under {path.split('/')[0]}/")
        if engine != "transit":
            raise VaultHTTPError(400, f"the kmsbox Vault fake only mounts the transit engine, not {engine!r}")
        with self._state.lock:
            ns = self._state.namespace(namespace)
            for existing in ns.mounts:
                if path == existing or path.startswith(existing + "/") or existing.startswith(path + "/"):
                    raise VaultHTTPError(400, f"path is already in use at {existing}/")
            self._state.mount(namespace, path)
        return 204, None

    def disable_mount(self, namespace: str, path: str) -> Reply:
        """``DELETE sys/mounts/PATH``."""
        if path.split("/")[0] in _RESERVED_MOUNTS:
            raise VaultHTTPError(400, f"cannot unmount {path.split('/')[0]}/")
        with self._state.lock:
            ns = self._state.namespace(namespace)
            ns.mounts.pop(path, None)
            ns.accessors.pop(path, None)
        return 204, None

    def namespaces(self, method: str, name: str) -> Reply:
        """``sys/namespaces[/NAME]``: LIST, POST (create) and DELETE."""
        state = self._state
        with state.lock:
            if method == "LIST" and not name:
                names = sorted(f"{n}/" for n in state.namespaces if n)
                if not names:
                    raise VaultHTTPError(404)
                return 200, {"keys": names}
            if method == "POST" and name:
                state.namespaces.setdefault(name, Namespace())  # no mounts: as a new namespace in Vault
                return 200, {"id": secrets.token_hex(3), "path": f"{name}/", "custom_metadata": {}}
            if method == "DELETE" and name:
                state.namespaces.pop(name, None)
                return 204, None
        raise VaultHTTPError(405, UNSUPPORTED_OPERATION)

    def list_policies(self, namespace: str, legacy: bool) -> Reply:
        """``sys/policy`` (``keys`` and ``policies``) or ``sys/policies/acl`` (``keys``)."""
        with self._state.lock:
            names = sorted([*self._state.namespace(namespace).policies, "root"])
        return 200, ({"keys": names, "policies": names} if legacy else {"keys": names})

    def read_policy(self, namespace: str, name: str, legacy: bool) -> Reply:
        """``GET sys/policy/NAME`` (``rules``) or ``sys/policies/acl/NAME`` (``policy``); 404 if missing."""
        with self._state.lock:
            entry = self._state.namespace(namespace).policies.get(name)
        if entry is None:
            raise VaultHTTPError(404)
        return 200, {"name": name, "rules" if legacy else "policy": entry[0]}

    def write_policy(self, namespace: str, name: str, body: dict[str, Any]) -> Reply:
        """``PUT sys/policy/NAME`` or ``sys/policies/acl/NAME`` with ``policy`` (or legacy ``rules``)."""
        self._state.write_policy(namespace, name, body.get("policy", body.get("rules")))
        return 204, None

    def delete_policy(self, namespace: str, name: str) -> Reply:
        """``DELETE``: any policy but ``root`` and ``default``."""
        if name in ("root", "default"):
            raise VaultHTTPError(400, f"cannot delete {name} policy")
        with self._state.lock:
            self._state.namespace(namespace).policies.pop(name, None)
        return 204, None

    def capabilities_self(self, token: Any, namespace: str, body: dict[str, Any]) -> Reply:
        """``POST sys/capabilities-self``: the caller's capabilities on each path."""
        raw = body.get("paths", body.get("path"))
        paths = [raw] if isinstance(raw, str) else raw
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise VaultHTTPError(400, "missing paths")
        state = self._state
        with state.lock:
            acl = None if token.is_root else state.acl(token)
            found: dict[str, Any] = {}
            for path in paths:
                if acl is None:
                    found[path] = ["root"]
                    continue
                acl_path = state.acl_path(token, namespace, path.strip("/"), "GET")
                found[path] = sorted(acl.capabilities(acl_path)) if acl_path is not None else ["deny"]
        if len(paths) == 1:
            found["capabilities"] = found[paths[0]]
        # Vault repeats the answer at the top level (its legacy shape) and under "data".
        return 200, {**found, "__data__": found}
