"""The transit secrets engine of the Vault fake: keys, versions and their crypto.

Behaves like Vault's ``builtin/logical/transit`` for symmetric keys
(aes128-gcm96, aes256-gcm96, chacha20-poly1305): ciphertexts are
``vault:vN:BASE64(nonce || ciphertext || tag)``, derived keys use HKDF-SHA256
with the request's ``context`` as info (Vault's ``hkdf_sha256``), and error
texts are Vault's own. A key with ``auto_rotate_period`` rotates itself once its
newest version is that old, checked on each request (Vault checks periodically).
Not thread-safe by itself: the HTTP layer holds a lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ERR_TOO_OLD",
    "TransitMount",
    "VaultHTTPError",
    "go_b64decode",
    "hash_data",
    "parse_duration",
    "random_bytes",
]

ERR_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
ERR_DERIVATION = (
    "missing 'context' for key derivation; the key was created using a derived key, which means additional, "
    "per-request information must be included in order to perform operations with the key"
)
_KEY_SIZES = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32}
_NAME_RE = re.compile(r"^\w(?:[\w.@-]*\w)?$")
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_HASHES: dict[str, Callable[..., Any]] = {
    "sha2-224": hashlib.sha224,
    "sha2-256": hashlib.sha256,
    "sha2-384": hashlib.sha384,
    "sha2-512": hashlib.sha512,
    "sha3-224": hashlib.sha3_224,
    "sha3-256": hashlib.sha3_256,
    "sha3-384": hashlib.sha3_384,
    "sha3-512": hashlib.sha3_512,
}
_MAX_RANDOM_BYTES = 128 * 1024
_MIN_AUTO_ROTATE = 3600
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

Reply = tuple[int, dict[str, Any] | None]


class VaultHTTPError(Exception):
    """An error answer: HTTP status, Vault's ``errors`` list, and optional ``data`` (batch results)."""

    def __init__(self, status: int, *errors: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(errors[0] if errors else f"HTTP {status}")
        self.status = status
        self.errors = list(errors)
        self.data = data


class _UserError(Exception):
    """A per-item user error (Vault's ``errutil.UserError``)."""


def go_b64decode(text: Any) -> bytes:
    """Decode standard padded base64 as Go does, with Go's error text on failure."""
    if not isinstance(text, str):
        raise _UserError("illegal base64 data at input byte 0")
    for index, char in enumerate(text):
        if char not in _B64_ALPHABET and not (char == "=" and index >= len(text) - 2):
            raise _UserError(f"illegal base64 data at input byte {index}")
    if len(text) % 4:
        raise _UserError(f"illegal base64 data at input byte {len(text) - len(text) % 4}")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise _UserError(f"illegal base64 data at input byte {max(len(text) - 4, 0)}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _int(body: dict[str, Any], name: str, default: int = 0) -> int:
    value = body.get(name, default)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise VaultHTTPError(400, f"error converting input {value} for field {name!r}")
    try:
        return int(value)
    except ValueError:
        raise VaultHTTPError(400, f"error converting input {value} for field {name!r}") from None


def _bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise VaultHTTPError(400, f"error converting input {value} for field {name!r}")


@dataclass
class _Version:
    key: bytes
    hmac_key: bytes
    created: int


@dataclass
class TransitKey:
    """One named key ("policy" in Vault's code) and its versions."""

    name: str
    type: str
    derived: bool = False
    exportable: bool = False
    allow_plaintext_backup: bool = False
    deletion_allowed: bool = False
    latest_version: int = 0
    min_decryption_version: int = 1
    min_encryption_version: int = 0
    min_available_version: int = 0
    auto_rotate_period: int = 0
    versions: dict[int, _Version] = field(default_factory=dict)

    def rotate(self, now: float) -> int:
        """Add a fresh version and make it the latest."""
        self.latest_version += 1
        self.versions[self.latest_version] = _Version(os.urandom(_KEY_SIZES[self.type]), os.urandom(32), int(now))
        return self.latest_version

    def rotate_if_due(self, now: float) -> bool:
        """Rotate when ``auto_rotate_period`` has passed since the newest version; True if it did."""
        newest = self.versions.get(self.latest_version)
        if not self.auto_rotate_period or newest is None or now < newest.created + self.auto_rotate_period:
            return False
        self.rotate(now)
        return True

    def describe(self) -> dict[str, Any]:
        """The ``data`` of Vault's key read (working-set versions only, as Vault shows them)."""
        data: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "derived": self.derived,
            "deletion_allowed": self.deletion_allowed,
            "min_available_version": self.min_available_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "latest_version": self.latest_version,
            "exportable": self.exportable,
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_signing": False,
            "supports_derivation": True,
            "auto_rotate_period": self.auto_rotate_period,
            "imported_key": False,
            "keys": {str(n): v.created for n, v in self.versions.items() if n >= self.min_decryption_version},
        }
        if self.derived:
            data["kdf"] = "hkdf_sha256"
            data["convergent_encryption"] = False
        return data

    def _aead(self, version: int, context: bytes) -> AESGCM | ChaCha20Poly1305:
        if self.derived and not context:
            raise _UserError(ERR_DERIVATION)
        entry = self.versions.get(version)
        if entry is None:
            raise _UserError("no such key version")
        key = entry.key
        if self.derived:
            key = HKDF(algorithm=hashes.SHA256(), length=len(key), salt=None, info=context).derive(key)
        return ChaCha20Poly1305(key) if self.type == "chacha20-poly1305" else AESGCM(key)

    def encrypt(self, plaintext: bytes, context: bytes, aad: bytes | None, version: int = 0) -> tuple[str, int]:
        """Encrypt under ``version`` (0: latest); Vault's version checks and messages."""
        if version == 0:
            version = self.latest_version
        elif version < 0:
            raise _UserError("requested version for encryption is negative")
        elif version > self.latest_version:
            raise _UserError("requested version for encryption is higher than the latest key version")
        elif version < self.min_encryption_version:
            raise _UserError("requested version for encryption is less than the minimum encryption key version")
        aead = self._aead(version, context)
        nonce = os.urandom(12)
        return f"vault:v{version}:" + _b64(nonce + aead.encrypt(nonce, plaintext, aad)), version

    def decrypt(self, ciphertext: str, context: bytes, aad: bytes | None) -> bytes:
        """Decrypt a ``vault:vN:`` ciphertext; Vault's checks in Vault's order."""
        if not ciphertext.startswith("vault:v"):
            raise _UserError("invalid ciphertext: no prefix")
        fields = ciphertext[len("vault:v") :].split(":", 1)
        if len(fields) != 2:
            raise _UserError("invalid ciphertext: wrong number of fields")
        try:
            version = int(fields[0])
        except ValueError:
            raise _UserError("invalid ciphertext: version number could not be decoded") from None
        version = version or 1  # Vault's compatibility with keys that once started at zero
        if version > self.latest_version:
            raise _UserError("invalid ciphertext: version is too new")
        if version < self.min_decryption_version:
            raise _UserError(ERR_TOO_OLD)
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except ValueError:
            raise _UserError("invalid ciphertext: could not decode base64") from None
        aead = self._aead(version, context)
        if len(blob) < 12:
            raise _UserError("invalid ciphertext length")
        try:
            return aead.decrypt(blob[:12], blob[12:], aad)
        except InvalidTag:
            prefix = "chacha20poly1305" if self.type == "chacha20-poly1305" else "cipher"
            raise _UserError(f"{prefix}: message authentication failed") from None

    def hmac(self, data: bytes, algorithm: str, version: int) -> str:
        """``vault:vN:`` + base64 HMAC of ``data`` under the version's HMAC key."""
        version = version or self.latest_version
        if version > self.latest_version:
            raise _UserError(f"key version does not exist; latest key version is {self.latest_version}")
        if version < self.min_encryption_version or version not in self.versions:
            raise _UserError("cannot use a key version below the minimum encryption version")
        digest = hmac.new(self.versions[version].hmac_key, data, _HASHES[algorithm]).digest()
        return f"vault:v{version}:" + _b64(digest)


def _item_context(item: dict[str, Any]) -> tuple[bytes, bytes | None]:
    context = go_b64decode(item["context"]) if item.get("context") else b""
    aad = go_b64decode(item["associated_data"]) if item.get("associated_data") else None
    return context, aad


def _batch_or_single(body: dict[str, Any], fields: tuple[str, ...], missing: str) -> tuple[list[dict[str, Any]], bool]:
    raw = body.get("batch_input")
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(i, dict) for i in raw):
            raise VaultHTTPError(400, "failed to parse batch input: expected a list of objects")
        if not raw:
            raise VaultHTTPError(400, "missing batch input to process")
        items = raw
    else:
        if body.get(fields[0]) is None or (fields[0] == "ciphertext" and not body.get(fields[0])):
            raise VaultHTTPError(400, missing)
        items = [{name: body.get(name) for name in fields}]
    contexts = [bool(i.get("context")) for i in items]
    if any(contexts) and not all(contexts):
        raise VaultHTTPError(400, "context should be set either in all the request blocks or in none")
    return items, raw is not None


def _answer(results: list[dict[str, Any]], batch: bool, single_fields: tuple[str, ...]) -> Reply:
    if batch:
        for result in results:
            result.setdefault("reference", "")
        status = 400 if any(r.get("error") for r in results) else 200
        if status == 400:
            # Vault answers a batch with user errors as 400 but keeps the results in the body.
            raise VaultHTTPError(400, data={"batch_results": results})
        return 200, {"batch_results": results}
    if results[0].get("error"):
        raise VaultHTTPError(400, results[0]["error"])
    return 200, {name: results[0][name] for name in single_fields if name in results[0]}


def _auto_rotate_period(body: dict[str, Any]) -> int:
    """Seconds of ``auto_rotate_period`` (0 turns it off); Vault's 400 below an hour."""
    value = body.get("auto_rotate_period", 0)
    if value in (None, ""):
        return 0
    seconds = parse_duration(value, "auto_rotate_period")
    if seconds and seconds < _MIN_AUTO_ROTATE:
        raise VaultHTTPError(400, "auto rotate period must be 0 to disable or at least an hour")
    return seconds


def parse_duration(value: Any, name: str) -> int:
    """Seconds of a Vault duration field: an integer (seconds), ``"90"``, or ``"1h30m"``-style text."""
    if isinstance(value, bool):
        raise VaultHTTPError(400, f"error converting input {value} for field {name!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and value and _DURATION_RE.sub("", value) == "":
        seconds = int(sum(float(n) * _UNITS[unit] for n, unit in _DURATION_RE.findall(value)))
    else:
        raise VaultHTTPError(400, f'error converting input "{value}" for field "{name}": time: invalid duration')
    if seconds < 0:
        raise VaultHTTPError(400, f'error converting input "{value}" for field "{name}": negative duration')
    return seconds


@dataclass
class TransitMount:
    """A mounted transit engine: its keys and the operations on them. ``clock`` is the fake's time."""

    path: str
    keys: dict[str, TransitKey] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    def rotate_due_keys(self) -> None:
        """Rotate every key whose ``auto_rotate_period`` has passed (call before serving a request)."""
        now = self.clock()
        for key in self.keys.values():
            key.rotate_if_due(now)

    def _key(self, name: str) -> TransitKey:
        key = self.keys.get(name)
        if key is None:
            raise VaultHTTPError(400, "encryption key not found")
        return key

    # -- keys -------------------------------------------------------------------

    def create_key(self, name: str, body: dict[str, Any]) -> Reply:
        """POST keys/NAME: create (an existing key is kept, with Vault's warning)."""
        if not _NAME_RE.match(name):
            raise VaultHTTPError(404, "unsupported path")
        key_type = str(body.get("type") or "aes256-gcm96")
        derived = _bool(body, "derived")
        if _bool(body, "convergent_encryption") and not derived:
            raise VaultHTTPError(400, "convergent encryption requires derivation to be enabled")
        if _bool(body, "convergent_encryption"):
            raise VaultHTTPError(400, "convergent encryption is not supported by the kmsbox Vault fake")
        if key_type not in _KEY_SIZES:
            if key_type in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"):
                raise VaultHTTPError(400, f"key type {key_type} is not supported by the kmsbox Vault fake")
            raise VaultHTTPError(400, f"unknown key type {key_type}")
        auto_rotate_period = _auto_rotate_period(body)
        existing = self.keys.get(name)
        if existing is not None:
            return 200, existing.describe()
        key = TransitKey(
            name=name,
            type=key_type,
            derived=derived,
            exportable=_bool(body, "exportable"),
            allow_plaintext_backup=_bool(body, "allow_plaintext_backup"),
            auto_rotate_period=auto_rotate_period,
        )
        key.rotate(self.clock())
        self.keys[name] = key
        return 200, key.describe()

    def read_key(self, name: str) -> Reply:
        """GET keys/NAME: 404 with an empty ``errors`` list when missing, as Vault does."""
        key = self.keys.get(name)
        if key is None:
            raise VaultHTTPError(404)
        return 200, key.describe()

    def list_keys(self) -> Reply:
        """LIST keys: 404 when there are none."""
        if not self.keys:
            raise VaultHTTPError(404)
        return 200, {"keys": sorted(self.keys)}

    def delete_key(self, name: str) -> Reply:
        """DELETE keys/NAME: only when ``deletion_allowed``."""
        key = self.keys.get(name)
        if key is None:
            raise VaultHTTPError(400, f"error deleting policy {name}: could not delete key; not found")
        if not key.deletion_allowed:
            raise VaultHTTPError(400, f"error deleting policy {name}: deletion is not allowed for this key")
        del self.keys[name]
        return 204, None

    def configure_key(self, name: str, body: dict[str, Any]) -> Reply:
        """POST keys/NAME/config: min versions and deletion_allowed, with Vault's checks."""
        key = self.keys.get(name)
        if key is None:
            raise VaultHTTPError(400, f"no existing key named {name} could be found")
        new_dec, new_enc = key.min_decryption_version, key.min_encryption_version
        if "min_decryption_version" in body:
            new_dec = _int(body, "min_decryption_version")
            if new_dec < 0:
                raise VaultHTTPError(400, "min decryption version cannot be negative")
            new_dec = new_dec or 1
            if new_dec != key.min_decryption_version and new_dec > key.latest_version:
                raise VaultHTTPError(
                    400,
                    f"cannot set min decryption version of {new_dec}, latest key version is {key.latest_version}",
                )
        if "min_encryption_version" in body:
            new_enc = _int(body, "min_encryption_version")
            if new_enc < 0:
                raise VaultHTTPError(400, "min encryption version cannot be negative")
            if new_enc != key.min_encryption_version and new_enc > key.latest_version:
                raise VaultHTTPError(
                    400,
                    f"cannot set min encryption version of {new_enc}, latest key version is {key.latest_version}",
                )
        if 0 < new_enc < new_dec:
            raise VaultHTTPError(
                400,
                "cannot set min encryption/decryption values; min encryption version of "
                f"{new_enc} must be greater than or equal to min decryption version of {new_dec}",
            )
        if key.min_available_version > new_enc and new_enc != key.min_encryption_version:
            raise VaultHTTPError(400, "min encryption version should not be less than min available version")
        if key.min_available_version > new_dec:
            raise VaultHTTPError(400, "min decryption version should not be less then min available version")
        auto_rotate_period = _auto_rotate_period(body) if "auto_rotate_period" in body else key.auto_rotate_period
        key.min_decryption_version, key.min_encryption_version = new_dec, new_enc
        key.auto_rotate_period = auto_rotate_period
        if "deletion_allowed" in body:
            key.deletion_allowed = _bool(body, "deletion_allowed")
        if _bool(body, "exportable"):
            key.exportable = True  # Vault never unsets it
        return 200, key.describe()

    def rotate_key(self, name: str) -> Reply:
        """POST keys/NAME/rotate (Vault's 400 "key not found" for a missing key)."""
        key = self.keys.get(name)
        if key is None:
            raise VaultHTTPError(400, "key not found")
        key.rotate(self.clock())
        return 200, key.describe()

    def trim_key(self, name: str, body: dict[str, Any]) -> Reply:
        """POST keys/NAME/trim: delete versions below ``min_available_version`` for good."""
        key = self.keys.get(name)
        if key is None:
            raise VaultHTTPError(400, "invalid key name")
        if "min_available_version" not in body:
            raise VaultHTTPError(400, "missing min_available_version")
        wanted = _int(body, "min_available_version")
        checks = [
            (wanted < key.min_available_version, "minimum available version cannot be decremented"),
            (
                key.min_encryption_version == 0,
                "minimum available version cannot be set when minimum encryption version is not set",
            ),
            (
                wanted > key.min_encryption_version,
                "minimum available version cannot be greater than minmum encryption version",
            ),
            (
                wanted > key.min_decryption_version,
                "minimum available version cannot be greater than minimum decryption version",
            ),
            (wanted < 0, "minimum available version cannot be negative"),
            (wanted == 0, "minimum available version should be positive"),
        ]
        for failed, message in checks:
            if failed:
                raise VaultHTTPError(400, message)
        key.min_available_version = wanted
        for version in [v for v in key.versions if v < wanted]:
            del key.versions[version]
        return 204, None

    # -- encryption ---------------------------------------------------------------

    def encrypt(self, name: str, body: dict[str, Any]) -> Reply:
        """POST encrypt/NAME: single or ``batch_input``; upserts a missing key, as Vault does with create rights."""
        items, batch = _batch_or_single(
            body, ("plaintext", "context", "associated_data", "key_version"), "missing plaintext to encrypt"
        )
        key = self.keys.get(name)
        if key is None:
            self.create_key(
                name, {"type": body.get("type") or "aes256-gcm96", "derived": bool(items[0].get("context"))}
            )
            key = self.keys[name]
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                plaintext = go_b64decode(item.get("plaintext") or "")
                context, aad = _item_context(item)
                ciphertext, version = key.encrypt(plaintext, context, aad, _int(item, "key_version"))
                results.append({"ciphertext": ciphertext, "key_version": version})
            except _UserError as exc:
                results.append({"error": str(exc)})
        return _answer(results, batch, ("ciphertext", "key_version"))

    def decrypt(self, name: str, body: dict[str, Any]) -> Reply:
        """POST decrypt/NAME: single or ``batch_input`` with ``context`` / ``associated_data``."""
        items, batch = _batch_or_single(
            body, ("ciphertext", "context", "associated_data"), "missing ciphertext to decrypt"
        )
        key = self._key(name)
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                if not item.get("ciphertext"):
                    raise _UserError("missing ciphertext to decrypt")
                context, aad = _item_context(item)
                results.append({"plaintext": _b64(key.decrypt(str(item["ciphertext"]), context, aad))})
            except _UserError as exc:
                results.append({"error": str(exc)})
        return _answer(results, batch, ("plaintext",))

    def rewrap(self, name: str, body: dict[str, Any]) -> Reply:
        """POST rewrap/NAME: decrypt and re-encrypt inside; like Vault, ``associated_data`` is ignored."""
        items, batch = _batch_or_single(body, ("ciphertext", "context", "key_version"), "missing ciphertext to decrypt")
        key = self._key(name)
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                if not item.get("ciphertext"):
                    raise _UserError("missing ciphertext to decrypt")
                context = go_b64decode(item["context"]) if item.get("context") else b""
                plaintext = key.decrypt(str(item["ciphertext"]), context, None)
                ciphertext, version = key.encrypt(plaintext, context, None, _int(item, "key_version"))
                results.append({"ciphertext": ciphertext, "key_version": version})
            except _UserError as exc:
                results.append({"error": str(exc)})
        return _answer(results, batch, ("ciphertext", "key_version"))

    def datakey(self, kind: str, name: str, body: dict[str, Any]) -> Reply:
        """POST datakey/plaintext|wrapped/NAME: a fresh data key, wrapped (and shown, for ``plaintext``)."""
        if kind not in ("plaintext", "wrapped"):
            raise VaultHTTPError(400, "Invalid path")
        bits = _int(body, "bits", 256) or 256
        if bits not in (128, 256, 512):
            raise VaultHTTPError(400, "invalid bits value")
        key = self._key(name)
        try:
            context, aad = _item_context(body)
            new_key = os.urandom(bits // 8)
            ciphertext, version = key.encrypt(new_key, context, aad, _int(body, "key_version"))
        except _UserError as exc:
            raise VaultHTTPError(400, str(exc)) from None
        data: dict[str, Any] = {"ciphertext": ciphertext, "key_version": version}
        if kind == "plaintext":
            data["plaintext"] = _b64(new_key)
        return 200, data

    def hmac(self, name: str, algorithm: str | None, body: dict[str, Any], *, verify: bool = False) -> Reply:
        """POST hmac/NAME[/ALG] (or verify/NAME[/ALG] when ``verify``)."""
        algorithm = algorithm or str(body.get("algorithm") or body.get("hash_algorithm") or "sha2-256")
        if algorithm not in _HASHES:
            raise VaultHTTPError(400, f"unsupported algorithm {algorithm}")
        key = self._key(name)
        raw = body.get("batch_input")
        items = raw if isinstance(raw, list) and raw else [body]
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                data = go_b64decode(item.get("input") or "")
                if verify:
                    results.append({"valid": self._verify_hmac(key, data, algorithm, str(item.get("hmac") or ""))})
                else:
                    results.append({"hmac": key.hmac(data, algorithm, _int(item, "key_version"))})
            except _UserError as exc:
                results.append({"error": str(exc)})
        if isinstance(raw, list) and raw:
            return 200, {"batch_results": results}
        if results[0].get("error"):
            raise VaultHTTPError(400, results[0]["error"])
        return 200, results[0]

    @staticmethod
    def _verify_hmac(key: TransitKey, data: bytes, algorithm: str, mac: str) -> bool:
        if not mac.startswith("vault:v"):
            raise _UserError("invalid HMAC: no prefix")
        version_text, _, _ = mac[len("vault:v") :].partition(":")
        try:
            version = int(version_text)
        except ValueError:
            raise _UserError("invalid HMAC: version number could not be decoded") from None
        if version > key.latest_version:
            raise _UserError("invalid HMAC: version is too new")
        if version < key.min_decryption_version:
            raise _UserError(ERR_TOO_OLD)
        expected = f"vault:v{version}:" + _b64(
            hmac.new(key.versions[version].hmac_key, data, _HASHES[algorithm]).digest()
        )
        return hmac.compare_digest(expected, mac)


def random_bytes(segments: list[str], body: dict[str, Any]) -> Reply:
    """POST sys/tools/random[/SOURCE][/BYTES] and MOUNT/random[...]: ``random_bytes`` in base64 or hex."""
    count_text = next((s for s in segments if s.isdigit()), None)
    count = int(count_text) if count_text else _int(body, "bytes", 32)
    fmt = str(body.get("format") or "base64")
    if fmt not in ("base64", "hex"):
        raise VaultHTTPError(400, f'unsupported encoding format "{fmt}"; must be "hex" or "base64"')
    if count < 1:
        raise VaultHTTPError(400, "number of bytes must be greater than zero")
    if count > _MAX_RANDOM_BYTES:
        raise VaultHTTPError(400, f"number of bytes exceeds the maximum of {_MAX_RANDOM_BYTES}")
    data = os.urandom(count)
    return 200, {"random_bytes": _b64(data) if fmt == "base64" else data.hex()}


def hash_data(algorithm: str | None, body: dict[str, Any]) -> Reply:
    """POST sys/tools/hash[/ALG] and MOUNT/hash[/ALG]: ``sum`` in hex (default) or base64."""
    algorithm = algorithm or str(body.get("algorithm") or "sha2-256")
    fmt = str(body.get("format") or "hex")
    try:
        data = go_b64decode(body.get("input") or "")
    except _UserError as exc:
        raise VaultHTTPError(400, f"unable to decode input as base64: {exc}") from None
    if fmt not in ("hex", "base64"):
        raise VaultHTTPError(400, f'unsupported encoding format {fmt}; must be "hex" or "base64"')
    if algorithm not in _HASHES:
        raise VaultHTTPError(400, f"unsupported algorithm {algorithm}")
    digest = _HASHES[algorithm](data).digest()
    return 200, {"sum": digest.hex() if fmt == "hex" else _b64(digest)}
