"""The secret and audit commands of the ``kmsbox`` CLI, through click's runner and once as a real process."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Invoke, invoker, json_of, ok
from click.testing import CliRunner, Result

import kmsbox
from kmsbox.cli import get_cli
from kmsbox.cli.output import EXIT_CODES
from kmsbox.testing.tamper import read_blob, write_blob

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kek_uri: str, sqlite_url: str) -> str:
    """A working folder with no config file, and the store and KEK in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KMSBOX_CONFIG", raising=False)
    monkeypatch.setenv("KMSBOX_STORE", sqlite_url)
    monkeypatch.setenv("KMSBOX_KEK", kek_uri)
    return sqlite_url


@pytest.fixture
def run(cli_env: str) -> Invoke:
    """Invoke ``kmsbox ARGS`` with optional stdin, on a store made with ``kmsbox init``."""
    invoke = invoker()
    ok(invoke("init"))
    return invoke


def _one_error_line(result: Result, code: str) -> str:
    """The run failed with the named exit code and said so in one line, with no traceback."""
    assert result.exit_code == EXIT_CODES[code], (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith(("kmsbox: error:", "Usage:", "Error:")), result.stderr
    if lines[0].startswith("kmsbox: error:"):
        assert len(lines) == 1, result.stderr
    return result.stderr.strip()


# --- put and get -------------------------------------------------------------------------------


def test_put_reads_the_value_from_stdin_and_get_prints_it(run: Invoke) -> None:
    out = ok(run("put", "app:production", "db/password", input="correct horse\n")).stdout
    assert out.strip() == "stored app:production/db/password version 1"
    assert "correct horse" not in out
    assert ok(run("get", "app:production", "db/password")).stdout == "correct horse\n"
    info = json_of(run("--json", "put", "app:production", "db/password", input="second"))
    assert (info["version"], info["namespace"], info["name"]) == (2, "app:production", "db/password")
    assert "value" not in info
    got = json_of(run("--json", "get", "app:production", "db/password", "--version", "1"))
    assert (got["value"], got["encoding"], got["version"]) == ("correct horse", "utf-8", 1)


def test_value_is_never_taken_from_the_command_line(run: Invoke) -> None:
    result = run("put", "ns", "name", "the-value-itself", input="")
    _one_error_line(result, "usage")
    assert run("get", "ns", "name").exit_code == EXIT_CODES["not_found"]


def test_put_keeps_all_but_one_trailing_newline_and_binary_is_exact(run: Invoke) -> None:
    ok(run("put", "ns", "multi", input="line 1\nline 2\n\n"))
    assert json_of(run("--json", "get", "ns", "multi"))["value"] == "line 1\nline 2\n"
    blob = bytes(range(256)) + b"\n"
    ok(run("put", "ns", "blob", "--binary", input=blob))
    assert ok(run("get", "ns", "blob")).stdout_bytes == blob
    got = json_of(run("--json", "get", "ns", "blob"))
    assert (got["encoding"], bytes.fromhex(got["value"])) == ("hex", blob)
    _one_error_line(run("put", "ns", "latin", input=b"\xff\xfe not utf-8"), "usage")


def test_put_prompts_with_hidden_input_on_a_terminal(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    import kmsbox.cli.secrets as secrets_cli

    class TerminalStdin:
        def __getattr__(self, name: str) -> Any:
            return getattr(sys.stdin, name)

        def isatty(self) -> bool:
            return True

    class SysWithTerminal:
        stdin = TerminalStdin()

        @property
        def stdout(self) -> Any:
            return sys.stdout

    monkeypatch.setattr(secrets_cli, "sys", SysWithTerminal())
    result = ok(run("put", "ns", "typed", input="pa55word\npa55word\n"))
    assert "pa55word" not in result.output
    assert "Value" in result.output
    assert ok(run("get", "ns", "typed")).stdout == "pa55word\n"


def test_put_with_metadata_then_list_and_history(run: Invoke) -> None:
    ok(
        run(
            "put",
            "ns",
            "db",
            "--category",
            "database",
            "--description",
            "main db",
            "--label",
            "team=pay",
            "--label",
            "tier=1",
            "--expires",
            "30d",
            input="v",
        )
    )
    ok(run("put", "ns", "api", "--category", "api", input="v"))
    ok(run("put", "ns", "db", input="v2"))
    listed = json_of(run("--json", "list", "ns"))
    assert [i["name"] for i in listed["items"]] == ["api", "db"]
    assert listed["next_cursor"] is None
    db = listed["items"][1]
    assert (db["category"], db["description"], db["labels"], db["version"]) == (
        "database",
        "main db",
        {"team": "pay", "tier": "1"},
        2,
    )
    assert db["expires_at"] > _dt.datetime.now(_dt.UTC).timestamp() + 29 * 86400
    assert "value" not in json.dumps(listed)
    assert [i["name"] for i in json_of(run("--json", "list", "ns", "--category", "api"))["items"]] == ["api"]
    assert [i["name"] for i in json_of(run("--json", "list", "ns", "--label", "team=pay"))["items"]] == ["db"]
    table = ok(run("list", "ns")).stdout
    assert "db" in table and "api" in table and "team" in table
    history = json_of(run("--json", "history", "ns", "db"))
    assert [(h["version"], h["current"]) for h in history] == [(1, False), (2, True)]
    assert "version" in ok(run("history", "ns", "db")).stdout


def test_list_pages_with_a_cursor_and_all(run: Invoke, cli_env: str, kek_uri: str) -> None:
    with kmsbox.open_store(cli_env, kek=kek_uri) as store:
        for i in range(7):
            store.put(f"k{i}", "v", namespace="ns")
    first = json_of(run("--json", "list", "ns", "--limit", "3"))
    assert [i["name"] for i in first["items"]] == ["k0", "k1", "k2"]
    second = json_of(run("--json", "list", "ns", "--limit", "3", "--cursor", first["next_cursor"]))
    assert [i["name"] for i in second["items"]] == ["k3", "k4", "k5"]
    assert f"--cursor {second['next_cursor']}" in ok(run("list", "ns", "--limit", "3")).stdout.replace(
        first["next_cursor"], second["next_cursor"]
    )
    everything = json_of(run("--json", "list", "ns", "--all"))
    assert [i["name"] for i in everything["items"]] == [f"k{i}" for i in range(7)]
    _one_error_line(run("list", "ns", "--limit", "0"), "usage")


def test_disable_enable_delete_and_their_exit_codes(run: Invoke) -> None:
    ok(run("put", "ns", "s", input="v1"))
    ok(run("put", "ns", "s", input="v2"))
    assert ok(run("disable", "ns", "s")).stdout.strip() == "disabled ns/s"
    _one_error_line(run("get", "ns", "s"), "denied")
    assert json_of(run("--json", "enable", "ns", "s")) == {"namespace": "ns", "name": "s", "status": "active"}
    assert ok(run("get", "ns", "s")).stdout == "v2\n"
    assert json_of(run("--json", "delete", "ns", "s", "--yes")) == {
        "namespace": "ns",
        "name": "s",
        "deleted_versions": 2,
    }
    message = _one_error_line(run("get", "ns", "s"), "not_found")
    assert "'s'" in message and "ns" in message
    _one_error_line(run("delete", "ns", "s", "--yes"), "not_found")
    _one_error_line(run("disable", "ns", "missing"), "not_found")
    _one_error_line(run("history", "ns", "missing"), "not_found")
    ok(run("put", "ns", "t", input="v"))
    assert "deleted ns/t (1 version)" in ok(run("delete", "ns", "t", "--yes")).stdout


def test_cleanup_removes_expired_secrets(run: Invoke, cli_env: str, kek_uri: str) -> None:
    past = _dt.datetime.now(_dt.UTC) - _dt.timedelta(hours=2)
    with kmsbox.open_store(cli_env, kek=kek_uri) as store:
        store.put("old", "v", namespace="ns", expires=past)
        store.put("live", "v", namespace="ns")
    _one_error_line(run("get", "ns", "old"), "denied")
    assert json_of(run("--json", "cleanup", "--retention", "3h")) == {"deleted": 0}
    assert json_of(run("--json", "cleanup", "--retention", "1h")) == {"deleted": 1}
    assert ok(run("cleanup")).stdout.strip() == "deleted 0 expired secrets"
    assert [i["name"] for i in json_of(run("--json", "list", "ns"))["items"]] == ["live"]
    _one_error_line(run("cleanup", "--retention", "soon"), "usage")


# --- audit -------------------------------------------------------------------------------------


def _user_events(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    # The store's own events (its schema marker, under "!audit") come first; these are the rest.
    return [(e["namespace"], e["name"], e["action"], e["result"]) for e in events if e["namespace"] != "!audit"]


def test_audit_list_filters_pages_and_never_shows_values(run: Invoke) -> None:
    ok(run("put", "ns", "a", input="value-aaaa-1234"))
    ok(run("put", "other", "b", input="value-bbbb-5678"))
    ok(run("get", "ns", "a"))
    run("get", "ns", "missing")
    everything = json_of(run("--json", "audit", "list"))["events"]
    assert _user_events(everything) == [
        ("ns", None, "create", "success"),  # the namespace's first key
        ("ns", "a", "create", "success"),
        ("other", None, "create", "success"),
        ("other", "b", "create", "success"),
        ("ns", "a", "read", "success"),
        ("ns", "missing", "read", "failure"),
    ]
    assert "value-aaaa" not in json.dumps(everything) and "value-bbbb" not in json.dumps(everything)
    assert len(json_of(run("--json", "audit", "list", "--namespace", "ns"))["events"]) == 4
    assert len(json_of(run("--json", "audit", "list", "--namespace", "ns", "--name", "a"))["events"]) == 2
    assert len(json_of(run("--json", "audit", "list", "--action", "create"))["events"]) == 4
    assert len(json_of(run("--json", "audit", "list", "--result", "failure"))["events"]) == 1
    future = (_dt.datetime.now(_dt.UTC) + _dt.timedelta(hours=1)).isoformat()
    assert json_of(run("--json", "audit", "list", "--since", future))["events"] == []
    assert json_of(run("--json", "audit", "list", "--until", future))["events"] == everything

    # Pages follow one another through the opaque cursor, in the same order as one listing.
    page = json_of(run("--json", "audit", "list", "--limit", "3"))
    assert page["events"] == everything[:3] and page["next_cursor"] == everything[2]["cursor"]
    rest = json_of(run("--json", "audit", "list", "--limit", "100", "--cursor", page["next_cursor"]))
    assert rest == {"events": everything[3:], "next_cursor": None}
    assert f"more: --cursor {page['next_cursor']}" in ok(run("audit", "list", "--limit", "3")).stdout
    assert json_of(run("--json", "audit", "list", "--cursor", "0")) == {"events": everything, "next_cursor": None}

    text = ok(run("audit", "list")).stdout
    assert "create" in text and "value-aaaa" not in text
    _one_error_line(run("audit", "list", "--since", "yesterday"), "usage")
    _one_error_line(run("audit", "list", "--action", "explode"), "usage")
    assert "audit cursor" in _one_error_line(run("audit", "list", "--cursor", "12"), "usage")


def _last_event(db_path: Path) -> tuple[int, int, int]:
    with closing(sqlite3.connect(db_path)) as conn:
        at, chain, seq = conn.execute(
            "SELECT at, chain, seq FROM kmsbox_audit_events ORDER BY at DESC LIMIT 1"
        ).fetchone()
    return int(at), int(chain), int(seq)


def test_audit_verify_and_checkpoint_find_tampering(run: Invoke, tmp_path: Path, db_path: Path) -> None:
    for i in range(4):
        ok(run("put", "ns", f"s{i}", input="v"))
    intact = ok(run("audit", "verify")).stdout
    assert intact.startswith("audit log intact: ") and "4 secrets and 1 namespace match" in intact
    report = json_of(run("--json", "audit", "verify"))
    assert (report["ok"], report["secrets_checked"], report["problems"]) == (True, 4, [])
    checkpoint_file = tmp_path / "checkpoint.json"
    written = ok(run("audit", "checkpoint", "--to", str(checkpoint_file))).stdout
    assert "written to" in written and checkpoint_file.stat().st_mode & 0o077 == 0
    printed = json.loads(ok(run("audit", "checkpoint")).stdout)
    saved = json.loads(checkpoint_file.read_text())
    assert printed["chains"] == saved["chains"]
    assert sum(c["seq"] for c in saved["chains"]) == report["events_checked"]
    assert ok(run("audit", "verify", "--checkpoint", str(checkpoint_file))).exit_code == 0

    # Cut the last event (and move its chain's head back to match): the checkpoint notices.
    at, chain, seq = _last_event(db_path)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM kmsbox_audit_events WHERE at = ? AND chain = ? AND seq = ?", (at, chain, seq))
    broken = run("--json", "audit", "verify", "--checkpoint", str(checkpoint_file))
    assert broken.exit_code == EXIT_CODES["verify_failed"]
    report = json.loads(broken.stdout)
    assert report["ok"] is False and any(f"chain {chain}" in p for p in report["problems"])

    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("UPDATE kmsbox_audit_events SET actor = 'mallory' WHERE chain = ? AND seq = 2", (chain,))
    result = run("audit", "verify")
    assert result.exit_code == EXIT_CODES["verify_failed"]
    assert "audit log BROKEN" in result.stdout and f"chain {chain}: event 2 was altered" in result.stdout

    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    _one_error_line(run("audit", "verify", "--checkpoint", str(bad)), "usage")
    bad.write_text('{"seq": "x"}')
    assert "checkpoint 'seq'" in _one_error_line(run("audit", "verify", "--checkpoint", str(bad)), "usage")


def test_an_old_single_chain_checkpoint_is_still_read(run: Invoke, tmp_path: Path) -> None:
    ok(run("put", "ns", "s", input="v"))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"seq": 0, "mac": ""}), encoding="utf-8")
    assert ok(run("audit", "verify", "--checkpoint", str(old))).stdout.startswith("audit log intact")


def test_audit_verify_against_a_sinks_copy_finds_an_erased_event(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_path: Path, cli_env: str, kek_uri: str
) -> None:
    copy = tmp_path / "audit.jsonl"
    config = tmp_path / "kmsbox.toml"
    config.write_text(f'[audit]\nsinks = ["jsonl://{copy}"]\n', encoding="utf-8")
    run = invoker()
    ok(run("init"))
    for i in range(3):
        ok(run("put", "ns", f"s{i}", input=f"copied-value-{i}"))
    assert "copied-value" not in copy.read_text()
    good = ok(run("audit", "verify", "--against", str(copy))).stdout
    assert "audit log intact" in good and f"audit copy {copy} intact" in good
    report = json_of(run("--json", "audit", "verify", "--against", str(copy)))
    assert report["ok"] is True and report["copy"]["records_checked"] >= 3 and report["copy"]["files"] == [str(copy)]

    # Erase the last event and its chain head's trace through the database: the copy still has it.
    at, chain, seq = _last_event(db_path)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM kmsbox_audit_events WHERE at = ? AND chain = ? AND seq = ?", (at, chain, seq))
    result = run("--json", "audit", "verify", "--against", str(copy))
    assert result.exit_code == EXIT_CODES["verify_failed"]
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["copy"]["ok"] is False
    assert any(f"event {chain}:{seq}" in p and "erased" in p for p in report["copy"]["problems"])

    not_a_copy = tmp_path / "other.jsonl"
    not_a_copy.write_text("this is not a JSON line\n", encoding="utf-8")
    assert "line 1" in _one_error_line(run("audit", "verify", "--against", str(not_a_copy)), "usage")
    not_a_copy.write_bytes(b'{"chain": 0}\n\xff\xfe\n')
    line = _one_error_line(run("audit", "verify", "--against", str(not_a_copy)), "usage")
    assert "not UTF-8" in line or "no valid" in line


def test_no_read_audit_skips_successful_reads(run: Invoke) -> None:
    ok(run("put", "ns", "s", input="v"))
    ok(run("--no-read-audit", "get", "ns", "s"))
    assert json_of(run("--json", "audit", "list", "--action", "read"))["events"] == []
    info = json_of(run("--json", "list", "ns"))["items"][0]
    assert info["access_count"] == 1  # buffered, then flushed when the store closed


# --- settings and errors -----------------------------------------------------------------------


def test_store_and_kek_options_and_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kek_uri: str) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("KMSBOX_STORE", "KMSBOX_KEK", "KMSBOX_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    cli = get_cli()
    flags = ["--store", "sqlite:///flags.db", "--kek", kek_uri]
    ok(runner.invoke(cli, [*flags, "put", "ns", "s"], input="by-flags"))
    assert ok(runner.invoke(cli, [*flags, "get", "ns", "s"])).stdout == "by-flags\n"
    config = tmp_path / "custom.toml"
    config.write_text(f'[store]\nurl = "sqlite:///flags.db"\nkek = "{kek_uri}"\n', encoding="utf-8")
    assert ok(runner.invoke(cli, ["--config", str(config), "get", "ns", "s"])).stdout == "by-flags\n"
    (tmp_path / "kmsbox.toml").write_text(config.read_text(), encoding="utf-8")
    assert ok(runner.invoke(cli, ["get", "ns", "s"])).stdout == "by-flags\n"


def test_configuration_errors_are_one_line_with_exit_code_7(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kek_uri: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("KMSBOX_STORE", "KMSBOX_KEK", "KMSBOX_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    cli = get_cli()
    assert "no store URL" in _one_error_line(runner.invoke(cli, ["list", "ns"]), "config")
    assert "no KEK" in _one_error_line(runner.invoke(cli, ["--store", "memory://", "list", "ns"]), "config")
    _one_error_line(runner.invoke(cli, ["--store", "memory://", "--kek", "env://UNSET_X", "list", "ns"]), "config")
    _one_error_line(runner.invoke(cli, ["--store", "nosuch://x", "--kek", kek_uri, "list", "ns"]), "config")
    (tmp_path / "kmsbox.toml").write_text("[store\n", encoding="utf-8")
    _one_error_line(runner.invoke(cli, ["list", "ns"]), "config")
    (tmp_path / "kmsbox.toml").unlink()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with kmsbox.open_store(url, kek=kek_uri):
        pass
    monkeypatch.setenv("KMSBOX_MASTER_KEY", os.urandom(32).hex())  # store made with key A, opened with key B
    _one_error_line(runner.invoke(cli, ["--store", url, "--kek", kek_uri, "list", "ns"]), "config")


def test_bad_names_and_options_are_usage_errors(run: Invoke) -> None:
    _one_error_line(run("put", "bad namespace", "s", input="v"), "usage")
    _one_error_line(run("put", "ns", "-bad", input="v"), "usage")
    _one_error_line(run("put", "ns", "s", "--expires", "tomorrow", input="v"), "usage")
    _one_error_line(run("put", "ns", "s", "--label", "novalue", input="v"), "usage")
    _one_error_line(run("get", "ns", "bad name"), "usage")
    _one_error_line(run("get", "ns", "s", "--version", "abc"), "usage")
    _one_error_line(run("no-such-command"), "usage")
    _one_error_line(run("get", "ns"), "usage")
    assert "namespace 'ns' does not exist" in _one_error_line(run("--json", "list", "ns"), "not_found")


def test_oversized_value_is_a_usage_error(run: Invoke) -> None:
    ok(run("put", "ns", "small", input="v"))
    _one_error_line(run("put", "ns", "big", "--binary", input=b"x" * (1024 * 1024 + 1)), "usage")
    assert [i["name"] for i in json_of(run("--json", "list", "ns"))["items"]] == ["small"]


def test_corrupted_and_unreadable_secrets_have_their_exit_codes(
    run: Invoke, db_path: Path, cli_env: str, kek_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(run("put", "ns", "s", input="v"))
    blob = read_blob(db_path, "ns", "s", 1)
    write_blob(db_path, "ns", "s", 1, blob[:-1] + bytes([blob[-1] ^ 1]))
    _one_error_line(run("get", "ns", "s"), "integrity")
    failures = json_of(run("--json", "audit", "list", "--result", "failure"))["events"]
    assert [(e["name"], e["detail"]["reason"]) for e in failures] == [("s", "integrity")]

    # A namespace key wrapped by the primary only, read with the escrow KEK alone: key unavailable.
    monkeypatch.setenv("KMSBOX_ESCROW_KEY", os.urandom(32).hex())
    escrow = "env://KMSBOX_ESCROW_KEY"
    with kmsbox.open_store(f"sqlite:///{db_path.parent / 'two.db'}", kek=[kek_uri, escrow]):
        pass
    with kmsbox.open_store(f"sqlite:///{db_path.parent / 'two.db'}", kek=kek_uri) as store:
        store.put("s", "v", namespace="primary-only")
    result = run("--store", f"sqlite:///{db_path.parent / 'two.db'}", "--kek", escrow, "get", "primary-only", "s")
    _one_error_line(result, "key_unavailable")


def test_a_long_error_message_stays_on_one_line(run: Invoke) -> None:
    long_namespace = "tenant-" + "x" * 100
    result = run("get", long_namespace, "s")
    assert result.exit_code == EXIT_CODES["not_found"]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_exit_codes_are_documented(run: Invoke) -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented = {int(code): name for code, name in re.findall(r"^\|\s*(\d+)\s*\|\s*`(\w+)`", text, re.MULTILINE)}
    assert documented == {code: name for name, code in EXIT_CODES.items()}


def test_every_secret_and_audit_command_has_help(run: Invoke) -> None:
    for command in ("put", "get", "list", "history", "delete", "disable", "enable", "cleanup", "demo"):
        assert ok(run(command, "--help")).stdout.startswith("Usage:")
    for command in ("list", "verify", "checkpoint"):
        assert ok(run("audit", command, "--help")).stdout.startswith("Usage:")


# --- the real console script -------------------------------------------------------------------


def _console_script() -> str:
    beside = Path(sys.executable).with_name("kmsbox")
    found = str(beside) if beside.exists() else shutil.which("kmsbox")
    if not found:
        pytest.skip("the kmsbox console script is not installed")
    return found


@pytest.mark.slow
def test_demo_runs_as_a_real_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMSBOX_")}
    result = subprocess.run(
        [_console_script(), "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "audit verify: intact" in result.stdout
    assert "correct horse battery staple" not in result.stdout
    assert (tmp_path / "demo" / "secrets.db").is_file()
    assert (tmp_path / "demo" / "keyring.json").stat().st_mode & 0o077 == 0
    # The folder is reusable: a second run opens the same store and keyring.
    again = subprocess.run(
        [_console_script(), "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr


def test_demo_through_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(get_cli(), ["demo", "--dir", str(tmp_path / "d")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "SecretExpired" in result.stdout and "try_get -> ok=False reason=disabled" in result.stdout
