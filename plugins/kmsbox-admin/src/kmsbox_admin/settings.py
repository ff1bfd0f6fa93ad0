"""The ``[admin]`` table of ``kmsbox.toml``: tokens, listening address, TLS and limits.

::

    [admin]
    host = "127.0.0.1"             # a non-loopback address needs tls_cert and tls_key
    port = 8470
    tls_cert = "/etc/kmsbox/admin.pem"
    tls_key = "/etc/kmsbox/admin.key"
    allowed_hosts = ["kmsbox-admin.internal"]   # Host names the server answers to
    kek_targets = ["aws-kms://arn:aws:kms:..."] # KEKs a migration started here may go to
    session_minutes = 30           # idle time before a console session ends
    auth_failures = 5              # failed authentications per client ...
    auth_lockout = 60              # ... before it is refused for this many seconds
    job_history = 100              # finished jobs kept in memory

    [[admin.tokens]]
    actor = "alice"                # recorded on every audit event of her requests
    role = "admin"                 # or "viewer"
    hash = "sha256:..."            # from `kmsbox admin token`

kmsbox's own loader passes over the ``[admin]`` table, so one ``kmsbox.toml`` holds
the store's settings and the admin server's.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmsbox.errors import ConfigError
from kmsbox_admin.tokens import ROLES, TokenEntry, is_token_hash

__all__ = [
    "ACTOR_RE",
    "DEFAULT_PORT",
    "AdminSettings",
    "config_path",
    "is_loopback",
    "load_admin_settings",
    "parse_admin_table",
    "read_config",
]

DEFAULT_PORT = 8470
CONFIG_ENV = "KMSBOX_CONFIG"
CONFIG_FILE = "kmsbox.toml"
_KNOWN = (
    "host",
    "port",
    "tls_cert",
    "tls_key",
    "allowed_hosts",
    "kek_targets",
    "session_minutes",
    "auth_failures",
    "auth_lockout",
    "job_history",
    "tokens",
)
_TOKEN_KEYS = ("actor", "role", "hash")
#: An actor name: what audit events record for a token's requests.
ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$")


@dataclass
class AdminSettings:
    """Resolved settings of the admin server."""

    tokens: list[TokenEntry]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    kek_targets: list[str] = field(default_factory=list)
    session_minutes: int = 30
    auth_failures: int = 5
    auth_lockout: float = 60.0
    job_history: int = 100

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self.tls_cert is not None

    def hosts(self) -> list[str]:
        """Host header values accepted: the configured ones, else the loopback names."""
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        names = ["127.0.0.1", "localhost", "::1", "[::1]"]
        if self.host not in names and self.host not in ("0.0.0.0", "::"):
            names.append(self.host)
        return names


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file kmsbox reads: the one named, else ``$KMSBOX_CONFIG``, else ``./kmsbox.toml`` if present."""
    if explicit is not None:
        return Path(explicit)
    named = os.environ.get(CONFIG_ENV)
    if named:
        return Path(named)
    default = Path.cwd() / CONFIG_FILE
    return default if default.is_file() else None


def _read_text(path: Path) -> str:
    problem: ConfigError
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        problem = ConfigError(f"config file {path} does not exist")
    except UnicodeDecodeError:
        problem = ConfigError(f"config file {path} is not UTF-8 text (TOML must be UTF-8)")
    except OSError as exc:
        problem = ConfigError(f"config file {path} cannot be read: {exc.strerror}")
    # Raised outside the handlers: the file may hold a URL with a password.
    raise problem


def read_config(path: Path) -> dict[str, Any]:
    """The parsed TOML of a config file (ConfigError when unreadable or not TOML)."""
    text = _read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _type_name(value: Any) -> str:
    # The type, never the value.
    return type(value).__name__


def _int(table: dict[str, Any], key: str, default: int, low: int, high: int, where: str) -> int:
    value = table.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"{where}: [admin] {key} must be an integer from {low} to {high}")
    return value


def _text(table: dict[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: [admin] {key} must be a non-empty string, got {_type_name(value)}")
    return value


def _texts(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: [admin] {key} must be an array of non-empty strings")
    return list(value)


def _tokens(raw: Any, where: str) -> list[TokenEntry]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"{where}: no admin tokens: add [[admin.tokens]] entries (mint one with `kmsbox admin token`)"
        )
    entries: list[TokenEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(raw, start=1):
        label = f"{where}: [[admin.tokens]] entry {index}"
        if not isinstance(item, dict):
            raise ConfigError(f"{label} must be a table, got {_type_name(item)}")
        unknown = sorted(set(item) - set(_TOKEN_KEYS))
        if unknown:
            raise ConfigError(f"{label}: unknown settings {unknown} (known: {list(_TOKEN_KEYS)})")
        actor, role, digest = item.get("actor"), item.get("role"), item.get("hash")
        if not isinstance(actor, str) or not ACTOR_RE.match(actor):
            raise ConfigError(f"{label}: actor must be 1-128 characters of letters, digits and ._@:+-")
        if role not in ROLES:
            raise ConfigError(f"{label}: role must be one of {list(ROLES)}")
        if not isinstance(digest, str) or not is_token_hash(digest):
            # Never echo the value: someone may have pasted the token itself here.
            raise ConfigError(f"{label}: hash must be 'sha256:' and 64 lowercase hex digits (`kmsbox admin token`)")
        if digest in seen:
            raise ConfigError(f"{label}: the same token hash is configured twice")
        seen.add(digest)
        entries.append(TokenEntry(actor, str(role), digest))
    return entries


def parse_admin_table(table: Any, where: str = "config") -> AdminSettings:
    """Check and resolve an ``[admin]`` table; ConfigError names the key and the rule."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: admin must be a table ([admin]), got {_type_name(table)}")
    unknown = sorted(set(table) - set(_KNOWN))
    if unknown:
        raise ConfigError(f"{where}: unknown [admin] settings {unknown}")
    tokens = _tokens(table.get("tokens"), where)
    host = _text(table, "host", where) or "127.0.0.1"
    cert, key = _text(table, "tls_cert", where), _text(table, "tls_key", where)
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}: [admin] tls_cert and tls_key go together: give both or neither")
    lockout = table.get("auth_lockout", 60)
    if type(lockout) not in (int, float) or not math.isfinite(lockout) or not 1 <= lockout <= 86400:
        raise ConfigError(f"{where}: [admin] auth_lockout must be a number of seconds from 1 to 86400")
    return AdminSettings(
        tokens=tokens,
        host=host,
        port=_int(table, "port", DEFAULT_PORT, 0, 65535, where),
        tls_cert=cert,
        tls_key=key,
        allowed_hosts=_texts(table, "allowed_hosts", where),
        kek_targets=_texts(table, "kek_targets", where),
        session_minutes=_int(table, "session_minutes", 30, 1, 24 * 60, where),
        auth_failures=_int(table, "auth_failures", 5, 1, 1000, where),
        auth_lockout=float(lockout),
        job_history=_int(table, "job_history", 100, 1, 10_000, where),
    )


def load_admin_settings(path: Path | None) -> AdminSettings:
    """The ``[admin]`` table of the config file at ``path``; ConfigError if there is none."""
    if path is None:
        raise ConfigError(
            f"no config file: the admin server reads its tokens from [admin] in {CONFIG_FILE} "
            f"(or the file named by --config or ${CONFIG_ENV})"
        )
    data = read_config(path)
    if "admin" not in data:
        raise ConfigError(f"config file {path} has no [admin] table (mint a token with `kmsbox admin token`)")
    return parse_admin_table(data["admin"], f"config file {path}")
