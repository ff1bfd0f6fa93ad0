"""``kmsbox admin token`` and ``kmsbox admin serve``, the latter also as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from admin_helpers import KEK_URI, Seed
from click.testing import CliRunner, Result
from kmsbox_admin.tokens import hash_token

from kmsbox.cli import get_cli
from kmsbox.cli.output import EXIT_CODES


def _kmsbox(*args: str) -> Result:
    return CliRunner().invoke(get_cli(), list(args), catch_exceptions=False)


def test_token_prints_the_token_once_and_the_entry_with_its_hash() -> None:
    result = _kmsbox("admin", "token", "--actor", "alice", "--role", "admin")
    assert result.exit_code == 0, result.output
    token = next(word for word in result.stdout.split() if word.startswith("kbx_"))
    assert result.stdout.count(token) == 1
    assert f'[[admin.tokens]]\nactor = "alice"\nrole = "admin"\nhash = "{hash_token(token)}"\n' in result.stdout


def test_token_as_json() -> None:
    result = _kmsbox("--json", "admin", "token", "--actor", "ci-bot")
    data = json.loads(result.stdout)
    assert (data["actor"], data["role"], data["hash"]) == ("ci-bot", "viewer", hash_token(data["token"]))


@pytest.mark.parametrize("args", [["--actor", "two words"], ["--actor", ""], ["--actor", "a", "--role", "root"]])
def test_token_refuses_a_bad_actor_or_role(args: list[str]) -> None:
    result = _kmsbox("admin", "token", *args)
    assert result.exit_code == EXIT_CODES["usage"]
    assert "kbx_" not in result.output


def _config(folder: Path, seeded: Seed, *, host: str = "127.0.0.1") -> tuple[Path, str]:
    token = "kbx_" + os.urandom(24).hex()
    path = folder / "admin.toml"
    path.write_text(
        f'[store]\nurl = "{seeded.url}"\nkek = "{KEK_URI}"\n\n[admin]\nhost = "{host}"\nport = 0\n\n'
        f'[[admin.tokens]]\nactor = "ops"\nrole = "admin"\nhash = "{hash_token(token)}"\n',
        encoding="utf-8",
    )
    return path, token


def test_serve_refuses_a_non_loopback_bind_without_tls_before_opening_anything(
    tmp_path: Path, seeded: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _config(tmp_path, seeded)
    missing = tmp_path / "never-created.db"
    result = _kmsbox("--config", str(path), "--store", f"sqlite:///{missing}", "admin", "serve", "--host", "0.0.0.0")
    assert result.exit_code == EXIT_CODES["config"]
    assert result.stderr.strip().splitlines() == [
        "kmsbox: error: refusing to listen on 0.0.0.0 without TLS: give --tls-cert and --tls-key "
        "(or tls_cert and tls_key in [admin]), or listen on 127.0.0.1"
    ]
    assert not missing.exists()


def test_serve_without_an_admin_table_says_how_to_make_one(tmp_path: Path, clean_env: None) -> None:
    result = _kmsbox("admin", "serve")
    assert result.exit_code == EXIT_CODES["config"]
    assert "no config file" in result.stderr and "[admin]" in result.stderr


def test_serve_takes_tls_files_only_together(tmp_path: Path, seeded: Seed) -> None:
    path, _ = _config(tmp_path, seeded)
    result = _kmsbox("--config", str(path), "admin", "serve", "--tls-cert", str(path))
    assert result.exit_code == EXIT_CODES["usage"]


@pytest.mark.parametrize("option", [["--threads", "0"], ["--threads", "65"], ["--max-jobs", "0"]])
def test_serve_refuses_a_pool_or_job_bound_out_of_range(tmp_path: Path, seeded: Seed, option: list[str]) -> None:
    path, _ = _config(tmp_path, seeded)
    result = _kmsbox("--config", str(path), "admin", "serve", *option)
    assert result.exit_code == EXIT_CODES["usage"]


def test_serve_with_a_store_that_cannot_open_fails_before_listening(
    tmp_path: Path, seeded: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _config(tmp_path, seeded)
    monkeypatch.delenv("KMSBOX_ADMIN_TEST_KEK")
    result = _kmsbox("--config", str(path), "admin", "serve")
    assert result.exit_code == EXIT_CODES["config"]
    assert "KMSBOX_ADMIN_TEST_KEK" in result.stderr and "serving on" not in result.stdout


def test_kmsbox_commands_read_the_same_file_as_the_admin_server(tmp_path: Path, seeded: Seed) -> None:
    path, token = _config(tmp_path, seeded)
    result = _kmsbox("--config", str(path), "--json", "status")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["namespaces"]) == ["!audit", "app:production", "tenant-7"]
    assert token not in result.output


def test_serve_runs_as_a_process_until_terminated(tmp_path: Path, seeded: Seed) -> None:
    path, token = _config(tmp_path, seeded)
    kmsbox = Path(sys.executable).parent / "kmsbox"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMSBOX_") or k == "KMSBOX_ADMIN_TEST_KEK"}
    process = subprocess.Popen(
        [str(kmsbox), "--config", str(path), "admin", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("kmsbox admin: serving on http://127.0.0.1:"), line
        url = line.split()[4]
        with httpx.Client(base_url=url, timeout=10) as client:
            status = client.get("/v1/admin/encryption", headers={"Authorization": f"Bearer {token}"})
            assert status.status_code == 200
            assert sorted(status.json()["namespaces"]) == ["!audit", "app:production", "tenant-7"]
            assert client.get("/v1/admin/encryption").status_code == 401
            assert "<title>kmsbox admin</title>" in client.get("/").text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert token not in stderr  # the log names actors, never tokens
    assert "ops GET /v1/admin/encryption -> 200" in stderr
