"""URI parsing and environment settings: malformed input fails closed with ConfigError at open."""

from __future__ import annotations

from typing import Any

import pytest
from kmsbox_vault.settings import settings_from_env
from kmsbox_vault.uri import parse_key_uri

from kmsbox.errors import ConfigError
from kmsbox.kek import open_kek

GOOD = "hcvault://vault.example.com:8200/transit/keys/app"


@pytest.mark.parametrize(
    "uri",
    [
        "hcvault://",
        "hcvault:///transit/keys/app",
        "hcvault://vault.example.com",
        "hcvault://vault.example.com/transit",
        "hcvault://vault.example.com/keys/app",
        "hcvault://vault.example.com/transit/keys/",
        "hcvault://vault.example.com/transit/keys/a/b",
        "hcvault://vault.example.com/transit/keys/bad name",
        "hcvault://vault.example.com/trans it/keys/app",
        "hcvault://vault.example.com//keys/app",
        "hcvault://vault.example.com:99999/transit/keys/app",
        "hcvault://vault.example.com:port/transit/keys/app",
        "hcvault://user:pass@vault.example.com/transit/keys/app",
        "hcvault://vault.example.com/transit/keys/app?tls=maybe",
        "hcvault://vault.example.com/transit/keys/app?tls=true&tls=false",
        "hcvault://vault.example.com/transit/keys/app?region=x",
        "hcvault://vault.example.com/transit/keys/app#frag",
    ],
)
def test_malformed_uris_raise_config_error(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.test")
    with pytest.raises(ConfigError):
        open_kek(uri)


def test_credentials_in_the_uri_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_key_uri("hcvault://user:s3cr3t@vault.example.com/transit/keys/app")
    assert "s3cr3t" not in str(info.value)


def test_uri_parts_and_nested_mounts() -> None:
    ref = parse_key_uri("hcvault://vault.example.com/team/transit/keys/app.v2@prod")
    assert (ref.host, ref.port, ref.mount, ref.name, ref.tls) == (
        "vault.example.com",
        8200,
        "team/transit",
        "app.v2@prod",
        None,
    )
    assert parse_key_uri("hcvault://10.0.0.1:8300/transit/keys/k?tls=false").tls is False
    assert parse_key_uri("hcvault://[::1]:8200/transit/keys/k").hostport == "[::1]:8200"


def test_no_credentials_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="no Vault credentials"):
        open_kek(GOOD)


def test_half_an_approle_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ROLE_ID", "role")
    monkeypatch.delenv("VAULT_SECRET_ID", raising=False)
    with pytest.raises(ConfigError, match="VAULT_SECRET_ID"):
        open_kek(GOOD)


def test_approle_is_preferred_and_hidden_from_repr() -> None:
    env = {"VAULT_TOKEN": "hvs.tok", "VAULT_ROLE_ID": "role", "VAULT_SECRET_ID": "very-secret"}
    settings = settings_from_env(parse_key_uri(GOOD), env)
    assert settings.auth_method == "approle" and settings.token is None
    assert "very-secret" not in repr(settings)
    assert "hvs.tok" not in repr(settings_from_env(parse_key_uri(GOOD), {"VAULT_TOKEN": "hvs.tok"}))


@pytest.mark.parametrize(
    ("uri", "env", "address"),
    [
        (GOOD, {}, "https://vault.example.com:8200"),
        (GOOD, {"VAULT_ADDR": "http://vault.example.com:8200"}, "http://vault.example.com:8200"),
        (GOOD, {"VAULT_ADDR": "http://other.example.com:8200"}, "https://vault.example.com:8200"),
        (GOOD, {"VAULT_ADDR": "http://vault.example.com:9999"}, "https://vault.example.com:8200"),
        (GOOD + "?tls=false", {}, "http://vault.example.com:8200"),
        (GOOD + "?tls=true", {"VAULT_ADDR": "http://vault.example.com:8200"}, "https://vault.example.com:8200"),
    ],
)
def test_plain_http_only_when_configured(uri: str, env: dict[str, str], address: str) -> None:
    settings = settings_from_env(parse_key_uri(uri), {"VAULT_TOKEN": "t", **env})
    assert settings.address == address


def test_tls_settings(tmp_path: Any) -> None:
    ref = parse_key_uri(GOOD)
    assert settings_from_env(ref, {"VAULT_TOKEN": "t", "VAULT_SKIP_VERIFY": "true"}).verify is False
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert settings_from_env(ref, {"VAULT_TOKEN": "t", "VAULT_CACERT": str(bundle)}).verify == str(bundle)
    with pytest.raises(ConfigError, match="does not exist"):
        settings_from_env(ref, {"VAULT_TOKEN": "t", "VAULT_CACERT": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError):
        settings_from_env(ref, {"VAULT_TOKEN": "t", "VAULT_SKIP_VERIFY": "perhaps"})
    with pytest.raises(ConfigError):
        settings_from_env(ref, {"VAULT_TOKEN": "t", "VAULT_CLIENT_CERT": "/c.pem"})
    with pytest.raises(ConfigError):
        settings_from_env(ref, {"VAULT_TOKEN": "t", "VAULT_ADDR": "ftp://vault.example.com"})


def test_namespace_from_env() -> None:
    settings = settings_from_env(parse_key_uri(GOOD), {"VAULT_TOKEN": "t", "VAULT_NAMESPACE": "/team-a/"})
    assert settings.namespace == "team-a"
