"""The fake AWS KMS itself, seen through the official boto3 client: errors, faults, lifecycle."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from kmsbox_aws import parse_uri
from kmsbox_aws.fake import AwsKmsFake

from kmsbox.errors import PluginError
from kmsbox.plugins import fake_servers
from kmsbox.testing.fakes import FakeServer

CONTEXT = {"purpose": "fake-test"}


def _call_error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call()
    return {
        "code": info.value.response["Error"]["Code"],
        "message": info.value.response["Error"].get("Message", ""),
        "status": info.value.response["ResponseMetadata"]["HTTPStatusCode"],
    }


def test_env_and_ready_key(aws_fake: Any, kms: Any) -> None:
    assert isinstance(aws_fake, AwsKmsFake)
    assert isinstance(aws_fake, FakeServer)
    env = aws_fake.env()
    assert env["AWS_ENDPOINT_URL_KMS"] == aws_fake.endpoint and env["AWS_ENDPOINT_URL_KMS"].startswith(
        "http://127.0.0.1:"
    )
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(env)
    arn = parse_uri(aws_fake.kek_uri).arn
    metadata = kms.describe_key(KeyId=arn)["KeyMetadata"]
    assert metadata["KeyState"] == "Enabled" and metadata["KeyUsage"] == "ENCRYPT_DECRYPT"


def test_create_key_makes_an_alias_and_refuses_a_duplicate(aws_fake: Any, kms: Any, alias_uri: str) -> None:
    alias_arn = parse_uri(alias_uri).arn
    assert kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["KeyState"] == "Enabled"
    with pytest.raises(ValueError, match="already exists"):
        aws_fake.create_key(parse_uri(alias_uri).name)


def test_calls_are_counted_by_operation_but_setup_is_not(aws_fake: Any, kms: Any) -> None:
    aws_fake.faults.reset_counts()
    arn = parse_uri(aws_fake.kek_uri).arn
    aws_fake.create_key(f"kmsbox-count-{os.urandom(4).hex()}")
    kms.describe_key(KeyId=arn)
    kms.encrypt(KeyId=arn, Plaintext=b"k" * 32)
    kms.encrypt(KeyId=arn, Plaintext=b"k" * 32)
    assert aws_fake.faults.calls == {"DescribeKey": 1, "Encrypt": 2}


def test_decrypt_with_another_key_id_is_incorrect_key(aws_fake: Any, kms: Any, own_kek: Any) -> None:
    blob = kms.encrypt(KeyId=parse_uri(aws_fake.kek_uri).arn, Plaintext=b"k" * 32)["CiphertextBlob"]
    error = _call_error(lambda: kms.decrypt(CiphertextBlob=blob, KeyId=own_kek.arn))
    assert (error["code"], error["status"]) == ("IncorrectKeyException", 400)
    assert "does not identify a KMS key" in error["message"]
    error = _call_error(
        lambda: kms.re_encrypt(CiphertextBlob=blob, SourceKeyId=own_kek.arn, DestinationKeyId=own_kek.arn)
    )
    assert error["code"] == "IncorrectKeyException"


def test_wrong_context_is_invalid_ciphertext(aws_fake: Any, kms: Any) -> None:
    arn = parse_uri(aws_fake.kek_uri).arn
    blob = kms.encrypt(KeyId=arn, Plaintext=b"k" * 32, EncryptionContext=CONTEXT)["CiphertextBlob"]
    error = _call_error(lambda: kms.decrypt(CiphertextBlob=blob, KeyId=arn, EncryptionContext={"purpose": "x"}))
    assert (error["code"], error["status"]) == ("InvalidCiphertextException", 400)


def test_key_states_refuse_cryptographic_calls_like_aws(kms: Any, own_kek: Any) -> None:
    arn = own_kek.arn
    blob = kms.encrypt(KeyId=arn, Plaintext=b"k" * 32)["CiphertextBlob"]
    kms.disable_key(KeyId=arn)
    for call in (lambda: kms.encrypt(KeyId=arn, Plaintext=b"k"), lambda: kms.decrypt(CiphertextBlob=blob)):
        error = _call_error(call)
        assert (error["code"], error["message"], error["status"]) == ("DisabledException", f"{arn} is disabled.", 400)
    kms.enable_key(KeyId=arn)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"k" * 32
    kms.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7)
    error = _call_error(lambda: kms.decrypt(CiphertextBlob=blob))
    assert (error["code"], error["message"]) == ("KMSInvalidStateException", f"{arn} is pending deletion.")


@pytest.mark.parametrize(
    ("kind", "code", "status", "message"),
    [
        ("throttle", "ThrottlingException", 400, "You have exceeded the rate at which you may call KMS"),
        ("unavailable", "KMSInternalException", 500, "internal error"),
        ("denied", "AccessDeniedException", 400, "is not authorized to perform: kms:Encrypt on resource: arn:aws:kms:"),
    ],
)
def test_injected_faults_answer_like_aws(
    aws_fake: Any, kms: Any, kind: str, code: str, status: int, message: str
) -> None:
    arn = parse_uri(aws_fake.kek_uri).arn
    aws_fake.faults.configure(rate=1.0, kind=kind, count=1)
    error = _call_error(lambda: kms.encrypt(KeyId=arn, Plaintext=b"k" * 32))
    assert (error["code"], error["status"]) == (code, status) and message in error["message"]
    kms.encrypt(KeyId=arn, Plaintext=b"k" * 32)  # count=1: the next call goes through


def test_timeout_fault_holds_the_reply_past_the_client_timeout(aws_fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.3")  # the fake waits this plus one second
    client = boto3.session.Session().client(
        "kms",
        endpoint_url=aws_fake.endpoint,
        config=Config(read_timeout=0.3, retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    aws_fake.faults.configure(rate=1.0, kind="timeout", count=1)
    start = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.encrypt(KeyId=parse_uri(aws_fake.kek_uri).arn, Plaintext=b"k" * 32)
    assert 0.25 < time.monotonic() - start < 1.2
    client.close()


def test_latency_is_added_to_every_call(aws_fake: Any, kms: Any) -> None:
    arn = parse_uri(aws_fake.kek_uri).arn
    kms.describe_key(KeyId=arn)  # warm the connection
    aws_fake.faults.configure(latency=0.25)
    start = time.monotonic()
    kms.describe_key(KeyId=arn)
    kms.describe_key(KeyId=arn)
    assert time.monotonic() - start >= 0.5


def test_registry_factory_takes_the_cli_options_and_stops_cleanly() -> None:
    before = {t.ident for t in threading.enumerate()}
    fake = fake_servers()["aws"].factory(host="127.0.0.1", port=0, latency=0.0, fault_rate=0.0, fault_kind="throttle")
    port = int(fake.endpoint.rsplit(":", 1)[1])
    client = boto3.session.Session().client(
        "kms",
        endpoint_url=fake.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert client.describe_key(KeyId=parse_uri(fake.kek_uri).arn)["KeyMetadata"]["Enabled"] is True
    # A kept-alive connection is still open here; stop() must end it too.
    fake.stop()
    fake.stop()  # idempotent
    client.close()
    assert {t.ident for t in threading.enumerate()} <= before
    with socket.socket() as sock:  # the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_fault_options_apply_from_the_start() -> None:
    fake = AwsKmsFake(fault_rate=1.0, fault_kind="denied", seed=1)
    try:
        client = boto3.session.Session().client(
            "kms",
            endpoint_url=fake.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        error = _call_error(lambda: client.describe_key(KeyId=parse_uri(fake.kek_uri).arn))
        assert error["code"] == "AccessDeniedException"
        client.close()
    finally:
        fake.stop()


def test_missing_moto_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "moto.kms.models", None)
    with pytest.raises(PluginError, match=r"kmsbox-aws\[fake\]"):
        AwsKmsFake()
