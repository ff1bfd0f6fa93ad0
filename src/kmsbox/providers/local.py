"""Local KEK providers: ``env://VAR`` and ``file:///path/keyring.json``.

A default plugin. The key bytes live in this process; they are fine for
development, single-host deployments and as an escrow KEK beside a cloud KMS.

``env://VAR``: the variable holds one key as 64 hex characters (version ``v1``),
or several as ``v3:HEX,v2:HEX`` where the first is primary and all can unwrap.

``file:///path/keyring.json``: a versioned keyring written by
``kmsbox keys generate`` (see :func:`generate_keyring`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kmsbox import format as fmt
from kmsbox._crypto import Aead, random_key
from kmsbox.errors import ConfigError, KeyUnavailable
from kmsbox.hookspecs import hookimpl
from kmsbox.kek import BaseKekProvider, Context, WrappedKey

__all__ = [
    "KEYRING_FORMAT",
    "LocalKekProvider",
    "add_keyring_version",
    "generate_keyring",
    "open_env_kek",
    "open_file_kek",
    "parse_key_list",
]

KEYRING_FORMAT = "kmsbox-keyring/1"
_VERSION_RE = re.compile(r"^v[1-9][0-9]{0,8}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class LocalKekProvider(BaseKekProvider):
    """AES-256-GCM key wrapping under versioned keys held in memory."""

    in_process = True

    def __init__(self, uri: str, keys: Mapping[str, bytes], primary: str, source: str) -> None:
        super().__init__(uri)
        if primary not in keys:
            raise ConfigError(f"{source}: primary version {primary!r} has no key")
        self._aeads = {version: Aead(key) for version, key in keys.items()}
        self._primary = primary
        self._source = source

    def _aad(self, version: str, context: Context) -> bytes:
        return b"kmsbox-local-kek\x00" + version.encode("ascii") + b"\x00" + fmt.encode_context(context)

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Wrap ``key`` under the primary version."""
        nonce, ct = self._aeads[self._primary].seal(key, self._aad(self._primary, context))
        return WrappedKey(self.uri, self._primary, fmt.encode_local_wrap(nonce, ct))

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Unwrap with the recorded version; KeyUnavailable if that version is gone."""
        aead = self._aeads.get(wrapped.key_version)
        if aead is None:
            raise KeyUnavailable(f"KEK version {wrapped.key_version!r} is not in {self._source}")
        nonce, ct = fmt.parse_local_wrap(wrapped.ciphertext)
        return aead.open(nonce, ct, self._aad(wrapped.key_version, context))

    def primary_version(self) -> str:
        """The first (env) or marked primary (file) version."""
        return self._primary

    def version_available(self, version: str) -> bool:
        """True when this keyring still holds ``version``."""
        return version in self._aeads

    def versions(self) -> list[str]:
        """All versions this provider can unwrap, primary first."""
        return [self._primary, *sorted(v for v in self._aeads if v != self._primary)]

    def describe(self) -> dict[str, str]:
        """Provider kind, source and versions (never key bytes)."""
        return {
            "provider": "local",
            "source": self._source,
            "primary_version": self._primary,
            "versions": ",".join(self.versions()),
        }


def _decode_hex_key(text: str, where: str) -> bytes:
    text = text.strip()
    if not _HEX_RE.match(text):
        # Say what is wrong by shape only: the value itself may be key material.
        raise ConfigError(f"{where}: a key must be 64 hex characters (32 bytes); got {len(text)} characters or non-hex")
    return bytes.fromhex(text)


def parse_key_list(raw: str, where: str) -> tuple[dict[str, bytes], str]:
    """Parse ``HEX`` or ``v3:HEX,v2:HEX``; return (keys by version, primary version)."""
    if not raw or not raw.strip():
        raise ConfigError(f"{where} is empty")
    items = [item.strip() for item in raw.split(",")]
    if len(items) == 1 and ":" not in items[0]:
        return {"v1": _decode_hex_key(items[0], where)}, "v1"
    keys: dict[str, bytes] = {}
    primary = ""
    for index, item in enumerate(items):
        version, sep, hex_key = item.partition(":")
        if not sep or not _VERSION_RE.match(version):
            raise ConfigError(f"{where}: entry {index + 1} must look like v1:HEX (version v1, v2, ...)")
        if version in keys:
            raise ConfigError(f"{where}: version {version} appears twice")
        key = _decode_hex_key(hex_key, f"{where} version {version}")
        if key in keys.values():
            raise ConfigError(f"{where}: version {version} repeats the key of another version")
        keys[version] = key
        primary = primary or version
    return keys, primary


def open_env_kek(uri: str) -> LocalKekProvider:
    """Open ``env://VAR``. ConfigError if the variable is missing or malformed."""
    var = uri[len("env://") :]
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", var):
        raise ConfigError(f"KEK URI {uri!r}: env:// must name an environment variable")
    raw = os.environ.get(var)
    if raw is None:
        raise ConfigError(f"environment variable {var} (from KEK URI {uri!r}) is not set")
    keys, primary = parse_key_list(raw, f"environment variable {var}")
    return LocalKekProvider(uri, keys, primary, f"environment variable {var}")


def _keyring_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost") or not parsed.path:
        raise ConfigError(f"KEK URI {uri!r}: use file:///absolute/path/keyring.json")
    return Path(unquote(parsed.path))


def _read_keyring(path: Path) -> dict[str, Any]:
    where = f"keyring file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (create one with: kmsbox keys generate {path})") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{where} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != KEYRING_FORMAT:
        raise ConfigError(f"{where} is not a kmsbox keyring (expected format {KEYRING_FORMAT!r})")
    if not isinstance(data.get("keys"), list) or not data["keys"]:
        raise ConfigError(f"{where} has no keys")
    return data


def _keyring_keys(data: dict[str, Any], where: str) -> tuple[dict[str, bytes], str]:
    keys: dict[str, bytes] = {}
    for index, entry in enumerate(data["keys"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("version"), str)
            or not isinstance(entry.get("key"), str)
        ):
            raise ConfigError(f"{where}: key entry {index + 1} needs string fields 'version' and 'key'")
        version = entry["version"]
        if not _VERSION_RE.match(version):
            raise ConfigError(f"{where}: key entry {index + 1} has a bad version name (use v1, v2, ...)")
        if version in keys:
            raise ConfigError(f"{where}: version {version} appears twice")
        key = _decode_hex_key(entry["key"], f"{where} version {version}")
        if key in keys.values():
            raise ConfigError(f"{where}: version {version} repeats the key of another version")
        keys[version] = key
    primary = data.get("primary")
    if not isinstance(primary, str) or primary not in keys:
        raise ConfigError(f"{where}: 'primary' must name one of its versions")
    return keys, primary


def open_file_kek(uri: str) -> LocalKekProvider:
    """Open ``file:///path/keyring.json``. ConfigError if missing or malformed."""
    path = _keyring_path(uri)
    data = _read_keyring(path)
    keys, primary = _keyring_keys(data, f"keyring file {path}")
    return LocalKekProvider(uri, keys, primary, f"keyring file {path}")


def _write_keyring(path: Path, data: dict[str, Any]) -> None:
    # Write to a 0600 temporary file in the same folder, then rename: never a
    # half-written keyring, never a moment with looser permissions.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keyring-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def generate_keyring(path: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Write a new keyring with one random version ``v1``; return its ``file://`` URI."""
    target = Path(path).absolute()
    if target.exists() and not overwrite:
        raise ConfigError(f"keyring file {target} already exists")
    _write_keyring(
        target,
        {
            "format": KEYRING_FORMAT,
            "primary": "v1",
            "keys": [{"version": "v1", "key": random_key().hex(), "created": _now()}],
        },
    )
    return f"file://{target}"


def add_keyring_version(path: str | os.PathLike[str]) -> str:
    """Add a new random version to a keyring and make it primary; return its name."""
    target = Path(path).absolute()
    data = _read_keyring(target)
    keys, _ = _keyring_keys(data, f"keyring file {target}")
    number = max(int(v[1:]) for v in keys) + 1
    version = f"v{number}"
    data["keys"].append({"version": version, "key": random_key().hex(), "created": _now()})
    data["primary"] = version
    _write_keyring(target, data)
    return version


def remove_keyring_version(path: str | os.PathLike[str], version: str) -> None:
    """Remove a version from a keyring (anything wrapped by it becomes unreadable)."""
    target = Path(path).absolute()
    data = _read_keyring(target)
    if data.get("primary") == version:
        raise ConfigError(f"keyring file {target}: cannot remove the primary version {version}")
    remaining = [e for e in data["keys"] if not (isinstance(e, dict) and e.get("version") == version)]
    if len(remaining) == len(data["keys"]):
        raise ConfigError(f"keyring file {target} has no version {version}")
    data["keys"] = remaining
    _write_keyring(target, data)


def generate_hex_key() -> str:
    """A new key in the ``env://`` form: 64 hex characters."""
    return random_key().hex()


@hookimpl(trylast=True)
def register_kek_providers(register: Any) -> None:
    """Register ``env://`` and ``file://``."""
    register("env", open_env_kek, "local key(s) in an environment variable")
    register("file", open_file_kek, "local versioned keyring file")
