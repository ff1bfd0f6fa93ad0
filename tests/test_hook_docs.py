"""Every hook is documented in docs/plugins.md with its signature (the datasette habit)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from kmsbox import hookspecs

_DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _hookspecs() -> dict[str, list[str]]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: list(inspect.signature(function).parameters)
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, marker)
    }


def _heading_and_code_lines() -> list[str]:
    lines: list[str] = []
    in_fence = False
    for line in _DOCS.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or line.startswith("#"):
            lines.append(line)
    return lines


def test_hookspecs_are_found() -> None:
    assert set(_hookspecs()) >= {
        "register_kek_providers",
        "register_storage_backends",
        "register_fake_servers",
        "register_commands",
    }


@pytest.mark.parametrize(("hook", "arguments"), sorted(_hookspecs().items()))
def test_hook_is_documented_with_its_signature(hook: str, arguments: list[str]) -> None:
    lines = _heading_and_code_lines()
    matching = [line for line in lines if f"{hook}(" in line]
    assert matching, f"docs/plugins.md has no heading or code line with {hook}("
    assert any(all(re.search(rf"\b{re.escape(arg)}\b", line) for arg in arguments) for line in matching), (
        f"docs/plugins.md documents {hook}( but not with all of its arguments {arguments}"
    )


def test_documented_hooks_exist() -> None:
    documented = {
        match.group(1)
        for line in _heading_and_code_lines()
        if line.startswith("#")
        for match in re.finditer(r"\b(register_\w+)\(", line)
    }
    assert documented, "docs/plugins.md should have a heading per hook"
    assert documented <= set(_hookspecs()), f"documented but not a hook: {sorted(documented - set(_hookspecs()))}"
