"""Connection settings for a Vault key, read from the environment at open.

Variables (the Vault CLI's names where it has one):

- ``VAULT_ADDR``: when it names the URI's host and port, its scheme (http or
  https) is used; otherwise the provider talks HTTPS to the URI's host.
- ``VAULT_TOKEN``: token auth.
- ``VAULT_ROLE_ID`` + ``VAULT_SECRET_ID`` (+ optional ``VAULT_APPROLE_MOUNT``,
  default ``approle``): AppRole auth; preferred over ``VAULT_TOKEN`` when set.
- ``VAULT_NAMESPACE``: the ``X-Vault-Namespace`` header (Vault Enterprise / HCP).
- ``VAULT_CACERT`` / ``VAULT_CAPATH``: CA bundle or folder; ``VAULT_SKIP_VERIFY``
  turns certificate checks off; ``VAULT_CLIENT_CERT`` + ``VAULT_CLIENT_KEY``: mTLS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kmsbox.errors import ConfigError
from kmsbox_vault.uri import DEFAULT_PORT, VaultKeyRef

__all__ = ["AppRoleCredentials", "VaultSettings", "settings_from_env"]

_TRUE = {"1", "true", "yes", "on", "t"}
_FALSE = {"", "0", "false", "no", "off", "f"}


@dataclass(frozen=True, slots=True)
class AppRoleCredentials:
    """AppRole login material; ``repr`` hides the secret id."""

    role_id: str
    secret_id: str = field(repr=False)
    mount: str = "approle"


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """Everything needed to build a client; ``repr`` never shows the token."""

    address: str
    namespace: str | None
    verify: bool | str
    client_cert: tuple[str, str] | None
    token: str | None = field(repr=False)
    approle: AppRoleCredentials | None

    @property
    def auth_method(self) -> str:
        """``approle`` or ``token``."""
        return "approle" if self.approle else "token"


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false")


def _scheme_for(ref: VaultKeyRef, env: Mapping[str, str]) -> str:
    if ref.tls is not None:
        return "https" if ref.tls else "http"
    addr = env.get("VAULT_ADDR", "").strip()
    if not addr:
        return "https"
    parts = urlsplit(addr)
    if parts.scheme not in ("http", "https"):
        raise ConfigError("VAULT_ADDR must start with http:// or https://")
    try:
        addr_port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError("VAULT_ADDR has a malformed port") from None
    same_host = (parts.hostname or "").lower() == ref.host.strip("[]").lower() and addr_port == ref.port
    # Only an address naming the same server may downgrade to plain HTTP.
    return parts.scheme if same_host else "https"


def _verify(env: Mapping[str, str]) -> bool | str:
    if _flag(env, "VAULT_SKIP_VERIFY"):
        return False
    # VAULT_CACERT takes precedence over VAULT_CAPATH, as in the Vault CLI.
    for name in ("VAULT_CACERT", "VAULT_CAPATH"):
        path = env.get(name, "").strip()
        if path:
            if not os.path.exists(path):
                raise ConfigError(f"{name} points at {path}, which does not exist")
            return path
    return True


def _client_cert(env: Mapping[str, str]) -> tuple[str, str] | None:
    cert, key = env.get("VAULT_CLIENT_CERT", "").strip(), env.get("VAULT_CLIENT_KEY", "").strip()
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError("set both VAULT_CLIENT_CERT and VAULT_CLIENT_KEY for TLS client authentication")
    return cert, key


def _auth(env: Mapping[str, str]) -> tuple[str | None, AppRoleCredentials | None]:
    role_id, secret_id = env.get("VAULT_ROLE_ID", "").strip(), env.get("VAULT_SECRET_ID", "").strip()
    if role_id or secret_id:
        if not role_id or not secret_id:
            raise ConfigError("AppRole needs both VAULT_ROLE_ID and VAULT_SECRET_ID")
        mount = env.get("VAULT_APPROLE_MOUNT", "approle").strip().strip("/") or "approle"
        return None, AppRoleCredentials(role_id, secret_id, mount)
    token = env.get("VAULT_TOKEN", "").strip()
    if not token:
        raise ConfigError("no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole")
    return token, None


def settings_from_env(ref: VaultKeyRef, env: Mapping[str, str] | None = None) -> VaultSettings:
    """Build settings for ``ref`` from ``env`` (default ``os.environ``); ConfigError when incomplete."""
    env = os.environ if env is None else env
    token, approle = _auth(env)
    namespace = env.get("VAULT_NAMESPACE", "").strip().strip("/") or None
    return VaultSettings(
        address=f"{_scheme_for(ref, env)}://{ref.hostport}",
        namespace=namespace,
        verify=_verify(env),
        client_cert=_client_cert(env),
        token=token,
        approle=approle,
    )
