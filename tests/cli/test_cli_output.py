"""Output that shows what an operator needs, and exit codes a script can act on.

Item 3 of issue 14: at 80 columns (pipes, CI logs, default terminals) tables cut names
to ``connec…``, ``status`` cut ``#v1`` off "wrapped by" and ``diagnose`` cut the suggested
action; a KMS that could not be reached when the store opened exited 7 (configuration).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import clean_env, console_script, in_terminal, invoker, isolate, ok, one_error_line

import kmsbox.errors
from kmsbox.cli.exits import EXIT_CODES, EXIT_FOR_REASON, exit_code_for
from kmsbox.errors import ConfigError, KmsboxError, NamespaceNotFound, ProviderError

NAMESPACE = "tenant-with-a-rather-long-name:production"
NAMES = ("connection-string-for-the-primary-database", "api/openai-organisation-key-for-batch-jobs")
LABEL = "owner=platform-team-with-a-long-name"
COMMANDS = (
    ["status"],
    ["list", NAMESPACE],
    ["list", "--all-namespaces"],
    ["info", NAMESPACE, NAMES[0]],
    ["history", NAMESPACE, NAMES[0]],
    ["diagnose"],
    ["audit", "list", "--namespace", NAMESPACE],
    ["namespaces"],
    ["plugins"],
)


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A store whose names, KEK URI and suggested actions are all longer than fit in 80 columns
    beside each other; returns the environment that opens it."""
    deep = tmp_path / "a-deeply-nested-folder-for-keys" / "another-level-of-folders" / "keyring-production.json"
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=False)
    run = invoker()
    kek = ok(run("keys", "generate", str(deep))).stdout.strip()
    assert len(kek) > 80
    monkeypatch.setenv("KMSBOX_KEK", kek)
    for name in NAMES:
        ok(run("put", NAMESPACE, name, "--label", LABEL, "--category", "database", input="never-shown-value"))
    ok(run("rotate", NAMESPACE, "--no-rewrap"))  # a pending job with a command to suggest
    return {"KMSBOX_STORE": os.environ["KMSBOX_STORE"], "KMSBOX_KEK": kek}


def _assert_whole(command: list[str], output: str, env: dict[str, str]) -> None:
    assert "…" not in output and "..." not in output, (command, output)
    assert "never-shown-value" not in output
    wanted = {
        "status": [NAMESPACE, f"{env['KMSBOX_KEK']}#v1", f"kmsbox rewrap-deks {NAMESPACE}"],
        "list": [NAMESPACE, *NAMES, LABEL] if "--all-namespaces" in command else [*NAMES, LABEL],
        "info": [NAMESPACE, NAMES[0], LABEL],
        "history": [NAMESPACE, NAMES[0]],
        "diagnose": [NAMESPACE, f"kmsbox rewrap-deks {NAMESPACE}"],
        "audit": [NAMESPACE, NAMES[0], NAMES[1]],
        "namespaces": [NAMESPACE],
        "plugins": ["sqlite", "memory"],
    }[command[0]]
    for text in wanted:
        assert text in output, (command, text, output)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_at_80_columns_nothing_is_cut(
    store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = invoker()(*command)
    assert result.exit_code in (0, EXIT_CODES["key_unavailable"]), result.output
    _assert_whole(command, result.stdout, store_env)


def test_a_wide_terminal_gets_tables_with_everything_whole(
    store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    out = ok(invoker()("list", NAMESPACE)).stdout
    header = out.splitlines()[1].split()
    assert header[:3] == ["name", "version", "status"]  # drawn as a table, one row per secret
    _assert_whole(["list", NAMESPACE], out, store_env)


def test_in_a_pipe_nothing_is_cut(store_env: dict[str, str], tmp_path: Path) -> None:
    for command in COMMANDS:
        done = subprocess.run(
            [console_script(), *command],
            env=clean_env(store_env),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode in (0, EXIT_CODES["key_unavailable"]), done.stderr
        _assert_whole(command, done.stdout, store_env)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] != "plugins"], ids=lambda c: " ".join(c[:2]))
def test_in_an_80_column_terminal_nothing_is_cut(store_env: dict[str, str], tmp_path: Path, command: list[str]) -> None:
    code, shown = in_terminal(command, store_env, tmp_path, columns=80)
    assert code in (0, EXIT_CODES["key_unavailable"]), shown
    _assert_whole(command, shown, store_env)


# --- exit codes ---------------------------------------------------------------------------------


def test_a_kms_outage_when_the_store_opens_is_the_provider_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_vault: Any
) -> None:
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=False)
    monkeypatch.setenv("KMSBOX_KEK", fake_vault.kek_uri)
    run = invoker()
    ok(run("put", "app", "db", input="v"))
    try:
        fake_vault.faults.configure(rate=1.0, kind="unavailable")
        line = one_error_line(run("list", "app"), "provider")
        assert EXIT_CODES["provider"] == 8 != EXIT_CODES["config"]
        assert "unavailable" in line and "gave up after" in line
        # A token without the right policy is a mistake in the settings, not an outage.
        fake_vault.faults.configure(rate=1.0, kind="denied")
        assert "cannot be opened with the configured KEK" in one_error_line(run("list", "app"), "config")
    finally:
        fake_vault.faults.clear()
    # A mistake is still a configuration error: a KEK whose key variable is not set.
    monkeypatch.setenv("KMSBOX_KEK", "env://KMSBOX_NO_SUCH_VARIABLE")
    one_error_line(run("list", "app"), "config")
    monkeypatch.setenv("KMSBOX_KEK", fake_vault.kek_uri)
    assert "db" in ok(run("list", "app")).stdout


def _errors() -> list[type[KmsboxError]]:
    return [getattr(kmsbox.errors, name) for name in kmsbox.errors.__all__]


def test_every_error_reason_has_its_exit_code() -> None:
    for cls in _errors():
        assert cls.reason in EXIT_FOR_REASON, cls
    assert exit_code_for(ProviderError("down", transient=True)) == EXIT_CODES["provider"]
    assert exit_code_for(ConfigError("bad")) == EXIT_CODES["config"]
    assert exit_code_for(NamespaceNotFound("gone")) == EXIT_CODES["not_found"]


def test_an_error_with_a_reason_of_its_own_ends_like_its_base_class() -> None:
    class Throttled(ProviderError):
        reason = "throttled"

    assert exit_code_for(Throttled("slow down", transient=True)) == EXIT_CODES["provider"]
