"""What the Vault fake knows: namespaces (mounts, keys, ACL policies), tokens, AppRoles, seal state, clock.

One lock guards all of it. :meth:`VaultState.authorize` decides whether a request's
token may do what it asks, with the token's policies (:mod:`kmsbox_vault.fake_acl`)
seen from the token's namespace.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kmsbox_vault.fake_acl import DEFAULT_POLICY, Acl, PolicyParseError, parse_policy
from kmsbox_vault.fake_auth import AppRoles, Token, TokenStore
from kmsbox_vault.fake_transit import TransitMount, VaultHTTPError

__all__ = ["DENIED", "UNAUTHENTICATED_PATHS", "Namespace", "VaultState"]

#: Paths that need no token (and answer even when sealed).
UNAUTHENTICATED_PATHS = ("sys/health", "sys/seal-status", "sys/init")
#: Vault's body text for a request its token's policies do not allow.
DENIED = "1 error occurred:\n\t* permission denied\n\n"
_BAD_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
_SEALED = "Vault is sealed"
_CAPABILITY_OF_METHOD = {"GET": "read", "HEAD": "read", "LIST": "list", "DELETE": "delete"}


@dataclass
class Namespace:
    """One namespace's transit mounts (and their accessors) and ACL policies."""

    mounts: dict[str, TransitMount] = field(default_factory=dict)
    accessors: dict[str, str] = field(default_factory=dict)
    #: ACL policies by name: the text as written and its parsed rules.
    policies: dict[str, tuple[str, dict[str, frozenset[str]]]] = field(
        default_factory=lambda: {"default": (DEFAULT_POLICY, parse_policy(DEFAULT_POLICY))}
    )


class VaultState:
    """The fake's state behind one re-entrant lock (``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._clock_offset = 0.0
        self.sealed = False
        self.tokens = TokenStore(self.now)
        self.approles = AppRoles(self.tokens)
        self.namespaces: dict[str, Namespace] = {"": Namespace()}

    def __repr__(self) -> str:
        return f"VaultState(namespaces={len(self.namespaces)}, sealed={self.sealed})"

    def now(self) -> float:
        """The fake's clock: real time plus what :meth:`advance_clock` added."""
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the clock forward (ValueError for a negative or nan amount)."""
        if not seconds >= 0:
            raise ValueError("seconds must be >= 0")
        with self.lock:
            self._clock_offset += seconds

    def namespace(self, path: str) -> Namespace:
        """The namespace at ``path``, or Vault's 404."""
        namespace = self.namespaces.get(path)
        if namespace is None:
            raise VaultHTTPError(404, f'no handler for route "{path}". route entry not found.')
        return namespace

    def mount(self, namespace: str, path: str) -> None:
        """Mount a new transit engine at ``path`` of ``namespace``."""
        ns = self.namespaces[namespace]
        ns.mounts[path] = TransitMount(path, clock=self.now)
        ns.accessors[path] = f"transit_{secrets.token_hex(4)}"

    def create_namespace(self, path: str) -> None:
        """Create a namespace with a ``transit`` mount (kept if it exists)."""
        with self.lock:
            self.namespaces.setdefault(path, Namespace())
            if "transit" not in self.namespaces[path].mounts:
                self.mount(path, "transit")

    def write_policy(self, namespace: str, name: str, text: Any) -> None:
        """Store an ACL policy; Vault's 400 for ``root``, an empty or an unparsable one."""
        name = name.lower()
        if name == "root":
            raise VaultHTTPError(400, "cannot update root policy")
        if not isinstance(text, str) or not text.strip():
            raise VaultHTTPError(400, "'policy' parameter not supplied or empty")
        try:
            rules = parse_policy(text)
        except PolicyParseError as exc:
            raise VaultHTTPError(400, f"failed to parse policy: {exc}") from None
        with self.lock:
            self.namespace(namespace).policies[name] = (text, rules)

    def refuse_when_sealed(self, path: str) -> None:
        """503 "Vault is sealed" for every path but the unauthenticated status checks."""
        if self.sealed and path not in UNAUTHENTICATED_PATHS:
            raise VaultHTTPError(503, _SEALED)

    def authorize(
        self, method: str, path: str, namespace: str, token_id: str | None, creates: Callable[[], bool] | None
    ) -> Token:
        """The caller's token, if it may do this: 403 for a missing, unknown or expired token, or no capability.

        A POST needs ``create`` when ``creates()`` says the target is missing, else ``update``.
        """
        if not token_id:
            raise VaultHTTPError(403, "permission denied")
        with self.lock:
            token = self.tokens.get(token_id)
            if token is None:
                raise VaultHTTPError(403, _BAD_TOKEN)
            if token.is_root:
                return token
            acl_path = self.acl_path(token, namespace, path, method)
            capability = _CAPABILITY_OF_METHOD.get(method) or (
                "create" if creates is not None and creates() else "update"
            )
            if acl_path is None or not self.acl(token).allows(acl_path, capability):
                raise VaultHTTPError(403, DENIED)
            return token

    @staticmethod
    def acl_path(token: Token, namespace: str, path: str, method: str) -> str | None:
        """The path as the token's policies see it: prefixed by child namespaces; None outside its namespace."""
        if namespace == token.namespace:
            prefix = ""
        elif not token.namespace or namespace.startswith(token.namespace + "/"):
            prefix = namespace.removeprefix(token.namespace).strip("/") + "/"
        else:
            return None
        # Vault lists a path with a trailing slash, so "transit/keys/*" grants listing transit/keys.
        return prefix + path + ("/" if method == "LIST" and not path.endswith("/") else "")

    def acl(self, token: Token) -> Acl:
        """The merged policies of ``token``, from its namespace."""
        policies = self.namespaces.get(token.namespace, Namespace()).policies
        return Acl(policies[name][1] for name in token.policies if name in policies)
