"""Helpers shared by the CLI tests: invoking ``kmsbox`` and checking how it ended."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from kmsbox.cli import get_cli
from kmsbox.cli.main import Settings
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


# --- suggested commands -------------------------------------------------------------------------

_GLOBAL_WITH_VALUE = {"--store", "--kek", "--config"}
_GLOBAL_FLAGS = {"--json", "--no-read-audit"}


def suggested_commands(text: str) -> list[list[str]]:
    """Every ``kmsbox ...`` in ``text`` (a status line, a diagnosis action, a ``next:`` hint),
    as the words that follow it, up to the end of its clause."""
    found: list[list[str]] = []
    for match in re.finditer(r"\bkmsbox ", text):
        # A clause ends at punctuation or where the sentence goes on in words ("... to delete them").
        clause = re.split(r"[;()`]|, | (?:to|if|then|and|or) ", text[match.end() :], maxsplit=1)[0]
        found.append([word.rstrip(".,") for word in clause.split()])
    return found


def _parses(words: list[str]) -> bool:
    """Whether ``kmsbox WORDS`` is a command click accepts (options, arguments and all)."""
    group: click.Group = get_cli()
    rest = list(words)
    while rest and rest[0].startswith("--"):
        option = rest.pop(0)
        if option in _GLOBAL_WITH_VALUE and rest:
            rest.pop(0)
        elif option not in _GLOBAL_FLAGS:
            return False
    command: click.Command | None = group
    ctx = click.Context(group, info_name="kmsbox", obj=Settings())
    while isinstance(command, click.Group):
        if not rest:
            return False
        command = command.get_command(ctx, rest.pop(0))
    if command is None:
        return False
    try:
        command.make_context(command.name or "", list(rest), parent=ctx)
    except click.ClickException:
        return False
    return True


def resolve_suggestion(words: list[str]) -> list[str]:
    """The longest start of ``words`` that is a real command, refusing one cut short at an
    option click does not know (AssertionError if no start of it is a command)."""
    for end in range(len(words), 0, -1):
        if _parses(words[:end]):
            assert end == len(words) or not words[end].startswith("-"), f"unknown option in: kmsbox {' '.join(words)}"
            return words[:end]
    raise AssertionError(f"not a kmsbox command: kmsbox {' '.join(words)}")


# --- the real console script --------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def console_script() -> str:
    """The installed ``kmsbox`` command beside this Python."""
    script = Path(sys.executable).with_name("kmsbox")
    assert script.exists(), "scripts/install.sh installs the kmsbox console script beside the venv's python"
    return str(script)


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without kmsbox settings or a terminal width, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KMSBOX_") and k not in ("COLUMNS", "LINES")}
    return {**base, **env}


def in_terminal(
    args: list[str], env: dict[str, str], cwd: Path, *, columns: int = 80, typed: bytes = b""
) -> tuple[int, str]:
    """Run ``kmsbox ARGS`` in a pseudo-terminal ``columns`` wide, typing ``typed`` once it
    waits for input; its exit code and what it showed (colours removed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [console_script(), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**clean_env(env), "TERM": "xterm-256color"},
        cwd=cwd,
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    pending = typed
    while True:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if not ready:
            if pending and proc.poll() is None:
                os.write(leader, pending)  # quiet for half a second: it waits at its prompt
                pending = b""
            elif proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    code = proc.wait(timeout=120)
    os.close(leader)
    return code, _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
