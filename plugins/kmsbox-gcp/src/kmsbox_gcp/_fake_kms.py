"""An in-memory model of Cloud KMS, the state behind the gRPC fake.

Key rings, ENCRYPT_DECRYPT crypto keys and their versions, with the real
service's state machine (ENABLED <-> DISABLED, DESTROY_SCHEDULED -> DESTROYED,
restore to DISABLED), page tokens, CRC32C integrity fields and its status codes
and messages. Each method takes and returns the official proto-plus messages
and raises :class:`RpcFailure` for an error status. Key material is generated
at run time and held only in memory.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import google_crc32c
import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud.kms_v1.types import (
    CreateCryptoKeyRequest,
    CreateCryptoKeyVersionRequest,
    CreateKeyRingRequest,
    CryptoKey,
    CryptoKeyVersion,
    CryptoKeyVersionTemplate,
    DecryptRequest,
    DecryptResponse,
    DestroyCryptoKeyVersionRequest,
    EncryptRequest,
    EncryptResponse,
    GenerateRandomBytesRequest,
    GenerateRandomBytesResponse,
    GetCryptoKeyRequest,
    GetCryptoKeyVersionRequest,
    GetKeyRingRequest,
    KeyRing,
    ListCryptoKeysRequest,
    ListCryptoKeysResponse,
    ListCryptoKeyVersionsRequest,
    ListCryptoKeyVersionsResponse,
    ListKeyRingsRequest,
    ListKeyRingsResponse,
    ProtectionLevel,
    RestoreCryptoKeyVersionRequest,
    UpdateCryptoKeyPrimaryVersionRequest,
    UpdateCryptoKeyRequest,
    UpdateCryptoKeyVersionRequest,
)

from kmsbox_gcp._fake_filter import FilterError, compile_filter, sort_resources

__all__ = ["RPC_METHODS", "FakeKms", "RpcFailure"]

#: The KeyManagementService RPCs the fake serves; each is the FakeKms method of the snake_case name.
RPC_METHODS = (
    "CreateKeyRing",
    "GetKeyRing",
    "ListKeyRings",
    "CreateCryptoKey",
    "GetCryptoKey",
    "ListCryptoKeys",
    "UpdateCryptoKey",
    "UpdateCryptoKeyPrimaryVersion",
    "CreateCryptoKeyVersion",
    "GetCryptoKeyVersion",
    "ListCryptoKeyVersions",
    "UpdateCryptoKeyVersion",
    "DestroyCryptoKeyVersion",
    "RestoreCryptoKeyVersion",
    "Encrypt",
    "Decrypt",
    "GenerateRandomBytes",
)

State = CryptoKeyVersion.CryptoKeyVersionState
Purpose = CryptoKey.CryptoKeyPurpose
Algorithm = CryptoKeyVersion.CryptoKeyVersionAlgorithm
T = TypeVar("T")

_ID = r"[a-zA-Z0-9_-]{1,63}"
_LOCATION_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
_RING_RE = re.compile(rf"^projects/[^/]+/locations/[^/]+/keyRings/{_ID}$")
_KEY_RE = re.compile(rf"^(projects/[^/]+/locations/[^/]+/keyRings/{_ID})/cryptoKeys/{_ID}$")
_VERSION_RE = re.compile(
    rf"^(projects/[^/]+/locations/[^/]+/keyRings/{_ID}/cryptoKeys/{_ID})/cryptoKeyVersions/([0-9]+)$"
)
_ID_RE = re.compile(rf"^{_ID}$")

_MAX_DATA = 64 * 1024
_MAX_PAGE = 1000
_DEFAULT_DESTROY_DELAY = dt.timedelta(days=30)
# Cloud KMS's bounds of destroy_scheduled_duration.
_MIN_DESTROY_DELAY = dt.timedelta(hours=24)
_MAX_DESTROY_DELAY = dt.timedelta(days=120)
_MIN_ROTATION = dt.timedelta(hours=24)
_MAX_ROTATION = dt.timedelta(hours=876_000)
# Fake ciphertext: format byte, key uid, version number, nonce, AES-GCM output.
_HEADER = struct.Struct(">B8sI")
_FORMAT = 0x01
_NONCE = 12
_INVALID_CIPHERTEXT = "Decryption failed: the ciphertext is invalid."
_WRONG_KEY = "Decryption failed: verify that 'name' refers to the correct CryptoKey."


class RpcFailure(Exception):
    """An error status the fake answers with: a gRPC code and Cloud KMS's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Version:
    number: int
    state: int  # a CryptoKeyVersionState value
    protection_level: int  # a ProtectionLevel value
    aead: AESGCM | None
    create_time: dt.datetime
    destroy_time: dt.datetime | None = None
    destroy_event_time: dt.datetime | None = None

    def __repr__(self) -> str:
        return f"_Version({self.number}, {_state_name(self.state)})"


@dataclass
class _Key:
    name: str
    uid: bytes
    create_time: dt.datetime
    protection_level: int
    destroy_scheduled_duration: dt.timedelta
    labels: dict[str, str] = field(default_factory=dict)
    rotation_period: dt.timedelta | None = None
    next_rotation_time: dt.datetime | None = None
    versions: dict[int, _Version] = field(default_factory=dict)
    primary: int | None = None

    def __repr__(self) -> str:
        return f"_Key({self.name!r})"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def _invalid(message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, message)


def _not_found(kind: str, name: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.NOT_FOUND, f"{kind} {name} not found.")


def _state_name(state: int) -> str:
    return str(State(state).name)


def _not_enabled(name: str, state: int) -> RpcFailure:
    return RpcFailure(
        grpc.StatusCode.FAILED_PRECONDITION, f"{name} is not enabled, current state is: {_state_name(state)}."
    )


def _wrong_state(name: str, state: int, rule: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, f"{name} is in state {_state_name(state)}; {rule}.")


# proto-plus marshals Duration and Timestamp fields to these at run time; its annotations say otherwise.
def _timedelta(value: object) -> dt.timedelta:
    assert isinstance(value, dt.timedelta)
    return value


def _datetime(value: object) -> dt.datetime:
    assert isinstance(value, dt.datetime)
    return value


def _check_crc(request: EncryptRequest | DecryptRequest, crc_field: str, data_field: str, data: bytes) -> bool:
    """Verify an optional request checksum; True when one was given (and matched)."""
    if crc_field not in request:
        return False
    if getattr(request, crc_field) != _crc(data):
        raise _invalid(f"The checksum in field {crc_field} did not match the data in field {data_field}.")
    return True


class FakeKms:
    """Cloud KMS resources in memory; thread-safe (one lock around all state)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._rings: dict[str, dt.datetime] = {}
        self._keys: dict[str, _Key] = {}

    def __repr__(self) -> str:
        return f"FakeKms(key_rings={len(self._rings)}, crypto_keys={len(self._keys)})"

    # Key rings

    def create_key_ring(self, request: CreateKeyRingRequest) -> KeyRing:
        """CreateKeyRing: ALREADY_EXISTS if the ring exists."""
        self._location(request.parent)
        if not _ID_RE.match(request.key_ring_id):
            raise _invalid(f"Invalid key_ring_id {request.key_ring_id!r}: use 1-63 of [a-zA-Z0-9_-].")
        name = f"{request.parent}/keyRings/{request.key_ring_id}"
        with self._lock:
            if name in self._rings:
                raise RpcFailure(grpc.StatusCode.ALREADY_EXISTS, f"KeyRing {name} already exists.")
            self._rings[name] = _now()
            return KeyRing(name=name, create_time=self._rings[name])

    def get_key_ring(self, request: GetKeyRingRequest) -> KeyRing:
        """GetKeyRing: NOT_FOUND if absent."""
        with self._lock:
            return KeyRing(name=request.name, create_time=self._ring(request.name))

    def list_key_rings(self, request: ListKeyRingsRequest) -> ListKeyRingsResponse:
        """ListKeyRings of a location, by name, in pages."""
        self._location(request.parent)
        prefix = request.parent + "/keyRings/"
        with self._lock:
            rings = [KeyRing(name=n, create_time=t) for n, t in sorted(self._rings.items()) if n.startswith(prefix)]
        listed = _filtered(rings, request.filter, request.order_by, KeyRing)
        page, token = _page(listed, request, request.page_size, request.page_token)
        return ListKeyRingsResponse(key_rings=page, next_page_token=token, total_size=len(listed))

    # Crypto keys

    def create_crypto_key(self, request: CreateCryptoKeyRequest) -> CryptoKey:
        """CreateCryptoKey: an ENCRYPT_DECRYPT key with version 1 as primary (unless skipped)."""
        spec = request.crypto_key
        if not _ID_RE.match(request.crypto_key_id):
            raise _invalid(f"Invalid crypto_key_id {request.crypto_key_id!r}: use 1-63 of [a-zA-Z0-9_-].")
        if spec.purpose == Purpose.CRYPTO_KEY_PURPOSE_UNSPECIFIED:
            raise _invalid("crypto_key.purpose must be specified.")
        if spec.purpose != Purpose.ENCRYPT_DECRYPT:
            raise RpcFailure(
                grpc.StatusCode.UNIMPLEMENTED, "This fake of Cloud KMS supports ENCRYPT_DECRYPT keys only."
            )
        template = spec.version_template
        if template.algorithm not in (
            Algorithm.CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED,
            Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        ):
            raise _invalid(f"Algorithm {template.algorithm.name} is not compatible with purpose ENCRYPT_DECRYPT.")
        level = template.protection_level or ProtectionLevel.SOFTWARE
        if level not in (ProtectionLevel.SOFTWARE, ProtectionLevel.HSM):
            raise RpcFailure(
                grpc.StatusCode.UNIMPLEMENTED,
                f"This fake does not support protection level {ProtectionLevel(level).name}.",
            )
        rotation_period, next_rotation = _rotation_of(spec, "rotation_period" in spec, "next_rotation_time" in spec)
        delay = (
            _timedelta(spec.destroy_scheduled_duration)
            if "destroy_scheduled_duration" in spec
            else _DEFAULT_DESTROY_DELAY
        )
        if not _MIN_DESTROY_DELAY <= delay <= _MAX_DESTROY_DELAY:
            raise _invalid("destroy_scheduled_duration must be at least 24 hours and at most 120 days.")
        name = f"{request.parent}/cryptoKeys/{request.crypto_key_id}"
        with self._lock:
            self._ring(request.parent)
            if name in self._keys:
                raise RpcFailure(grpc.StatusCode.ALREADY_EXISTS, f"CryptoKey {name} already exists.")
            key = _Key(
                name=name,
                uid=os.urandom(8),
                create_time=_now(),
                protection_level=level,
                destroy_scheduled_duration=delay,
                labels=dict(spec.labels),
                rotation_period=rotation_period,
                next_rotation_time=next_rotation,
            )
            self._keys[name] = key
            if not request.skip_initial_version_creation:
                key.primary = self._new_version(key, State.ENABLED).number
            return self._key_resource(key)

    def get_crypto_key(self, request: GetCryptoKeyRequest) -> CryptoKey:
        """GetCryptoKey, with its primary version."""
        with self._lock:
            return self._key_resource(self._key(request.name))

    def list_crypto_keys(self, request: ListCryptoKeysRequest) -> ListCryptoKeysResponse:
        """ListCryptoKeys of a key ring, by name (or ``order_by``), ``filter``-ed, in pages."""
        prefix = request.parent + "/cryptoKeys/"
        with self._lock:
            self._ring(request.parent)
            keys = [self._key_resource(self._key(n)) for n in sorted(self._keys) if n.startswith(prefix)]
        listed = _filtered(keys, request.filter, request.order_by, CryptoKey)
        page, token = _page(listed, request, request.page_size, request.page_token)
        return ListCryptoKeysResponse(crypto_keys=page, next_page_token=token, total_size=len(listed))

    def update_crypto_key(self, request: UpdateCryptoKeyRequest) -> CryptoKey:
        """UpdateCryptoKey of labels, rotation settings and the version template's algorithm."""
        paths = list(request.update_mask.paths)
        if not paths:
            raise _invalid("update_mask must be set.")
        spec = request.crypto_key
        with self._lock:
            key = self._key(spec.name)
            labels, rotation_period, next_rotation = key.labels, key.rotation_period, key.next_rotation_time
            for path in paths:
                if path == "labels":
                    labels = dict(spec.labels)
                elif path == "rotation_period":
                    rotation_period = _timedelta(spec.rotation_period) if "rotation_period" in spec else None
                elif path == "next_rotation_time":
                    next_rotation = _datetime(spec.next_rotation_time) if "next_rotation_time" in spec else None
                elif path in ("version_template", "version_template.algorithm"):
                    if spec.version_template.algorithm != Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION:
                        raise _invalid("version_template.algorithm must be GOOGLE_SYMMETRIC_ENCRYPTION.")
                else:
                    raise _invalid(f"The field {path!r} in update_mask cannot be updated.")
            _check_rotation(rotation_period, next_rotation)
            key.labels, key.rotation_period, key.next_rotation_time = labels, rotation_period, next_rotation
            return self._key_resource(key)

    def update_crypto_key_primary_version(self, request: UpdateCryptoKeyPrimaryVersionRequest) -> CryptoKey:
        """UpdateCryptoKeyPrimaryVersion: the version must exist and be ENABLED."""
        with self._lock:
            key = self._key(request.name)
            version_name = f"{key.name}/cryptoKeyVersions/{request.crypto_key_version_id}"
            version = self._version_of(key, version_name)
            if version.state != State.ENABLED:
                raise _not_enabled(version_name, version.state)
            key.primary = version.number
            return self._key_resource(key)

    # Versions

    def create_crypto_key_version(self, request: CreateCryptoKeyVersionRequest) -> CryptoKeyVersion:
        """CreateCryptoKeyVersion: the next number, ENABLED (or DISABLED if asked); not made primary."""
        state = request.crypto_key_version.state or State.ENABLED
        if state not in (State.ENABLED, State.DISABLED):
            raise _invalid("crypto_key_version.state must be ENABLED or DISABLED.")
        with self._lock:
            key = self._key(request.parent)
            return self._version_resource(key, self._new_version(key, state))

    def get_crypto_key_version(self, request: GetCryptoKeyVersionRequest) -> CryptoKeyVersion:
        """GetCryptoKeyVersion: NOT_FOUND if absent."""
        with self._lock:
            key, version = self._version(request.name)
            return self._version_resource(key, version)

    def list_crypto_key_versions(self, request: ListCryptoKeyVersionsRequest) -> ListCryptoKeyVersionsResponse:
        """ListCryptoKeyVersions of a key, by number (or ``order_by``), ``filter``-ed, in pages."""
        with self._lock:
            key = self._key(request.parent)
            versions = [self._version_resource(key, key.versions[n]) for n in sorted(key.versions)]
        listed = _filtered(versions, request.filter, request.order_by, CryptoKeyVersion)
        page, token = _page(listed, request, request.page_size, request.page_token)
        return ListCryptoKeyVersionsResponse(crypto_key_versions=page, next_page_token=token, total_size=len(listed))

    def update_crypto_key_version(self, request: UpdateCryptoKeyVersionRequest) -> CryptoKeyVersion:
        """UpdateCryptoKeyVersion: only ``state``, only between ENABLED and DISABLED."""
        paths = list(request.update_mask.paths)
        if not paths:
            raise _invalid("update_mask must be set.")
        if paths != ["state"]:
            raise _invalid(f"The fields {paths} in update_mask cannot be updated; only 'state' can.")
        target = request.crypto_key_version.state
        if target not in (State.ENABLED, State.DISABLED):
            raise _invalid("crypto_key_version.state can only be set to ENABLED or DISABLED.")
        with self._lock:
            key, version = self._version(request.crypto_key_version.name)
            if version.state not in (State.ENABLED, State.DISABLED):
                raise _wrong_state(
                    request.crypto_key_version.name,
                    version.state,
                    "only ENABLED and DISABLED versions can change state",
                )
            version.state = target
            return self._version_resource(key, version)

    def destroy_crypto_key_version(self, request: DestroyCryptoKeyVersionRequest) -> CryptoKeyVersion:
        """DestroyCryptoKeyVersion: ENABLED or DISABLED -> DESTROY_SCHEDULED."""
        with self._lock:
            key, version = self._version(request.name)
            if version.state not in (State.ENABLED, State.DISABLED):
                raise _wrong_state(request.name, version.state, "only ENABLED and DISABLED versions can be destroyed")
            version.state = State.DESTROY_SCHEDULED
            version.destroy_time = _now() + key.destroy_scheduled_duration
            return self._version_resource(key, version)

    def restore_crypto_key_version(self, request: RestoreCryptoKeyVersionRequest) -> CryptoKeyVersion:
        """RestoreCryptoKeyVersion: DESTROY_SCHEDULED -> DISABLED."""
        with self._lock:
            key, version = self._version(request.name)
            if version.state != State.DESTROY_SCHEDULED:
                raise _wrong_state(request.name, version.state, "only DESTROY_SCHEDULED versions can be restored")
            version.state = State.DISABLED
            version.destroy_time = None
            return self._version_resource(key, version)

    # Cryptography

    def encrypt(self, request: EncryptRequest) -> EncryptResponse:
        """Encrypt with the primary (or the named) version, binding the AAD; checks and fills CRC32C fields."""
        with self._lock:
            if _VERSION_RE.match(request.name):
                key, version = self._version(request.name)
            else:
                key = self._key(request.name)
                if key.primary is None:
                    raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, f"{key.name} has no primary version.")
                version = key.versions[key.primary]
            version_name = f"{key.name}/cryptoKeyVersions/{version.number}"
            if not request.plaintext:
                raise _invalid("plaintext is required.")
            if len(request.plaintext) > _MAX_DATA or len(request.additional_authenticated_data) > _MAX_DATA:
                raise _invalid("plaintext and additional_authenticated_data must each be at most 65536 bytes.")
            verified_plaintext = _check_crc(request, "plaintext_crc32c", "plaintext", request.plaintext)
            aad = request.additional_authenticated_data
            verified_aad = _check_crc(
                request, "additional_authenticated_data_crc32c", "additional_authenticated_data", aad
            )
            if version.state != State.ENABLED or version.aead is None:
                raise _not_enabled(version_name, version.state)
            header = _HEADER.pack(_FORMAT, key.uid, version.number)
            nonce = os.urandom(_NONCE)
            ciphertext = header + nonce + version.aead.encrypt(nonce, request.plaintext, header + aad)
        return EncryptResponse(
            name=version_name,
            ciphertext=ciphertext,
            ciphertext_crc32c=_crc(ciphertext),
            verified_plaintext_crc32c=verified_plaintext,
            verified_additional_authenticated_data_crc32c=verified_aad,
            protection_level=version.protection_level,
        )

    def decrypt(self, request: DecryptRequest) -> DecryptResponse:
        """Decrypt with the version recorded in the ciphertext; the AAD must match."""
        if _VERSION_RE.match(request.name):
            raise _invalid("Decrypt takes the name of a CryptoKey, not of a CryptoKeyVersion.")
        ciphertext, aad = request.ciphertext, request.additional_authenticated_data
        with self._lock:
            key = self._key(request.name)
            _check_crc(request, "ciphertext_crc32c", "ciphertext", ciphertext)
            _check_crc(request, "additional_authenticated_data_crc32c", "additional_authenticated_data", aad)
            if len(ciphertext) < _HEADER.size + _NONCE + 16:
                raise _invalid(_INVALID_CIPHERTEXT)
            form, uid, number = _HEADER.unpack_from(ciphertext)
            if form != _FORMAT:
                raise _invalid(_INVALID_CIPHERTEXT)
            if uid != key.uid:
                raise _invalid(_WRONG_KEY)
            version = key.versions.get(number)
            if version is None:
                raise _invalid(_INVALID_CIPHERTEXT)
            if version.state != State.ENABLED or version.aead is None:
                raise _not_enabled(f"{key.name}/cryptoKeyVersions/{number}", version.state)
            used_primary = key.primary == number
            aead, level = version.aead, version.protection_level
        header, nonce, sealed = (
            ciphertext[: _HEADER.size],
            ciphertext[_HEADER.size : _HEADER.size + _NONCE],
            ciphertext[_HEADER.size + _NONCE :],
        )
        try:
            plaintext = aead.decrypt(nonce, sealed, header + aad)
        except InvalidTag:
            raise _invalid(_INVALID_CIPHERTEXT) from None
        return DecryptResponse(
            plaintext=plaintext, plaintext_crc32c=_crc(plaintext), used_primary=used_primary, protection_level=level
        )

    def generate_random_bytes(self, request: GenerateRandomBytesRequest) -> GenerateRandomBytesResponse:
        """GenerateRandomBytes: 8 to 1024 bytes, HSM protection level only (as the real service)."""
        self._location(request.location)
        if not 8 <= request.length_bytes <= 1024:
            raise _invalid("length_bytes must be between 8 and 1024.")
        if request.protection_level != ProtectionLevel.HSM:
            raise _invalid("protection_level must be HSM; only HSM is supported for GenerateRandomBytes.")
        data = os.urandom(request.length_bytes)
        return GenerateRandomBytesResponse(data=data, data_crc32c=_crc(data))

    # Operator helpers (not RPCs)

    def ensure_key(self, key_name: str) -> str:
        """Create the ring and key of ``key_name`` when missing; return the key's name."""
        match = _KEY_RE.match(key_name)
        if match is None:
            raise ValueError(f"not a crypto key name: {key_name!r}")
        ring = match.group(1)
        parent, _, ring_id = ring.rpartition("/keyRings/")
        with self._lock:
            if ring not in self._rings:
                self.create_key_ring(CreateKeyRingRequest(parent=parent, key_ring_id=ring_id))
            if key_name not in self._keys:
                spec = CryptoKey(purpose=Purpose.ENCRYPT_DECRYPT)
                self.create_crypto_key(
                    CreateCryptoKeyRequest(parent=ring, crypto_key_id=key_name.rpartition("/")[2], crypto_key=spec)
                )
        return key_name

    def rotate(self, key_name: str) -> int:
        """Create a new ENABLED version of ``key_name`` and make it primary; return its number."""
        with self._lock:
            key = self._key(key_name)
            version = self._new_version(key, State.ENABLED)
            key.primary = version.number
            return version.number

    def complete_scheduled_destruction(self) -> int:
        """Destroy every DESTROY_SCHEDULED version now (as if its delay passed); return how many."""
        with self._lock:
            count = 0
            for key in self._keys.values():
                for version in key.versions.values():
                    if version.state == State.DESTROY_SCHEDULED:
                        version.destroy_time = _now()
                        count += 1
                self._advance(key)
            return count

    # Internals (call with the lock held)

    def _location(self, name: str) -> None:
        if not _LOCATION_RE.match(name):
            raise _invalid(f"Invalid location name {name!r}: expected projects/PROJECT/locations/LOCATION.")

    def _ring(self, name: str) -> dt.datetime:
        if not _RING_RE.match(name):
            raise _invalid(f"Invalid key ring name {name!r}.")
        created = self._rings.get(name)
        if created is None:
            raise _not_found("KeyRing", name)
        return created

    def _key(self, name: str) -> _Key:
        if not _KEY_RE.match(name):
            raise _invalid(f"Invalid crypto key name {name!r}.")
        key = self._keys.get(name)
        if key is None:
            raise _not_found("CryptoKey", name)
        self._advance(key)
        return key

    def _version(self, name: str) -> tuple[_Key, _Version]:
        match = _VERSION_RE.match(name)
        if match is None:
            raise _invalid(f"Invalid crypto key version name {name!r}.")
        key = self._key(match.group(1))
        return key, self._version_of(key, name)

    def _version_of(self, key: _Key, name: str) -> _Version:
        match = _VERSION_RE.match(name)
        version = key.versions.get(int(match.group(2))) if match else None
        if version is None:
            raise _not_found("CryptoKeyVersion", name)
        return version

    def _new_version(self, key: _Key, state: int) -> _Version:
        number = max(key.versions, default=0) + 1
        now = _now()
        version = _Version(number, state, key.protection_level, AESGCM(AESGCM.generate_key(256)), now)
        key.versions[number] = version
        return version

    def _advance(self, key: _Key) -> None:
        """Apply what time did: scheduled destructions and automatic rotation."""
        now = _now()
        for version in key.versions.values():
            if version.state == State.DESTROY_SCHEDULED and version.destroy_time and version.destroy_time <= now:
                version.state, version.aead, version.destroy_event_time = State.DESTROYED, None, now
        if key.rotation_period and key.next_rotation_time and key.next_rotation_time <= now:
            key.primary = self._new_version(key, State.ENABLED).number
            while key.next_rotation_time <= now:
                key.next_rotation_time += key.rotation_period

    def _key_resource(self, key: _Key) -> CryptoKey:
        fields: dict[str, object] = {
            "name": key.name,
            "purpose": Purpose.ENCRYPT_DECRYPT,
            "create_time": key.create_time,
            "labels": key.labels,
            "version_template": CryptoKeyVersionTemplate(
                protection_level=key.protection_level, algorithm=Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
            ),
            "destroy_scheduled_duration": key.destroy_scheduled_duration,
            "primary": self._version_resource(key, key.versions[key.primary]) if key.primary is not None else None,
            "rotation_period": key.rotation_period,
            "next_rotation_time": key.next_rotation_time,
        }
        return CryptoKey(**{name: value for name, value in fields.items() if value is not None})

    @staticmethod
    def _version_resource(key: _Key, version: _Version) -> CryptoKeyVersion:
        fields: dict[str, object] = {
            "name": f"{key.name}/cryptoKeyVersions/{version.number}",
            "state": version.state,
            "protection_level": version.protection_level,
            "algorithm": Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            "create_time": version.create_time,
            "generate_time": version.create_time,
            "destroy_time": version.destroy_time,
            "destroy_event_time": version.destroy_event_time,
        }
        return CryptoKeyVersion(**{name: value for name, value in fields.items() if value is not None})


def _rotation_of(spec: CryptoKey, has_period: bool, has_next: bool) -> tuple[dt.timedelta | None, dt.datetime | None]:
    period = _timedelta(spec.rotation_period) if has_period else None
    next_time = _datetime(spec.next_rotation_time) if has_next else None
    _check_rotation(period, next_time)
    return period, next_time


def _check_rotation(period: dt.timedelta | None, next_time: dt.datetime | None) -> None:
    if period is not None and not _MIN_ROTATION <= period <= _MAX_ROTATION:
        raise _invalid("rotation_period must be at least 24 hours and at most 876,000 hours.")
    if period is not None and next_time is None:
        raise _invalid("next_rotation_time must be set when rotation_period is set.")


def _filtered(resources: list[T], filter_text: str, order_by: str, message_type: Any) -> list[T]:
    """The resources a list call's ``filter`` keeps, in its ``order_by`` order; INVALID_ARGUMENT if they are bad."""
    try:
        keep = compile_filter(filter_text, message_type)
        return sort_resources([r for r in resources if keep(r)], order_by, message_type)
    except FilterError as exc:
        raise _invalid(f"Invalid filter or order_by: {exc}.") from None


def _page(items: Sequence[T], request: Any, page_size: int, page_token: str) -> tuple[list[T], str]:
    """One page of ``items`` and the token of the next ("" at the end).

    Tokens are bound to the request's parent, filter and order_by: another query cannot continue them.
    """
    if page_size < 0:
        raise _invalid("page_size must not be negative.")
    query = [request.parent, request.filter, request.order_by]
    size = min(page_size or _MAX_PAGE, _MAX_PAGE)
    offset = 0
    if page_token:
        try:
            token = json.loads(base64.urlsafe_b64decode(page_token.encode("ascii")))
            if token["query"] != query or not isinstance(token["offset"], int) or token["offset"] < 0:
                raise ValueError(page_token)
            offset = token["offset"]
        except (ValueError, KeyError, TypeError, UnicodeError):
            raise _invalid("Invalid page_token.") from None
    end = offset + size
    next_token = ""
    if end < len(items):
        next_token = base64.urlsafe_b64encode(json.dumps({"query": query, "offset": end}).encode()).decode("ascii")
    return list(items[offset:end]), next_token
