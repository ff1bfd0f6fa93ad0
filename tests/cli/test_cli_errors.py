"""How ``kmsbox`` ends when something goes wrong: files it cannot use, out-of-range numbers,
unexpected exceptions and interrupts all give one line and a documented exit code."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from cli_helpers import Invoke, invoker, isolate, leaf_commands, ok, one_error_line, usage_error

import kmsbox.cli.fake_kms as fake_kms_cli
import kmsbox.cli.plugins as plugins_cli
from kmsbox.cli import get_cli
from kmsbox.cli.output import EXIT_CODES
from kmsbox.cli.params import FiniteFloatRange
from kmsbox.limits import MAX_COUNT

SECRET = "s3cret-value-in-a-message"
# `kmsbox.cli.main` the attribute is the entry-point function; the module is what the test patches.
cli_main = importlib.import_module("kmsbox.cli.main")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``kmsbox`` with a working SQLite store and KEK in the environment."""
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=True)
    invoke = invoker()
    ok(invoke("init"))
    return invoke


@pytest.fixture
def run_without_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``kmsbox`` with no store configured: anything that reaches the store exits 7 (config)."""
    isolate(monkeypatch, tmp_path, store=None, kek=False)
    # No fake KMS may start (and serve until interrupted) if a bad number ever got through.
    monkeypatch.setattr(fake_kms_cli, "fake_servers", dict)
    return invoker()


# --- files the user named (defect 1) -----------------------------------------------------------


def test_checkpoint_to_a_missing_folder_is_one_error_line(run: Invoke) -> None:
    ok(run("put", "ns", "s", input="v"))
    line = one_error_line(run("audit", "checkpoint", "--output", "/nonexistent/dir/cp.json"), "usage")
    assert "cannot write /nonexistent/dir/cp.json: FileNotFoundError" in line


def test_checkpoint_over_a_folder_or_under_a_file_is_one_error_line(run: Invoke, tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    line = one_error_line(run("audit", "checkpoint", "--output", str(tmp_path / "plain-file" / "cp.json")), "usage")
    assert "NotADirectoryError" in line


def test_checkpoint_file_that_is_not_utf8_names_the_problem_not_the_bytes(run: Invoke, tmp_path: Path) -> None:
    bad = tmp_path / "cp.json"
    bad.write_bytes(b'{"seq": 1, "mac": "\xff\xfe"}')
    line = one_error_line(run("audit", "verify", "--checkpoint", str(bad)), "usage")
    assert "not UTF-8" in line and "0xff" not in line


def test_checkpoint_file_nested_too_deeply_is_a_usage_error(run: Invoke, tmp_path: Path) -> None:
    deep = tmp_path / "cp.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert "is not JSON" in one_error_line(run("audit", "verify", "--checkpoint", str(deep)), "usage")


def test_keyring_under_a_file_is_one_error_line(run: Invoke, tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    line = one_error_line(run("keys", "generate", str(tmp_path / "plain-file" / "keyring.json")), "usage")
    assert "cannot write" in line and "keyring.json" in line


def test_demo_folder_under_a_file_is_one_error_line(run: Invoke, tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    line = one_error_line(run("demo", "--dir", str(tmp_path / "plain-file" / "demo")), "usage")
    assert "cannot write in" in line


# --- bounded numbers (defect 3) ----------------------------------------------------------------

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "args",
    [
        ["get", "ns", "a", "--version", HUGE],
        ["get", "ns", "a", "--version", str(MAX_COUNT + 1)],
        ["get", "ns", "a", "--version", "0"],
        ["get", "ns", "a", "--version", "-1"],
        ["audit", "list", "--cursor", HUGE],
        ["audit", "list", "--cursor", "-1"],
        ["audit", "list", "--cursor", f"{HUGE}-0-1"],
        ["audit", "list", "--cursor", f"1-{2**31}-1"],
        ["audit", "list", "--cursor", f"1-0-{MAX_COUNT + 1}"],
        ["audit", "list", "--limit", HUGE],
        ["list", "ns", "--limit", HUGE],
        ["compromise", "ns", HUGE, "--yes"],
        ["compromise", "ns", "0", "--yes"],
        ["fake-kms", "serve", "--latency", "nan"],
        ["fake-kms", "serve", "--fault-rate", "nan"],
        ["fake-kms", "serve", "--latency", "inf"],
    ],
)
def test_out_of_range_numbers_are_usage_errors_before_anything_opens(
    run_without_store: Invoke, args: list[str]
) -> None:
    # No store is configured: reaching it would exit 7, so exit 2 proves the option was refused at parse time.
    message = usage_error(run_without_store(*args))
    assert "Invalid value" in message


def test_the_largest_version_and_cursor_are_accepted(run_without_store: Invoke) -> None:
    # They pass the parser and reach the (missing) store: the bound is not off by one.
    one_error_line(run_without_store("get", "ns", "a", "--version", str(MAX_COUNT)), "config")
    one_error_line(run_without_store("audit", "list", "--cursor", f"{MAX_COUNT}-{2**31 - 1}-{MAX_COUNT}"), "config")


def test_every_numeric_option_of_every_command_is_bounded() -> None:
    commands = leaf_commands(get_cli())
    assert {"get", "audit list", "compromise", "fake-kms serve"} <= {name for name, _ in commands}
    for name, command in commands:
        for param in command.params:
            kind = param.type
            if isinstance(kind, click.IntRange):
                assert kind.min is not None and kind.max is not None and kind.max <= MAX_COUNT, (name, param.name)
            elif isinstance(kind, click.FloatRange):
                assert isinstance(kind, FiniteFloatRange), (name, param.name)
            else:
                assert kind not in (click.INT, click.FLOAT), f"{name} {param.name} takes an unbounded number"


# --- unexpected exceptions and interrupts (defect 4) -------------------------------------------


def _raise(exc: BaseException) -> Any:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return boom


def test_an_unexpected_exception_is_one_line_with_its_type_but_not_its_message(
    run: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugins_cli, "plugin_summary", _raise(RuntimeError(SECRET)))
    result = run("plugins")
    line = one_error_line(result, "internal")
    assert EXIT_CODES["internal"] == 70
    assert "RuntimeError" in line and "KMSBOX_DEBUG=1" in line
    assert SECRET not in result.output


def test_an_arithmetic_error_deep_down_is_an_internal_error_too(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins_cli, "plugin_summary", _raise(OverflowError(SECRET)))
    assert "OverflowError" in one_error_line(run("plugins"), "internal")


def test_kmsbox_debug_shows_the_traceback(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins_cli, "plugin_summary", _raise(RuntimeError(SECRET)))
    monkeypatch.setenv("KMSBOX_DEBUG", "1")
    with pytest.raises(RuntimeError, match=SECRET):
        run("plugins")
    monkeypatch.setenv("KMSBOX_DEBUG", "0")  # 0 means off
    one_error_line(run("plugins"), "internal")


def test_an_interrupt_is_one_line_and_exit_130(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins_cli, "plugin_summary", _raise(KeyboardInterrupt()))
    assert one_error_line(run("plugins"), "interrupted") == "kmsbox: error: interrupted"
    assert EXIT_CODES["interrupted"] == 130


def test_clicks_own_exits_are_unchanged(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "pass --yes" in usage_error(run("compromise", "ns", "1"))  # click.UsageError
    assert ok(run("put", "--help")).stdout.startswith("Usage:")  # click's Exit(0)
    monkeypatch.setattr(plugins_cli, "plugin_summary", _raise(click.Abort()))
    aborted = run("plugins")
    assert (aborted.exit_code, aborted.stderr.strip()) == (1, "Aborted!")
    monkeypatch.setattr(plugins_cli, "plugin_summary", _raise(BrokenPipeError(32, "Broken pipe")))
    piped = run("plugins")  # a reader that went away (| head): click's quiet exit 1, not an "internal error"
    assert piped.exit_code == 1 and "internal error" not in piped.output


def test_a_plugin_that_breaks_while_loading_commands_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KMSBOX_DEBUG", raising=False)
    monkeypatch.setattr(cli_main, "get_cli", _raise(RuntimeError(SECRET)))
    monkeypatch.setattr(sys, "argv", ["kmsbox", "plugins"])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == EXIT_CODES["internal"]
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "kmsbox: error: internal error (RuntimeError); set KMSBOX_DEBUG=1 to see the traceback"
    ]


def test_decode_errors_that_hold_a_value_or_a_file_never_ride_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A UnicodeDecodeError carries the bytes it choked on (a secret on stdin, an import
    file): the error kmsbox raises in its place must not keep it as __context__."""
    import io

    from kmsbox.cli.files import FileProblem, read_text_file
    from kmsbox.cli.secrets import _read_value
    from kmsbox.errors import ConfigError
    from kmsbox.store.config import load_settings

    secret = b"hunter2-\xff-secret"
    bad = tmp_path / "bad.env"
    bad.write_bytes(secret)
    with pytest.raises(FileProblem) as from_file:
        read_text_file(bad)
    (tmp_path / "kmsbox.toml").write_bytes(b'[store]\nurl = "postgresql://u:pw@h/db\xff"\n')
    with pytest.raises(ConfigError) as from_config:
        load_settings(config_file=tmp_path / "kmsbox.toml")
    fake_stdin = io.TextIOWrapper(io.BytesIO(secret))
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    with pytest.raises(ValueError) as from_stdin:
        _read_value(binary=False, allow_empty=False)
    for caught in (from_file, from_config, from_stdin):
        assert caught.value.__context__ is None and caught.value.__cause__ is None
        assert "hunter2" not in repr(caught.value.args) and "pw@" not in str(caught.value)
