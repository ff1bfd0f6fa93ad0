"""Key policies in the fake AWS KMS: an explicit Deny stops the KEK operations, as AWS words it."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kmsbox_aws import AwsKmsKekProvider

from kmsbox.errors import ProviderError
from kmsbox.kek import open_kek

ACCOUNT = "123456789012"
CALLER = f"arn:aws:iam::{ACCOUNT}:user/kmsbox-fake"
KEY = b"k" * 32
CONTEXT = {"kmsbox:namespace": "app"}
ALLOW_ROOT = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "kms:*",
    "Resource": "*",
}


def _policy(*deny: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [ALLOW_ROOT, *deny]})


def _deny(action: str | list[str], principal: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Principal": principal, "Action": action, "Resource": "*", **extra}


def _error(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["Error"].get("Message", "")


def _denied_message(action: str, arn: str) -> str:
    return (
        f"User: {CALLER} is not authorized to perform: {action} on resource: {arn} "
        "with an explicit deny in a resource-based policy"
    )


@pytest.fixture
def key_arn(kms: Any) -> str:
    return str(kms.create_key(Description="policy test")["KeyMetadata"]["Arn"])


def test_a_key_made_without_a_usage_is_an_encryption_key(kms: Any, key_arn: str) -> None:
    metadata = kms.describe_key(KeyId=key_arn)["KeyMetadata"]
    assert (metadata["KeyUsage"], metadata["KeySpec"]) == ("ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT")


def test_a_deny_of_decrypt_stops_decrypt_and_only_decrypt(kms: Any, key_arn: str) -> None:
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy(_deny("kms:Decrypt")))
    assert _error(lambda: kms.decrypt(CiphertextBlob=blob)) == (
        "AccessDeniedException",
        _denied_message("kms:Decrypt", key_arn),
    )
    assert kms.encrypt(KeyId=key_arn, Plaintext=KEY)["KeyId"] == key_arn
    assert json.loads(kms.get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"])["Statement"][1]["Action"] == (
        "kms:Decrypt"
    )
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy())
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == KEY


@pytest.mark.parametrize(
    ("denied", "stopped"),
    [
        ("kms:Encrypt", {"Encrypt"}),
        ("kms:ReEncrypt*", {"ReEncrypt"}),
        ("kms:ReEncryptFrom", {"ReEncrypt"}),
        ("kms:ReEncryptTo", {"ReEncrypt"}),
        ("kms:GenerateDataKey*", {"GenerateDataKey", "GenerateDataKeyWithoutPlaintext"}),
        ("kms:GenerateDataKeyWithoutPlaintext", {"GenerateDataKeyWithoutPlaintext"}),
        ("kms:*", {"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext"}),
        ("KMS:decrypt", {"Decrypt"}),  # action names are not case-sensitive
        (["kms:Encrypt", "kms:Decrypt"], {"Encrypt", "Decrypt"}),
    ],
)
def test_each_kek_operation_answers_to_its_own_action(
    kms: Any, key_arn: str, denied: str | list[str], stopped: set[str]
) -> None:
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy(_deny(denied)))
    calls = {
        "Encrypt": lambda: kms.encrypt(KeyId=key_arn, Plaintext=KEY),
        "Decrypt": lambda: kms.decrypt(CiphertextBlob=blob),
        "ReEncrypt": lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key_arn),
        "GenerateDataKey": lambda: kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256"),
        "GenerateDataKeyWithoutPlaintext": lambda: kms.generate_data_key_without_plaintext(
            KeyId=key_arn, KeySpec="AES_256"
        ),
    }
    refused = set()
    for name, call in calls.items():
        try:
            call()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDeniedException"
            assert "with an explicit deny in a resource-based policy" in exc.response["Error"]["Message"]
            refused.add(name)
    assert refused == stopped


def test_reencrypt_names_the_denied_side(kms: Any, key_arn: str) -> None:
    other = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    kms.put_key_policy(KeyId=other, PolicyName="default", Policy=_policy(_deny("kms:ReEncryptTo")))
    assert _error(lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=other))[1] == _denied_message(
        "kms:ReEncryptTo", other
    )
    kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key_arn)


@pytest.mark.parametrize(
    ("condition", "denied_contexts", "allowed_contexts"),
    [
        (
            {"StringEquals": {"kms:EncryptionContext:tenant": "blocked"}},
            [{"tenant": "blocked"}],
            [{"tenant": "other"}, {}],
        ),
        (
            {"StringNotEquals": {"kms:EncryptionContext:tenant": ["a", "b"]}},
            [{"tenant": "c"}, {}],
            [{"tenant": "a"}, {"tenant": "b"}],
        ),
        ({"StringLike": {"kms:EncryptionContext:tenant": "team-*"}}, [{"tenant": "team-x"}], [{"tenant": "x"}]),
        ({"Null": {"kms:EncryptionContextKeys": "true"}}, [{}], [{"a": "b"}]),
        (
            {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "secret"}},
            [{"secret": "1"}, {"a": "b", "secret": "2"}],
            [{"a": "b"}, {}],
        ),
        (
            {"ForAllValues:StringLike": {"kms:EncryptionContextKeys": "kmsbox:*"}},
            [{"kmsbox:a": "1"}, {}],
            [{"kmsbox:a": "1", "other": "2"}],
        ),
        ({"StringEqualsIfExists": {"kms:EncryptionContext:tenant": "x"}}, [{}, {"tenant": "x"}], [{"tenant": "y"}]),
        ({"StringEquals": {"kms:CallerAccount": ACCOUNT}}, [{}], []),
        ({"StringEquals": {"aws:PrincipalArn": "arn:aws:iam::999999999999:role/other"}}, [], [{}]),
    ],
)
def test_deny_conditions_on_the_encryption_context_and_caller(
    kms: Any,
    key_arn: str,
    condition: dict[str, Any],
    denied_contexts: list[dict[str, str]],
    allowed_contexts: list[dict[str, str]],
) -> None:
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy(_deny("kms:Encrypt", Condition=condition)))
    for context in denied_contexts:
        assert _error(lambda c=context: kms.encrypt(KeyId=key_arn, Plaintext=KEY, EncryptionContext=c))[0] == (
            "AccessDeniedException"
        )
    for context in allowed_contexts:
        kms.encrypt(KeyId=key_arn, Plaintext=KEY, EncryptionContext=context)


@pytest.mark.parametrize(
    ("principal", "denied"),
    [
        ("*", True),
        ({"AWS": "*"}, True),
        ({"AWS": ACCOUNT}, True),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, True),
        ({"AWS": [CALLER]}, True),
        ({"AWS": "arn:aws:iam::999999999999:root"}, False),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/someone-else"}, False),
        ({"Service": "s3.amazonaws.com"}, False),
    ],
)
def test_a_deny_applies_only_to_the_principals_it_names(kms: Any, key_arn: str, principal: Any, denied: bool) -> None:
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy(_deny("kms:Encrypt", principal)))
    if denied:
        assert _error(lambda: kms.encrypt(KeyId=key_arn, Plaintext=KEY))[0] == "AccessDeniedException"
    else:
        kms.encrypt(KeyId=key_arn, Plaintext=KEY)


def test_not_action_and_resource_are_honoured(kms: Any, key_arn: str) -> None:
    everything_but_encrypt = {"Effect": "Deny", "Principal": "*", "NotAction": "kms:Encrypt", "Resource": "*"}
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy(everything_but_encrypt))
    blob = kms.encrypt(KeyId=key_arn, Plaintext=KEY)["CiphertextBlob"]
    assert _error(lambda: kms.decrypt(CiphertextBlob=blob))[0] == "AccessDeniedException"
    another_key = {**_deny("kms:*"), "Resource": "arn:aws:kms:*:*:key/not-this-one"}
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy(another_key))
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == KEY


def test_a_policy_given_at_creation_is_enforced(kms: Any) -> None:
    arn = kms.create_key(Policy=_policy(_deny("kms:GenerateDataKey")))["KeyMetadata"]["Arn"]
    assert _error(lambda: kms.generate_data_key(KeyId=arn, KeySpec="AES_256"))[0] == "AccessDeniedException"


def test_a_deny_of_describe_key_makes_version_available_unknown(kms: Any, key_arn: str, aws_fake: Any) -> None:
    provider = open_kek("aws-kms://" + key_arn)
    kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=_policy(_deny("kms:DescribeKey")))
    assert _error(lambda: kms.describe_key(KeyId=key_arn))[0] == "AccessDeniedException"
    assert provider.version_available(key_arn) is None
    provider.close()


@pytest.mark.parametrize(
    "policy",
    [
        "not json",
        "[]",
        json.dumps({"Statement": []}),
        json.dumps({"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*"}]}),
        json.dumps({"Statement": [{"Effect": "Deny", "Principal": "*"}]}),
        json.dumps({"Statement": [{"Effect": "Deny", "Action": "kms:*"}]}),
        json.dumps({"Statement": [{"Effect": "Deny", "Principal": "*", "Action": 3}]}),
        json.dumps({"Statement": [{"Effect": "Deny", "NotPrincipal": {"AWS": CALLER}, "Action": "kms:*"}]}),
        _policy(_deny("kms:Decrypt", Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}})),
        _policy(_deny("kms:Decrypt", Condition={"StringEquals": {"aws:SourceIp": "10.0.0.1"}})),
        _policy(_deny("kms:Decrypt", Condition="nope")),
    ],
)
def test_a_policy_aws_refuses_or_the_fake_cannot_evaluate_is_malformed_and_not_stored(
    kms: Any, key_arn: str, policy: str
) -> None:
    before = kms.get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"]
    code, message = _error(lambda: kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=policy))
    assert code == "MalformedPolicyDocumentException" and message
    assert kms.get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"] == before
    assert _error(lambda: kms.create_key(Policy=policy))[0] == "MalformedPolicyDocumentException"


def test_the_provider_reports_a_denied_unwrap_as_permanent(kms: Any, own_kek: AwsKmsKekProvider) -> None:
    key = os.urandom(32)
    wrapped = own_kek.wrap(key, CONTEXT)
    kms.put_key_policy(
        KeyId=own_kek.arn, PolicyName="default", Policy=_policy(_deny(["kms:Decrypt", "kms:ReEncrypt*"]))
    )
    for call in (lambda: own_kek.unwrap(wrapped, CONTEXT), lambda: own_kek.rewrap(wrapped, CONTEXT)):
        with pytest.raises(ProviderError) as info:
            call()
        assert (info.value.transient, info.value.code) == (False, "AccessDeniedException")
        assert "explicit deny" in str(info.value) and key.hex() not in str(info.value)
    assert own_kek.wrap(key, CONTEXT).key_version == own_kek.arn
