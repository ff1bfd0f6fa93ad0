"""AWS KMS's rules that the fake follows where moto alone does not, seen through boto3.

Each test names the behaviour of real AWS KMS it checks: deletion windows, key states,
key usage, rotation of backing material, the encryption context's binding, errors for
bytes that are not a ciphertext, and key ARNs in replies.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kmsbox_aws import parse_uri

KEY = b"k" * 32


def _error(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["Error"].get("Message", "")


@pytest.fixture
def key_arn(kms: Any) -> str:
    """A new symmetric encryption key of this test (free to disable, rotate or schedule for deletion)."""
    return str(kms.create_key(Description="rules test")["KeyMetadata"]["Arn"])


# -- deletion window and key states ----------------------------------------------------------------


@pytest.mark.parametrize("days", [3, 6, 31, 365])
def test_deletion_window_outside_7_to_30_days_is_a_validation_error(kms: Any, key_arn: str, days: int) -> None:
    code, message = _error(lambda: kms.schedule_key_deletion(KeyId=key_arn, PendingWindowInDays=days))
    assert (code, message) == ("ValidationException", "PendingWindowInDays must be between 7 and 30")
    assert kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"] == "Enabled"


@pytest.mark.parametrize("days", [7, 30])
def test_scheduling_deletion_answers_with_the_date_state_and_window(kms: Any, key_arn: str, days: int) -> None:
    key_id = key_arn.split("/")[-1]
    reply = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=days)
    assert reply["KeyId"] == key_arn and reply["KeyState"] == "PendingDeletion"
    assert reply["PendingWindowInDays"] == days
    expected = time.time() + days * 86400
    assert abs(reply["DeletionDate"].timestamp() - expected) < 120


def test_default_deletion_window_is_30_days(kms: Any, key_arn: str) -> None:
    reply = kms.schedule_key_deletion(KeyId=key_arn)
    assert reply["PendingWindowInDays"] == 30
    assert abs(reply["DeletionDate"].timestamp() - (time.time() + 30 * 86400)) < 120


def test_a_key_pending_deletion_can_be_neither_enabled_disabled_nor_scheduled_again(kms: Any, key_arn: str) -> None:
    kms.schedule_key_deletion(KeyId=key_arn, PendingWindowInDays=7)
    for call in (
        lambda: kms.enable_key(KeyId=key_arn),
        lambda: kms.disable_key(KeyId=key_arn),
        lambda: kms.schedule_key_deletion(KeyId=key_arn, PendingWindowInDays=7),
        lambda: kms.rotate_key_on_demand(KeyId=key_arn),
    ):
        assert _error(call) == ("KMSInvalidStateException", f"{key_arn} is pending deletion.")
    assert kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_cancelled_deletion_leaves_the_key_disabled_until_enabled(kms: Any, key_arn: str) -> None:
    assert _error(lambda: kms.cancel_key_deletion(KeyId=key_arn))[0] == "KMSInvalidStateException"
    kms.schedule_key_deletion(KeyId=key_arn, PendingWindowInDays=7)
    assert kms.cancel_key_deletion(KeyId=key_arn)["KeyId"] == key_arn
    assert kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"] == "Disabled"
    assert _error(lambda: kms.encrypt(KeyId=key_arn, Plaintext=KEY)) == ("DisabledException", f"{key_arn} is disabled.")
    kms.enable_key(KeyId=key_arn)
    assert kms.encrypt(KeyId=key_arn, Plaintext=KEY)["KeyId"] == key_arn


def test_enable_and_disable_take_key_ids_and_arns_not_aliases(kms: Any, key_arn: str) -> None:
    alias = f"alias/rules-{uuid.uuid4().hex[:10]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_arn)
    assert _error(lambda: kms.disable_key(KeyId=alias))[0] == "NotFoundException"
    kms.disable_key(KeyId=key_arn.split("/")[-1])
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=key_arn)
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["Enabled"] is True


# -- key usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "spec"),
    [("SIGN_VERIFY", "RSA_2048"), ("SIGN_VERIFY", "ECC_NIST_P256"), ("GENERATE_VERIFY_MAC", "HMAC_256")],
)
def test_a_key_not_for_encryption_refuses_encryption_with_invalid_key_usage(kms: Any, usage: str, spec: str) -> None:
    arn = kms.create_key(KeyUsage=usage, KeySpec=spec)["KeyMetadata"]["Arn"]
    for operation, call in (
        ("Encrypt", lambda: kms.encrypt(KeyId=arn, Plaintext=KEY)),
        ("GenerateDataKey", lambda: kms.generate_data_key(KeyId=arn, KeySpec="AES_256")),
        (
            "GenerateDataKeyWithoutPlaintext",
            lambda: kms.generate_data_key_without_plaintext(KeyId=arn, NumberOfBytes=32),
        ),
    ):
        assert _error(call) == (
            "InvalidKeyUsageException",
            f"{arn} key usage is {usage} which is not valid for {operation}.",
        )


def test_a_symmetric_key_refuses_an_asymmetric_algorithm(kms: Any, key_arn: str) -> None:
    code, _ = _error(lambda: kms.encrypt(KeyId=key_arn, Plaintext=KEY, EncryptionAlgorithm="RSAES_OAEP_SHA_256"))
    assert code == "InvalidKeyUsageException"


# -- rotation of backing material ------------------------------------------------------------------


def test_on_demand_rotation_changes_the_material_and_keeps_old_ciphertexts(kms: Any, key_arn: str) -> None:
    before = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    old_material = kms.decrypt(CiphertextBlob=before)["KeyMaterialId"]
    assert kms.list_key_rotations(KeyId=key_arn)["Rotations"] == []

    assert kms.rotate_key_on_demand(KeyId=key_arn)["KeyId"] == key_arn
    after = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    old, new = kms.decrypt(CiphertextBlob=before), kms.decrypt(CiphertextBlob=after)
    assert old["Plaintext"] == new["Plaintext"] == KEY
    assert old["KeyMaterialId"] == old_material != new["KeyMaterialId"]
    # ReEncrypt moves an old ciphertext to the newest material.
    moved = kms.re_encrypt(CiphertextBlob=before, DestinationKeyId=key_arn)
    assert (moved["SourceKeyMaterialId"], moved["DestinationKeyMaterialId"]) == (old_material, new["KeyMaterialId"])

    kms.rotate_key_on_demand(KeyId=key_arn)
    rotations = kms.list_key_rotations(KeyId=key_arn)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND", "ON_DEMAND"]
    assert kms.decrypt(CiphertextBlob=before)["Plaintext"] == KEY


def test_the_fakes_rotate_key_rotates_the_material_too(aws_fake: Any, kms: Any, key_arn: str) -> None:
    before = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    assert aws_fake.rotate_key("aws-kms://" + key_arn) == key_arn
    after = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=before)["KeyMaterialId"] != kms.decrypt(CiphertextBlob=after)["KeyMaterialId"]


def test_a_disabled_key_cannot_rotate(kms: Any, key_arn: str) -> None:
    kms.disable_key(KeyId=key_arn)
    assert _error(lambda: kms.rotate_key_on_demand(KeyId=key_arn)) == (
        "KMSInvalidStateException",
        f"{key_arn} is disabled.",
    )


# -- the encryption context and the ciphertext -------------------------------------------------------


@pytest.mark.parametrize(
    ("made_with", "opened_with"),
    [
        ({"ab": "c"}, {"a": "bc"}),
        ({"a": "bc"}, {"ab": "c"}),
        ({"a": "b", "c": "d"}, {"a": "bc", "": "d"}),
        ({"a": "b"}, {"a": "b", "c": ""}),
        ({"a": "b"}, {}),
    ],
)
def test_contexts_that_concatenate_alike_do_not_open_each_others_ciphertexts(
    kms: Any, key_arn: str, made_with: dict[str, str], opened_with: dict[str, str]
) -> None:
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY, EncryptionContext=made_with)["CiphertextBlob"]
    assert _error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=opened_with)) == (
        "InvalidCiphertextException",
        "",
    )
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(made_with.items())))["Plaintext"] == KEY


@pytest.mark.parametrize("garbage", [b"x", b"\x00" * 200, bytes(range(256)), b"\x01\x6b\x24" + b"0" * 60])
def test_bytes_that_are_not_a_ciphertext_are_invalid_ciphertext(kms: Any, garbage: bytes) -> None:
    assert _error(lambda: kms.decrypt(CiphertextBlob=garbage))[0] == "InvalidCiphertextException"


def test_altered_and_truncated_ciphertexts_are_invalid_ciphertext(kms: Any, key_arn: str) -> None:
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    for bad in (blob[:-1], blob[:60], blob[:-1] + bytes([blob[-1] ^ 1]), blob + b"\x00"):
        assert _error(lambda bad=bad: kms.decrypt(CiphertextBlob=bad))[0] == "InvalidCiphertextException"


def test_a_ciphertext_of_a_key_that_does_not_exist_is_access_denied_as_in_aws(kms: Any, key_arn: str) -> None:
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    key_id = key_arn.split("/")[-1].encode()
    orphan = blob.replace(key_id, str(uuid.uuid4()).encode())
    code, message = _error(lambda: kms.decrypt(CiphertextBlob=orphan))
    assert code == "AccessDeniedException" and "does not exist" in message


def test_dry_run_checks_but_does_not_encrypt(kms: Any, key_arn: str) -> None:
    assert _error(lambda: kms.encrypt(KeyId=key_arn, Plaintext=KEY, DryRun=True))[0] == "DryRunOperationException"


def test_plaintext_over_4096_bytes_is_a_validation_error(kms: Any, key_arn: str) -> None:
    assert _error(lambda: kms.encrypt(KeyId=key_arn, Plaintext=b"x" * 4097))[0] == "ValidationException"


@pytest.mark.parametrize(("size", "spec"), [(None, None), (32, "AES_256"), (1025, None), (None, "AES_512")])
def test_data_key_size_rules(kms: Any, key_arn: str, size: int | None, spec: str | None) -> None:
    options: dict[str, Any] = {"KeyId": key_arn}
    if size is not None:
        options["NumberOfBytes"] = size
    if spec is not None:
        options["KeySpec"] = spec
    code, _ = _error(lambda: kms.generate_data_key(**options))
    assert code == "ValidationException"


def test_data_key_pairs_are_refused_rather_than_answered_with_moto_ciphertexts(kms: Any, key_arn: str) -> None:
    assert _error(lambda: kms.generate_data_key_pair(KeyId=key_arn, KeyPairSpec="RSA_2048"))[0] == (
        "UnsupportedOperationException"
    )


# -- key ARNs in replies -----------------------------------------------------------------------------


def test_replies_name_the_key_by_arn_whatever_the_request_used(aws_fake: Any, kms: Any, alias_uri: str) -> None:
    alias_arn = parse_uri(alias_uri).arn
    key_arn = kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["Arn"]
    for name in (key_arn, key_arn.split("/")[-1], alias_arn, "alias/" + alias_arn.split(":alias/")[1]):
        encrypted = kms.encrypt(KeyId=name, Plaintext=KEY)
        assert encrypted["KeyId"] == key_arn
        assert kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], KeyId=name)["KeyId"] == key_arn
        moved = kms.re_encrypt(CiphertextBlob=encrypted["CiphertextBlob"], DestinationKeyId=name, SourceKeyId=name)
        assert (moved["KeyId"], moved["SourceKeyId"]) == (key_arn, key_arn)
        assert kms.generate_data_key(KeyId=name, KeySpec="AES_256")["KeyId"] == key_arn
        assert kms.generate_data_key_without_plaintext(KeyId=name, NumberOfBytes=16)["KeyId"] == key_arn


def test_a_generated_data_key_decrypts_to_its_plaintext(kms: Any, key_arn: str) -> None:
    reply = kms.generate_data_key(KeyId=key_arn, NumberOfBytes=24, EncryptionContext={"a": "b"})
    assert len(reply["Plaintext"]) == 24
    opened = kms.decrypt(CiphertextBlob=reply["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert opened["Plaintext"] == reply["Plaintext"] and opened["KeyMaterialId"] == reply["KeyMaterialId"]


def test_unknown_keys_and_aliases_are_not_found(kms: Any) -> None:
    missing = str(uuid.uuid4())
    code, message = _error(lambda: kms.encrypt(KeyId=missing, Plaintext=KEY))
    assert code == "NotFoundException" and missing in message
    code, message = _error(lambda: kms.encrypt(KeyId="alias/kmsbox-no-such-alias", Plaintext=KEY))
    assert code == "NotFoundException" and message.endswith(":alias/kmsbox-no-such-alias is not found.")


def test_ciphertexts_carry_no_key_material_in_the_clear(kms: Any, key_arn: str) -> None:
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    assert KEY not in blob and base64.b64encode(KEY) not in blob


# -- requests no SDK would send ------------------------------------------------------------------


def _raw(aws_fake: Any, operation: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST a request body as is, with the headers of a signed KMS request."""
    request = urllib.request.Request(
        aws_fake.endpoint,
        data=body,
        method="POST",
        headers={
            "X-Amz-Target": f"TrentService.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/kms/aws4_request, "
            "SignedHeaders=host, Signature=00",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize(
    ("operation", "body", "code"),
    [
        ("Encrypt", b"{not json", "ValidationException"),
        ("Encrypt", b'{"KeyId": 7, "Plaintext": "AAAA"}', "ValidationException"),
        ("Encrypt", b'{"KeyId": "KEY", "Plaintext": "%%%"}', "SerializationException"),
        ("Encrypt", b'{"KeyId": "KEY", "Plaintext": "AAAA", "EncryptionContext": {"a": 1}}', "SerializationException"),
        ("Encrypt", b'{"KeyId": "KEY", "Plaintext": "AAAA", "EncryptionContext": ["a"]}', "SerializationException"),
        ("Decrypt", b'{"CiphertextBlob": null}', "ValidationException"),
        ("ScheduleKeyDeletion", b'{"KeyId": "KEY", "PendingWindowInDays": "seven"}', "ValidationException"),
        ("ScheduleKeyDeletion", b'{"KeyId": "KEY", "PendingWindowInDays": true}', "ValidationException"),
        ("GenerateDataKey", b'{"KeyId": "KEY", "NumberOfBytes": "32"}', "ValidationException"),
        (
            "Encrypt",
            b'{"KeyId": "arn:aws:kms:eu-west-1:123456789012:key/KEY", "Plaintext": "AAAA"}',
            "NotFoundException",
        ),
    ],
)
def test_malformed_requests_get_typed_errors_and_change_nothing(
    aws_fake: Any, kms: Any, key_arn: str, operation: str, body: bytes, code: str
) -> None:
    status, reply = _raw(aws_fake, operation, body.replace(b"KEY", key_arn.split("/")[-1].encode()))
    assert (status, reply.get("__type")) == (400, code)
    assert kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"] == "Enabled"
