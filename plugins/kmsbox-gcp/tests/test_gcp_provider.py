"""The gcp-kms KEK provider against the fake: URIs, versions, integrity fields, errors, faults and retries."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest
from google.cloud.kms_v1 import CryptoKeyVersion, KeyManagementServiceClient
from google.protobuf import field_mask_pb2
from kmsbox_gcp.client import ClientSettings
from kmsbox_gcp.fake import FakeGcpKms
from kmsbox_gcp.names import parse_kek_uri
from kmsbox_gcp.provider import GcpKekProvider

from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import WrappedKey, open_kek
from kmsbox.plugins import fake_servers, kek_factories

State = CryptoKeyVersion.CryptoKeyVersionState
CONTEXT = {"kmsbox:namespace": "gcp-tests", "kmsbox:key-version": "1"}
OpenProvider = Callable[[str], GcpKekProvider]


def set_state(client: KeyManagementServiceClient, name: str, state: State) -> None:
    client.update_crypto_key_version(
        crypto_key_version={"name": name, "state": state}, update_mask=field_mask_pb2.FieldMask(paths=["state"])
    )


# Plugin registration and configuration


def test_entry_point_registers_scheme_and_fake() -> None:
    assert kek_factories()["gcp-kms"].plugin == "gcp"
    assert fake_servers()["gcp"].plugin == "gcp"


@pytest.mark.parametrize(
    "uri",
    [
        "gcp-kms://",
        "gcp-kms://projects/p",
        "gcp-kms://projects/my-proj/locations/global/keyRings/ring",
        "gcp-kms://projects/my-proj/locations/global/keyRings/ring/cryptoKeys/",
        "gcp-kms://projects/my-proj/locations/global/keyRings/ring/cryptoKeys/key/",
        "gcp-kms://projects/my-proj/locations/global/keyRings/ring/cryptoKeys/key/cryptoKeyVersions/1",
        "gcp-kms://projects/my-proj/locations/global/keyRings/ring/cryptoKeys/key?version=1",
        "gcp-kms://projects/my-proj/locations/global/keyRings/ring/cryptoKeys/bad.key",
        "gcp-kms://projects/my-proj/locations/global/keyRings/" + "r" * 64 + "/cryptoKeys/key",
        "gcp-kms://projects/my-proj/locations/Global/keyRings/ring/cryptoKeys/key",
        "gcp-kms:///projects/my-proj/locations/global/keyRings/ring/cryptoKeys/key",
        "gcp-kms://locations/global/keyRings/ring/cryptoKeys/key",
    ],
)
def test_malformed_uri_is_config_error(uri: str, fake: FakeGcpKms) -> None:
    with pytest.raises(ConfigError):
        open_kek(uri)


def test_uri_parts_and_short_versions() -> None:
    key = parse_kek_uri("gcp-kms://projects/example.com:proj/locations/europe-west1/keyRings/r_1/cryptoKeys/K-2")
    assert (key.project, key.location, key.key_ring, key.crypto_key) == (
        "example.com:proj",
        "europe-west1",
        "r_1",
        "K-2",
    )
    assert key.uri == "gcp-kms://projects/example.com:proj/locations/europe-west1/keyRings/r_1/cryptoKeys/K-2"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ClientSettings()),
        ({"KMSBOX_GCP_KMS_ENDPOINT": "127.0.0.1:9000"}, ClientSettings("127.0.0.1:9000", insecure=True)),
        ({"KMSBOX_GCP_KMS_ENDPOINT": "localhost:9000"}, ClientSettings("localhost:9000", insecure=True)),
        ({"KMSBOX_GCP_KMS_ENDPOINT": "[::1]:9000"}, ClientSettings("[::1]:9000", insecure=True)),
        ({"KMSBOX_GCP_KMS_ENDPOINT": "kms.internal:443"}, ClientSettings("kms.internal:443", insecure=False)),
        (
            {"KMSBOX_GCP_KMS_ENDPOINT": "kms-fake:8443", "KMSBOX_GCP_KMS_INSECURE": "true"},
            ClientSettings("kms-fake:8443", insecure=True),
        ),
    ],
)
def test_endpoint_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: ClientSettings) -> None:
    monkeypatch.delenv("KMSBOX_GCP_KMS_ENDPOINT", raising=False)
    monkeypatch.delenv("KMSBOX_GCP_KMS_INSECURE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ClientSettings.from_env() == expected


@pytest.mark.parametrize(
    "env",
    [
        {"KMSBOX_GCP_KMS_ENDPOINT": "no-port"},
        {"KMSBOX_GCP_KMS_ENDPOINT": "host:99999"},
        {"KMSBOX_GCP_KMS_ENDPOINT": "http://host:443"},
        {"KMSBOX_GCP_KMS_ENDPOINT": "127.0.0.1:9000", "KMSBOX_GCP_KMS_INSECURE": "maybe"},
        {"KMSBOX_GCP_KMS_INSECURE": "true"},
    ],
)
def test_bad_endpoint_settings_are_config_errors(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.delenv("KMSBOX_GCP_KMS_ENDPOINT", raising=False)
    monkeypatch.delenv("KMSBOX_GCP_KMS_INSECURE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError):
        open_kek("gcp-kms://projects/p1/locations/global/keyRings/r/cryptoKeys/k")


def test_missing_google_credentials_is_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.delenv("KMSBOX_GCP_KMS_ENDPOINT", raising=False)
    monkeypatch.delenv("KMSBOX_GCP_KMS_INSECURE", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", os.path.join(tmp_path, "missing.json"))
    with pytest.raises(ConfigError, match="no Google credentials"):
        open_kek("gcp-kms://projects/p1/locations/global/keyRings/r/cryptoKeys/k")


# Versions


def test_decrypt_works_after_the_primary_changes(
    fake: FakeGcpKms, fresh_key_uri: str, open_provider: OpenProvider
) -> None:
    kek = open_provider(fresh_key_uri)
    first_key, second_key = os.urandom(32), os.urandom(32)
    first = kek.wrap(first_key, CONTEXT)
    assert first.key_version == "1" == kek.primary_version()
    assert fake.rotate_key(fresh_key_uri) == "2"
    second = kek.wrap(second_key, CONTEXT)
    assert second.key_version == "2" == kek.primary_version()
    assert kek.unwrap(first, CONTEXT) == first_key
    assert kek.unwrap(second, CONTEXT) == second_key
    rewrapped = kek.rewrap(first, CONTEXT)
    assert rewrapped.key_version == "2" and kek.unwrap(rewrapped, CONTEXT) == first_key


def test_version_available_follows_version_state(
    kms_client: KeyManagementServiceClient, fresh_key_uri: str, open_provider: OpenProvider
) -> None:
    kek = open_provider(fresh_key_uri)
    full_name = parse_kek_uri(fresh_key_uri).version_path("1")
    assert kek.version_available("1") is True
    assert kek.version_available(full_name) is True
    assert kek.version_available("2") is False  # not created
    assert kek.version_available("0") is False
    assert kek.version_available("v1") is False
    assert kek.version_available(full_name.replace("/cryptoKeys/", "/cryptoKeys/x")) is False  # another key's
    set_state(kms_client, full_name, State.DISABLED)
    assert kek.version_available("1") is False


def test_disabled_destroyed_and_restored_versions(
    kms_client: KeyManagementServiceClient, fake: FakeGcpKms, fresh_key_uri: str, open_provider: OpenProvider
) -> None:
    kek = open_provider(fresh_key_uri)
    version = parse_kek_uri(fresh_key_uri).version_path("1")
    key = os.urandom(32)
    wrapped = kek.wrap(key, CONTEXT)
    fake.rotate_key(fresh_key_uri)  # so version 1 is no longer primary

    set_state(kms_client, version, State.DISABLED)
    fake.faults.reset_counts()
    with pytest.raises(KeyUnavailable, match="DISABLED"):
        kek.unwrap(wrapped, CONTEXT)
    assert fake.faults.total_calls("Decrypt") == 1  # not retried
    set_state(kms_client, version, State.ENABLED)
    assert kek.unwrap(wrapped, CONTEXT) == key

    kms_client.destroy_crypto_key_version(name=version)
    with pytest.raises(KeyUnavailable, match="DESTROY_SCHEDULED"):
        kek.unwrap(wrapped, CONTEXT)
    kms_client.restore_crypto_key_version(name=version)
    with pytest.raises(KeyUnavailable, match="DISABLED"):
        kek.unwrap(wrapped, CONTEXT)
    set_state(kms_client, version, State.ENABLED)
    assert kek.unwrap(wrapped, CONTEXT) == key

    kms_client.destroy_crypto_key_version(name=version)
    fake.kms.complete_scheduled_destruction()
    with pytest.raises(KeyUnavailable, match="DESTROYED"):
        kek.unwrap(wrapped, CONTEXT)
    assert kek.version_available("1") is False


def test_disabled_primary_cannot_wrap(
    kms_client: KeyManagementServiceClient, fresh_key_uri: str, open_provider: OpenProvider
) -> None:
    kek = open_provider(fresh_key_uri)
    set_state(kms_client, parse_kek_uri(fresh_key_uri).version_path("1"), State.DISABLED)
    with pytest.raises(KeyUnavailable):
        kek.wrap(os.urandom(32), CONTEXT)


def test_key_wrapped_by_another_kek_is_key_unavailable(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyUnavailable):
        kek.unwrap(
            WrappedKey("gcp-kms://projects/p1/locations/global/keyRings/r/cryptoKeys/k", "1", wrapped.ciphertext),
            CONTEXT,
        )


def test_batch_forms_keep_order(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    keys = [os.urandom(32) for _ in range(20)]
    contexts = [{"i": str(i)} for i in range(20)]
    wrapped = kek.wrap_many(list(zip(keys, contexts, strict=True)))
    assert kek.unwrap_many(list(zip(wrapped, contexts, strict=True))) == keys
    swapped = [(wrapped[1], contexts[0]), (wrapped[0], contexts[1])]
    with pytest.raises(IntegrityError):
        kek.unwrap_many(swapped)


def test_describe_names_the_key_and_endpoint(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    description = open_provider(fake.kek_uri).describe()
    assert description["provider"] == "gcp-kms"
    assert description["key"] == parse_kek_uri(fake.kek_uri).path
    assert fake.endpoint in description["endpoint"]
    assert description["primary_version"].isdigit()


# Errors and integrity fields


def test_unknown_key_is_permanent_not_found(
    fake: FakeGcpKms, unique: Callable[[str], str], open_provider: OpenProvider
) -> None:
    missing = parse_kek_uri(fake.kek_uri)
    kek = open_provider(f"gcp-kms://{missing.key_ring_path}/cryptoKeys/{unique('absent')}")
    fake.faults.reset_counts()
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is False and info.value.code == "NOT_FOUND"
    assert fake.faults.total_calls() == 1


def test_errors_never_carry_key_bytes(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    key = os.urandom(32)
    wrapped = kek.wrap(key, CONTEXT)
    with pytest.raises(IntegrityError) as info:
        kek.unwrap(wrapped, {"kmsbox:namespace": "elsewhere"})
    text = str(info.value) + repr(info.value) + repr(wrapped) + repr(kek)
    assert key.hex() not in text and repr(key) not in text
    assert isinstance(info.value.__cause__, Exception)  # the SDK's error is chained


def test_corrupted_encrypt_response_crc_is_retried(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    fake.faults.reset_counts()
    fake.faults.configure_integrity(corrupt_response_crc=1)
    key = os.urandom(32)
    wrapped = kek.wrap(key, CONTEXT)
    assert fake.faults.total_calls("Encrypt") == 2
    assert kek.unwrap(wrapped, CONTEXT) == key


def test_corrupted_decrypt_response_crc_is_retried(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    key = os.urandom(32)
    wrapped = kek.wrap(key, CONTEXT)
    fake.faults.reset_counts()
    fake.faults.configure_integrity(corrupt_response_crc=1)
    assert kek.unwrap(wrapped, CONTEXT) == key
    assert fake.faults.total_calls("Decrypt") == 2


def test_unverified_request_crc_is_retried(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    fake.faults.reset_counts()
    fake.faults.configure_integrity(unverified_request_crc=1)
    kek.wrap(os.urandom(32), CONTEXT)
    assert fake.faults.total_calls("Encrypt") == 2


def test_persistent_crc_mismatch_is_transient_provider_error(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    fake.faults.configure_integrity(corrupt_response_crc=1000)
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is True and info.value.code == "CRC32C_MISMATCH"


# Faults, retries and time bounds


@pytest.mark.parametrize(("kind", "code"), [("throttle", "RESOURCE_EXHAUSTED"), ("unavailable", "UNAVAILABLE")])
def test_transient_faults_are_retried_then_raised(
    fake: FakeGcpKms, open_provider: OpenProvider, kind: str, code: str
) -> None:
    kek = open_provider(fake.kek_uri)
    key = os.urandom(32)
    fake.faults.configure(rate=1.0, kind=kind, count=2)
    assert kek.unwrap(kek.wrap(key, CONTEXT), CONTEXT) == key
    fake.faults.configure(rate=1.0, kind=kind)
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        kek.wrap(key, CONTEXT)
    assert info.value.transient is True and info.value.code == code
    assert time.monotonic() - start < 4  # KMSBOX_KMS_DEADLINE=3


def test_denied_is_permanent_and_not_retried(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    fake.faults.reset_counts()
    fake.faults.configure(rate=1.0, kind="denied")
    with pytest.raises(ProviderError) as info:
        kek.unwrap(wrapped, CONTEXT)
    assert info.value.transient is False and info.value.code == "PERMISSION_DENIED"
    assert "useToDecrypt" in str(info.value)
    assert fake.faults.total_calls("Decrypt") == 1


def test_timeout_fault_is_retried_within_the_call_timeout(
    fake: FakeGcpKms, open_provider: OpenProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.5")
    kek = open_provider(fake.kek_uri)
    fake.faults.configure(rate=1.0, kind="timeout", count=1)
    start = time.monotonic()
    kek.wrap(os.urandom(32), CONTEXT)
    assert 0.4 < time.monotonic() - start < 2.5


def test_persistent_timeouts_stay_within_the_deadline(
    fake: FakeGcpKms, open_provider: OpenProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "5")  # longer than the 3 s deadline: each call is cut to what is left
    kek = open_provider(fake.kek_uri)
    fake.faults.configure(rate=1.0, kind="timeout")
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is True and info.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - start < 4


def test_latency_slows_but_does_not_fail(fake: FakeGcpKms, open_provider: OpenProvider) -> None:
    kek = open_provider(fake.kek_uri)
    fake.faults.configure(latency=0.15)
    start = time.monotonic()
    key = os.urandom(32)
    assert kek.unwrap(kek.wrap(key, CONTEXT), CONTEXT) == key
    assert time.monotonic() - start >= 0.3


def test_unreachable_endpoint_is_transient(monkeypatch: pytest.MonkeyPatch, fake: FakeGcpKms) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("KMSBOX_GCP_KMS_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    kek = GcpKekProvider(fake.kek_uri)
    try:
        start = time.monotonic()
        with pytest.raises(ProviderError) as info:
            kek.wrap(os.urandom(32), CONTEXT)
        assert info.value.transient is True
        assert time.monotonic() - start < 3
        assert kek.describe()["primary_version"] == "unknown (ProviderError)"
    finally:
        kek.close()
