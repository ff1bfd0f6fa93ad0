"""The Vault fake through the official client (hvac): shapes, status codes and Vault's error texts."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import uuid
from typing import Any

import hvac
import hvac.exceptions as hvac_exc
import pytest
import requests
from kmsbox_vault.fake import READY_KEY, start_vault_fake
from kmsbox_vault.fake_transit import ERR_DERIVATION, ERR_TOO_OLD

from kmsbox.testing.fakes import FakeServer

MOUNT = "transit"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def errors_of(info: pytest.ExceptionInfo[hvac_exc.VaultError]) -> list[str]:
    return list(info.value.errors or [])


def test_fake_satisfies_the_fake_server_protocol(fake_vault: Any) -> None:
    assert isinstance(fake_vault, FakeServer)
    assert fake_vault.name == "vault"
    assert set(fake_vault.env()) == {"VAULT_ADDR", "VAULT_TOKEN"}
    assert fake_vault.kek_uri.endswith(f"/{MOUNT}/keys/{READY_KEY}")


def test_health_is_unauthenticated(fake_vault: Any) -> None:
    status = hvac.Client(url=fake_vault.address, token="").sys.read_health_status(method="GET")
    assert status["initialized"] is True and status["sealed"] is False


def test_missing_and_bad_tokens_are_403_permission_denied(fake_vault: Any, key_name: str) -> None:
    for token in ("", "hvs.not-a-real-token"):
        client = hvac.Client(url=fake_vault.address, token=token)
        with pytest.raises(hvac_exc.Forbidden) as info:
            client.secrets.transit.read_key(name=READY_KEY)
        assert "permission denied" in errors_of(info)[0]
    assert "invalid token" in errors_of(info)[0]


def test_mounts_list_enable_and_disable(vault_client: hvac.Client) -> None:
    path = f"t-{uuid.uuid4().hex[:8]}/transit"
    vault_client.sys.enable_secrets_engine("transit", path=path)
    mounts = vault_client.sys.list_mounted_secrets_engines()
    assert mounts["data"][f"{path}/"]["type"] == "transit"
    assert f"{path}/" in mounts  # Vault's legacy top-level copy
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.sys.enable_secrets_engine("transit", path=path)
    assert errors_of(info) == [f"path is already in use at {path}/"]
    vault_client.secrets.transit.create_key(name="k", mount_point=path)
    vault_client.sys.disable_secrets_engine(path=path)
    assert f"{path}/" not in vault_client.sys.list_mounted_secrets_engines()["data"]
    with pytest.raises(hvac_exc.InvalidPath) as missing:
        vault_client.secrets.transit.read_key(name="k", mount_point=path)
    assert "no handler for route" in errors_of(missing)[0]


def test_only_transit_mounts_and_reserved_paths(vault_client: hvac.Client) -> None:
    with pytest.raises(hvac_exc.InvalidRequest):
        vault_client.sys.enable_secrets_engine("kv", path="kv-x")
    with pytest.raises(hvac_exc.InvalidRequest):
        vault_client.sys.enable_secrets_engine("transit", path="sys/x")


def test_key_lifecycle_create_read_list_delete(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    created = transit.create_key(name=key_name, exportable=True)
    assert created["data"]["latest_version"] == 1
    data = transit.read_key(name=key_name)["data"]
    assert data["type"] == "aes256-gcm96" and data["derived"] is False and data["exportable"] is True
    assert set(data["keys"]) == {"1"} and isinstance(data["keys"]["1"], int)
    assert (data["min_decryption_version"], data["min_encryption_version"], data["deletion_allowed"]) == (1, 0, False)
    assert key_name in transit.list_keys()["data"]["keys"]
    raw = vault_client.adapter.get(f"/v1/{MOUNT}/keys", params={"list": "true"})
    assert key_name in raw["data"]["keys"]
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        transit.delete_key(name=key_name)
    assert errors_of(info) == [f"error deleting policy {key_name}: deletion is not allowed for this key"]
    transit.update_key_configuration(name=key_name, deletion_allowed=True)
    transit.delete_key(name=key_name)
    with pytest.raises(hvac_exc.InvalidPath) as gone:
        transit.read_key(name=key_name)
    assert errors_of(gone) == []


def test_unknown_key_type_is_rejected(vault_client: hvac.Client, key_name: str) -> None:
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.adapter.post(f"/v1/{MOUNT}/keys/{key_name}", json={"type": "aes512-gcm"})
    assert errors_of(info) == ["unknown key type aes512-gcm"]


def test_encrypt_decrypt_with_associated_data(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    secret, aad = os.urandom(32), b64(b"row-7")
    encrypted = transit.encrypt_data(name=key_name, plaintext=b64(secret), associated_data=aad)["data"]
    assert encrypted["ciphertext"].startswith("vault:v1:") and encrypted["key_version"] == 1
    plain = transit.decrypt_data(name=key_name, ciphertext=encrypted["ciphertext"], associated_data=aad)
    assert base64.b64decode(plain["data"]["plaintext"]) == secret
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        transit.decrypt_data(name=key_name, ciphertext=encrypted["ciphertext"], associated_data=b64(b"row-8"))
    assert errors_of(info) == ["cipher: message authentication failed"]


def test_malformed_ciphertexts_get_vaults_messages(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    cases = {
        "nonsense": "invalid ciphertext: no prefix",
        "vault:v1": "invalid ciphertext: wrong number of fields",
        "vault:vX:AAAA": "invalid ciphertext: version number could not be decoded",
        "vault:v9:AAAA": "invalid ciphertext: version is too new",
        "vault:v1:!!!!": "invalid ciphertext: could not decode base64",
        "vault:v1:AAAA": "invalid ciphertext length",
    }
    for ciphertext, message in cases.items():
        with pytest.raises(hvac_exc.InvalidRequest) as info:
            transit.decrypt_data(name=key_name, ciphertext=ciphertext)
        assert errors_of(info) == [message], ciphertext


def test_unknown_key_is_400_encryption_key_not_found(vault_client: hvac.Client, key_name: str) -> None:
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.secrets.transit.decrypt_data(name=key_name, ciphertext="vault:v1:AAAA")
    assert errors_of(info) == ["encryption key not found"]


def test_encrypt_upserts_a_missing_key_like_vault(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.encrypt_data(name=key_name, plaintext=b64(b"x"), context=b64(b"ctx"))
    assert transit.read_key(name=key_name)["data"]["derived"] is True


def test_rotate_then_decrypt_old_and_rewrap_bumps_version(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    old = transit.encrypt_data(name=key_name, plaintext=b64(b"secret"))["data"]["ciphertext"]
    rotated = transit.rotate_key(name=key_name)
    assert rotated["data"]["latest_version"] == 2
    assert base64.b64decode(transit.decrypt_data(name=key_name, ciphertext=old)["data"]["plaintext"]) == b"secret"
    rewrapped = transit.rewrap_data(name=key_name, ciphertext=old)["data"]
    assert rewrapped["ciphertext"].startswith("vault:v2:") and rewrapped["key_version"] == 2
    assert (
        base64.b64decode(transit.decrypt_data(name=key_name, ciphertext=rewrapped["ciphertext"])["data"]["plaintext"])
        == b"secret"
    )


def test_rewrap_ignores_associated_data_as_vault_does(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    aad = b64(b"bound")
    ciphertext = transit.encrypt_data(name=key_name, plaintext=b64(b"x"), associated_data=aad)["data"]["ciphertext"]
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.adapter.post(
            f"/v1/{MOUNT}/rewrap/{key_name}", json={"ciphertext": ciphertext, "associated_data": aad}
        )
    assert errors_of(info) == ["cipher: message authentication failed"]


def test_min_decryption_version_refuses_old_ciphertexts(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    v1 = transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["ciphertext"]
    transit.rotate_key(name=key_name)
    transit.update_key_configuration(name=key_name, min_decryption_version=2)
    data = transit.read_key(name=key_name)["data"]
    assert set(data["keys"]) == {"2"} and data["min_decryption_version"] == 2
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        transit.decrypt_data(name=key_name, ciphertext=v1)
    assert errors_of(info) == [ERR_TOO_OLD]
    transit.update_key_configuration(name=key_name, min_decryption_version=1)
    assert transit.decrypt_data(name=key_name, ciphertext=v1)["data"]["plaintext"] == b64(b"x")


def test_config_validates_versions(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        transit.update_key_configuration(name=key_name, min_decryption_version=5)
    assert errors_of(info) == ["cannot set min decryption version of 5, latest key version is 1"]
    with pytest.raises(hvac_exc.InvalidRequest) as missing:
        transit.update_key_configuration(name=f"{key_name}-nope", min_decryption_version=1)
    assert errors_of(missing) == [f"no existing key named {key_name}-nope could be found"]


def test_min_encryption_version_limits_explicit_versions(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    transit.rotate_key(name=key_name)
    transit.update_key_configuration(name=key_name, min_encryption_version=2)
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        transit.encrypt_data(name=key_name, plaintext=b64(b"x"), key_version=1)
    assert errors_of(info) == ["requested version for encryption is less than the minimum encryption key version"]
    assert transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["key_version"] == 2


def test_trim_deletes_old_versions_for_good(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    v1 = transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["ciphertext"]
    transit.rotate_key(name=key_name)
    with pytest.raises(hvac_exc.InvalidRequest) as refused:
        transit.trim_key(name=key_name, min_version=2)
    assert errors_of(refused) == ["minimum available version cannot be set when minimum encryption version is not set"]
    transit.update_key_configuration(name=key_name, min_decryption_version=2)
    transit.update_key_configuration(name=key_name, min_encryption_version=2)  # hvac refuses both in one call
    transit.trim_key(name=key_name, min_version=2)
    assert transit.read_key(name=key_name)["data"]["min_available_version"] == 2
    with pytest.raises(hvac_exc.InvalidRequest) as lowered:
        transit.update_key_configuration(name=key_name, min_decryption_version=1)
    assert errors_of(lowered) == ["min decryption version should not be less then min available version"]
    with pytest.raises(hvac_exc.InvalidRequest) as too_old:
        transit.decrypt_data(name=key_name, ciphertext=v1)
    assert errors_of(too_old) == [ERR_TOO_OLD]


def test_batch_encrypt_decrypt_with_per_item_errors(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    items = [{"plaintext": b64(bytes([i]) * 8)} for i in range(3)]
    encrypted = transit.encrypt_data(name=key_name, batch_input=items)["data"]["batch_results"]
    assert [r["key_version"] for r in encrypted] == [1, 1, 1]
    batch = [{"ciphertext": r["ciphertext"]} for r in encrypted] + [{"ciphertext": "garbage"}]
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        transit.decrypt_data(name=key_name, batch_input=batch)
    results = info.value.json["data"]["batch_results"]  # a 400 that still carries every item's result
    assert [base64.b64decode(r["plaintext"]) for r in results[:3]] == [bytes([i]) * 8 for i in range(3)]
    assert results[3]["error"] == "invalid ciphertext: no prefix"


def test_batch_requires_context_on_all_items_or_none(vault_client: hvac.Client, key_name: str) -> None:
    vault_client.secrets.transit.create_key(name=key_name, derived=True)
    batch = [{"plaintext": b64(b"a"), "context": b64(b"c")}, {"plaintext": b64(b"b")}]
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.secrets.transit.encrypt_data(name=key_name, batch_input=batch)
    assert errors_of(info) == ["context should be set either in all the request blocks or in none"]


def test_derived_keys_need_and_bind_the_context(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name, derived=True)
    assert transit.read_key(name=key_name)["data"]["kdf"] == "hkdf_sha256"
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        transit.encrypt_data(name=key_name, plaintext=b64(b"x"))
    assert errors_of(info) == [ERR_DERIVATION]
    ciphertext = transit.encrypt_data(name=key_name, plaintext=b64(b"x"), context=b64(b"tenant-1"))["data"][
        "ciphertext"
    ]
    with pytest.raises(hvac_exc.InvalidRequest) as wrong:
        transit.decrypt_data(name=key_name, ciphertext=ciphertext, context=b64(b"tenant-2"))
    assert errors_of(wrong) == ["cipher: message authentication failed"]
    transit.rotate_key(name=key_name)
    rewrapped = transit.rewrap_data(name=key_name, ciphertext=ciphertext, context=b64(b"tenant-1"))["data"]
    assert rewrapped["key_version"] == 2
    plain = transit.decrypt_data(name=key_name, ciphertext=rewrapped["ciphertext"], context=b64(b"tenant-1"))
    assert plain["data"]["plaintext"] == b64(b"x")


def test_chacha_keys_work(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name, key_type="chacha20-poly1305")
    ciphertext = transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["ciphertext"]
    assert transit.decrypt_data(name=key_name, ciphertext=ciphertext)["data"]["plaintext"] == b64(b"x")


@pytest.mark.parametrize("kind", ["plaintext", "wrapped"])
def test_datakey(vault_client: hvac.Client, key_name: str, kind: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    data = transit.generate_data_key(name=key_name, key_type=kind, bits=512)["data"]
    assert data["ciphertext"].startswith("vault:v1:") and data["key_version"] == 1
    plain = base64.b64decode(transit.decrypt_data(name=key_name, ciphertext=data["ciphertext"])["data"]["plaintext"])
    assert len(plain) == 64
    assert ("plaintext" in data) is (kind == "plaintext")
    if kind == "plaintext":
        assert base64.b64decode(data["plaintext"]) == plain
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.adapter.post(f"/v1/{MOUNT}/datakey/{kind}/{key_name}", json={"bits": 100})
    assert errors_of(info) == ["invalid bits value"]


def test_random_bytes_in_both_places_and_formats(vault_client: hvac.Client) -> None:
    raw = vault_client.secrets.transit.generate_random_bytes(n_bytes=24)["data"]["random_bytes"]
    assert len(base64.b64decode(raw)) == 24
    # hvac has no sys/tools helpers: go through its adapter.
    hexed = vault_client.adapter.post("/v1/sys/tools/random", json={"bytes": 16, "format": "hex"})["data"][
        "random_bytes"
    ]
    assert len(bytes.fromhex(hexed)) == 16
    by_path = vault_client.adapter.post("/v1/sys/tools/random/8", json={"format": "base64"})["data"]["random_bytes"]
    assert len(base64.b64decode(by_path)) == 8
    with pytest.raises(hvac_exc.InvalidRequest):
        vault_client.adapter.post("/v1/sys/tools/random", json={"format": "binary"})


def test_hash_in_both_places(vault_client: hvac.Client) -> None:
    digest = vault_client.secrets.transit.hash_data(hash_input=b64(b"abc"), algorithm="sha2-512")["data"]["sum"]
    assert digest == hashlib.sha512(b"abc").hexdigest()
    summed = vault_client.adapter.post("/v1/sys/tools/hash", json={"input": b64(b"abc"), "format": "base64"})["data"][
        "sum"
    ]
    assert summed == b64(hashlib.sha256(b"abc").digest())
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.adapter.post("/v1/sys/tools/hash/md5", json={"input": b64(b"abc")})
    assert errors_of(info) == ["unsupported algorithm md5"]


def test_hmac_and_verify(vault_client: hvac.Client, key_name: str) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name)
    mac = transit.generate_hmac(name=key_name, hash_input=b64(b"msg"), algorithm="sha2-384")["data"]["hmac"]
    assert mac.startswith("vault:v1:") and len(base64.b64decode(mac.split(":")[2])) == 48
    verify = vault_client.adapter.post(
        f"/v1/{MOUNT}/verify/{key_name}/sha2-384", json={"input": b64(b"msg"), "hmac": mac}
    )
    assert verify["data"]["valid"] is True
    forged = vault_client.adapter.post(
        f"/v1/{MOUNT}/verify/{key_name}/sha2-384", json={"input": b64(b"x"), "hmac": mac}
    )
    assert forged["data"]["valid"] is False


def test_unsupported_path_and_operation(vault_client: hvac.Client) -> None:
    with pytest.raises(hvac_exc.InvalidPath) as path:
        vault_client.adapter.post(f"/v1/{MOUNT}/nope/x", json={})
    assert "unsupported path" in errors_of(path)[0]
    with pytest.raises(hvac_exc.VaultError) as op:
        vault_client.adapter.get(f"/v1/{MOUNT}/encrypt/x")
    assert "unsupported operation" in errors_of(op)[0]


def test_namespaces_are_separate_keyspaces(fake_vault: Any, key_name: str) -> None:
    fake_vault.create_namespace("team-a")
    team = hvac.Client(url=fake_vault.address, token=fake_vault.root_token, namespace="team-a")
    root = hvac.Client(url=fake_vault.address, token=fake_vault.root_token)
    team.secrets.transit.create_key(name=key_name)
    ciphertext = team.secrets.transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["ciphertext"]
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        root.secrets.transit.decrypt_data(name=key_name, ciphertext=ciphertext)
    assert errors_of(info) == ["encryption key not found"]
    unknown = hvac.Client(url=fake_vault.address, token=fake_vault.root_token, namespace="nobody")
    with pytest.raises(hvac_exc.InvalidPath):
        unknown.secrets.transit.read_key(name=key_name)


def test_namespaces_api(vault_client: hvac.Client) -> None:
    name = f"ns-{uuid.uuid4().hex[:6]}"
    created = vault_client.adapter.post(f"/v1/sys/namespaces/{name}", json={})
    assert created["data"]["path"] == f"{name}/"
    assert f"{name}/" in vault_client.adapter.list("/v1/sys/namespaces")["data"]["keys"]


def test_approle_endpoints_and_login(fake_vault: Any, vault_client: hvac.Client) -> None:
    role = f"r-{uuid.uuid4().hex[:6]}"
    vault_client.sys.create_or_update_policy(
        name=f"{role}-read", policy=f'path "{MOUNT}/keys/{READY_KEY}" {{ capabilities = ["read"] }}'
    )
    vault_client.auth.approle.create_or_update_approle(role_name=role, token_ttl="60", token_policies=[f"{role}-read"])
    role_id = vault_client.auth.approle.read_role_id(role_name=role)["data"]["role_id"]
    secret_id = vault_client.auth.approle.generate_secret_id(role_name=role)["data"]["secret_id"]
    client = hvac.Client(url=fake_vault.address)
    auth = client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
    assert auth["lease_duration"] == 60 and client.token == auth["client_token"]
    assert auth["token_policies"] == ["default", f"{role}-read"]
    assert client.secrets.transit.read_key(name=READY_KEY)["data"]["name"] == READY_KEY
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        hvac.Client(url=fake_vault.address).auth.approle.login(role_id=role_id, secret_id="wrong")
    assert errors_of(info) == ["invalid role or secret ID"]
    fake_vault.expire_tokens()
    with pytest.raises(hvac_exc.Forbidden):
        client.secrets.transit.read_key(name=READY_KEY)


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("throttle", hvac_exc.RateLimitExceeded, 429),
        ("unavailable", hvac_exc.VaultDown, 503),
        ("denied", hvac_exc.Forbidden, 403),
    ],
)
def test_fault_kinds_answer_with_vaults_codes(
    fake_vault: Any, vault_client: hvac.Client, kind: str, error: type[Exception], status: int
) -> None:
    fake_vault.faults.configure(rate=1.0, kind=kind, count=1)
    raw = requests.post(
        f"{fake_vault.address}/v1/{MOUNT}/encrypt/{READY_KEY}",
        headers={"X-Vault-Token": fake_vault.root_token},
        timeout=5,
    )
    assert raw.status_code == status and raw.headers["Content-Type"] == "application/json"
    fake_vault.faults.configure(rate=1.0, kind=kind, count=1)
    with pytest.raises(error):
        vault_client.secrets.transit.read_key(name=READY_KEY)
    assert vault_client.secrets.transit.read_key(name=READY_KEY)  # the fault was used up


def test_timeout_fault_outlasts_the_client_timeout() -> None:
    fake = start_vault_fake(fault_rate=1.0, fault_kind="timeout", timeout_delay=1.0)
    try:
        client = hvac.Client(url=fake.address, token=fake.root_token, timeout=0.2)
        with pytest.raises(requests.exceptions.Timeout):
            client.secrets.transit.read_key(name=READY_KEY)
    finally:
        fake.stop()


def test_faults_count_every_operation(fake_vault: Any, vault_client: hvac.Client) -> None:
    fake_vault.faults.reset_counts()
    vault_client.secrets.transit.read_key(name=READY_KEY)
    vault_client.secrets.transit.encrypt_data(name=READY_KEY, plaintext=b64(b"x"), context=b64(b"c"))
    vault_client.sys.list_mounted_secrets_engines()
    assert fake_vault.faults.calls == {"keys.read": 1, "encrypt": 1, "sys.mounts.list": 1}


def test_concurrent_clients(fake_vault: Any, key_name: str) -> None:
    hvac.Client(url=fake_vault.address, token=fake_vault.root_token).secrets.transit.create_key(name=key_name)
    failures: list[BaseException] = []

    def worker() -> None:
        client = hvac.Client(url=fake_vault.address, token=fake_vault.root_token)
        try:
            for _ in range(10):
                ct = client.secrets.transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["ciphertext"]
                assert client.secrets.transit.decrypt_data(name=key_name, ciphertext=ct)["data"]["plaintext"] == b64(
                    b"x"
                )
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_stop_releases_the_port_and_threads() -> None:
    before = threading.active_count()
    fake = start_vault_fake()
    hvac.Client(url=fake.address, token=fake.root_token).secrets.transit.read_key(name=READY_KEY)
    fake.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{fake.address}/v1/sys/health", timeout=2)
    assert threading.active_count() <= before


# -- status checks, sealing, rotation errors, automatic rotation ---------------------------------


def test_hvacs_status_checks_work_without_a_token(fake_vault: Any) -> None:
    client = hvac.Client(url=fake_vault.address, token="")
    assert client.sys.is_sealed() is False
    assert client.sys.is_initialized() is True
    status = client.sys.read_seal_status()
    assert (status["type"], status["t"], status["n"], status["version"]) == ("shamir", 1, 1, "1.17.0")
    head = client.sys.read_health_status()  # hvac sends HEAD by default
    assert head.status_code == 200 and head.content == b""


def test_a_sealed_vault_answers_503_except_its_status_checks(fake_vault: Any, vault_client: hvac.Client) -> None:
    fake_vault.seal()
    try:
        assert vault_client.sys.is_sealed() is True
        health = vault_client.sys.read_health_status(method="GET")
        assert health.status_code == 503 and health.json()["sealed"] is True
        custom = vault_client.sys.read_health_status(method="GET", sealed_code=200)
        assert custom["sealed"] is True
        with pytest.raises(hvac_exc.VaultDown) as info:
            vault_client.secrets.transit.read_key(name=READY_KEY)
        assert errors_of(info) == ["Vault is sealed"]
    finally:
        fake_vault.unseal()
    assert vault_client.sys.is_sealed() is False


def test_a_sealed_vault_is_a_transient_provider_error(fake_vault: Any) -> None:
    from kmsbox.errors import ProviderError
    from kmsbox.kek import open_kek

    kek = open_kek(fake_vault.kek_uri)
    fake_vault.seal()
    try:
        with pytest.raises(ProviderError) as info:
            kek.wrap(os.urandom(32), {"n": "x"})
        assert (info.value.transient, info.value.code) == (True, "unavailable")
    finally:
        fake_vault.unseal()
    kek.close()


def test_rotating_or_trimming_a_missing_key_gets_vaults_messages(vault_client: hvac.Client, key_name: str) -> None:
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.secrets.transit.rotate_key(name=key_name)
    assert errors_of(info) == ["key not found"]
    with pytest.raises(hvac_exc.InvalidRequest) as trim:
        vault_client.secrets.transit.trim_key(name=key_name, min_version=1)
    assert errors_of(trim) == ["invalid key name"]


@pytest.mark.parametrize(("period", "seconds"), [("1h", 3600), ("24h", 86400), (7200, 7200), ("90m", 5400)])
def test_auto_rotate_period_is_kept_and_shown(
    vault_client: hvac.Client, key_name: str, period: Any, seconds: int
) -> None:
    vault_client.secrets.transit.create_key(name=key_name, auto_rotate_period=period)
    assert vault_client.secrets.transit.read_key(name=key_name)["data"]["auto_rotate_period"] == seconds
    vault_client.secrets.transit.update_key_configuration(name=key_name, auto_rotate_period="0")
    assert vault_client.secrets.transit.read_key(name=key_name)["data"]["auto_rotate_period"] == 0


@pytest.mark.parametrize("period", ["30m", "59m59s", 60, "soon", "-1h", True])
def test_auto_rotate_period_under_an_hour_or_not_a_duration_is_400(
    vault_client: hvac.Client, key_name: str, period: Any
) -> None:
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.adapter.post(f"/v1/{MOUNT}/keys/{key_name}", json={"auto_rotate_period": period})
    assert errors_of(info)
    with pytest.raises(hvac_exc.InvalidPath):
        vault_client.secrets.transit.read_key(name=key_name)
    vault_client.secrets.transit.create_key(name=key_name)
    with pytest.raises(hvac_exc.InvalidRequest):
        vault_client.secrets.transit.update_key_configuration(name=key_name, auto_rotate_period=period)
    assert vault_client.secrets.transit.read_key(name=key_name)["data"]["auto_rotate_period"] == 0


def test_a_key_rotates_itself_once_its_period_has_passed(
    fake_vault: Any, vault_client: hvac.Client, key_name: str
) -> None:
    transit = vault_client.secrets.transit
    transit.create_key(name=key_name, auto_rotate_period="1h")
    transit.create_key(name=key_name + "-manual")
    old = transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["ciphertext"]
    fake_vault.advance_clock(1800)
    assert transit.read_key(name=key_name)["data"]["latest_version"] == 1
    fake_vault.advance_clock(1801)
    assert transit.read_key(name=key_name)["data"]["latest_version"] == 2
    assert transit.read_key(name=key_name + "-manual")["data"]["latest_version"] == 1
    assert transit.encrypt_data(name=key_name, plaintext=b64(b"x"))["data"]["ciphertext"].startswith("vault:v2:")
    assert base64.b64decode(transit.decrypt_data(name=key_name, ciphertext=old)["data"]["plaintext"]) == b"x"


def test_advance_clock_refuses_going_back(fake_vault: Any) -> None:
    with pytest.raises(ValueError):
        fake_vault.advance_clock(-1)
