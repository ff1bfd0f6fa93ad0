"""The fake Cloud KMS, driven through the official google-cloud-kms client over loopback gRPC."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Callable

import google_crc32c
import pytest
from google.api_core import exceptions as gexc
from google.cloud.kms_v1 import CryptoKey, CryptoKeyVersion, KeyManagementServiceClient, ProtectionLevel
from google.protobuf import field_mask_pb2
from kmsbox_gcp.client import ClientSettings, make_client
from kmsbox_gcp.fake import FakeGcpKms, start_fake
from kmsbox_gcp.names import parse_kek_uri

State = CryptoKeyVersion.CryptoKeyVersionState
LOCATION = "projects/kmsbox-fake/locations/global"


def crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def make_ring(client: KeyManagementServiceClient, unique: Callable[[str], str]) -> str:
    return client.create_key_ring(request={"parent": LOCATION, "key_ring_id": unique("ring")}).name


def make_key(client: KeyManagementServiceClient, ring: str, key_id: str = "key", **spec: object) -> CryptoKey:
    crypto_key = {"purpose": CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT, **spec}
    return client.create_crypto_key(request={"parent": ring, "crypto_key_id": key_id, "crypto_key": crypto_key})


def encrypt(client: KeyManagementServiceClient, name: str, plaintext: bytes, aad: bytes = b"aad") -> tuple[str, bytes]:
    response = client.encrypt(request={"name": name, "plaintext": plaintext, "additional_authenticated_data": aad})
    return response.name, response.ciphertext


def decrypt(client: KeyManagementServiceClient, key: str, ciphertext: bytes, aad: bytes = b"aad") -> bytes:
    return client.decrypt(
        request={"name": key, "ciphertext": ciphertext, "additional_authenticated_data": aad}
    ).plaintext


# Key rings, keys, versions


def test_key_rings_are_created_got_and_listed_in_pages(kms_client: KeyManagementServiceClient, unique) -> None:
    parent = f"projects/{unique('proj')}/locations/us-east1"
    names = [kms_client.create_key_ring(request={"parent": parent, "key_ring_id": f"ring-{i}"}).name for i in range(5)]
    assert kms_client.get_key_ring(name=names[2]).name == names[2]
    pages = list(kms_client.list_key_rings(request={"parent": parent, "page_size": 2}).pages)
    assert [len(page.key_rings) for page in pages] == [2, 2, 1]
    assert pages[0].next_page_token and not pages[-1].next_page_token
    assert pages[0].total_size == 5
    assert [ring.name for ring in kms_client.list_key_rings(parent=parent)] == sorted(names)


def test_existing_key_ring_is_already_exists(kms_client: KeyManagementServiceClient, unique) -> None:
    ring = make_ring(kms_client, unique)
    parent, _, ring_id = ring.rpartition("/keyRings/")
    with pytest.raises(gexc.AlreadyExists) as info:
        kms_client.create_key_ring(request={"parent": parent, "key_ring_id": ring_id})
    assert info.value.message == f"KeyRing {ring} already exists."


def test_missing_resources_are_not_found(kms_client: KeyManagementServiceClient, unique) -> None:
    ring = f"{LOCATION}/keyRings/{unique('missing')}"
    with pytest.raises(gexc.NotFound, match=f"KeyRing {ring} not found"):
        kms_client.get_key_ring(name=ring)
    with pytest.raises(gexc.NotFound, match=f"KeyRing {ring} not found"):
        make_key(kms_client, ring)
    ring = make_ring(kms_client, unique)
    with pytest.raises(gexc.NotFound, match=f"CryptoKey {ring}/cryptoKeys/nope not found"):
        kms_client.get_crypto_key(name=f"{ring}/cryptoKeys/nope")
    key = make_key(kms_client, ring)
    with pytest.raises(gexc.NotFound, match=r"CryptoKeyVersion .*/cryptoKeyVersions/9 not found"):
        kms_client.get_crypto_key_version(name=f"{key.name}/cryptoKeyVersions/9")


def test_malformed_ids_are_invalid_argument(kms_client: KeyManagementServiceClient, unique) -> None:
    with pytest.raises(gexc.InvalidArgument):
        kms_client.create_key_ring(request={"parent": LOCATION, "key_ring_id": "bad/id"})
    with pytest.raises(gexc.InvalidArgument):
        make_key(kms_client, make_ring(kms_client, unique), key_id="x" * 64)


def test_new_crypto_key_has_an_enabled_primary_version(kms_client: KeyManagementServiceClient, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique), labels={"team": "a"})
    assert key.primary.name == f"{key.name}/cryptoKeyVersions/1"
    assert key.primary.state == State.ENABLED
    assert key.primary.algorithm == CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    assert key.purpose == CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT
    assert dict(key.labels) == {"team": "a"}
    assert kms_client.get_crypto_key(name=key.name) == key


def test_existing_crypto_key_is_already_exists(kms_client: KeyManagementServiceClient, unique) -> None:
    ring = make_ring(kms_client, unique)
    key = make_key(kms_client, ring)
    with pytest.raises(gexc.AlreadyExists, match=f"CryptoKey {key.name} already exists"):
        make_key(kms_client, ring)


def test_key_without_initial_version_cannot_encrypt(kms_client: KeyManagementServiceClient, unique) -> None:
    ring = make_ring(kms_client, unique)
    key = kms_client.create_crypto_key(
        request={
            "parent": ring,
            "crypto_key_id": "empty",
            "crypto_key": {"purpose": CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT},
            "skip_initial_version_creation": True,
        }
    )
    assert not key.primary.name
    with pytest.raises(gexc.FailedPrecondition):
        encrypt(kms_client, key.name, b"secret")


def test_crypto_keys_and_versions_are_listed_in_pages(kms_client: KeyManagementServiceClient, unique) -> None:
    ring = make_ring(kms_client, unique)
    keys = [make_key(kms_client, ring, f"k{i}").name for i in range(3)]
    pages = list(kms_client.list_crypto_keys(request={"parent": ring, "page_size": 2}).pages)
    assert [[k.name for k in page.crypto_keys] for page in pages] == [keys[:2], keys[2:]]
    for _ in range(4):
        kms_client.create_crypto_key_version(parent=keys[0], crypto_key_version={})
    versions = kms_client.list_crypto_key_versions(request={"parent": keys[0], "page_size": 2})
    pages = list(versions.pages)
    assert len(pages) == 3
    assert [v.name.rsplit("/", 1)[1] for page in pages for v in page.crypto_key_versions] == ["1", "2", "3", "4", "5"]


def test_bad_page_token_is_invalid_argument(kms_client: KeyManagementServiceClient, unique) -> None:
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        kms_client.list_crypto_keys(request={"parent": make_ring(kms_client, unique), "page_token": "garbage"})


def test_update_crypto_key_changes_only_masked_fields(kms_client: KeyManagementServiceClient, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique), labels={"a": "1"})
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    updated = kms_client.update_crypto_key(
        crypto_key={
            "name": key.name,
            "labels": {"b": "2"},
            "rotation_period": dt.timedelta(days=30),
            "next_rotation_time": later,
        },
        update_mask=field_mask_pb2.FieldMask(paths=["rotation_period", "next_rotation_time"]),
    )
    assert dict(updated.labels) == {"a": "1"}
    assert updated.rotation_period == dt.timedelta(days=30)
    updated = kms_client.update_crypto_key(
        crypto_key={"name": key.name, "labels": {"b": "2"}}, update_mask=field_mask_pb2.FieldMask(paths=["labels"])
    )
    assert dict(updated.labels) == {"b": "2"}
    assert updated.rotation_period == dt.timedelta(days=30)


def test_update_crypto_key_rejects_bad_masks_and_rotation(kms_client: KeyManagementServiceClient, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    with pytest.raises(gexc.InvalidArgument, match="update_mask"):
        kms_client.update_crypto_key(crypto_key={"name": key.name}, update_mask=field_mask_pb2.FieldMask())
    with pytest.raises(gexc.InvalidArgument):
        kms_client.update_crypto_key(
            crypto_key={"name": key.name}, update_mask=field_mask_pb2.FieldMask(paths=["purpose"])
        )
    with pytest.raises(gexc.InvalidArgument, match="rotation_period"):
        kms_client.update_crypto_key(
            crypto_key={
                "name": key.name,
                "rotation_period": dt.timedelta(hours=1),
                "next_rotation_time": dt.datetime.now(dt.UTC),
            },
            update_mask=field_mask_pb2.FieldMask(paths=["rotation_period", "next_rotation_time"]),
        )
    with pytest.raises(gexc.InvalidArgument, match="next_rotation_time"):
        kms_client.update_crypto_key(
            crypto_key={"name": key.name, "rotation_period": dt.timedelta(days=1)},
            update_mask=field_mask_pb2.FieldMask(paths=["rotation_period"]),
        )


def test_key_rotates_itself_when_next_rotation_time_passes(kms_client: KeyManagementServiceClient, unique) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    key = make_key(
        kms_client, make_ring(kms_client, unique), rotation_period=dt.timedelta(days=1), next_rotation_time=past
    )
    rotated = kms_client.get_crypto_key(name=key.name)
    assert rotated.primary.name.endswith("/cryptoKeyVersions/2")
    assert rotated.next_rotation_time > dt.datetime.now(dt.UTC)


def test_primary_version_changes_and_old_ciphertexts_still_decrypt(
    kms_client: KeyManagementServiceClient, unique
) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    used, old = encrypt(kms_client, key.name, b"old secret")
    assert used.endswith("/cryptoKeyVersions/1")
    version = kms_client.create_crypto_key_version(parent=key.name, crypto_key_version={})
    assert version.state == State.ENABLED
    assert kms_client.get_crypto_key(name=key.name).primary.name.endswith("/1")  # a new version is not primary
    updated = kms_client.update_crypto_key_primary_version(name=key.name, crypto_key_version_id="2")
    assert updated.primary.name == version.name
    used, new = encrypt(kms_client, key.name, b"new secret")
    assert used == version.name
    response = kms_client.decrypt(
        request={"name": key.name, "ciphertext": old, "additional_authenticated_data": b"aad"}
    )
    assert response.plaintext == b"old secret" and response.used_primary is False
    assert decrypt(kms_client, key.name, new) == b"new secret"


def test_encrypt_with_a_named_version(kms_client: KeyManagementServiceClient, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    kms_client.create_crypto_key_version(parent=key.name, crypto_key_version={})
    used, ciphertext = encrypt(kms_client, f"{key.name}/cryptoKeyVersions/2", b"pinned")
    assert used == f"{key.name}/cryptoKeyVersions/2"
    assert decrypt(kms_client, key.name, ciphertext) == b"pinned"


def test_primary_must_be_an_enabled_version(kms_client: KeyManagementServiceClient, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    version = kms_client.create_crypto_key_version(parent=key.name, crypto_key_version={"state": State.DISABLED})
    assert version.state == State.DISABLED
    with pytest.raises(gexc.FailedPrecondition, match="is not enabled, current state is: DISABLED"):
        kms_client.update_crypto_key_primary_version(name=key.name, crypto_key_version_id="2")
    with pytest.raises(gexc.NotFound):
        kms_client.update_crypto_key_primary_version(name=key.name, crypto_key_version_id="7")


def test_disable_destroy_restore_lifecycle(kms_client: KeyManagementServiceClient, fake: FakeGcpKms, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    version = key.primary.name
    _, ciphertext = encrypt(kms_client, key.name, b"lifecycle")
    state_mask = field_mask_pb2.FieldMask(paths=["state"])

    disabled = kms_client.update_crypto_key_version(
        crypto_key_version={"name": version, "state": State.DISABLED}, update_mask=state_mask
    )
    assert disabled.state == State.DISABLED
    with pytest.raises(gexc.FailedPrecondition) as info:
        decrypt(kms_client, key.name, ciphertext)
    assert info.value.message == f"{version} is not enabled, current state is: DISABLED."
    with pytest.raises(gexc.FailedPrecondition):
        encrypt(kms_client, key.name, b"x")

    kms_client.update_crypto_key_version(
        crypto_key_version={"name": version, "state": State.ENABLED}, update_mask=state_mask
    )
    assert decrypt(kms_client, key.name, ciphertext) == b"lifecycle"

    scheduled = kms_client.destroy_crypto_key_version(name=version)
    assert scheduled.state == State.DESTROY_SCHEDULED
    assert scheduled.destroy_time > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    with pytest.raises(gexc.FailedPrecondition, match="current state is: DESTROY_SCHEDULED"):
        decrypt(kms_client, key.name, ciphertext)
    with pytest.raises(gexc.FailedPrecondition):
        kms_client.destroy_crypto_key_version(name=version)
    with pytest.raises(gexc.FailedPrecondition):
        kms_client.update_crypto_key_version(
            crypto_key_version={"name": version, "state": State.ENABLED}, update_mask=state_mask
        )

    restored = kms_client.restore_crypto_key_version(name=version)
    assert restored.state == State.DISABLED and "destroy_time" not in restored
    with pytest.raises(gexc.FailedPrecondition):
        kms_client.restore_crypto_key_version(name=version)
    kms_client.update_crypto_key_version(
        crypto_key_version={"name": version, "state": State.ENABLED}, update_mask=state_mask
    )
    assert decrypt(kms_client, key.name, ciphertext) == b"lifecycle"

    kms_client.destroy_crypto_key_version(name=version)
    assert fake.kms.complete_scheduled_destruction() >= 1
    destroyed = kms_client.get_crypto_key_version(name=version)
    assert destroyed.state == State.DESTROYED and destroyed.destroy_event_time
    with pytest.raises(gexc.FailedPrecondition, match="current state is: DESTROYED"):
        decrypt(kms_client, key.name, ciphertext)
    with pytest.raises(gexc.FailedPrecondition):
        kms_client.restore_crypto_key_version(name=version)


def test_version_updates_only_state_between_enabled_and_disabled(
    kms_client: KeyManagementServiceClient, unique
) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    with pytest.raises(gexc.InvalidArgument):
        kms_client.update_crypto_key_version(
            crypto_key_version={"name": key.primary.name, "state": State.DESTROYED},
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        )
    with pytest.raises(gexc.InvalidArgument, match="update_mask"):
        kms_client.update_crypto_key_version(
            crypto_key_version={"name": key.primary.name, "state": State.DISABLED},
            update_mask=field_mask_pb2.FieldMask(),
        )


# Encrypt, Decrypt and integrity fields


def test_checksums_are_verified_and_returned(kms_client: KeyManagementServiceClient, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    plain, aad = b"checked", b"context"
    bare = kms_client.encrypt(request={"name": key.name, "plaintext": plain, "additional_authenticated_data": aad})
    assert not bare.verified_plaintext_crc32c and not bare.verified_additional_authenticated_data_crc32c
    response = kms_client.encrypt(
        request={
            "name": key.name,
            "plaintext": plain,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": crc(plain),
            "additional_authenticated_data_crc32c": crc(aad),
        }
    )
    assert response.verified_plaintext_crc32c and response.verified_additional_authenticated_data_crc32c
    assert response.ciphertext_crc32c == crc(response.ciphertext)
    assert response.protection_level == ProtectionLevel.SOFTWARE
    decrypted = kms_client.decrypt(
        request={
            "name": key.name,
            "ciphertext": response.ciphertext,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": crc(response.ciphertext),
            "additional_authenticated_data_crc32c": crc(aad),
        }
    )
    assert decrypted.plaintext == plain and decrypted.plaintext_crc32c == crc(plain) and decrypted.used_primary


@pytest.mark.parametrize(
    ("field", "data_field"),
    [("plaintext_crc32c", "plaintext"), ("additional_authenticated_data_crc32c", "additional_authenticated_data")],
)
def test_encrypt_checksum_mismatch_is_invalid_argument(
    kms_client: KeyManagementServiceClient, unique, field: str, data_field: str
) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    request = {"name": key.name, "plaintext": b"p", "additional_authenticated_data": b"a", field: crc(b"other")}
    with pytest.raises(gexc.InvalidArgument) as info:
        kms_client.encrypt(request=request)
    assert info.value.message == f"The checksum in field {field} did not match the data in field {data_field}."


def test_decrypt_checksum_mismatch_is_invalid_argument(kms_client: KeyManagementServiceClient, unique) -> None:
    key = make_key(kms_client, make_ring(kms_client, unique))
    _, ciphertext = encrypt(kms_client, key.name, b"p")
    with pytest.raises(gexc.InvalidArgument, match="The checksum in field ciphertext_crc32c did not match"):
        kms_client.decrypt(
            request={"name": key.name, "ciphertext": ciphertext, "ciphertext_crc32c": crc(ciphertext) ^ 1}
        )


def test_decrypt_rejects_wrong_aad_tampering_and_other_keys(kms_client: KeyManagementServiceClient, unique) -> None:
    ring = make_ring(kms_client, unique)
    key, other = make_key(kms_client, ring, "one"), make_key(kms_client, ring, "two")
    _, ciphertext = encrypt(kms_client, key.name, b"p", aad=b"right")
    with pytest.raises(gexc.InvalidArgument, match="the ciphertext is invalid"):
        decrypt(kms_client, key.name, ciphertext, aad=b"wrong")
    tampered = bytearray(ciphertext)
    tampered[-1] ^= 1
    with pytest.raises(gexc.InvalidArgument, match="the ciphertext is invalid"):
        decrypt(kms_client, key.name, bytes(tampered), aad=b"right")
    with pytest.raises(gexc.InvalidArgument, match="the ciphertext is invalid"):
        decrypt(kms_client, key.name, b"short", aad=b"right")
    with pytest.raises(gexc.InvalidArgument, match="verify that 'name' refers to the correct CryptoKey"):
        decrypt(kms_client, other.name, ciphertext, aad=b"right")


def test_generate_random_bytes(kms_client: KeyManagementServiceClient) -> None:
    response = kms_client.generate_random_bytes(
        location=LOCATION, length_bytes=32, protection_level=ProtectionLevel.HSM
    )
    assert len(response.data) == 32 and response.data_crc32c == crc(response.data)
    other = kms_client.generate_random_bytes(location=LOCATION, length_bytes=32, protection_level=ProtectionLevel.HSM)
    assert other.data != response.data
    with pytest.raises(gexc.InvalidArgument):
        kms_client.generate_random_bytes(location=LOCATION, length_bytes=32, protection_level=ProtectionLevel.SOFTWARE)
    with pytest.raises(gexc.InvalidArgument):
        kms_client.generate_random_bytes(location=LOCATION, length_bytes=4, protection_level=ProtectionLevel.HSM)


def test_methods_the_fake_lacks_are_unimplemented(kms_client: KeyManagementServiceClient, fake: FakeGcpKms) -> None:
    with pytest.raises(gexc.MethodNotImplemented):
        kms_client.get_public_key(name=parse_kek_uri(fake.kek_uri).version_path("1"))


# Faults


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("throttle", gexc.ResourceExhausted, "Quota exceeded"),
        ("unavailable", gexc.ServiceUnavailable, "unavailable"),
        ("denied", gexc.PermissionDenied, "Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource"),
    ],
)
def test_fault_kinds_answer_real_status_codes(
    kms_client: KeyManagementServiceClient, fake: FakeGcpKms, kind: str, error: type[Exception], message: str
) -> None:
    fake.faults.reset_counts()
    fake.faults.configure(rate=1.0, kind=kind, count=1)
    key = parse_kek_uri(fake.kek_uri).path
    with pytest.raises(error, match=message):
        kms_client.encrypt(name=key, plaintext=b"p", retry=None)
    assert encrypt(kms_client, key, b"p")[0].startswith(key)  # count=1: the next call succeeds
    assert fake.faults.total_calls("Encrypt") == 2


def test_timeout_fault_outlasts_the_callers_deadline(kms_client: KeyManagementServiceClient, fake: FakeGcpKms) -> None:
    fake.faults.configure(rate=1.0, kind="timeout", count=1)
    start = time.monotonic()
    with pytest.raises(gexc.DeadlineExceeded):
        kms_client.get_crypto_key(name=parse_kek_uri(fake.kek_uri).path, retry=None, timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3


def test_latency_is_added_to_each_call(kms_client: KeyManagementServiceClient, fake: FakeGcpKms) -> None:
    fake.faults.configure(latency=0.2)
    start = time.monotonic()
    kms_client.get_crypto_key(name=parse_kek_uri(fake.kek_uri).path)
    assert time.monotonic() - start >= 0.2


def test_corrupt_response_crc_fault(kms_client: KeyManagementServiceClient, fake: FakeGcpKms) -> None:
    key = parse_kek_uri(fake.kek_uri).path
    fake.faults.configure_integrity(corrupt_response_crc=2)
    response = kms_client.encrypt(name=key, plaintext=b"p")
    assert response.ciphertext_crc32c != crc(response.ciphertext)
    decrypted = kms_client.decrypt(name=key, ciphertext=response.ciphertext)
    assert decrypted.plaintext_crc32c != crc(decrypted.plaintext)
    healthy = kms_client.encrypt(name=key, plaintext=b"p")
    assert healthy.ciphertext_crc32c == crc(healthy.ciphertext)
    fake.faults.configure_integrity(corrupt_response_crc=1)
    fake.faults.clear()
    assert fake.faults.corrupt_response_crc == 0


def test_fake_serves_many_threads(kms_client: KeyManagementServiceClient, fake: FakeGcpKms) -> None:
    key = parse_kek_uri(fake.kek_uri).path
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                plain = os.urandom(32)
                assert decrypt(kms_client, key, encrypt(kms_client, key, plain)[1]) == plain
        except BaseException as exc:  # collected and re-raised by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_fake_stops_cleanly_and_releases_its_port() -> None:
    before = threading.active_count()
    server = start_fake(port=0, latency=0.0, fault_rate=0.0, fault_kind="unavailable")
    host, port = server.endpoint.rsplit(":", 1)
    client = make_client(ClientSettings(endpoint=server.endpoint, insecure=True))
    assert client.get_crypto_key(name=parse_kek_uri(server.kek_uri).path).primary.state == State.ENABLED
    client.transport.close()
    server.faults.configure(rate=1.0, kind="timeout")
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_fake_creates_and_rotates_keys(fake: FakeGcpKms, kms_client: KeyManagementServiceClient, unique) -> None:
    uri = fake.create_key(unique("made"))
    assert fake.create_key(parse_kek_uri(uri).crypto_key) == uri  # idempotent
    assert fake.rotate_key(uri) == "2"
    assert kms_client.get_crypto_key(name=parse_kek_uri(uri).path).primary.name.endswith("/cryptoKeyVersions/2")


def test_fake_on_a_taken_port_raises_oserror(fake: FakeGcpKms) -> None:
    port = int(fake.endpoint.rsplit(":", 1)[1])
    try:
        intruder = start_fake(port=port)
    except OSError as exc:
        assert "could not bind" in str(exc)
    else:
        intruder.stop()  # so a failure here cannot steal the session fake's calls
        pytest.fail("a second fake bound the session fake's port")
