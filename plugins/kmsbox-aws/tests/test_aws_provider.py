"""The AWS KMS provider against the fake, through the official boto3 client."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kmsbox_aws import AwsKmsKekProvider
from kmsbox_aws.provider import ALIAS_CONTEXT_KEY

from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import WrappedKey, open_kek

CONTEXT = {"kmsbox:namespace": "app:production", "kmsbox:key-version": "3"}
MISSING_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000"


def _error_code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def test_context_is_sent_as_kms_encryption_context(kek: AwsKmsKekProvider, kms: Any) -> None:
    key = os.urandom(32)
    wrapped = kek.wrap(key, CONTEXT)
    reply = kms.decrypt(CiphertextBlob=wrapped.ciphertext, EncryptionContext=CONTEXT, KeyId=kek.arn)
    assert reply["Plaintext"] == key
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=wrapped.ciphertext, EncryptionContext={**CONTEXT, "kmsbox:key-version": "4"})
    assert _error_code(info) == "InvalidCiphertextException"


def test_unwraps_what_boto3_encrypted_directly(kek: AwsKmsKekProvider, kms: Any) -> None:
    key = os.urandom(32)
    reply = kms.encrypt(KeyId=kek.arn, Plaintext=key, EncryptionContext=CONTEXT)
    assert kek.unwrap(WrappedKey(kek.uri, reply["KeyId"], reply["CiphertextBlob"]), CONTEXT) == key


def test_version_is_the_key_arn(kek: AwsKmsKekProvider) -> None:
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    assert wrapped.key_version == kek.arn == kek.primary_version()
    assert kek.version_available(kek.arn) is True


def test_alias_uri_records_the_target_key(alias_kek: AwsKmsKekProvider, kms: Any) -> None:
    target = kms.describe_key(KeyId=alias_kek.arn)["KeyMetadata"]["Arn"]
    key = os.urandom(32)
    wrapped = alias_kek.wrap(key, CONTEXT)
    assert wrapped.kek_uri == alias_kek.uri and wrapped.key_version == target == alias_kek.primary_version()
    assert alias_kek.unwrap(wrapped, CONTEXT) == key
    assert alias_kek.describe()["primary_version"] == target


def test_rewrap_uses_reencrypt_only(kek: AwsKmsKekProvider, aws_fake: Any) -> None:
    keys = [os.urandom(32) for _ in range(3)]
    wrapped = [kek.wrap(k, CONTEXT) for k in keys]
    aws_fake.faults.reset_counts()
    rewrapped = kek.rewrap_many([(w, CONTEXT) for w in wrapped])
    assert aws_fake.faults.calls == {"ReEncrypt": 3}
    assert [r.ciphertext != w.ciphertext for r, w in zip(rewrapped, wrapped, strict=True)] == [True] * 3
    assert [kek.unwrap(r, CONTEXT) for r in rewrapped] == keys


def test_rewrap_with_wrong_context_is_integrity_error(kek: AwsKmsKekProvider) -> None:
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(IntegrityError):
        kek.rewrap(wrapped, {**CONTEXT, "kmsbox:namespace": "other"})


def test_disabled_key_is_key_unavailable(own_kek: AwsKmsKekProvider, kms: Any) -> None:
    key = os.urandom(32)
    wrapped = own_kek.wrap(key, CONTEXT)
    kms.disable_key(KeyId=own_kek.arn)
    try:
        assert own_kek.version_available(wrapped.key_version) is False
        with pytest.raises(KeyUnavailable, match="is disabled"):
            own_kek.unwrap(wrapped, CONTEXT)
        with pytest.raises(KeyUnavailable):
            own_kek.rewrap(wrapped, CONTEXT)
        with pytest.raises(ProviderError) as info:
            own_kek.wrap(key, CONTEXT)
        assert info.value.transient is False and info.value.code == "DisabledException"
    finally:
        kms.enable_key(KeyId=own_kek.arn)
    assert own_kek.unwrap(wrapped, CONTEXT) == key


def test_key_pending_deletion_is_key_unavailable(own_kek: AwsKmsKekProvider, kms: Any) -> None:
    wrapped = own_kek.wrap(os.urandom(32), CONTEXT)
    kms.schedule_key_deletion(KeyId=own_kek.arn, PendingWindowInDays=7)
    assert own_kek.version_available(wrapped.key_version) is False
    with pytest.raises(KeyUnavailable, match="pending deletion"):
        own_kek.unwrap(wrapped, CONTEXT)


def test_missing_key(monkeypatch: pytest.MonkeyPatch, aws_fake: Any) -> None:
    provider = open_kek(f"aws-kms://{MISSING_KEY}")
    with pytest.raises(ProviderError) as info:
        provider.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is False and info.value.code == "NotFoundException"
    assert provider.version_available(MISSING_KEY) is False
    with pytest.raises(KeyUnavailable):
        provider.unwrap(WrappedKey(provider.uri, MISSING_KEY, os.urandom(96)), CONTEXT)


def test_ciphertext_of_another_key_is_refused_by_kms(kek: AwsKmsKekProvider, own_kek: AwsKmsKekProvider) -> None:
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    # Claim the other key's version, so that the request reaches KMS with KeyId = the other key.
    with pytest.raises(IntegrityError):
        own_kek.unwrap(WrappedKey(own_kek.uri, own_kek.arn, wrapped.ciphertext), CONTEXT)
    with pytest.raises(IntegrityError):
        own_kek.rewrap(WrappedKey(own_kek.uri, own_kek.arn, wrapped.ciphertext), CONTEXT)


def test_altered_version_of_alias_wrap_is_integrity_error(alias_kek: AwsKmsKekProvider, kek: AwsKmsKekProvider) -> None:
    wrapped = alias_kek.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(IntegrityError):
        alias_kek.unwrap(WrappedKey(wrapped.kek_uri, kek.arn, wrapped.ciphertext), CONTEXT)


@pytest.mark.parametrize("version", ["v1", "", MISSING_KEY.replace("us-east-1", "eu-west-1"), "arn:aws:kms:x"])
def test_foreign_version_is_key_unavailable_without_a_call(kek: AwsKmsKekProvider, aws_fake: Any, version: str) -> None:
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    aws_fake.faults.reset_counts()
    with pytest.raises(KeyUnavailable):
        kek.unwrap(WrappedKey(kek.uri, version, wrapped.ciphertext), CONTEXT)
    assert kek.version_available(version) is False
    assert aws_fake.faults.total_calls() == 0


def test_wrapped_by_another_uri_is_key_unavailable(kek: AwsKmsKekProvider, alias_kek: AwsKmsKekProvider) -> None:
    wrapped = alias_kek.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyUnavailable):
        kek.unwrap(wrapped, CONTEXT)


@pytest.mark.parametrize("blob", [b"", b"\x00" * 6145])
def test_impossible_ciphertext_is_integrity_error_without_a_call(
    kek: AwsKmsKekProvider, aws_fake: Any, blob: bytes
) -> None:
    aws_fake.faults.reset_counts()
    with pytest.raises(IntegrityError):
        kek.unwrap(WrappedKey(kek.uri, kek.arn, blob), CONTEXT)
    assert aws_fake.faults.total_calls() == 0


def test_garbage_ciphertext_is_integrity_error(kek: AwsKmsKekProvider) -> None:
    with pytest.raises(IntegrityError):
        kek.unwrap(WrappedKey(kek.uri, kek.arn, os.urandom(120)), CONTEXT)


def test_non_string_context_is_type_error(kek: AwsKmsKekProvider) -> None:
    with pytest.raises(TypeError):
        kek.wrap(os.urandom(32), {"n": 1})  # type: ignore[dict-item]


def test_alias_rotation_makes_a_new_version_and_old_ones_still_unwrap(
    alias_kek: AwsKmsKekProvider, aws_fake: Any, kms: Any
) -> None:
    key = os.urandom(32)
    old = alias_kek.wrap(key, CONTEXT)
    new_version = aws_fake.rotate_key(alias_kek.uri)
    assert new_version != old.key_version and alias_kek.primary_version() == new_version
    # The key the alias used to name still unwraps through the alias URI, like an older KEK version...
    assert alias_kek.version_available(old.key_version) is True
    assert alias_kek.unwrap(old, CONTEXT) == key
    # ...and rewrap moves the wrapped key to the new one inside KMS.
    aws_fake.faults.reset_counts()
    moved = alias_kek.rewrap(old, CONTEXT)
    assert moved.key_version == new_version and aws_fake.faults.calls == {"ReEncrypt": 1}
    assert alias_kek.unwrap(moved, CONTEXT) == key
    # Once the old key is disabled, its version is unavailable.
    kms.disable_key(KeyId=old.key_version)
    assert alias_kek.version_available(old.key_version) is False
    with pytest.raises(KeyUnavailable):
        alias_kek.unwrap(old, CONTEXT)


def test_alias_wraps_are_bound_to_the_alias(alias_kek: AwsKmsKekProvider, kms: Any) -> None:
    key = os.urandom(32)
    wrapped = alias_kek.wrap(key, CONTEXT)
    # The alias ARN is part of the encryption context...
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=wrapped.ciphertext, EncryptionContext=CONTEXT, KeyId=wrapped.key_version)
    assert _error_code(info) == "InvalidCiphertextException"
    bound = {**CONTEXT, ALIAS_CONTEXT_KEY: alias_kek.arn}
    assert kms.decrypt(CiphertextBlob=wrapped.ciphertext, EncryptionContext=bound)["Plaintext"] == key
    # ...so another alias of the very same key cannot unwrap it.
    second = alias_kek.arn + "-second"
    kms.create_alias(AliasName="alias/" + second.split(":alias/")[1], TargetKeyId=wrapped.key_version)
    other = open_kek("aws-kms://" + second)
    with pytest.raises(IntegrityError):
        other.unwrap(WrappedKey(other.uri, wrapped.key_version, wrapped.ciphertext), CONTEXT)
    with pytest.raises(ValueError, match="reserved"):
        alias_kek.wrap(key, {ALIAS_CONTEXT_KEY: "x"})
    other.close()


def test_key_arn_rotation_keeps_the_version(own_kek: AwsKmsKekProvider, aws_fake: Any, kms: Any) -> None:
    key = os.urandom(32)
    wrapped = own_kek.wrap(key, CONTEXT)
    assert aws_fake.rotate_key(own_kek.uri) == own_kek.arn
    assert kms.list_key_rotations(KeyId=own_kek.arn)["Rotations"][0]["RotationType"] == "ON_DEMAND"
    rewrapped = own_kek.rewrap(wrapped, CONTEXT)
    assert rewrapped.key_version == own_kek.arn
    assert own_kek.unwrap(rewrapped, CONTEXT) == own_kek.unwrap(wrapped, CONTEXT) == key


def test_describe_names_the_key_without_secrets(alias_kek: AwsKmsKekProvider) -> None:
    key = os.urandom(32)
    alias_kek.wrap(key, CONTEXT)
    description = alias_kek.describe()
    assert description["provider"] == "aws-kms" and description["key_type"] == "alias"
    assert description["key"] == alias_kek.arn and description["region"] == "us-east-1"
    assert all(isinstance(v, str) for v in description.values())
    assert key.hex() not in repr(description) + repr(alias_kek)


def test_missing_credentials_is_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, aws_fake: Any) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    provider = open_kek(aws_fake.kek_uri)
    with pytest.raises(ConfigError, match="credentials"):
        provider.wrap(os.urandom(32), CONTEXT)


def test_concurrent_use_from_threads(kek: AwsKmsKekProvider) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                key = os.urandom(32)
                context = {**CONTEXT, "thread": str(i), "j": str(j)}
                assert kek.unwrap(kek.wrap(key, context), context) == key
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
