"""Who calls the Vault fake: tokens (with their policies, namespace and TTL) and AppRole roles.

Tokens behave as Vault's service tokens for what the fake serves: ``auth/token/create``
(a child's policies must be a subset of its parent's unless the parent is root),
``lookup-self``, ``revoke-self``, expiry after the TTL, and ``default`` added unless
``no_default_policy``. AppRole roles carry ``token_policies`` and ``token_ttl`` into the
tokens their logins make. Time comes from the fake's clock, so tests can move it.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kmsbox_vault.fake_transit import VaultHTTPError, parse_duration

__all__ = ["DEFAULT_TOKEN_TTL", "AppRoles", "Token", "TokenStore", "policy_names"]

#: Vault's default maximum TTL (768h), used for tokens created without a TTL.
DEFAULT_TOKEN_TTL = 768 * 3600
_CHILD_NOT_SUBSET = "child policies must be subset of parent"


def policy_names(value: Any, name: str = "policies") -> list[str]:
    """A list of policy names from a list or a comma-separated string, lower-cased as Vault stores them."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise VaultHTTPError(400, f"error converting input {value} for field {name!r}")
    return sorted({item.strip().lower() for item in items if item.strip()})


def _new_token() -> str:
    return "hvs." + secrets.token_urlsafe(18).replace("-", "A").replace("_", "B")


@dataclass
class Token:
    """A service token: its policies, namespace and lifetime (``ttl`` None: never expires, as root's)."""

    id: str = field(repr=False)
    policies: tuple[str, ...]
    namespace: str
    created: float
    ttl: int | None
    display_name: str = "token"
    meta: dict[str, str] = field(default_factory=dict)
    accessor: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    orphan: bool = False

    @property
    def is_root(self) -> bool:
        """True for a token with the root policy: every path, every capability."""
        return "root" in self.policies

    def expired(self, now: float) -> bool:
        """True once the TTL has run out."""
        return self.ttl is not None and self.created + self.ttl <= now

    def auth(self, now: float) -> dict[str, Any]:
        """The ``auth`` block of a login or create reply."""
        policies = list(self.policies)
        return {
            "client_token": self.id,
            "accessor": self.accessor,
            "policies": policies,
            "token_policies": policies,
            "metadata": self.meta or None,
            "lease_duration": self.ttl or 0,
            "renewable": self.ttl is not None,
            "entity_id": "",
            "token_type": "service",
            "orphan": self.orphan,
        }

    def remaining(self, now: float) -> int:
        """Seconds left (0 for a token that never expires, as Vault shows root's)."""
        return 0 if self.ttl is None else max(0, math.ceil(self.created + self.ttl - now))

    def lookup(self, now: float) -> dict[str, Any]:
        """The ``data`` of ``auth/token/lookup-self``."""
        return {
            "accessor": self.accessor,
            "creation_time": int(self.created),
            "creation_ttl": self.ttl or 0,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": None,
            "explicit_max_ttl": 0,
            "id": self.id,
            "meta": self.meta or None,
            "num_uses": 0,
            "orphan": self.orphan,
            "path": "auth/token/create" if not self.is_root else "auth/token/root",
            "policies": list(self.policies),
            "renewable": self.ttl is not None,
            "ttl": self.remaining(now),
            "type": "service",
        }


class TokenStore:
    """Every live token of the fake. Not thread-safe by itself: the fake holds its lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens: dict[str, Token] = {}
        self.root = self._add(Token(_new_token(), ("root",), "", clock(), None, display_name="root"))

    def __repr__(self) -> str:
        return f"TokenStore(tokens={len(self._tokens)})"

    def __len__(self) -> int:
        return len(self._tokens)

    def _add(self, token: Token) -> Token:
        self._tokens[token.id] = token
        return token

    def get(self, token_id: str | None) -> Token | None:
        """The live token, or None for a missing, unknown or expired one (which is then forgotten)."""
        token = self._tokens.get(token_id or "")
        if token is not None and token.expired(self._clock()):
            del self._tokens[token.id]
            return None
        return token

    def create(
        self,
        policies: Iterable[str],
        namespace: str,
        *,
        ttl: int | None = None,
        no_default_policy: bool = False,
        display_name: str = "token",
        meta: dict[str, str] | None = None,
        orphan: bool = False,
    ) -> Token:
        """A new token with ``policies`` (plus ``default`` unless told not to)."""
        names = set(policies)
        if not no_default_policy and "root" not in names:
            names.add("default")
        return self._add(
            Token(
                _new_token(),
                tuple(sorted(names)),
                namespace,
                self._clock(),
                None if "root" in names else (ttl or DEFAULT_TOKEN_TTL),
                display_name=f"token-{display_name}" if display_name != "token" else display_name,
                meta=dict(meta or {}),
                orphan=orphan,
            )
        )

    def create_child(self, parent: Token, body: dict[str, Any], namespace: str) -> Token:
        """``auth/token/create``: Vault's checks of the requested policies against the parent's."""
        requested = policy_names(body.get("policies"))
        no_default = bool(body.get("no_default_policy"))
        if not requested:
            requested = [p for p in parent.policies if p != "default" or not no_default]
        beyond_parent = "root" in requested or not set(requested) - {"default"} <= set(parent.policies)
        if beyond_parent and not parent.is_root:
            raise VaultHTTPError(400, _CHILD_NOT_SUBSET)
        meta = body.get("meta") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise VaultHTTPError(400, "error converting input for field 'meta'")
        ttl = parse_duration(body["ttl"], "ttl") if body.get("ttl") not in (None, "") else None
        return self.create(
            requested,
            namespace,
            ttl=ttl,
            no_default_policy=no_default,
            display_name=str(body.get("display_name") or "token"),
            meta=meta,
        )

    def revoke(self, token_id: str) -> None:
        """Forget one token."""
        self._tokens.pop(token_id, None)

    def revoke_all_but_root(self) -> None:
        """Forget every token except the root token."""
        self._tokens = {self.root.id: self.root}


@dataclass
class _Role:
    role_id: str
    secret_ids: set[str] = field(default_factory=set)
    token_ttl: int = 3600
    token_policies: list[str] = field(default_factory=list)
    no_default_policy: bool = False


class AppRoles:
    """AppRole roles and the logins that turn a role ID and secret ID into a token."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens
        self._roles: dict[str, _Role] = {}

    def __repr__(self) -> str:
        return f"AppRoles(roles={len(self._roles)})"

    def write_role(self, name: str, body: dict[str, Any]) -> None:
        """``POST auth/approle/role/NAME``: create or update (``token_policies`` or legacy ``policies``)."""
        # Every field is checked before the role changes: a refused request leaves nothing behind.
        ttl = parse_duration(body["token_ttl"], "token_ttl") if body.get("token_ttl") not in (None, "") else None
        policies = (
            policy_names(body.get("token_policies", body.get("policies")), "token_policies")
            if "token_policies" in body or "policies" in body
            else None
        )
        role = self._roles.setdefault(name, _Role(role_id=str(uuid.uuid4())))
        if ttl is not None:
            role.token_ttl = ttl or 3600
        if policies is not None:
            role.token_policies = policies
        if "token_no_default_policy" in body:
            role.no_default_policy = bool(body["token_no_default_policy"])

    def role(self, name: str) -> _Role | None:
        """The role called ``name``, if any."""
        return self._roles.get(name)

    def new_secret_id(self, name: str) -> str:
        """A fresh secret ID for the role."""
        secret_id = str(uuid.uuid4())
        self._roles[name].secret_ids.add(secret_id)
        return secret_id

    def login(self, body: dict[str, Any], namespace: str) -> Token:
        """``POST auth/approle/login``: a token with the role's policies, or Vault's 400."""
        role_id, secret_id = body.get("role_id"), body.get("secret_id")
        if not role_id:
            raise VaultHTTPError(400, "missing role_id")
        match = next(((n, r) for n, r in self._roles.items() if r.role_id == role_id), None)
        if match is None or secret_id not in match[1].secret_ids:
            raise VaultHTTPError(400, "invalid role or secret ID")
        name, role = match
        return self._tokens.create(
            role.token_policies,
            namespace,
            ttl=role.token_ttl,
            no_default_policy=role.no_default_policy,
            display_name=f"approle-{name}",
            meta={"role_name": name},
            orphan=True,
        )
