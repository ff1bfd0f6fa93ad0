"""``kmsbox put`` input rules: bounded durations, ``--expires never``, and no silent empty value."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import pytest
from cli_helpers import Invoke, invoker, isolate, json_of, ok, one_error_line
from hypothesis import given
from hypothesis import strategies as st

from kmsbox.cli.params import LONGEST_DURATION, parse_duration

YEAR = 365.25 * 86400


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``kmsbox`` with a working SQLite store (holding an empty namespace ``ns``) and KEK in the environment."""
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=True)
    invoke = invoker()
    ok(invoke("init", "--namespace", "ns"))
    return invoke


def _expires_at(run: Invoke, name: str) -> float | None:
    items = json_of(run("--json", "list", "ns"))["items"]
    expiry: float | None = next(i for i in items if i["name"] == name)["expires_at"]
    return expiry


# --- durations (defect 2) ----------------------------------------------------------------------


@pytest.mark.parametrize("duration", ["999999999999w", "52180w", "365251d", "9" * 15 + "s", "9" * 40 + "w"])
def test_a_duration_beyond_1000_years_is_a_usage_error(run: Invoke, duration: str) -> None:
    line = one_error_line(run("put", "ns", "x", "--expires", duration, input="v"), "usage")
    assert "1000 years" in line or "must look like" in line
    assert json_of(run("--json", "list", "ns"))["items"] == []


def test_a_duration_just_inside_1000_years_is_stored(run: Invoke) -> None:
    ok(run("put", "ns", "x", "--expires", "52000w", input="v"))
    expiry = _expires_at(run, "x")
    assert expiry is not None and expiry > time.time() + 996 * YEAR


@pytest.mark.parametrize("duration", ["0s", "٣d", "1.5h", "-1d", "10y", "1 d", ""])
def test_malformed_durations_are_usage_errors(run: Invoke, duration: str) -> None:
    one_error_line(run("put", "ns", "x", "--expires", duration, input="v"), "usage")


@pytest.mark.parametrize(
    "args",
    [
        ["cleanup", "--retention", "999999999999w"],
        ["cleanup-keys", "--older-than", "999999999999w"],
    ],
)
def test_retention_durations_are_bounded_too(run: Invoke, args: list[str]) -> None:
    assert "1000 years" in one_error_line(run(*args), "usage")


def test_a_zero_retention_in_any_unit_means_all_expired(run: Invoke) -> None:
    assert json_of(run("--json", "cleanup", "--retention", "0d")) == {"deleted": 0}
    json_of(run("--json", "cleanup-keys", "--older-than", "0h"))


@given(st.text(max_size=30) | st.from_regex(r"\A[0-9]{1,20}[smhdwy]\Z"))
def test_parse_duration_returns_a_bounded_timedelta_or_raises_value_error(text: str) -> None:
    try:
        duration = parse_duration(text)
    except ValueError:
        return
    assert _dt.timedelta(0) < duration <= LONGEST_DURATION


# --- empty stdin (defect 6) --------------------------------------------------------------------


@pytest.mark.parametrize(("stdin", "flags"), [("", []), ("\n", []), (b"", ["--binary"])])
def test_an_empty_stdin_is_a_usage_error(run: Invoke, stdin: str | bytes, flags: list[str]) -> None:
    line = one_error_line(run("put", "ns", "empty", *flags, input=stdin), "usage")
    assert "--allow-empty" in line
    assert json_of(run("--json", "list", "ns"))["items"] == []


def test_allow_empty_stores_an_empty_value(run: Invoke) -> None:
    ok(run("put", "ns", "empty", "--allow-empty", input=""))
    got = json_of(run("--json", "get", "ns", "empty"))
    assert (got["value"], got["encoding"]) == ("", "utf-8")
    ok(run("put", "ns", "blob", "--binary", "--allow-empty", input=b""))
    assert ok(run("get", "ns", "blob")).stdout_bytes == b""


# --- --expires never (defect 7) ----------------------------------------------------------------


def test_expires_never_removes_an_expiry_and_leaving_it_out_keeps_it(run: Invoke) -> None:
    ok(run("put", "ns", "s", "--expires", "30d", input="v1"))
    first = _expires_at(run, "s")
    assert first is not None and first > time.time() + 29 * 86400
    ok(run("put", "ns", "s", input="v2"))
    assert _expires_at(run, "s") == first
    info = json_of(run("--json", "put", "ns", "s", "--expires", "never", input="v3"))
    assert (info["expires_at"], info["version"]) == (None, 3)
    assert _expires_at(run, "s") is None
    ok(run("put", "ns", "s", "--expires", "2w", input="v4"))
    assert _expires_at(run, "s") is not None
    ok(run("put", "ns", "s", "--expires", "NEVER", input="v5"))
    assert _expires_at(run, "s") is None


def test_expires_never_on_a_new_secret_stores_it_without_expiry(run: Invoke) -> None:
    ok(run("put", "ns", "fresh", "--expires", "never", input="v"))
    assert _expires_at(run, "fresh") is None


def test_put_help_documents_never_and_allow_empty(run: Invoke) -> None:
    text = ok(run("put", "--help")).stdout
    assert "never" in text and "--allow-empty" in text
