"""The provider against the fake: batching, rewrap, key versions, auth, namespaces, bad replies."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import hvac
import hvac.exceptions as hvac_exc
import pytest
from kmsbox_vault import provider as provider_module

from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import KekProvider, WrappedKey, open_kek

CONTEXT = {"kmsbox:namespace": "tests", "kmsbox:key-version": "1"}
# The least-privilege policy of docs/providers/vault.md, for the fake's ready key.
READY_KEY_POLICY = """
path "transit/keys/kmsbox-kek"    { capabilities = ["read"] }
path "transit/encrypt/kmsbox-kek" { capabilities = ["update"] }
path "transit/decrypt/kmsbox-kek" { capabilities = ["update"] }
path "transit/rewrap/kmsbox-kek"  { capabilities = ["update"] }
"""


def contexts(n: int) -> list[dict[str, str]]:
    return [{**CONTEXT, "i": str(i)} for i in range(n)]


def key_path(kek: KekProvider) -> tuple[str, str]:
    mount, _, name = kek.uri.split("/", 3)[3].rpartition("/keys/")
    return mount, name


def test_wrap_many_uses_one_batch_encrypt(fake_vault: Any, open_vault_key: Callable[..., KekProvider]) -> None:
    kek = open_vault_key()
    kek.primary_version()  # learn the key's binding before counting
    fake_vault.faults.reset_counts()
    keys = [os.urandom(32) for _ in range(5)]
    wrapped = kek.wrap_many(list(zip(keys, contexts(5), strict=True)))
    assert fake_vault.faults.calls == {"encrypt": 1}
    assert kek.unwrap_many(list(zip(wrapped, contexts(5), strict=True))) == keys
    assert fake_vault.faults.calls["decrypt"] == 1


def test_batches_are_chunked(
    fake_vault: Any, open_vault_key: Callable[..., KekProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_module, "BATCH_SIZE", 2)
    kek = open_vault_key()
    fake_vault.faults.reset_counts()
    wrapped = kek.wrap_many([(os.urandom(32), c) for c in contexts(5)])
    assert len(wrapped) == 5 and fake_vault.faults.calls["encrypt"] == 3


def test_rewrap_many_stays_inside_vault_for_derived_keys(
    fake_vault: Any, open_vault_key: Callable[..., KekProvider]
) -> None:
    kek = open_vault_key(derived=True)
    keys = [os.urandom(32) for _ in range(4)]
    wrapped = kek.wrap_many(list(zip(keys, contexts(4), strict=True)))
    assert fake_vault.rotate_key(kek.uri) == "v2"
    fake_vault.faults.reset_counts()
    rewrapped = kek.rewrap_many(list(zip(wrapped, contexts(4), strict=True)))
    assert fake_vault.faults.calls == {"rewrap": 1}
    assert {w.key_version for w in rewrapped} == {"v2"}
    assert kek.unwrap_many(list(zip(rewrapped, contexts(4), strict=True))) == keys


def test_rewrap_falls_back_to_decrypt_encrypt_for_associated_data_keys(
    fake_vault: Any, open_vault_key: Callable[..., KekProvider]
) -> None:
    kek = open_vault_key(derived=False)
    wrapped = kek.wrap_many([(os.urandom(32), c) for c in contexts(3)])
    fake_vault.rotate_key(kek.uri)
    fake_vault.faults.reset_counts()
    rewrapped = kek.rewrap_many(list(zip(wrapped, contexts(3), strict=True)))
    assert fake_vault.faults.calls == {"decrypt": 1, "encrypt": 1}  # Vault's rewrap cannot take associated_data
    assert [w.key_version for w in rewrapped] == ["v2"] * 3
    single = kek.rewrap(wrapped[0], contexts(3)[0])
    assert single.key_version == "v2"


def test_rotation_keeps_old_wraps_readable(fake_vault: Any, open_vault_key: Callable[..., KekProvider]) -> None:
    kek = open_vault_key()
    key = os.urandom(32)
    old = kek.wrap(key, CONTEXT)
    assert fake_vault.rotate_key(kek.uri) == "v2"
    assert kek.primary_version() == "v2" and kek.wrap(key, CONTEXT).key_version == "v2"
    assert kek.unwrap(old, CONTEXT) == key
    assert kek.version_available("v1") is True


def test_min_decryption_version_makes_old_versions_unavailable(
    fake_vault: Any, vault_client: hvac.Client, open_vault_key: Callable[..., KekProvider]
) -> None:
    kek = open_vault_key()
    old = kek.wrap(os.urandom(32), CONTEXT)
    fake_vault.rotate_key(kek.uri)
    mount, name = key_path(kek)
    vault_client.secrets.transit.update_key_configuration(name=name, mount_point=mount, min_decryption_version=2)
    assert kek.version_available("v1") is False and kek.version_available("v2") is True
    with pytest.raises(KeyUnavailable):
        kek.unwrap(old, CONTEXT)
    with pytest.raises(KeyUnavailable):
        kek.unwrap_many([(old, CONTEXT)])
    with pytest.raises(KeyUnavailable):
        kek.rewrap(old, CONTEXT)


def test_trimmed_versions_are_unavailable(
    fake_vault: Any, vault_client: hvac.Client, open_vault_key: Callable[..., KekProvider]
) -> None:
    kek = open_vault_key(derived=False)
    old = kek.wrap(os.urandom(32), CONTEXT)
    fake_vault.rotate_key(kek.uri)
    mount, name = key_path(kek)
    transit = vault_client.secrets.transit
    transit.update_key_configuration(name=name, mount_point=mount, min_decryption_version=2)
    transit.update_key_configuration(name=name, mount_point=mount, min_encryption_version=2)
    transit.trim_key(name=name, min_version=2, mount_point=mount)
    assert kek.version_available("v1") is False
    with pytest.raises(KeyUnavailable):
        kek.unwrap(old, CONTEXT)


def test_version_available_rejects_malformed_versions(open_vault_key: Callable[..., KekProvider]) -> None:
    kek = open_vault_key()
    assert kek.version_available("1") is False and kek.version_available("v0") is False
    assert kek.version_available("v999") is False


def test_local_checks_before_any_call(fake_vault: Any, open_vault_key: Callable[..., KekProvider]) -> None:
    kek = open_vault_key()
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    fake_vault.faults.reset_counts()
    with pytest.raises(IntegrityError):
        kek.unwrap(WrappedKey(kek.uri, "v2", wrapped.ciphertext), CONTEXT)
    with pytest.raises(IntegrityError):
        kek.unwrap(WrappedKey(kek.uri, "v1", b"\xff" + wrapped.ciphertext), CONTEXT)
    with pytest.raises(KeyUnavailable):
        kek.unwrap(WrappedKey("hcvault://elsewhere/transit/keys/x", "v1", wrapped.ciphertext), CONTEXT)
    assert fake_vault.faults.total_calls() == 0


def test_one_bad_item_fails_the_batch_with_its_error(open_vault_key: Callable[..., KekProvider]) -> None:
    kek = open_vault_key()
    wrapped = kek.wrap_many([(os.urandom(32), c) for c in contexts(3)])
    items = list(zip(wrapped, contexts(3), strict=True))
    items[1] = (wrapped[1], {"moved": "elsewhere"})
    with pytest.raises(IntegrityError):
        kek.unwrap_many(items)


def test_unknown_key_is_permanent_and_not_created(fake_vault: Any, vault_client: hvac.Client) -> None:
    name = f"missing-{uuid.uuid4().hex[:8]}"
    kek = open_kek(fake_vault.key_uri(name))
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is False and info.value.code == "not_found"
    with pytest.raises(hvac_exc.InvalidPath):  # no upsert happened behind our back
        vault_client.secrets.transit.read_key(name=name)
    kek.close()


def test_bad_token_is_permanent(fake_vault: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.revoked")
    kek = open_kek(fake_vault.kek_uri)
    fake_vault.faults.reset_counts()
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is False and info.value.code == "permission_denied"
    assert fake_vault.faults.total_calls() == 1
    assert "hvs.revoked" not in str(info.value) + repr(kek) + repr(kek.describe())
    kek.close()


def test_approle_logs_in_and_again_after_expiry(fake_vault: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_vault.put_policy("kmsbox-ready-key", READY_KEY_POLICY)
    role_id, secret_id = fake_vault.create_approle(f"app-{uuid.uuid4().hex[:6]}", policies=["kmsbox-ready-key"])
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID", secret_id)
    kek = open_kek(fake_vault.kek_uri)
    fake_vault.faults.reset_counts()
    key = os.urandom(32)
    wrapped = kek.wrap(key, CONTEXT)
    assert fake_vault.faults.calls["auth.approle.login"] == 1
    fake_vault.expire_tokens()
    assert kek.unwrap(wrapped, CONTEXT) == key
    assert fake_vault.faults.calls["auth.approle.login"] == 2
    assert kek.describe()["auth"] == "approle" and secret_id not in repr(kek.describe())
    kek.close()


def test_approle_with_a_wrong_secret_is_permanent(fake_vault: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    role_id, _ = fake_vault.create_approle(f"app-{uuid.uuid4().hex[:6]}")
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID", "not-the-secret")
    kek = open_kek(fake_vault.kek_uri)
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.code == "auth_failed" and info.value.transient is False
    assert "not-the-secret" not in str(info.value)
    kek.close()


def test_namespace_header_from_env(fake_vault: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_vault.create_namespace("team-b")
    uri = fake_vault.create_key(f"ns-{uuid.uuid4().hex[:6]}", namespace="team-b")
    outside = open_kek(uri)
    with pytest.raises(ProviderError) as info:
        outside.wrap(os.urandom(32), CONTEXT)
    assert info.value.code == "not_found"
    monkeypatch.setenv("VAULT_NAMESPACE", "team-b")
    inside = open_kek(uri)
    key = os.urandom(32)
    assert inside.unwrap(inside.wrap(key, CONTEXT), CONTEXT) == key
    assert inside.describe()["namespace"] == "team-b"
    outside.close()
    inside.close()


def test_describe_and_repr_carry_no_secrets(fake_vault: Any, open_vault_key: Callable[..., KekProvider]) -> None:
    kek = open_vault_key()
    info = kek.describe()
    assert info["provider"] == "vault" and info["primary_version"] == "v1" and info["binding"].startswith("context")
    assert all(isinstance(v, str) for v in info.values())
    assert fake_vault.root_token not in repr(info) + repr(kek)


def test_provider_is_thread_safe(open_vault_key: Callable[..., KekProvider]) -> None:
    kek = open_vault_key()
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                key = os.urandom(32)
                assert kek.unwrap(kek.wrap(key, CONTEXT), CONTEXT) == key
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


class _CannedVault(BaseHTTPRequestHandler):
    """Answers every request with the class's canned status, content type and body."""

    status = 200
    content_type = "application/json"
    body = b"{}"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer


@pytest.fixture
def canned_vault(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, str, bytes], str]]:
    servers: list[HTTPServer] = []

    def start(status: int, content_type: str, body: bytes) -> str:
        handler = type("Handler", (_CannedVault,), {"status": status, "content_type": content_type, "body": body})
        server = HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        port = server.server_address[1]
        monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("VAULT_TOKEN", "hvs.test")
        return f"hcvault://127.0.0.1:{port}/transit/keys/k"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("text/plain", b"not json", ProviderError),
        ("application/json", json.dumps({"data": {"latest_version": "one"}}).encode(), ProviderError),
        ("application/json", json.dumps({"data": {"type": "rsa-2048", "latest_version": 1}}).encode(), ConfigError),
    ],
)
def test_bad_key_descriptions_are_typed_errors(
    canned_vault: Callable[[int, str, bytes], str], content_type: str, body: bytes, error: type[Exception]
) -> None:
    kek = open_kek(canned_vault(200, content_type, body))
    with pytest.raises(error):
        kek.wrap(os.urandom(32), CONTEXT)
    kek.close()


def test_malformed_ciphertext_from_vault_is_a_permanent_error(canned_vault: Callable[[int, str, bytes], str]) -> None:
    reply = {"data": {"type": "aes256-gcm96", "latest_version": 1, "derived": True, "ciphertext": "vault:v1:%%%"}}
    kek = open_kek(canned_vault(200, "application/json", json.dumps(reply).encode()))
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is False and "malformed ciphertext" in str(info.value)
    kek.close()


def test_wrong_size_batch_from_vault_is_a_permanent_error(canned_vault: Callable[[int, str, bytes], str]) -> None:
    reply = {"data": {"type": "aes256-gcm96", "latest_version": 1, "derived": True, "batch_results": []}}
    kek = open_kek(canned_vault(200, "application/json", json.dumps(reply).encode()))
    with pytest.raises(ProviderError, match="wrong size"):
        kek.wrap_many([(os.urandom(32), CONTEXT)])
    kek.close()


def test_a_vault_that_ignores_associated_data_fails_closed(canned_vault: Callable[[int, str, bytes], str]) -> None:
    reply = {
        "data": {"type": "aes256-gcm96", "latest_version": 1, "derived": False, "ciphertext": "vault:v1:AAAA"},
        "warnings": ["Endpoint ignored these unrecognized parameters: [associated_data]"],
    }
    kek = open_kek(canned_vault(200, "application/json", json.dumps(reply).encode()))
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.code == "unsupported" and info.value.transient is False
    kek.close()
