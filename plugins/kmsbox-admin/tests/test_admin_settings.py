"""Tokens and the [admin] table: minting, hashing, lookup, and every bad setting refused."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from admin_helpers import KEK_URI, Seed
from kmsbox_admin.operations import StoreOperations
from kmsbox_admin.settings import config_path, load_admin_settings, parse_admin_table
from kmsbox_admin.tokens import TokenEntry, find_token, hash_token, mint_token

from kmsbox.errors import ConfigError


def test_minted_tokens_are_random_and_only_their_sha256_is_kept() -> None:
    first, second = mint_token(), mint_token()
    assert first != second and first.startswith("kbx_") and len(first) >= 40
    assert hash_token(first) == "sha256:" + hashlib.sha256(first.encode()).hexdigest()


def test_a_token_is_found_by_its_hash_and_nothing_else() -> None:
    alice, bob = mint_token(), mint_token()
    entries = [TokenEntry("alice", "admin", hash_token(alice)), TokenEntry("bob", "viewer", hash_token(bob))]
    assert find_token(entries, alice) == entries[0]
    assert find_token(entries, bob) == entries[1]
    for wrong in ("", alice[:-1], alice + "x", hash_token(alice), "\ud800", "x" * 10_000):
        assert find_token(entries, wrong) is None


def test_a_token_entry_repr_hides_its_hash() -> None:
    entry = TokenEntry("alice", "admin", hash_token(mint_token()))
    assert entry.sha256 not in repr(entry) and "alice" in repr(entry)


def _table(**extra: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"tokens": [{"actor": "alice", "role": "admin", "hash": hash_token("t")}]}
    table.update(extra)
    return table


def test_a_full_admin_table_is_read() -> None:
    settings = parse_admin_table(
        _table(
            host="0.0.0.0",
            port=9000,
            tls_cert="/c.pem",
            tls_key="/k.pem",
            allowed_hosts=["admin.example"],
            kek_targets=["env://NEXT"],
            session_minutes=10,
            auth_failures=3,
            auth_lockout=30,
            job_history=5,
        )
    )
    assert (settings.host, settings.port, settings.tls, settings.hosts()) == ("0.0.0.0", 9000, True, ["admin.example"])
    assert (settings.kek_targets, settings.session_minutes, settings.auth_failures) == (["env://NEXT"], 10, 3)
    assert (settings.auth_lockout, settings.job_history) == (30.0, 5)
    assert settings.tokens == [TokenEntry("alice", "admin", hash_token("t"))]


PASTED_TOKEN = "kbx_this-was-pasted-instead-of-its-hash"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("not a table", "admin must be a table"),
        (_table(listen="0.0.0.0"), "unknown [admin] settings ['listen']"),
        ({}, "no admin tokens"),
        ({"tokens": []}, "no admin tokens"),
        ({"tokens": ["alice"]}, "must be a table"),
        ({"tokens": [{"actor": "alice", "role": "admin", "hash": hash_token("t"), "note": 1}]}, "unknown settings"),
        ({"tokens": [{"actor": "", "role": "admin", "hash": hash_token("t")}]}, "actor must be"),
        ({"tokens": [{"actor": "a b", "role": "admin", "hash": hash_token("t")}]}, "actor must be"),
        ({"tokens": [{"actor": "alice", "role": "root", "hash": hash_token("t")}]}, "role must be one of"),
        ({"tokens": [{"actor": "alice", "role": "admin", "hash": PASTED_TOKEN}]}, "hash must be 'sha256:'"),
        ({"tokens": [{"actor": "alice", "role": "admin", "hash": hash_token("t").upper()}]}, "hash must be"),
        (
            {
                "tokens": [
                    {"actor": "a", "role": "admin", "hash": hash_token("t")},
                    {"actor": "b", "role": "viewer", "hash": hash_token("t")},
                ]
            },
            "configured twice",
        ),
        (_table(port=70000), "port must be an integer"),
        (_table(port=True), "port must be an integer"),
        (_table(port="8470"), "port must be an integer"),
        (_table(tls_cert="/c.pem"), "go together"),
        (_table(host=""), "host must be a non-empty string"),
        (_table(allowed_hosts="admin.example"), "allowed_hosts must be an array"),
        (_table(kek_targets=[1]), "kek_targets must be an array"),
        (_table(auth_lockout=float("nan")), "auth_lockout must be"),
        (_table(auth_lockout=0), "auth_lockout must be"),
        (_table(session_minutes=0), "session_minutes must be"),
        (_table(auth_failures=0), "auth_failures must be"),
        (_table(job_history=10**9), "job_history must be"),
    ],
)
def test_bad_admin_settings_are_refused_by_name(table: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_admin_table(table, "kmsbox.toml")
    assert message in str(caught.value)
    assert PASTED_TOKEN not in str(caught.value)  # a token pasted by mistake is never echoed


def test_the_config_file_is_found_as_kmsbox_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    assert config_path() is None
    (tmp_path / "kmsbox.toml").write_text("")
    assert config_path() == tmp_path / "kmsbox.toml"
    monkeypatch.setenv("KMSBOX_CONFIG", "/etc/other.toml")
    assert config_path() == Path("/etc/other.toml")
    assert config_path("given.toml") == Path("given.toml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[store]\nurl = 'memory://'\n", "has no [admin] table"),
        (b"[admin\n", "is not valid TOML"),
        (b"[admin]\nhost = '\xff'\n", "is not UTF-8"),
    ],
)
def test_a_config_file_without_a_usable_admin_table_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "kmsbox.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_admin_settings(path)
    with pytest.raises(ConfigError, match="no config file"):
        load_admin_settings(None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_admin_settings(tmp_path / "missing.toml")


def _config(tmp_path: Path, seeded: Seed, admin_part: str, tail: str = "") -> Path:
    path = tmp_path / "admin.toml"
    path.write_text(
        f'[store]\nurl = "{seeded.url}"\nkek = ["{KEK_URI}"]\n\n{admin_part}\n[cache]\nmax_age = 60\n{tail}',
        encoding="utf-8",
    )
    return path


ADMIN_TABLES = f"""[admin]
port = 0
kek_targets = ["env://NEXT"]

[[admin.tokens]]
actor = "alice"
role = "admin"
hash = "{hash_token("t")}"
"""


async def _namespaces_of(path: Path) -> list[str]:
    operations = await StoreOperations.open(config_file=path)
    try:
        return await operations._store.namespaces()
    finally:
        await operations.close()


def test_the_store_opens_from_the_same_file_as_the_admin_table(tmp_path: Path, seeded: Seed) -> None:
    path = _config(tmp_path, seeded, ADMIN_TABLES)
    settings = load_admin_settings(path)
    assert [t.actor for t in settings.tokens] == ["alice"] and settings.kek_targets == ["env://NEXT"]
    # kmsbox's loader passes over [admin] (and its sub-tables): no private copy of the file.
    assert asyncio.run(_namespaces_of(path)) == ["app:production", "tenant-7"]


def test_an_inline_admin_table_is_read_too(tmp_path: Path, seeded: Seed) -> None:
    path = tmp_path / "inline.toml"
    entry = f'{{ actor = "alice", role = "viewer", hash = "{hash_token("t")}" }}'
    path.write_text(f'admin = {{ port = 1, tokens = [{entry}] }}\n[store]\nurl = "{seeded.url}"\nkek = "{KEK_URI}"\n')
    assert load_admin_settings(path).port == 1
    assert asyncio.run(_namespaces_of(path)) == ["app:production", "tenant-7"]


def test_a_bad_store_setting_beside_the_admin_table_is_the_stores_config_error(tmp_path: Path, seeded: Seed) -> None:
    path = _config(tmp_path, seeded, ADMIN_TABLES, "[storage]\nurl = 1\n")
    assert load_admin_settings(path).port == 0  # the [admin] part is fine
    with pytest.raises(ConfigError, match=r"unknown top-level settings \['storage'\]"):
        asyncio.run(_namespaces_of(path))


def test_open_refuses_a_pool_size_out_of_range() -> None:
    for threads in (0, 65):
        with pytest.raises(ValueError, match="threads must be from 1 to 64"):
            asyncio.run(StoreOperations.open("memory://", ["env://UNUSED"], threads=threads))
