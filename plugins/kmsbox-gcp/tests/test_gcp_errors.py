"""How Cloud KMS failures map onto kmsbox's errors (the SDK's own exception classes, no client)."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from kmsbox_gcp.errors import ChecksumMismatch, classify, translate

from kmsbox.errors import IntegrityError, KeyUnavailable

CHECKSUM = "The checksum in field ciphertext_crc32c did not match the data in field ciphertext."


@pytest.mark.parametrize(
    ("exc", "transient", "code"),
    [
        (gexc.ServiceUnavailable("down"), True, "UNAVAILABLE"),
        (gexc.ResourceExhausted("quota"), True, "RESOURCE_EXHAUSTED"),
        (gexc.TooManyRequests("HTTP 429 without a gRPC status"), True, "HTTP_429"),
        (gexc.Forbidden("HTTP 403 without a gRPC status"), False, "HTTP_403"),
        (gexc.DeadlineExceeded("slow"), True, "DEADLINE_EXCEEDED"),
        (gexc.InternalServerError("oops"), True, "INTERNAL"),
        (gexc.InternalServerError("Exception deserializing response!"), False, "BAD_RESPONSE"),
        (
            gexc.PermissionDenied("Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied"),
            False,
            "PERMISSION_DENIED",
        ),
        (gexc.NotFound("CryptoKey x not found."), False, "NOT_FOUND"),
        (gexc.Unauthenticated("no token"), False, "UNAUTHENTICATED"),
        (gexc.InvalidArgument("plaintext is required."), False, "INVALID_ARGUMENT"),
        (gexc.InvalidArgument(CHECKSUM), True, "CRC32C_MISMATCH"),
        (ChecksumMismatch("response corrupted"), True, "CRC32C_MISMATCH"),
        (auth_exceptions.TransportError("token endpoint unreachable"), True, "UNAVAILABLE"),
        (auth_exceptions.RefreshError("invalid_grant"), False, "UNAUTHENTICATED"),
    ],
)
def test_classify(exc: Exception, transient: bool, code: str) -> None:
    mapped = classify(exc)
    assert mapped is not None
    assert (mapped.transient, mapped.code) == (transient, code)


def test_exceptions_that_are_not_cloud_kms_are_not_classified() -> None:
    assert classify(ValueError("a bug")) is None


def test_failed_precondition_is_key_unavailable() -> None:
    error = gexc.FailedPrecondition("projects/p/.../cryptoKeyVersions/1 is not enabled, current state is: DISABLED.")
    assert isinstance(translate(error, decrypting=True, resource="k"), KeyUnavailable)
    assert isinstance(translate(error, decrypting=False, resource="k"), KeyUnavailable)


def test_rejected_ciphertext_is_an_opaque_integrity_error_only_when_decrypting() -> None:
    error = gexc.InvalidArgument("Decryption failed: the ciphertext is invalid.")
    mapped = translate(error, decrypting=True, resource="k")
    assert isinstance(mapped, IntegrityError) and "ciphertext is invalid" not in str(mapped)
    assert translate(error, decrypting=False, resource="k") is None


def test_request_checksum_mismatch_on_decrypt_is_not_an_integrity_error() -> None:
    assert translate(gexc.InvalidArgument(CHECKSUM), decrypting=True, resource="k") is None
