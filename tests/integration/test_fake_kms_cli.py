"""`kmsbox fake-kms serve` as a user runs it: start, export what it prints, use it, stop."""

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


def _serve(*args: str) -> tuple[subprocess.Popen[str], dict[str, dict[str, object]]]:
    proc = subprocess.Popen(
        [*KMSBOX, "--json", "fake-kms", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        try:
            return proc, json.loads("".join(lines))
        except json.JSONDecodeError:
            continue
    proc.kill()
    raise AssertionError(
        f"fake-kms serve printed no settings: {''.join(lines)!r} {proc.stderr.read() if proc.stderr else ''}"
    )


def test_serve_prints_settings_that_a_store_can_use(tmp_path: Path) -> None:
    proc, settings = _serve()
    try:
        assert {"aws", "gcp", "vault"} <= set(settings)
        for name, info in settings.items():
            env = {**os.environ, **{k: str(v) for k, v in dict(info["env"]).items()}}  # type: ignore[call-overload]
            db = f"sqlite:///{tmp_path}/{name}.db"
            put = subprocess.run(
                [*KMSBOX, "--store", db, "--kek", str(info["kek_uri"]), "put", "app", "db/password"],
                input="hunter2",
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert put.returncode == 0, put.stderr
            get = subprocess.run(
                [*KMSBOX, "--store", db, "--kek", str(info["kek_uri"]), "get", "app", "db/password"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert get.returncode == 0, get.stderr
            assert get.stdout == "hunter2\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_serve_injects_faults_from_the_command_line(tmp_path: Path) -> None:
    proc, settings = _serve("--only", "vault", "--fault-rate", "1", "--fault-kind", "denied")
    try:
        info = settings["vault"]
        env = {**os.environ, **{k: str(v) for k, v in dict(info["env"]).items()}}  # type: ignore[call-overload]
        result = subprocess.run(
            [*KMSBOX, "--store", f"sqlite:///{tmp_path}/s.db", "--kek", str(info["kek_uri"]), "list", "app"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 7  # fails closed at open: the KEK is not usable
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("args", [["--only", "nope"], ["--port", "aws=notaport"], ["--fault-rate", "2"]])
def test_serve_rejects_bad_options(args: list[str]) -> None:
    result = subprocess.run([*KMSBOX, "fake-kms", "serve", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
