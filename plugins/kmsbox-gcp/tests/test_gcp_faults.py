"""Faults of the fake Cloud KMS aimed at one RPC, and what the provider makes of each kind."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from google.api_core import exceptions as gexc
from google.cloud.kms_v1 import KeyManagementServiceClient
from kmsbox_gcp.fake import FakeGcpKms, start_fake
from kmsbox_gcp.provider import GcpKekProvider

from kmsbox.errors import ProviderError

CONTEXT = {"kmsbox:namespace": "faults"}


@pytest.mark.parametrize(
    ("kind", "transient", "code"),
    [
        ("throttle", True, "RESOURCE_EXHAUSTED"),
        ("unavailable", True, "UNAVAILABLE"),
        ("timeout", True, "DEADLINE_EXCEEDED"),
        ("reset", True, "UNAVAILABLE"),
        ("denied", False, "PERMISSION_DENIED"),
        ("malformed", False, "BAD_RESPONSE"),
    ],
)
def test_each_fault_on_decrypt_only_becomes_the_right_kmsbox_error(
    fake: FakeGcpKms,
    fresh_key_uri: str,
    open_provider: Callable[[str], GcpKekProvider],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    transient: bool,
    code: str,
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.3")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    kek = open_provider(fresh_key_uri)
    key = os.urandom(32)
    fake.faults.reset_counts()
    fake.faults.configure(rate=1.0, kind=kind, operations={"Decrypt"})
    wrapped = kek.wrap(key, CONTEXT)  # Encrypt is spared
    with pytest.raises(ProviderError) as info:
        kek.unwrap(wrapped, CONTEXT)
    assert (info.value.transient, info.value.code) == (transient, code)
    assert fake.faults.calls["Encrypt"] == 1
    assert (fake.faults.calls["Decrypt"] > 1) is transient  # only transient faults are retried
    assert key.hex() not in str(info.value)
    fake.faults.clear()
    assert kek.unwrap(wrapped, CONTEXT) == key


def test_a_reset_fault_resets_the_clients_tcp_connection(
    kms_client: KeyManagementServiceClient, fake: FakeGcpKms, fresh_key_uri: str
) -> None:
    name = fresh_key_uri.removeprefix("gcp-kms://")
    kms_client.get_crypto_key(name=name)  # an open connection, as a running client has
    fake.faults.configure(rate=1.0, kind="reset", operations={"GetCryptoKey"}, count=1)
    with pytest.raises(gexc.ServiceUnavailable, match="Connection reset by peer"):
        kms_client.get_crypto_key(name=name, retry=None)
    assert kms_client.get_crypto_key(name=name).name == name  # the channel reconnects


def test_a_malformed_fault_answers_bytes_the_client_cannot_parse(
    kms_client: KeyManagementServiceClient, fake: FakeGcpKms, fresh_key_uri: str
) -> None:
    name = fresh_key_uri.removeprefix("gcp-kms://")
    fake.faults.configure(rate=1.0, kind="malformed", operations={"GetCryptoKey"}, count=1)
    with pytest.raises(gexc.InternalServerError, match="Exception deserializing response"):
        kms_client.get_crypto_key(name=name, retry=None)


def test_faults_can_only_be_aimed_at_the_services_rpcs(fake: FakeGcpKms) -> None:
    with pytest.raises(ValueError, match="unknown operation 'decrypt'"):
        fake.faults.configure(operations={"decrypt"})
    with pytest.raises(ValueError, match="unknown operation"):
        start_fake(fault_operations=["Sign"])
    assert {"Encrypt", "Decrypt", "GetCryptoKey"} <= set(fake.faults.known_operations or ())
