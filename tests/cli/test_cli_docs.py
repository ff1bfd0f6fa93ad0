"""docs/cli.md describes every built-in command and every option it takes."""

from __future__ import annotations

from pathlib import Path

import click
from cli_helpers import leaf_commands

from kmsbox.cli import get_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_every_command_and_option_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing: list[str] = []
    for name, command in leaf_commands(get_cli()):
        if f"kmsbox {name}" not in text:
            missing.append(f"kmsbox {name}")
        for param in command.params:
            if isinstance(param, click.Option):
                shown = [opt for opt in param.opts + param.secondary_opts if opt not in ("--json",)]
                if shown and not any(opt in text for opt in shown):
                    missing.append(f"kmsbox {name} {shown[0]}")
    assert not missing, f"not in docs/cli.md: {missing}"
