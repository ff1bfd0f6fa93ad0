"""Helpers shared by the CLI tests: invoking ``kmsbox`` and checking how it ended."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from kmsbox.cli import get_cli
from kmsbox.cli.output import EXIT_CODES

Invoke = Callable[..., Result]

KEK_VAR = "KMSBOX_CLI_TEST_KEK"
KEK_URI = f"env://{KEK_VAR}"


def isolate(monkeypatch: pytest.MonkeyPatch, folder: Path, *, store: str | None, kek: bool) -> None:
    """Run in ``folder`` with no config file and only the given store and KEK in the environment."""
    monkeypatch.chdir(folder)
    for var in ("KMSBOX_STORE", "KMSBOX_KEK", "KMSBOX_CONFIG", "KMSBOX_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    if store is not None:
        monkeypatch.setenv("KMSBOX_STORE", store)
    if kek:
        monkeypatch.setenv(KEK_VAR, os.urandom(32).hex())
        monkeypatch.setenv("KMSBOX_KEK", KEK_URI)


def invoker() -> Invoke:
    """``kmsbox ARGS`` through click's runner, exceptions not caught (a traceback fails the test)."""
    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None) -> Result:
        return runner.invoke(get_cli(), list(args), input=input, catch_exceptions=False)

    return invoke


def ok(result: Result) -> Result:
    """The run succeeded."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def json_of(result: Result) -> Any:
    """The run succeeded and its stdout is exactly one JSON document."""
    return json.loads(ok(result).stdout)


def one_error_line(result: Result, code: str) -> str:
    """The run failed with the named exit code and one line on stderr, with no traceback; returns the line."""
    assert result.exit_code == EXIT_CODES[code], (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kmsbox: error: "), result.stderr
    return lines[0]


def usage_error(result: Result) -> str:
    """The run failed as a usage error (exit 2): click's own report, or one kmsbox line."""
    assert result.exit_code == EXIT_CODES["usage"], (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    return result.stderr


def leaf_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every built-in command below ``group`` as ``("audit list", command)``, by name."""
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += leaf_commands(command, f"{prefix}{name} ")
        elif command.callback is not None and command.callback.__module__.startswith("kmsbox.cli"):
            found.append((prefix + name, command))
    return found
