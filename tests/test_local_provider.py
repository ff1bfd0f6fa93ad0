"""The local KEK providers env:// and file://: conformance, key parsing, keyrings, fail-closed errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable
from kmsbox.kek import KekProvider, WrappedKey, open_kek
from kmsbox.providers.local import (
    KEYRING_FORMAT,
    LocalKekProvider,
    add_keyring_version,
    generate_hex_key,
    generate_keyring,
    parse_key_list,
    remove_keyring_version,
)
from kmsbox.testing.kek_conformance import KekProviderConformance

_CONTEXT = {"kmsbox:namespace": "app", "kmsbox:key-version": "1"}


def _hex() -> str:
    return os.urandom(32).hex()


class TestEnvKekConformance(KekProviderConformance):
    @pytest.fixture
    def env_keys(self) -> list[bytes]:
        return [os.urandom(32), os.urandom(32)]

    @pytest.fixture
    def kek(self, monkeypatch: pytest.MonkeyPatch, env_keys: list[bytes]) -> KekProvider:
        monkeypatch.setenv("KMSBOX_CONF_KEK", f"v2:{env_keys[0].hex()},v1:{env_keys[1].hex()}")
        return open_kek("env://KMSBOX_CONF_KEK")

    @pytest.fixture
    def kek_material(self, env_keys: list[bytes]) -> list[bytes]:
        return env_keys

    @pytest.fixture
    def other_kek(self, monkeypatch: pytest.MonkeyPatch) -> KekProvider:
        monkeypatch.setenv("KMSBOX_CONF_OTHER", f"v2:{_hex()},v1:{_hex()}")
        return open_kek("env://KMSBOX_CONF_OTHER")


class TestFileKekConformance(KekProviderConformance):
    @pytest.fixture
    def kek(self, tmp_path: Path) -> KekProvider:
        path = tmp_path / "keyring.json"
        uri = generate_keyring(path)
        add_keyring_version(path)
        return open_kek(uri)

    @pytest.fixture
    def kek_material(self, tmp_path: Path, kek: KekProvider) -> list[bytes]:
        keyring = json.loads((tmp_path / "keyring.json").read_text())
        return [bytes.fromhex(entry["key"]) for entry in keyring["keys"]]

    @pytest.fixture
    def other_kek(self, tmp_path: Path) -> KekProvider:
        path = tmp_path / "other.json"
        uri = generate_keyring(path)
        add_keyring_version(path)
        return open_kek(uri)


# --- env:// ---------------------------------------------------------------------------------


def test_single_hex_key_is_version_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBOX_T_KEK", _hex())
    provider = open_kek("env://KMSBOX_T_KEK")
    assert isinstance(provider, LocalKekProvider)
    assert provider.primary_version() == "v1"
    assert provider.wrap(os.urandom(32), _CONTEXT).key_version == "v1"


def test_uppercase_hex_and_surrounding_space_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBOX_T_KEK", f"  {_hex().upper()}\n")
    assert open_kek("env://KMSBOX_T_KEK").primary_version() == "v1"


def test_versioned_list_first_is_primary_and_all_unwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2, k3 = _hex(), _hex(), _hex()
    monkeypatch.setenv("KMSBOX_T_KEK", f"v1:{k1}")
    old = open_kek("env://KMSBOX_T_KEK").wrap(b"k" * 32, _CONTEXT)
    monkeypatch.setenv("KMSBOX_T_KEK", f"v3:{k3}, v2:{k2}, v1:{k1}")
    provider = open_kek("env://KMSBOX_T_KEK")
    assert provider.primary_version() == "v3"
    assert isinstance(provider, LocalKekProvider)
    assert provider.versions() == ["v3", "v1", "v2"]
    assert provider.unwrap(old, _CONTEXT) == b"k" * 32
    assert provider.rewrap(old, _CONTEXT).key_version == "v3"
    assert provider.describe()["versions"] == "v3,v1,v2"


def test_removed_version_is_key_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = _hex(), _hex()
    monkeypatch.setenv("KMSBOX_T_KEK", f"v2:{k2},v1:{k1}")
    wrapped = open_kek("env://KMSBOX_T_KEK").wrap(os.urandom(32), _CONTEXT)
    monkeypatch.setenv("KMSBOX_T_KEK", f"v1:{k1}")
    provider = open_kek("env://KMSBOX_T_KEK")
    assert provider.version_available("v2") is False
    with pytest.raises(KeyUnavailable):
        provider.unwrap(wrapped, _CONTEXT)


def test_same_key_under_another_version_name_does_not_unwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    k = _hex()
    monkeypatch.setenv("KMSBOX_T_KEK", f"v1:{k}")
    wrapped = open_kek("env://KMSBOX_T_KEK").wrap(os.urandom(32), _CONTEXT)
    monkeypatch.setenv("KMSBOX_T_KEK", f"v2:{k}")
    with pytest.raises(IntegrityError):
        open_kek("env://KMSBOX_T_KEK").unwrap(WrappedKey(wrapped.kek_uri, "v2", wrapped.ciphertext), _CONTEXT)


def _bad_values(key: str) -> dict[str, str]:
    return {
        "empty": "",
        "blank": "   ",
        "short": key[:-2],
        "long": key + "00",
        "non-hex": "zz" + key[2:],
        "duplicated version": f"v1:{key},v1:{_hex()}",
        "duplicated key": f"v2:{key},v1:{key}",
        "bad version name": f"x1:{key}",
        "version zero": f"v0:{key}",
        "missing version": f"{key},v1:{_hex()}",
        "short in list": f"v2:{key[:-1]},v1:{_hex()}",
    }


@pytest.mark.parametrize(
    "case",
    list(_bad_values("00" * 32)),
)
def test_bad_env_key_is_config_error_naming_variable_without_echo(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    key = _hex()
    value = _bad_values(key)[case]
    monkeypatch.setenv("KMSBOX_T_BAD", value)
    with pytest.raises(ConfigError) as info:
        open_kek("env://KMSBOX_T_BAD")
    message = str(info.value)
    assert "KMSBOX_T_BAD" in message
    assert key[4:-4] not in message
    assert value.strip() == "" or value.strip() not in message


def test_missing_variable_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMSBOX_T_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"KMSBOX_T_UNSET.*not set"):
        open_kek("env://KMSBOX_T_UNSET")


@pytest.mark.parametrize("uri", ["env://", "env://1ABC", "env://A-B", "env://A/B"])
def test_bad_variable_name_is_config_error(uri: str) -> None:
    with pytest.raises(ConfigError):
        open_kek(uri)


@pytest.mark.parametrize("uri", ["no-scheme", "://x", ""])
def test_uri_without_scheme_is_config_error(uri: str) -> None:
    with pytest.raises(ConfigError):
        open_kek(uri)


def test_parse_key_list_directly() -> None:
    k1, k2 = _hex(), _hex()
    keys, primary = parse_key_list(f"v7:{k1},v2:{k2}", "here")
    assert primary == "v7"
    assert keys == {"v7": bytes.fromhex(k1), "v2": bytes.fromhex(k2)}


def test_generate_hex_key_is_64_hex_and_random() -> None:
    a, b = generate_hex_key(), generate_hex_key()
    assert len(a) == 64 and bytes.fromhex(a) and a != b


# --- file:// ---------------------------------------------------------------------------------------


def test_generate_writes_a_private_keyring(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    uri = generate_keyring(path)
    assert uri == f"file://{path}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["format"] == KEYRING_FORMAT and data["primary"] == "v1"
    assert [e["version"] for e in data["keys"]] == ["v1"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".keyring-")]


def test_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    generate_keyring(path)
    before = path.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        generate_keyring(path)
    assert path.read_text() == before
    generate_keyring(path, overwrite=True)
    assert path.read_text() != before


def test_add_version_makes_a_new_primary_and_keeps_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    uri = generate_keyring(path)
    key = os.urandom(32)
    old = open_kek(uri).wrap(key, _CONTEXT)
    assert add_keyring_version(path) == "v2"
    assert add_keyring_version(path) == "v3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    provider = open_kek(uri)
    assert provider.primary_version() == "v3"
    assert provider.unwrap(old, _CONTEXT) == key


def test_remove_version(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    uri = generate_keyring(path)
    wrapped = open_kek(uri).wrap(os.urandom(32), _CONTEXT)
    with pytest.raises(ConfigError, match="primary"):
        remove_keyring_version(path, "v1")
    add_keyring_version(path)
    remove_keyring_version(path, "v1")
    with pytest.raises(ConfigError, match="no version v1"):
        remove_keyring_version(path, "v1")
    with pytest.raises(KeyUnavailable):
        open_kek(uri).unwrap(wrapped, _CONTEXT)


def _keyring(keys: list[dict[str, object]], primary: object = "v1") -> str:
    return json.dumps({"format": KEYRING_FORMAT, "primary": primary, "keys": keys})


@pytest.mark.parametrize(
    "case",
    [
        "not json",
        "wrong format",
        "no keys",
        "empty keys",
        "short key",
        "non-hex key",
        "duplicated version",
        "duplicated key",
        "bad version",
        "primary missing",
        "entry not object",
    ],
)
def test_bad_keyring_is_config_error_naming_file_without_echo(tmp_path: Path, case: str) -> None:
    key, key2 = _hex(), _hex()
    text = {
        "not json": "{" + key,
        "wrong format": json.dumps({"format": "other", "keys": [{"version": "v1", "key": key}]}),
        "no keys": json.dumps({"format": KEYRING_FORMAT, "primary": "v1"}),
        "empty keys": _keyring([]),
        "short key": _keyring([{"version": "v1", "key": key[:-1]}]),
        "non-hex key": _keyring([{"version": "v1", "key": "g" + key[1:]}]),
        "duplicated version": _keyring([{"version": "v1", "key": key}, {"version": "v1", "key": key2}]),
        "duplicated key": _keyring([{"version": "v1", "key": key}, {"version": "v2", "key": key}]),
        "bad version": _keyring([{"version": "one", "key": key}]),
        "primary missing": _keyring([{"version": "v1", "key": key}], primary="v2"),
        "entry not object": _keyring([key]),  # type: ignore[list-item]
    }[case]
    path = tmp_path / "keyring.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        open_kek(f"file://{path}")
    message = str(info.value)
    assert str(path) in message
    assert key[4:-4] not in message and key2[4:-4] not in message


def test_missing_keyring_is_config_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kmsbox keys generate"):
        open_kek(f"file://{tmp_path / 'absent.json'}")


@pytest.mark.parametrize("uri", ["file://host/keyring.json", "file://"])
def test_bad_file_uri_is_config_error(uri: str) -> None:
    with pytest.raises(ConfigError):
        open_kek(uri)


def test_localhost_file_uri_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    generate_keyring(path)
    assert open_kek(f"file://localhost{path}").primary_version() == "v1"


def test_describe_and_repr_never_show_keys(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    uri = generate_keyring(path)
    add_keyring_version(path)
    provider = open_kek(uri)
    text = repr(provider) + str(provider) + repr(provider.describe())
    for entry in json.loads(path.read_text())["keys"]:
        assert entry["key"] not in text and entry["key"].upper() not in text
        assert repr(bytes.fromhex(entry["key"])) not in text
    assert provider.describe()["primary_version"] == "v2"
