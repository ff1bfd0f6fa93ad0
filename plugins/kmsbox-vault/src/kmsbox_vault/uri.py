"""Parse ``hcvault://HOST[:PORT]/MOUNT/keys/NAME[?tls=true|false]`` key URIs.

MOUNT may hold slashes (``team/transit``); NAME follows Vault's name rule
(letters, digits, ``_``, ``-``, ``.``, ``@``, starting and ending with a word
character). The URI never carries credentials: a user-info part is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from kmsbox.errors import ConfigError

__all__ = ["DEFAULT_PORT", "SCHEME", "VaultKeyRef", "parse_key_uri"]

SCHEME = "hcvault"
DEFAULT_PORT = 8200
_NAME_RE = re.compile(r"^\w(?:[\w.@-]*\w)?$")
_MOUNT_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.@-]+$")
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$|^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$")


@dataclass(frozen=True, slots=True)
class VaultKeyRef:
    """Where a transit key lives: server host and port, mount path, key name, TLS choice.

    ``tls`` is None when the URI does not say (the address then follows
    ``VAULT_ADDR`` when it names the same host and port, else HTTPS).
    """

    host: str
    port: int
    mount: str
    name: str
    tls: bool | None

    @property
    def hostport(self) -> str:
        """``host:port`` as written in a URL."""
        return f"{self.host}:{self.port}"


def _fail(uri: str, why: str) -> ConfigError:
    # The URI holds no secrets (user-info is refused before we echo it).
    return ConfigError(f"Vault key URI {uri!r}: {why}; expected hcvault://HOST[:PORT]/MOUNT/keys/NAME")


def parse_key_uri(uri: str) -> VaultKeyRef:
    """Split a ``hcvault://`` URI into its parts; ConfigError when malformed."""
    if not isinstance(uri, str) or not uri.lower().startswith(f"{SCHEME}://"):
        raise ConfigError(f"a Vault key URI must start with {SCHEME}://")
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        raise ConfigError("Vault key URI must not contain credentials (user-info); use VAULT_TOKEN or AppRole")
    if parts.fragment:
        raise _fail(uri, "a fragment (#...) is not allowed")
    host = parts.hostname or ""
    if not host or not _HOST_RE.match(host):
        raise _fail(uri, "missing or malformed host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise _fail(uri, "the port must be a number from 1 to 65535") from None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal goes back in brackets for URLs
    path = parts.path
    marker = path.rfind("/keys/")
    if marker <= 0:
        raise _fail(uri, "the path must be /MOUNT/keys/NAME")
    mount, name = path[1:marker], path[marker + len("/keys/") :]
    if not _NAME_RE.match(name):
        raise _fail(uri, "the key name must be letters, digits, '_', '-', '.' or '@'")
    segments = mount.split("/")
    if not all(_MOUNT_SEGMENT_RE.match(s) for s in segments):
        raise _fail(uri, "the mount path has an empty or malformed segment")
    return VaultKeyRef(host=host, port=port, mount=mount, name=name, tls=_parse_tls(uri, parts.query))


def _parse_tls(uri: str, query: str) -> bool | None:
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _fail(uri, "malformed query string") from None
    unknown = sorted(set(params) - {"tls"})
    if unknown:
        raise _fail(uri, f"unknown query parameter(s) {', '.join(unknown)} (only tls=true|false is allowed)")
    values = params.get("tls")
    if values is None:
        return None
    if len(values) != 1 or values[0].lower() not in ("true", "false"):
        raise _fail(uri, "tls must be given once, as true or false")
    return values[0].lower() == "true"
