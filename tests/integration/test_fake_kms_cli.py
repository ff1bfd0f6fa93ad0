"""`kmsbox fake-kms serve` as a user runs it: start, export what it prints, use it, stop."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


def _env_of(info: dict[str, object]) -> dict[str, str]:
    return {**os.environ, **{k: str(v) for k, v in dict(info["env"]).items()}}  # type: ignore[call-overload]


def _kmsbox(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KMSBOX, *args], input=input, capture_output=True, text=True, env=env, timeout=60)


def test_faults_aimed_at_one_operation_spare_the_others(tmp_path: Path) -> None:
    proc, settings = _serve(
        "--only", "vault", "--fault-rate", "1", "--fault-kind", "denied", "--fault-op", "vault=rewrap"
    )
    try:
        info = settings["vault"]
        store = ["--store", f"sqlite:///{tmp_path}/s.db", "--kek", str(info["kek_uri"])]
        put = _kmsbox(_env_of(info), *store, "put", "app", "db/password", input="hunter2")
        assert put.returncode == 0, put.stderr  # encrypt, decrypt and key reads are spared
        get = _kmsbox(_env_of(info), *store, "get", "app", "db/password")
        assert (get.returncode, get.stdout) == (0, "hunter2\n"), get.stderr
        env = _env_of(info)
        rotate = urllib.request.Request(
            f"{env['VAULT_ADDR']}/v1/transit/keys/kmsbox-kek/rotate",
            method="POST",
            headers={"X-Vault-Token": env["VAULT_TOKEN"]},
        )
        with urllib.request.urlopen(rotate, timeout=30) as reply:  # an operator rotates the KEK
            assert json.load(reply)["data"]["latest_version"] == 2
        rewrap = _kmsbox(env, *store, "rewrap-namespace-keys")
        assert rewrap.returncode == 8, rewrap.stderr  # Vault's rewrap endpoint is denied
        assert "permission denied" in rewrap.stderr and rewrap.stderr.count("\n") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_bare_fault_op_applies_to_the_only_fake_and_a_misspelt_one_is_a_usage_error() -> None:
    result = subprocess.run(
        [*KMSBOX, "fake-kms", "serve", "--only", "vault", "--fault-op", "Decrypt"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unknown operation 'Decrypt'" in result.stderr
    assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_non_interactive_shell_starts_background_jobs_with_sigint_ignored() -> None:
    # The situation the next test is about: Python then installs no Ctrl-C handler of its own.
    check = "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
    probe = f"{shlex.quote(sys.executable)} -c {shlex.quote(check)} & wait"
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_backgrounded_serve_stops_on_sigint_and_sigterm(tmp_path: Path, stop_signal: signal.Signals) -> None:
    port = _free_port()
    pid_file, out_file = tmp_path / "serve.pid", tmp_path / "serve.out"
    command = " ".join(shlex.quote(part) for part in KMSBOX)
    # A non-interactive shell starts background jobs with SIGINT ignored; the job must stop anyway.
    script = (
        f"{command} fake-kms serve --only vault --port vault={port} > {shlex.quote(str(out_file))} 2>&1 &\n"
        f"echo $! > {shlex.quote(str(pid_file))}\n"
        "wait $!\n"
        'echo "exit=$?"\n'
    )
    shell = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: out_file.exists() and "VAULT_ADDR" in out_file.read_text()), (
            out_file.read_text() if out_file.exists() else "no output"
        )
        pid = int(pid_file.read_text())
        os.kill(pid, stop_signal)
        stdout, _ = shell.communicate(timeout=30)
    finally:
        if shell.poll() is None:
            shell.kill()
            # The shell's background job would outlive it: end the serve this test started.
            with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert stdout.strip() == "exit=0"
    assert _port_is_free(port)


def test_serve_in_the_foreground_stops_on_ctrl_c() -> None:
    proc, settings = _serve("--only", "vault")
    address = str(dict(settings["vault"]["env"])["VAULT_ADDR"])  # type: ignore[call-overload]
    port = int(address.rsplit(":", 1)[1])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    assert _port_is_free(port)


@pytest.mark.parametrize(
    "args",
    [
        ["--only", "nope"],
        ["--port", "aws=notaport"],
        ["--port", "=1"],
        ["--fault-rate", "2"],
        ["--fault-kind", "explode"],
        ["--fault-op", "Decrypt"],  # several fakes: the fake must be named
        ["--fault-op", "nope=Decrypt"],
        ["--fault-op", "aws="],
        ["--only", "aws", "--fault-op", "aws=Decrpyt"],
    ],
)
def test_serve_rejects_bad_options(args: list[str]) -> None:
    result = subprocess.run([*KMSBOX, "fake-kms", "serve", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
