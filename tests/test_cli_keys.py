"""`kmsbox keys ...`, `kmsbox encrypt` and `kmsbox decrypt`: behaviour, file modes, one-line errors."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kmsbox.cli import get_cli
from kmsbox.cli.output import EXIT_CODES
from kmsbox.plugins import PLUGINS_ENV, reset_plugin_manager

_CONTEXT_ARGS = ["--context", "table=payments", "--context", "row=42"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("KMSBOX_KEK", "KMSBOX_STORE", "KMSBOX_CONFIG", PLUGINS_ENV):
        monkeypatch.delenv(name, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def run(args: list[str], input: bytes | None = None) -> Result:
    return CliRunner().invoke(get_cli(), args, input=input)


def assert_one_line_error(result: Result, code: str) -> str:
    assert result.exit_code == EXIT_CODES[code], (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kmsbox: error: "), result.stderr
    return lines[0]


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    path = tmp_path / "keyring.json"
    result = run(["keys", "generate", str(path)])
    assert result.exit_code == 0, result.output
    return path


# --- keys ------------------------------------------------------------------------------------------


def test_generate_prints_the_uri_and_writes_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    result = run(["keys", "generate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"file://{path}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = json.loads(path.read_text())["keys"][0]["key"]
    assert key not in result.output


def test_generate_json_output(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    result = run(["--json", "keys", "generate", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"kek_uri": f"file://{path}"}


def test_generate_refuses_an_existing_keyring(keyring: Path) -> None:
    before = keyring.read_text()
    line = assert_one_line_error(run(["keys", "generate", str(keyring)]), "config")
    assert "already exists" in line
    assert keyring.read_text() == before
    assert run(["keys", "generate", "--force", str(keyring)]).exit_code == 0
    assert keyring.read_text() != before


def test_add_version_adds_a_new_primary(keyring: Path) -> None:
    result = run(["keys", "add-version", str(keyring)])
    assert result.exit_code == 0, result.output
    assert "added v2" in result.stdout
    data = json.loads(keyring.read_text())
    assert data["primary"] == "v2" and [k["version"] for k in data["keys"]] == ["v1", "v2"]
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    assert all(k["key"] not in result.output for k in data["keys"])
    result = run(["--json", "keys", "add-version", str(keyring)])
    assert json.loads(result.stdout) == {"primary_version": "v3"}


def test_add_version_to_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run(["keys", "add-version", str(tmp_path / "absent.json")])
    assert result.exit_code == EXIT_CODES["usage"]
    assert "Traceback" not in result.output


def test_add_version_to_a_non_keyring_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": "world"}')
    line = assert_one_line_error(run(["keys", "add-version", str(path)]), "config")
    assert str(path) in line


def test_remove_version_needs_yes_and_refuses_the_primary(keyring: Path) -> None:
    result = run(["keys", "remove-version", str(keyring), "v1"])
    assert result.exit_code == EXIT_CODES["usage"] and "--yes" in result.output
    assert_one_line_error(run(["keys", "remove-version", str(keyring), "v1", "--yes"]), "config")
    run(["keys", "add-version", str(keyring)])
    result = run(["keys", "remove-version", str(keyring), "v1", "--yes"])
    assert result.exit_code == 0 and "removed v1" in result.stdout
    assert [k["version"] for k in json.loads(keyring.read_text())["keys"]] == ["v2"]
    assert_one_line_error(run(["keys", "remove-version", str(keyring), "v9", "--yes"]), "config")


def test_new_hex_prints_a_fresh_64_hex_key() -> None:
    first, second = run(["keys", "new-hex"]), run(["keys", "new-hex"])
    assert first.exit_code == 0
    a, b = first.stdout.strip(), second.stdout.strip()
    assert len(a) == 64 and len(bytes.fromhex(a)) == 32 and a != b


# --- encrypt / decrypt --------------------------------------------------------------------------------


def test_encrypt_decrypt_round_trip_through_stdin(keyring: Path) -> None:
    uri = f"file://{keyring}"
    plaintext = b"card 4111 \x00\xff binary ok"
    encrypted = run(["--kek", uri, "encrypt", *_CONTEXT_ARGS], input=plaintext)
    assert encrypted.exit_code == 0, encrypted.stderr
    assert plaintext not in encrypted.stdout_bytes
    decrypted = run(["--kek", uri, "decrypt", *_CONTEXT_ARGS], input=encrypted.stdout_bytes)
    assert decrypted.exit_code == 0, decrypted.stderr
    assert decrypted.stdout_bytes == plaintext


def test_encrypt_uses_kmsbox_kek_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBOX_CLI_TEST_KEY", os.urandom(32).hex())
    monkeypatch.setenv("KMSBOX_KEK", "env://KMSBOX_CLI_TEST_KEY")
    blob = run(["encrypt"], input=b"hello").stdout_bytes
    assert run(["decrypt"], input=blob).stdout_bytes == b"hello"


def test_decrypt_with_another_context_is_an_integrity_error(keyring: Path) -> None:
    uri = f"file://{keyring}"
    blob = run(["--kek", uri, "encrypt", *_CONTEXT_ARGS], input=b"secret text").stdout_bytes
    result = run(["--kek", uri, "decrypt", "--context", "table=payments", "--context", "row=43"], input=blob)
    line = assert_one_line_error(result, "integrity")
    assert "secret text" not in result.output and "secret text" not in line


@pytest.mark.parametrize("blob", [b"", b"garbage", os.urandom(300)])
def test_decrypt_garbage_is_an_integrity_error(keyring: Path, blob: bytes) -> None:
    assert_one_line_error(run(["--kek", f"file://{keyring}", "decrypt"], input=blob), "integrity")


def test_decrypt_after_removing_the_version_is_key_unavailable(keyring: Path) -> None:
    uri = f"file://{keyring}"
    blob = run(["--kek", uri, "encrypt"], input=b"x").stdout_bytes
    run(["keys", "add-version", str(keyring)])
    assert run(["keys", "remove-version", str(keyring), "v1", "--yes"]).exit_code == 0
    line = assert_one_line_error(run(["--kek", uri, "decrypt"], input=blob), "key_unavailable")
    assert "v1" in line


def test_encrypt_without_a_kek_is_a_usage_error() -> None:
    line = assert_one_line_error(run(["encrypt"], input=b"x"), "usage")
    assert "KMSBOX_KEK" in line


@pytest.mark.parametrize("context", ["novalue", "=value"])
def test_malformed_context_is_a_usage_error(keyring: Path, context: str) -> None:
    result = run(["--kek", f"file://{keyring}", "encrypt", "--context", context], input=b"x")
    assert_one_line_error(result, "usage")


@pytest.mark.parametrize("mangle", [lambda k: k[:-2], lambda k: "zz" + k[2:], lambda k: f"v1:{k},v1:{k}"])
def test_bad_env_key_is_a_config_error_that_never_echoes_it(monkeypatch: pytest.MonkeyPatch, mangle: object) -> None:
    key = os.urandom(32).hex()
    monkeypatch.setenv("KMSBOX_CLI_BAD_KEY", mangle(key))  # type: ignore[operator]
    result = run(["--kek", "env://KMSBOX_CLI_BAD_KEY", "encrypt"], input=b"x")
    line = assert_one_line_error(result, "config")
    assert "KMSBOX_CLI_BAD_KEY" in line
    assert key[4:-4] not in result.output


def test_missing_env_variable_is_a_config_error() -> None:
    line = assert_one_line_error(run(["--kek", "env://KMSBOX_CLI_UNSET", "encrypt"], input=b"x"), "config")
    assert "KMSBOX_CLI_UNSET" in line


def test_scheme_of_an_excluded_plugin_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = get_cli()
    monkeypatch.setenv(PLUGINS_ENV, "local")
    reset_plugin_manager()
    result = CliRunner().invoke(
        cli, ["--kek", "aws-kms://arn:aws:kms:us-east-1:111122223333:key/k", "encrypt"], input=b"x"
    )
    line = assert_one_line_error(result, "config")
    assert "kmsbox-aws" in line
