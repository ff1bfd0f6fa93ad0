"""kmsbox-chacha: an example kmsbox plugin.

A KEK provider for ``chacha-file:///path/to/keyfile`` that wraps keys with
ChaCha20-Poly1305 under versioned keys read from a file, plus a
``kmsbox chacha add-version`` command. It is found through the ``kmsbox`` entry
point group (name ``chacha``); kmsbox never imports it.

The key file holds one version per line as ``vN:HEX`` (64 hex characters, 32
bytes); blank lines and lines starting with ``#`` are ignored. The highest
version is primary; every version can unwrap. Keep the file mode 0600.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import click
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from kmsbox import BaseKekProvider, ConfigError, IntegrityError, KeyUnavailable, WrappedKey
from kmsbox.format import encode_context
from kmsbox.hookspecs import hookimpl
from kmsbox.kek import Context

__all__ = ["SCHEME", "ChachaFileKekProvider", "add_version", "open_chacha_kek", "read_keyfile"]

SCHEME = "chacha-file"
_NONCE_SIZE = 12
_TAG_SIZE = 16
_KEY_SIZE = 32
_VERSION_RE = re.compile(r"^v[1-9][0-9]{0,8}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class ChachaFileKekProvider(BaseKekProvider):
    """ChaCha20-Poly1305 key wrapping under versioned keys from a key file.

    A wrapped key is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``; the
    associated data binds the KEK version and the canonical encoding of the
    context, so a wrapped key moved to another context fails to unwrap.
    """

    def __init__(self, uri: str, keys: dict[str, bytes], source: str) -> None:
        super().__init__(uri)
        if not keys:
            raise ConfigError(f"{source} holds no keys")
        self._ciphers = {version: ChaCha20Poly1305(key) for version, key in keys.items()}
        self._primary = max(keys, key=lambda v: int(v[1:]))
        self._source = source

    @staticmethod
    def _aad(version: str, context: Context) -> bytes:
        return b"kmsbox-chacha\x00" + version.encode("ascii") + b"\x00" + encode_context(context)

    def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Wrap ``key`` under the primary version."""
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._ciphers[self._primary].encrypt(nonce, bytes(key), self._aad(self._primary, context))
        return WrappedKey(self.uri, self._primary, nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Unwrap with the recorded version.

        Raises KeyUnavailable when the key file no longer holds that version and
        IntegrityError when the ciphertext or context does not authenticate.
        """
        cipher = self._ciphers.get(wrapped.key_version)
        if cipher is None:
            raise KeyUnavailable(f"KEK version {wrapped.key_version!r} is not in {self._source}")
        data = wrapped.ciphertext
        if len(data) < _NONCE_SIZE + _TAG_SIZE:
            raise IntegrityError("malformed or unauthentic ciphertext")
        try:
            return cipher.decrypt(data[:_NONCE_SIZE], data[_NONCE_SIZE:], self._aad(wrapped.key_version, context))
        except InvalidTag:
            raise IntegrityError("authentication failed") from None

    def primary_version(self) -> str:
        """The highest version in the key file."""
        return self._primary

    def version_available(self, version: str) -> bool:
        """True when the key file still holds ``version``."""
        return version in self._ciphers

    def describe(self) -> dict[str, str]:
        """Provider kind, key file and versions (never key bytes)."""
        versions = sorted(self._ciphers, key=lambda v: int(v[1:]), reverse=True)
        return {
            "provider": "chacha",
            "source": self._source,
            "primary_version": self._primary,
            "versions": ",".join(versions),
        }


def _keyfile_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != SCHEME or parsed.netloc not in ("", "localhost") or not parsed.path:
        raise ConfigError(f"KEK URI {uri!r}: use {SCHEME}:///absolute/path/to/keyfile")
    return Path(unquote(parsed.path))


def read_keyfile(path: Path) -> dict[str, bytes]:
    """Read ``vN:HEX`` lines. ConfigError (naming the file, never a key) if malformed."""
    where = f"chacha key file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (create one with: kmsbox chacha add-version {path})") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{where} cannot be read as text") from None
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        version, sep, hex_key = line.partition(":")
        # Errors say where and what shape is wrong, never the line itself: it may be a key.
        if not sep or not _VERSION_RE.match(version.strip()):
            raise ConfigError(f"{where}: line {number} must look like v1:HEX")
        version = version.strip()
        if not _HEX_RE.match(hex_key.strip()):
            raise ConfigError(f"{where}: line {number} ({version}) needs a key of 64 hex characters")
        if version in keys:
            raise ConfigError(f"{where}: version {version} appears twice")
        keys[version] = bytes.fromhex(hex_key.strip())
    if not keys:
        raise ConfigError(f"{where} holds no keys")
    return keys


def open_chacha_kek(uri: str) -> ChachaFileKekProvider:
    """Open ``chacha-file:///path/to/keyfile``. ConfigError if the file is missing or malformed."""
    path = _keyfile_path(uri)
    return ChachaFileKekProvider(uri, read_keyfile(path), f"chacha key file {path}")


def add_version(path: str | os.PathLike[str]) -> str:
    """Append a new random version (the new primary) to a key file, creating it with mode 0600."""
    target = Path(path)
    keys = read_keyfile(target) if target.exists() else {}
    version = f"v{max((int(v[1:]) for v in keys), default=0) + 1}"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as handle:
        handle.write(f"{version}:{os.urandom(_KEY_SIZE).hex()}\n")
    return version


@hookimpl
def register_kek_providers(register: Callable[..., None]) -> None:
    """Serve the ``chacha-file://`` scheme."""
    register(SCHEME, open_chacha_kek, "ChaCha20-Poly1305 keys in a local file (example plugin)")


@click.group("chacha")
def chacha_group() -> None:
    """ChaCha20-Poly1305 key files (the kmsbox-chacha example plugin)."""


@chacha_group.command("add-version")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def add_version_cmd(path: Path) -> None:
    """Add a new primary version to a key file (created with mode 0600 if missing)."""
    version = add_version(path)
    click.echo(f"added {version} (now primary); KEK URI: {SCHEME}://{path.absolute()}")


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``kmsbox chacha``."""
    cli.add_command(chacha_group)
