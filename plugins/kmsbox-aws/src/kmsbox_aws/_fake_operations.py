"""The KMS operations the fake answers itself, on moto's key records, the way AWS KMS answers them.

Moto keeps the keys (metadata, state, aliases, policies); this module owns what a KEK
provider and an operator rely on and moto does not do as AWS does: the cryptographic
operations (with :mod:`kmsbox_aws._fake_crypto`: real rotation of backing material, an
unambiguous encryption context, ``InvalidCiphertextException`` for bytes that are not
a ciphertext, key ARNs in replies), key usage and key state rules, the deletion window,
and explicit ``Deny`` statements of key policies (:mod:`kmsbox_aws._fake_policy`).
Each handler takes the request's JSON parameters and returns the reply's JSON, or
raises :class:`KmsError` with AWS's error code and message.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kmsbox_aws._fake_crypto import MATERIALS, CiphertextError, KeyMaterials, parse_key_id
from kmsbox_aws._fake_policy import PolicyError, PolicyRequest, check_policy, denied_by

__all__ = ["POLICY_CHECKED_OPERATIONS", "Caller", "KmsError", "KmsOperations"]

_SYMMETRIC = "SYMMETRIC_DEFAULT"
_MAX_PLAINTEXT = 4096
_STATE_WORDS = {
    "Disabled": "disabled",
    "PendingDeletion": "pending deletion",
    "PendingImport": "pending import",
    "PendingReplicaDeletion": "pending replica deletion",
    "Unavailable": "unavailable",
    "Creating": "being created",
    "Updating": "being updated",
}
_INCORRECT_KEY = "The key ID in the request does not identify a KMS key that can perform this operation."
_NO_SUCH_CIPHERTEXT_KEY = (
    "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
    "or you are not allowed to access."
)
_DRY_RUN = "The request would have succeeded, but the DryRun option is set."
#: Operations whose request carries a key policy the fake checks before moto stores it.
POLICY_CHECKED_OPERATIONS = frozenset({"CreateKey", "PutKeyPolicy"})


class KmsError(Exception):
    """An AWS KMS error answer: its ``__type`` code, message and HTTP status."""

    def __init__(self, code: str, message: str | None, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls, and where: the account and the region the request was signed for."""

    account: str
    region: str
    partition: str = "aws"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _blob(params: Mapping[str, Any], name: str) -> bytes:
    value = params.get(name)
    if value is None:
        raise KmsError(
            "ValidationException",
            f"1 validation error detected: Value null at '{name[0].lower() + name[1:]}' failed to satisfy "
            "constraint: Member must not be null",
        )
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KmsError("SerializationException", f"{name} is not valid base64") from None


def _context(params: Mapping[str, Any], name: str = "EncryptionContext") -> dict[str, str]:
    value = params.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise KmsError("SerializationException", f"{name} must map strings to strings")
    return value


def _invalid_state(key: Any) -> KmsError:
    """KMSInvalidStateException for a key whose state does not allow the operation."""
    state = str(key.key_state)
    return KmsError("KMSInvalidStateException", f"{key.arn} is {_STATE_WORDS.get(state, state)}.")


def _state_error(key: Any) -> KmsError | None:
    """The error AWS gives for using a key in a state that cannot do cryptography."""
    state = str(key.key_state)
    if state == "Enabled":
        return None
    if state == "Disabled":
        return KmsError("DisabledException", f"{key.arn} is disabled.")
    return _invalid_state(key)


class KmsOperations:
    """Handlers of the operations the fake answers itself; ``handle`` runs one under moto's lock."""

    def __init__(
        self, backends: Any, lock: threading.Lock | threading.RLock, materials: KeyMaterials = MATERIALS
    ) -> None:
        self._backends = backends
        self._lock = lock
        self._materials = materials
        self._handlers: dict[str, Callable[[Mapping[str, Any], Caller], dict[str, Any] | None]] = {
            "Encrypt": self.encrypt,
            "Decrypt": self.decrypt,
            "ReEncrypt": self.re_encrypt,
            "GenerateDataKey": self.generate_data_key,
            "GenerateDataKeyWithoutPlaintext": self.generate_data_key_without_plaintext,
            "GenerateDataKeyPair": self._unsupported,
            "GenerateDataKeyPairWithoutPlaintext": self._unsupported,
            "DescribeKey": self.describe_key,
            "RotateKeyOnDemand": self.rotate_key_on_demand,
            "ScheduleKeyDeletion": self.schedule_key_deletion,
            "CancelKeyDeletion": self.cancel_key_deletion,
            "EnableKey": self.enable_key,
            "DisableKey": self.disable_key,
        }

    def handles(self, operation: str) -> bool:
        """True for the operations answered here rather than by moto."""
        return operation in self._handlers

    def handle(self, operation: str, params: Mapping[str, Any], caller: Caller) -> dict[str, Any] | None:
        """Run ``operation``; its reply JSON (None: an empty body), or KmsError."""
        with self._lock:
            return self._handlers[operation](params, caller)

    @staticmethod
    def with_create_key_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
        """CreateKey's parameters with AWS's default key usage filled in (moto would store none)."""
        return {"KeyUsage": "ENCRYPT_DECRYPT", **params}

    @staticmethod
    def check_policy_parameter(params: Mapping[str, Any]) -> None:
        """MalformedPolicyDocumentException for a ``Policy`` the fake would not accept (CreateKey, PutKeyPolicy)."""
        if "Policy" not in params:
            return
        try:
            check_policy(params["Policy"])
        except PolicyError as exc:
            raise KmsError("MalformedPolicyDocumentException", str(exc)) from None

    # -- keys ---------------------------------------------------------------------------------

    def _backend(self, account: str, region: str) -> Any:
        return self._backends[account][region]

    def _key(self, key_id: Any, caller: Caller, *, aliases: bool = True) -> Any:
        """The moto key that a KeyId names (key ID, key ARN, alias name or alias ARN), or NotFoundException."""
        if not isinstance(key_id, str) or not key_id:
            raise KmsError(
                "ValidationException",
                "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
                "Member must not be null",
            )
        account, region, name = caller.account, caller.region, key_id
        if key_id.startswith("arn:"):
            parts = key_id.split(":", 5)
            if len(parts) != 6 or parts[2] != "kms" or parts[3] != caller.region:
                raise KmsError("NotFoundException", f"Invalid keyId {key_id}")
            account, name = parts[4], parts[5]
        backend = self._backend(account, region)
        display = f"arn:{caller.partition}:kms:{region}:{account}:{name if '/' in name else 'key/' + name}"
        if name.startswith("alias/"):
            if not aliases:
                raise KmsError("NotFoundException", f"Invalid keyId {key_id}")
            target = backend.get_key_id_from_alias(name)
            if target is None:
                raise KmsError("NotFoundException", f"Alias {display} is not found.")
            name = f"key/{target}"
        key = backend.keys.get(name.removeprefix("key/"))
        if key is None:
            raise KmsError("NotFoundException", f"Key '{display}' does not exist")
        return key

    def _authorize(self, action: str, key: Any, caller: Caller, context: Mapping[str, str]) -> None:
        request = PolicyRequest(action, str(key.arn), caller.account, context)
        if denied_by(key.policy, request):
            raise KmsError(
                "AccessDeniedException",
                f"User: {request.caller} is not authorized to perform: {action} on resource: {key.arn} "
                "with an explicit deny in a resource-based policy",
            )

    @staticmethod
    def _check_usable(key: Any, operation: str, algorithm: Any = None) -> None:
        """State first, then key usage and spec, as AWS checks them for cryptographic calls."""
        error = _state_error(key)
        if error is not None:
            raise error
        if key.key_usage != "ENCRYPT_DECRYPT":
            raise KmsError(
                "InvalidKeyUsageException",
                f"{key.arn} key usage is {key.key_usage} which is not valid for {operation}.",
            )
        if key.key_spec != _SYMMETRIC:
            if algorithm in (None, _SYMMETRIC) or operation.startswith("GenerateDataKey"):
                raise KmsError(
                    "InvalidKeyUsageException",
                    f"{key.arn} key spec is {key.key_spec} which is not valid for {operation} with "
                    f"{algorithm or _SYMMETRIC}.",
                )
            raise KmsError(
                "UnsupportedOperationException",
                f"the kmsbox fake does not model asymmetric encryption ({key.key_spec}, {algorithm})",
            )
        if algorithm not in (None, _SYMMETRIC):
            raise KmsError(
                "InvalidKeyUsageException", f"{key.arn} key spec is {_SYMMETRIC}, which does not support {algorithm}."
            )

    @staticmethod
    def _dry_run(params: Mapping[str, Any]) -> None:
        if params.get("DryRun") is True:
            raise KmsError("DryRunOperationException", _DRY_RUN)

    # -- cryptography ---------------------------------------------------------------------------

    def encrypt(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """Encrypt: 1 to 4096 bytes under the key's newest material."""
        key = self._key(params.get("KeyId"), caller)
        plaintext = _blob(params, "Plaintext")
        if not 1 <= len(plaintext) <= _MAX_PLAINTEXT:
            raise KmsError(
                "ValidationException",
                f"1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
                f"Member must have length between 1 and {_MAX_PLAINTEXT}",
            )
        context = _context(params)
        self._authorize("kms:Encrypt", key, caller, context)
        self._check_usable(key, "Encrypt", params.get("EncryptionAlgorithm"))
        self._dry_run(params)
        sealed = self._materials.encrypt(key.arn, key.id, plaintext, context)
        return {"CiphertextBlob": _b64(sealed.blob), "KeyId": key.arn, "EncryptionAlgorithm": _SYMMETRIC}

    def _ciphertext_key(self, blob: bytes, named: Any, caller: Caller) -> Any:
        """The key a ciphertext names, checked against the KeyId the caller named (if any)."""
        expected = self._key(named, caller) if named else None
        try:
            key_id = parse_key_id(blob)
        except CiphertextError:
            raise KmsError("InvalidCiphertextException", None) from None
        backend = self._backend(caller.account, caller.region)
        key = backend.keys.get(key_id)
        if expected is not None and (key is None or key.arn != expected.arn):
            raise KmsError("IncorrectKeyException", _INCORRECT_KEY)
        if key is None:
            raise KmsError("AccessDeniedException", _NO_SUCH_CIPHERTEXT_KEY)
        return key

    def _open(self, key: Any, blob: bytes, context: Mapping[str, str]) -> tuple[bytes, str]:
        try:
            return self._materials.decrypt(key.arn, blob, context)
        except CiphertextError:
            # Opaque, as AWS: wrong context, altered bytes and unknown material look the same.
            raise KmsError("InvalidCiphertextException", None) from None

    def decrypt(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """Decrypt: the key and material come from the ciphertext; ``KeyId``, if given, must name that key."""
        blob = _blob(params, "CiphertextBlob")
        key = self._ciphertext_key(blob, params.get("KeyId"), caller)
        context = _context(params)
        self._authorize("kms:Decrypt", key, caller, context)
        self._check_usable(key, "Decrypt", params.get("EncryptionAlgorithm"))
        self._dry_run(params)
        plaintext, material_id = self._open(key, blob, context)
        return {
            "KeyId": key.arn,
            "Plaintext": _b64(plaintext),
            "EncryptionAlgorithm": _SYMMETRIC,
            "KeyMaterialId": material_id,
        }

    def re_encrypt(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """ReEncrypt inside the fake: decrypt under the source, encrypt under the destination's newest material."""
        blob = _blob(params, "CiphertextBlob")
        source = self._ciphertext_key(blob, params.get("SourceKeyId"), caller)
        destination = self._key(params.get("DestinationKeyId"), caller)
        source_context = _context(params, "SourceEncryptionContext")
        destination_context = _context(params, "DestinationEncryptionContext")
        self._authorize("kms:ReEncryptFrom", source, caller, source_context)
        self._authorize("kms:ReEncryptTo", destination, caller, destination_context)
        self._check_usable(source, "ReEncrypt", params.get("SourceEncryptionAlgorithm"))
        self._check_usable(destination, "ReEncrypt", params.get("DestinationEncryptionAlgorithm"))
        self._dry_run(params)
        plaintext, source_material = self._open(source, blob, source_context)
        sealed = self._materials.encrypt(destination.arn, destination.id, plaintext, destination_context)
        return {
            "CiphertextBlob": _b64(sealed.blob),
            "SourceKeyId": source.arn,
            "KeyId": destination.arn,
            "SourceEncryptionAlgorithm": _SYMMETRIC,
            "DestinationEncryptionAlgorithm": _SYMMETRIC,
            "SourceKeyMaterialId": source_material,
            "DestinationKeyMaterialId": sealed.material_id,
        }

    def _data_key(self, params: Mapping[str, Any], caller: Caller, operation: str) -> dict[str, Any]:
        key = self._key(params.get("KeyId"), caller)
        size, spec = params.get("NumberOfBytes"), params.get("KeySpec")
        if (size is None) == (spec is None):
            raise KmsError("ValidationException", "Please specify either number of bytes or key spec.")
        if spec is not None and spec not in ("AES_256", "AES_128"):
            raise KmsError(
                "ValidationException",
                f"1 validation error detected: Value '{spec}' at 'keySpec' failed to satisfy constraint: "
                "Member must satisfy enum value set: [AES_256, AES_128]",
            )
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 1024):
            raise KmsError(
                "ValidationException",
                f"1 validation error detected: Value '{size}' at 'numberOfBytes' failed to satisfy constraint: "
                "Member must have value between 1 and 1024",
            )
        context = _context(params)
        self._authorize(f"kms:{operation}", key, caller, context)
        self._check_usable(key, operation)
        self._dry_run(params)
        data_key = os.urandom(size if size is not None else (32 if spec == "AES_256" else 16))
        sealed = self._materials.encrypt(key.arn, key.id, data_key, context)
        return {
            "CiphertextBlob": _b64(sealed.blob),
            "Plaintext": _b64(data_key),
            "KeyId": key.arn,
            "KeyMaterialId": sealed.material_id,
        }

    def generate_data_key(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """GenerateDataKey: a fresh data key, in plaintext and encrypted."""
        return self._data_key(params, caller, "GenerateDataKey")

    def generate_data_key_without_plaintext(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """GenerateDataKeyWithoutPlaintext: the same, encrypted only."""
        reply = self._data_key(params, caller, "GenerateDataKeyWithoutPlaintext")
        del reply["Plaintext"]
        return reply

    @staticmethod
    def _unsupported(params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        # moto would answer with its own ciphertexts, which this fake's Decrypt refuses: say so instead.
        raise KmsError("UnsupportedOperationException", "the kmsbox fake does not model data key pairs")

    # -- key management -------------------------------------------------------------------------

    def describe_key(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """DescribeKey, checked against the key policy (moto's own check ignores conditions)."""
        key = self._key(params.get("KeyId"), caller)
        self._authorize("kms:DescribeKey", key, caller, {})
        return {"KeyMetadata": key.to_dict()["KeyMetadata"]}

    def rotate_key_on_demand(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """RotateKeyOnDemand: new backing material for new ciphertexts; older ones still decrypt."""
        key = self._key(params.get("KeyId"), caller)
        if str(key.key_state) != "Enabled":
            raise _invalid_state(key)
        if key.key_usage != "ENCRYPT_DECRYPT" or key.key_spec != _SYMMETRIC:
            raise KmsError(
                "UnsupportedOperationException",
                f"{key.arn} is not a symmetric encryption key; only those rotate on demand.",
            )
        self._materials.rotate(key.arn)
        self._backend(caller.account, caller.region).rotate_key_on_demand(key.id)  # moto lists the rotation
        return {"KeyId": key.arn}

    def schedule_key_deletion(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """ScheduleKeyDeletion: a waiting period of 7 to 30 days (30 by default)."""
        key = self._key(params.get("KeyId"), caller, aliases=False)
        days = params.get("PendingWindowInDays", 30)
        if not isinstance(days, int) or isinstance(days, bool) or not 7 <= days <= 30:
            raise KmsError("ValidationException", "PendingWindowInDays must be between 7 and 30")
        if str(key.key_state) == "PendingDeletion":
            raise _invalid_state(key)
        deletion_date = self._backend(caller.account, caller.region).schedule_key_deletion(key.id, days)
        return {
            "KeyId": key.arn,
            "DeletionDate": deletion_date,
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        }

    def cancel_key_deletion(self, params: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """CancelKeyDeletion: the key becomes Disabled."""
        key = self._key(params.get("KeyId"), caller, aliases=False)
        if str(key.key_state) != "PendingDeletion":
            raise KmsError("KMSInvalidStateException", f"{key.arn} is not pending deletion.")
        self._backend(caller.account, caller.region).cancel_key_deletion(key.id)
        return {"KeyId": key.arn}

    def _set_enabled(self, params: Mapping[str, Any], caller: Caller, enabled: bool) -> None:
        key = self._key(params.get("KeyId"), caller, aliases=False)
        if str(key.key_state) not in ("Enabled", "Disabled"):
            raise _invalid_state(key)
        backend = self._backend(caller.account, caller.region)
        (backend.enable_key if enabled else backend.disable_key)(key.id)

    def enable_key(self, params: Mapping[str, Any], caller: Caller) -> None:
        """EnableKey: refused for a key pending deletion."""
        self._set_enabled(params, caller, True)

    def disable_key(self, params: Mapping[str, Any], caller: Caller) -> None:
        """DisableKey: refused for a key pending deletion."""
        self._set_enabled(params, caller, False)
