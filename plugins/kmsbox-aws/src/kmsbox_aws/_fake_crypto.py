"""Key material and ciphertexts of the fake AWS KMS (symmetric keys only).

Each KMS key gets versions of backing material: the first on first use, one more
per ``RotateKeyOnDemand``. A ciphertext names its key and material version, so
ciphertexts made before a rotation still decrypt, as in AWS. The encryption
context is bound as AES-GCM associated data in a length-prefixed canonical form,
so that ``{"ab": "c"}`` and ``{"a": "bc"}`` are different contexts. Material is
generated at run time, held only in memory, and never leaves this module.
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MATERIALS", "CiphertextError", "KeyMaterials", "Sealed", "encode_context", "parse_key_id"]

_FORMAT = b"\x01\x6b"  # format 1, "k": lets a glance at the bytes tell this fake's ciphertexts apart
_NONCE = 12
_TAG = 16
_VERSION = struct.Struct(">I")
_LENGTH = struct.Struct(">I")


class CiphertextError(Exception):
    """The bytes are not a ciphertext of this fake, or do not authenticate (AWS: InvalidCiphertextException)."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A ciphertext and the material that made it."""

    blob: bytes
    material_id: str


@dataclass(slots=True)
class _Material:
    aead: AESGCM = field(repr=False)
    material_id: str
    created: float


def encode_context(context: Mapping[str, str]) -> bytes:
    """The encryption context as unambiguous bytes: sorted pairs, each string length-prefixed."""
    out = bytearray()
    for name in sorted(context):
        for text in (name, context[name]):
            data = text.encode("utf-8")
            out += _LENGTH.pack(len(data)) + data
    return bytes(out)


def parse_key_id(blob: bytes) -> str:
    """The key ID a ciphertext names; CiphertextError when the bytes are not one of ours."""
    return _parse(blob)[0]


def _parse(blob: bytes) -> tuple[str, int, bytes, bytes]:
    """``(key_id, version, header, sealed)`` of a ciphertext."""
    if len(blob) < len(_FORMAT) + 1 or not blob.startswith(_FORMAT):
        raise CiphertextError("not a ciphertext")
    id_length = blob[len(_FORMAT)]
    start = len(_FORMAT) + 1
    header_end = start + id_length + _VERSION.size
    if id_length == 0 or len(blob) < header_end + _NONCE + _TAG:
        raise CiphertextError("truncated")
    try:
        key_id = blob[start : start + id_length].decode("ascii")
    except UnicodeDecodeError:
        raise CiphertextError("bad key id") from None
    (version,) = _VERSION.unpack_from(blob, start + id_length)
    return key_id, version, blob[:header_end], blob[header_end:]


class KeyMaterials:
    """Versions of backing material per key ARN. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, list[_Material]] = {}

    def __repr__(self) -> str:
        return f"KeyMaterials(keys={len(self._keys)})"

    def _versions(self, arn: str) -> list[_Material]:
        versions = self._keys.get(arn)
        if versions is None:
            versions = self._keys[arn] = [_new_material()]
        return versions

    def rotate(self, arn: str) -> str:
        """Give the key new backing material for new ciphertexts; return its material ID."""
        with self._lock:
            versions = self._versions(arn)
            versions.append(_new_material())
            return versions[-1].material_id

    def material_ids(self, arn: str) -> list[str]:
        """The material IDs of the key, oldest first."""
        with self._lock:
            return [m.material_id for m in self._versions(arn)]

    def encrypt(self, arn: str, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> Sealed:
        """Encrypt under the key's newest material, binding ``context``."""
        with self._lock:
            versions = self._versions(arn)
            number, material = len(versions), versions[-1]
        encoded_id = key_id.encode("ascii")
        header = _FORMAT + bytes([len(encoded_id)]) + encoded_id + _VERSION.pack(number)
        nonce = os.urandom(_NONCE)
        sealed = material.aead.encrypt(nonce, plaintext, header + encode_context(context))
        return Sealed(header + nonce + sealed, material.material_id)

    def decrypt(self, arn: str, blob: bytes, context: Mapping[str, str]) -> tuple[bytes, str]:
        """``(plaintext, material_id)``; CiphertextError for anything that does not authenticate."""
        _, number, header, sealed = _parse(blob)
        with self._lock:
            versions = self._versions(arn)
            material = versions[number - 1] if 1 <= number <= len(versions) else None
        if material is None:
            raise CiphertextError("no such material")
        try:
            plaintext = material.aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], header + encode_context(context))
        except InvalidTag:
            raise CiphertextError("does not authenticate") from None
        return plaintext, material.material_id


def _new_material() -> _Material:
    # The material ID is random, not derived from the key: it must say nothing about it.
    return _Material(AESGCM(AESGCM.generate_key(256)), secrets.token_hex(32), time.time())


#: Material of every fake in this process: moto keeps its keys per process too.
MATERIALS = KeyMaterials()
