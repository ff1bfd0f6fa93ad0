"""`kmsbox demo` without --dir leaves nothing behind: not after a run, not after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

KMSBOX = [sys.executable, "-c", "from kmsbox.cli import main; main()"]


def _env(temporary: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMSBOX_")}
    # tempfile honours TMPDIR: the demo's folder is made here, where the test can look.
    return {**env, "TMPDIR": str(temporary), "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}


@pytest.fixture
def temporary(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def test_demo_removes_its_temporary_folder_after_a_run(temporary: Path) -> None:
    result = subprocess.run([*KMSBOX, "demo"], capture_output=True, text=True, env=_env(temporary), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "audit verify: intact" in result.stdout
    assert "temporary folder is removed" in result.stdout and "export KMSBOX_STORE" not in result.stdout
    assert list(temporary.iterdir()) == []


def test_demo_json_says_the_folder_was_not_kept(temporary: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [*KMSBOX, "--json", "demo"], capture_output=True, text=True, env=_env(temporary), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kept"] is False
    assert list(temporary.iterdir()) == []
    kept = subprocess.run(
        [*KMSBOX, "--json", "demo", "--dir", str(tmp_path / "mine")],
        capture_output=True,
        text=True,
        env=_env(temporary),
        timeout=120,
    )
    assert json.loads(kept.stdout)["kept"] is True and (tmp_path / "mine" / "secrets.db").is_file()


def _ctrl_c_as_at_a_terminal() -> None:
    # A suite started in the background by a non-interactive shell runs with SIGINT
    # ignored, and a child inherits that: the demo would never see the Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_interrupted_by_ctrl_c_still_removes_its_folder(temporary: Path) -> None:
    proc = subprocess.Popen(
        [*KMSBOX, "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(temporary),
        preexec_fn=_ctrl_c_as_at_a_terminal,
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    # The expiry step sleeps a second: interrupt it there, with the store open.
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "expiry" in line or not line:
            break
    assert any("expiry" in line for line in seen), "".join(seen)
    assert list(temporary.iterdir()), "the demo's folder should exist while it runs"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert list(temporary.iterdir()) == []
