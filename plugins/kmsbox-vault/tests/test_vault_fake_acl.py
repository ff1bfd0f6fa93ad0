"""Tokens and ACL policies in the Vault fake, through hvac: least privilege can be tested against it.

A token limited to encrypt and decrypt on one key must get Vault's 403 ``permission
denied`` everywhere else, as a real Vault answers it.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from typing import Any

import hvac
import hvac.exceptions as hvac_exc
import pytest
import requests
from kmsbox_vault.fake import READY_KEY

from kmsbox.errors import ProviderError
from kmsbox.kek import open_kek

DENIED = ["1 error occurred:\n\t* permission denied\n\n"]
CONTEXT = {"kmsbox:namespace": "acl"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def errors_of(info: pytest.ExceptionInfo[hvac_exc.VaultError]) -> list[str]:
    return list(info.value.errors or [])


def _encrypt_decrypt_policy(key: str) -> str:
    return f"""
# encrypt and decrypt with one key, nothing else
path "transit/encrypt/{key}" {{
  capabilities = ["update"]
}}
path "transit/decrypt/{key}" {{ capabilities = ["update"] }}  // one line works too
"""


@pytest.fixture
def limited(fake_vault: Any, vault_client: hvac.Client, key_name: str) -> Iterator[tuple[hvac.Client, str]]:
    """An hvac client whose token may only encrypt and decrypt with a fresh key ``key_name``."""
    vault_client.secrets.transit.create_key(name=key_name, derived=True)
    vault_client.sys.create_or_update_policy(name=f"use-{key_name}", policy=_encrypt_decrypt_policy(key_name))
    token = vault_client.auth.token.create(policies=[f"use-{key_name}"], ttl="1h")["auth"]["client_token"]
    client = hvac.Client(url=fake_vault.address, token=token)
    yield client, key_name
    client.adapter.close()


def test_a_limited_token_encrypts_and_decrypts_with_its_key(limited: tuple[hvac.Client, str]) -> None:
    client, key = limited
    context = b64(b"ctx")
    ciphertext = client.secrets.transit.encrypt_data(name=key, plaintext=b64(b"x"), context=context)["data"][
        "ciphertext"
    ]
    plain = client.secrets.transit.decrypt_data(name=key, ciphertext=ciphertext, context=context)["data"]
    assert base64.b64decode(plain["plaintext"]) == b"x"


def test_a_limited_token_gets_permission_denied_everywhere_else(
    limited: tuple[hvac.Client, str], vault_client: hvac.Client
) -> None:
    client, key = limited
    transit = client.secrets.transit
    attempts = {
        "read its key": lambda: transit.read_key(name=key),
        "rotate its key": lambda: transit.rotate_key(name=key),
        "rewrap": lambda: transit.rewrap_data(name=key, ciphertext="vault:v1:AAAA", context=b64(b"c")),
        "encrypt with another key": lambda: transit.encrypt_data(name=READY_KEY, plaintext=b64(b"x"), context="Yw=="),
        "list keys": lambda: transit.list_keys(),
        "list mounts": lambda: client.sys.list_mounted_secrets_engines(),
        "write a policy": lambda: client.sys.create_or_update_policy(
            name="mine", policy='path "*" {capabilities=["sudo"]}'
        ),
        "create an AppRole": lambda: client.auth.approle.create_or_update_approle(role_name="x"),
        "random bytes": lambda: transit.generate_random_bytes(n_bytes=8),
        "create a token": lambda: client.auth.token.create(policies=[f"use-{key}"]),
    }
    for what, attempt in attempts.items():
        with pytest.raises(hvac_exc.Forbidden) as info:
            attempt()
        assert errors_of(info) == DENIED, what
    assert "mine" not in vault_client.sys.list_policies()["data"]["policies"]


def test_the_403_body_is_vaults(fake_vault: Any, limited: tuple[hvac.Client, str]) -> None:
    client, _ = limited
    raw = requests.get(
        f"{fake_vault.address}/v1/transit/keys/{READY_KEY}", headers={"X-Vault-Token": client.token}, timeout=5
    )
    assert raw.status_code == 403 and raw.json() == {"errors": DENIED}


def test_the_token_knows_its_policies_and_can_look_itself_up(limited: tuple[hvac.Client, str]) -> None:
    client, key = limited
    data = client.auth.token.lookup_self()["data"]
    assert data["policies"] == ["default", f"use-{key}"] and 3590 <= data["ttl"] <= 3600
    assert data["renewable"] is True and data["type"] == "service"
    capabilities = client.sys.get_capabilities(paths=[f"transit/encrypt/{key}", f"transit/keys/{key}"])
    assert capabilities[f"transit/encrypt/{key}"] == ["update"]
    assert capabilities[f"transit/keys/{key}"] == ["deny"]


def test_a_child_token_cannot_have_more_than_its_parent(
    fake_vault: Any, limited: tuple[hvac.Client, str], vault_client: hvac.Client
) -> None:
    _, key = limited
    vault_client.sys.create_or_update_policy(
        name="token-maker", policy='path "auth/token/create" { capabilities = ["update"] }'
    )
    client = hvac.Client(url=fake_vault.address, token=fake_vault.create_token([f"use-{key}", "token-maker"]))
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        client.auth.token.create(policies=[f"use-{key}", "admin"])
    assert errors_of(info) == ["child policies must be subset of parent"]
    with pytest.raises(hvac_exc.InvalidRequest):
        client.auth.token.create(policies=["root"])
    child = client.auth.token.create(policies=[f"use-{key}"])["auth"]
    assert child["policies"] == ["default", f"use-{key}"]


def test_revoke_self_ends_the_token(fake_vault: Any, limited: tuple[hvac.Client, str]) -> None:
    client, key = limited
    client.auth.token.revoke_self()
    with pytest.raises(hvac_exc.Forbidden) as info:
        client.secrets.transit.encrypt_data(name=key, plaintext=b64(b"x"), context="Yw==")
    assert "invalid token" in errors_of(info)[0]


def test_a_token_expires_after_its_ttl(fake_vault: Any, limited: tuple[hvac.Client, str]) -> None:
    client, _ = limited
    fake_vault.advance_clock(3601)
    with pytest.raises(hvac_exc.Forbidden) as info:
        client.auth.token.lookup_self()
    assert "invalid token" in errors_of(info)[0]


def test_encrypting_to_a_missing_key_needs_create_not_update(fake_vault: Any, vault_client: hvac.Client) -> None:
    name = f"k-{uuid.uuid4().hex[:10]}"
    vault_client.sys.create_or_update_policy(
        name=f"update-{name}", policy=f'path "transit/encrypt/{name}" {{ capabilities = ["update"] }}'
    )
    vault_client.sys.create_or_update_policy(
        name=f"create-{name}", policy=f'path "transit/encrypt/{name}" {{ capabilities = ["create", "update"] }}'
    )
    for policy, allowed in ((f"update-{name}", False), (f"create-{name}", True)):
        token = fake_vault.create_token([policy])
        client = hvac.Client(url=fake_vault.address, token=token)
        if allowed:
            client.secrets.transit.encrypt_data(name=name, plaintext=b64(b"x"))
        else:
            with pytest.raises(hvac_exc.Forbidden):
                client.secrets.transit.encrypt_data(name=name, plaintext=b64(b"x"))
    assert vault_client.secrets.transit.read_key(name=name)["data"]["name"] == name


@pytest.mark.parametrize(
    ("policy", "path", "allowed"),
    [
        ('path "transit/encrypt/*" { capabilities = ["update"] }', "transit/encrypt/anything", True),
        ('path "transit/+/k1" { capabilities = ["update"] }', "transit/decrypt/k1", True),
        ('path "transit/+/k1" { capabilities = ["update"] }', "transit/decrypt/k2", False),
        ('path "transit/encrypt/k*" { capabilities = ["update"] }', "transit/encrypt/kx", True),
        (
            'path "transit/*" { capabilities = ["update"] }\npath "transit/decrypt/*" { capabilities = ["deny"] }',
            "transit/decrypt/k1",
            False,
        ),
        (
            'path "transit/*" { capabilities = ["deny"] }\npath "transit/decrypt/k1" { capabilities = ["update"] }',
            "transit/decrypt/k1",
            True,  # an exact path beats a glob
        ),
        (
            'path "transit/+/k1" { capabilities = ["read"] }\npath "transit/decrypt/*" { capabilities = ["update"] }',
            "transit/decrypt/k1",
            True,  # the later first wildcard wins
        ),
        ('{"path": {"transit/decrypt/k1": {"capabilities": ["update"]}}}', "transit/decrypt/k1", True),
    ],
)
def test_path_patterns_follow_vaults_priority_rules(
    fake_vault: Any, vault_client: hvac.Client, policy: str, path: str, allowed: bool
) -> None:
    name = f"p-{uuid.uuid4().hex[:8]}"
    vault_client.sys.create_or_update_policy(name=name, policy=policy)
    token = fake_vault.create_token([name])
    capabilities = hvac.Client(url=fake_vault.address, token=token).sys.get_capabilities(paths=[path])
    assert ("update" in capabilities["capabilities"]) is allowed


def test_policies_are_written_read_listed_and_deleted(vault_client: hvac.Client) -> None:
    name = f"Pol-{uuid.uuid4().hex[:6]}"
    text = 'path "transit/keys/*" { capabilities = ["read", "list"] }'
    vault_client.sys.create_or_update_policy(name=name, policy=text)
    assert vault_client.sys.read_policy(name=name.lower())["data"]["rules"] == text
    assert {name.lower(), "default", "root"} <= set(vault_client.sys.list_policies()["data"]["policies"])
    acl = vault_client.adapter.get(f"/v1/sys/policies/acl/{name.lower()}")
    assert acl["data"]["policy"] == text
    vault_client.sys.delete_policy(name=name)
    with pytest.raises(hvac_exc.InvalidPath):
        vault_client.sys.read_policy(name=name.lower())


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ('path "transit/*" { capabilities = ["fly"] }', "invalid capability 'fly'"),
        ('path "transit/*" { capabilities = ["read"] allowed_parameters = {} }', "is not modelled"),
        ('path "transit/*" { policy = "write" }', "is not modelled"),
        ('path "transit/*" { capabilities = ["read"]', "unexpected end of policy"),
        ("path transit { }", "expected string"),
        ('key "transit/*" { capabilities = ["read"] }', "unsupported block 'key'"),
        ('{"path": {"transit/*": {"capabilities": "read"}}}', "must be a list"),
        ('{"path": [}', "invalid JSON"),
        ('path "tr*ansit" { capabilities = ["read"] }', "'*' may only end a path"),
    ],
)
def test_a_bad_policy_is_400_and_not_stored(vault_client: hvac.Client, policy: str, message: str) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.sys.create_or_update_policy(name=name, policy=policy)
    assert errors_of(info)[0].startswith("failed to parse policy: ") and message in errors_of(info)[0]
    assert name not in vault_client.sys.list_policies()["data"]["policies"]


def test_the_put_policy_helper_refuses_a_bad_policy_with_value_error(fake_vault: Any) -> None:
    with pytest.raises(ValueError, match="invalid capability 'fly'"):
        fake_vault.put_policy("bad", 'path "x" { capabilities = ["fly"] }')
    with pytest.raises(ValueError, match="cannot update root policy"):
        fake_vault.put_policy("root", 'path "x" { capabilities = ["read"] }')


def test_root_and_default_policies_are_protected(vault_client: hvac.Client) -> None:
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.sys.create_or_update_policy(name="root", policy='path "*" { capabilities = ["read"] }')
    assert errors_of(info) == ["cannot update root policy"]
    for name in ("root", "default"):
        with pytest.raises(hvac_exc.InvalidRequest) as info:
            vault_client.sys.delete_policy(name=name)
        assert errors_of(info) == [f"cannot delete {name} policy"]


def test_approle_tokens_carry_the_roles_policies(fake_vault: Any, key_name: str) -> None:
    fake_vault.create_key(key_name)
    fake_vault.put_policy(f"use-{key_name}", _encrypt_decrypt_policy(key_name))
    role_id, secret_id = fake_vault.create_approle(f"r-{key_name}", policies=[f"use-{key_name}"])
    client = hvac.Client(url=fake_vault.address)
    auth = client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
    assert auth["policies"] == ["default", f"use-{key_name}"]
    client.secrets.transit.encrypt_data(name=key_name, plaintext=b64(b"x"), context="Yw==")
    with pytest.raises(hvac_exc.Forbidden):
        client.secrets.transit.read_key(name=key_name)


def test_namespaced_policies_and_tokens(fake_vault: Any, key_name: str) -> None:
    namespace = f"team-{uuid.uuid4().hex[:6]}"
    fake_vault.create_namespace(namespace)
    fake_vault.create_key(key_name, namespace=namespace)
    # A policy in the root namespace reaches into a child namespace through its path...
    fake_vault.put_policy("child", f'path "{namespace}/transit/encrypt/{key_name}" {{ capabilities = ["update"] }}')
    outer = hvac.Client(url=fake_vault.address, token=fake_vault.create_token(["child"]), namespace=namespace)
    outer.secrets.transit.encrypt_data(name=key_name, plaintext=b64(b"x"), context="Yw==")
    # ...and a token of the child namespace uses that namespace's own policies.
    fake_vault.put_policy("local", _encrypt_decrypt_policy(key_name), namespace=namespace)
    inner_token = fake_vault.create_token(["local"], namespace=namespace)
    inner = hvac.Client(url=fake_vault.address, token=inner_token, namespace=namespace)
    inner.secrets.transit.encrypt_data(name=key_name, plaintext=b64(b"x"), context="Yw==")
    with pytest.raises(hvac_exc.Forbidden):  # a child namespace's token has no rights in the root namespace
        hvac.Client(url=fake_vault.address, token=inner_token).secrets.transit.encrypt_data(
            name=READY_KEY, plaintext=b64(b"x"), context="Yw=="
        )


def test_the_provider_works_with_the_documented_least_privilege_policy(
    fake_vault: Any, key_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = fake_vault.create_key(key_name)
    fake_vault.put_policy(
        "kmsbox",
        f"""
path "transit/keys/{key_name}"    {{ capabilities = ["read"] }}
path "transit/encrypt/{key_name}" {{ capabilities = ["update"] }}
path "transit/decrypt/{key_name}" {{ capabilities = ["update"] }}
path "transit/rewrap/{key_name}"  {{ capabilities = ["update"] }}
""",
    )
    monkeypatch.setenv("VAULT_TOKEN", fake_vault.create_token(["kmsbox"], ttl=3600))
    kek = open_kek(uri)
    key = os.urandom(32)
    wrapped = kek.wrap(key, CONTEXT)
    assert kek.unwrap(kek.rewrap(wrapped, CONTEXT), CONTEXT) == key
    other = open_kek(fake_vault.kek_uri)
    with pytest.raises(ProviderError) as info:
        other.wrap(key, CONTEXT)
    assert (info.value.transient, info.value.code) == (False, "permission_denied")
    kek.close()
    other.close()


def test_without_decrypt_the_provider_can_wrap_but_not_unwrap(
    fake_vault: Any, key_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = fake_vault.create_key(key_name)
    fake_vault.put_policy(
        "wrap-only",
        f'path "transit/keys/{key_name}" {{ capabilities = ["read"] }}\n'
        f'path "transit/encrypt/{key_name}" {{ capabilities = ["update"] }}',
    )
    monkeypatch.setenv("VAULT_TOKEN", fake_vault.create_token(["wrap-only"]))
    kek = open_kek(uri)
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(ProviderError) as info:
        kek.unwrap(wrapped, CONTEXT)
    assert info.value.code == "permission_denied" and "permission denied" in str(info.value)
    kek.close()


@pytest.mark.parametrize(
    "body",
    [
        {"policies": "a", "ttl": "soon"},
        {"policies": 7},
        {"policies": ["a", 1]},
        {"ttl": True},
        {"meta": ["not", "a", "map"]},
        {"meta": {"k": 1}},
    ],
)
def test_bad_token_create_requests_are_400_and_make_no_token(
    fake_vault: Any, vault_client: hvac.Client, body: dict[str, Any]
) -> None:
    before = len(fake_vault.state.tokens)
    with pytest.raises(hvac_exc.InvalidRequest) as info:
        vault_client.adapter.post("/v1/auth/token/create", json=body)
    assert errors_of(info)
    assert len(fake_vault.state.tokens) == before


@pytest.mark.parametrize("body", [{}, {"paths": []}, {"paths": "x"}, {"paths": [1]}])
def test_bad_capabilities_requests_are_400(vault_client: hvac.Client, body: dict[str, Any]) -> None:
    if body == {"paths": "x"}:  # a single path as a string is accepted, as Vault does
        assert vault_client.adapter.post("/v1/sys/capabilities-self", json={"path": "x"})["capabilities"] == ["root"]
        return
    with pytest.raises(hvac_exc.InvalidRequest):
        vault_client.adapter.post("/v1/sys/capabilities-self", json=body)


@pytest.mark.parametrize("code", ["abc", "99", "600", "-1"])
def test_bad_health_status_codes_are_400(fake_vault: Any, code: str) -> None:
    raw = requests.get(f"{fake_vault.address}/v1/sys/health", params={"activecode": code}, timeout=5)
    assert raw.status_code == 400 and raw.json()["errors"]


def test_approle_role_options_are_checked(vault_client: hvac.Client) -> None:
    with pytest.raises(hvac_exc.InvalidRequest):
        vault_client.adapter.post("/v1/auth/approle/role/bad-ttl", json={"token_ttl": "forever"})
    with pytest.raises(hvac_exc.InvalidRequest):
        vault_client.adapter.post("/v1/auth/approle/role/bad-policies", json={"token_policies": {"a": 1}})
    for role in ("bad-ttl", "bad-policies"):  # a refused request leaves no role behind
        with pytest.raises(hvac_exc.InvalidRequest) as info:
            vault_client.auth.approle.read_role_id(role_name=role)
        assert errors_of(info) == [f'role "{role}" does not exist']
