"""Tests of the kmsbox-chacha example plugin: kmsbox's conformance suite, then its own checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import kmsbox
import pytest
from click.testing import CliRunner
from kmsbox.cli import get_cli
from kmsbox.kek import KekProvider, WrappedKey
from kmsbox.testing.kek_conformance import KekProviderConformance

from kmsbox_chacha import ChachaFileKekProvider, add_version

_CONTEXT = {"table": "payments", "row": "42"}


def _uri(path: Path) -> str:
    return f"chacha-file://{path.absolute()}"


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "chacha.keys"
    add_version(path)
    return path


class TestChachaConformance(KekProviderConformance):
    """The same suite every kmsbox KEK provider passes."""

    @pytest.fixture
    def kek(self, keyfile: Path) -> KekProvider:
        return kmsbox.open_kek(_uri(keyfile))

    @pytest.fixture
    def other_kek(self, tmp_path: Path) -> KekProvider:
        path = tmp_path / "other.keys"
        add_version(path)
        return kmsbox.open_kek(_uri(path))


def test_scheme_opens_the_example_provider(keyfile: Path) -> None:
    provider = kmsbox.open_kek(_uri(keyfile))
    assert isinstance(provider, ChachaFileKekProvider)
    assert provider.primary_version() == "v1"


def test_envelope_round_trip_through_the_plugin(keyfile: Path) -> None:
    envelope = kmsbox.Envelope(_uri(keyfile))
    blob = envelope.encrypt(b"hello chacha", _CONTEXT)
    assert kmsbox.Envelope(_uri(keyfile)).decrypt(blob, _CONTEXT) == b"hello chacha"


def test_new_version_is_primary_and_old_still_unwraps(keyfile: Path) -> None:
    key = os.urandom(32)
    old = kmsbox.open_kek(_uri(keyfile)).wrap(key, _CONTEXT)
    assert add_version(keyfile) == "v2"
    provider = kmsbox.open_kek(_uri(keyfile))
    assert provider.primary_version() == "v2"
    assert provider.unwrap(old, _CONTEXT) == key
    assert provider.rewrap(old, _CONTEXT).key_version == "v2"


def test_removed_version_is_key_unavailable(keyfile: Path) -> None:
    wrapped = kmsbox.open_kek(_uri(keyfile)).wrap(os.urandom(32), _CONTEXT)
    add_version(keyfile)
    lines = keyfile.read_text().splitlines()
    keyfile.write_text("\n".join(line for line in lines if not line.startswith("v1:")) + "\n")
    with pytest.raises(kmsbox.KeyUnavailable):
        kmsbox.open_kek(_uri(keyfile)).unwrap(wrapped, _CONTEXT)


def test_short_ciphertext_is_integrity_error(keyfile: Path) -> None:
    provider = kmsbox.open_kek(_uri(keyfile))
    with pytest.raises(kmsbox.IntegrityError):
        provider.unwrap(WrappedKey(provider.uri, "v1", b"short"), _CONTEXT)


def test_keyfile_is_created_private(keyfile: Path) -> None:
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        "",
        "# only a comment\n",
        "v1:abcd\n",
        "v1:" + "zz" * 32 + "\n",
        "key:" + "ab" * 32 + "\n",
        "v1:" + "ab" * 32 + "\nv1:" + "cd" * 32 + "\n",
    ],
)
def test_bad_keyfile_is_config_error_naming_the_file_without_echoing(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.keys"
    path.write_text(content)
    with pytest.raises(kmsbox.ConfigError) as info:
        kmsbox.open_kek(_uri(path))
    message = str(info.value)
    assert str(path) in message
    for line in content.splitlines():
        _, _, secret = line.partition(":")
        if len(secret) > 3:
            assert secret not in message


def test_missing_keyfile_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(kmsbox.ConfigError, match="does not exist"):
        kmsbox.open_kek(_uri(tmp_path / "absent.keys"))


def test_cli_command_from_register_commands(tmp_path: Path) -> None:
    path = tmp_path / "cli.keys"
    result = CliRunner().invoke(get_cli(), ["chacha", "add-version", str(path)])
    assert result.exit_code == 0, result.output
    assert "added v1" in result.output
    assert path.read_text().split(":", 1)[1].strip() not in result.output
