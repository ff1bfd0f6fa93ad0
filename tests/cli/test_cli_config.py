"""``kmsbox.toml`` and SQLite URL checks: every bad setting is a ConfigError naming what is wrong."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from cli_helpers import invoker, isolate, one_error_line
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import kmsbox
from kmsbox.errors import ConfigError, StorageError
from kmsbox.storage import open_storage
from kmsbox.storage.sqlite import open_sqlite
from kmsbox.store.config import StoreSettings, load_settings

KEK = "env://KMSBOX_UNUSED_KEK"  # load_settings only resolves settings: the KEK is never opened


def _load(tmp_path: Path, text: str | bytes) -> StoreSettings:
    path = tmp_path / "kmsbox.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return load_settings(config_file=path)


GOOD = '[store]\nurl = "memory://"\nkek = "env://K"\n'


def test_a_good_file_loads(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        GOOD
        + "audit_reads = false\nmax_value_size = 10\n[cache]\nmax_age = 1.5\nmax_uses = 3\nmax_entries = 4\ndata_keys = 0\n",
    )
    assert (settings.url, settings.keks, settings.audit_reads, settings.max_value_size) == (
        "memory://",
        ["env://K"],
        False,
        10,
    )
    assert settings.cache == {"max_age": 1.5, "max_uses": 3, "max_entries": 4, "data_keys": 0}


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kmsbox\.toml is not UTF-8") as raised:
        _load(tmp_path, GOOD.encode() + b"# caf\xe9\n")
    assert "0xe9" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        # unknown top-level tables and keys
        (GOOD + "[other]\nx = 1\n", "unknown top-level settings ['other']"),
        ("stray = 1\n" + GOOD, "unknown top-level settings ['stray']"),
        (GOOD + "typo = 1\n", "unknown [store] settings ['typo']"),
        (GOOD + "[cache]\nmaxage = 1\n", "unknown [cache] settings ['maxage']"),
        (GOOD + "[store.inner]\nx = 1\n", "unknown [store] settings ['inner']"),
        ('store = "memory://"\n', "store must be a table ([store]), got a string"),
        ("cache = 5\n" + GOOD, "cache must be a table ([cache]), got an integer"),
        # [store] url
        ('[store]\nurl = 5\nkek = "env://K"\n', "[store] url must be a string (a storage URL), got an integer"),
        (
            '[store]\nurl = ["memory://"]\nkek = "env://K"\n',
            "[store] url must be a string (a storage URL), got an array",
        ),
        ('[store]\nurl = true\nkek = "env://K"\n', "[store] url must be a string (a storage URL), got a boolean"),
        ('[store]\nurl = ""\nkek = "env://K"\n', "[store] url is empty"),
        # [store] kek
        (
            '[store]\nurl = "memory://"\nkek = 5\n',
            "[store] kek must be a URI string or an array of URI strings, got an integer",
        ),
        ('[store]\nurl = "memory://"\nkek = []\n', "[store] kek is an empty array"),
        (
            '[store]\nurl = "memory://"\nkek = ["env://K", 5]\n',
            "[store] kek entry 2 must be a URI string, got an integer",
        ),
        ('[store]\nurl = "memory://"\nkek = ["env://K", " "]\n', "[store] kek entry 2 is empty"),
        ('[store]\nurl = "memory://"\nkek = {a = 1}\n', "got a table"),
        # [store] audit_reads and max_value_size
        (GOOD + 'audit_reads = "yes"\n', "[store] audit_reads must be true or false, got a string"),
        (GOOD + "audit_reads = 1\n", "[store] audit_reads must be true or false, got an integer"),
        (GOOD + "max_value_size = 1.5\n", "[store] max_value_size must be an integer (bytes), got a float"),
        (GOOD + "max_value_size = nan\n", "[store] max_value_size must be an integer (bytes), got a float"),
        (GOOD + "max_value_size = true\n", "[store] max_value_size must be an integer (bytes), got a boolean"),
        (GOOD + "max_value_size = 0\n", "[store] max_value_size must be an integer from 1 to 67108864"),
        (GOOD + "max_value_size = 67108865\n", "[store] max_value_size must be an integer from 1 to 67108864"),
        # [cache] max_age
        (GOOD + "[cache]\nmax_age = nan\n", "[cache] max_age must be a finite number of seconds above 0"),
        (GOOD + "[cache]\nmax_age = -nan\n", "[cache] max_age must be a finite number of seconds above 0"),
        (GOOD + "[cache]\nmax_age = inf\n", "[cache] max_age must be a finite number of seconds above 0"),
        (GOOD + "[cache]\nmax_age = -inf\n", "[cache] max_age must be a finite number of seconds above 0"),
        (GOOD + "[cache]\nmax_age = 0\n", "[cache] max_age must be a finite number of seconds above 0"),
        (GOOD + "[cache]\nmax_age = -1\n", "[cache] max_age must be a finite number of seconds above 0"),
        (GOOD + '[cache]\nmax_age = "300"\n', "[cache] max_age must be a number of seconds, got a string"),
        (GOOD + "[cache]\nmax_age = true\n", "[cache] max_age must be a number of seconds, got a boolean"),
        # [cache] counts
        (GOOD + "[cache]\nmax_uses = inf\n", "[cache] max_uses must be an integer, got a float"),
        (GOOD + "[cache]\nmax_uses = nan\n", "[cache] max_uses must be an integer, got a float"),
        (GOOD + "[cache]\nmax_uses = 0.5\n", "[cache] max_uses must be an integer, got a float"),
        (GOOD + "[cache]\nmax_uses = 0\n", "[cache] max_uses must be an integer from 1 to"),
        (GOOD + "[cache]\nmax_uses = " + "9" * 400 + "\n", "[cache] max_uses must be an integer from 1 to"),
        (GOOD + "[cache]\nmax_entries = 0\n", "[cache] max_entries must be an integer from 1 to"),
        (GOOD + "[cache]\nmax_entries = 1979-05-27\n", "[cache] max_entries must be an integer, got a date"),
        (GOOD + "[cache]\ndata_keys = -1\n", "[cache] data_keys must be an integer from 0 to"),
        (GOOD + "[cache]\ndata_keys = inf\n", "[cache] data_keys must be an integer, got a float"),
    ],
)
def test_each_bad_setting_is_a_config_error_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)
    assert fragment in str(raised.value)
    assert "kmsbox.toml" in str(raised.value)


def test_a_wrong_type_in_the_file_is_reported_even_when_an_argument_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "kmsbox.toml"
    path.write_text('[store]\nurl = 5\nkek = "env://K"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[store\] url must be a string"):
        load_settings("memory://", KEK, config_file=path)


def test_a_url_in_the_file_is_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, '[store]\nurl = "postgresql://user:pa55word@db/x"\nkek = "env://K"\nextra = 1\n')
    assert "pa55word" not in str(raised.value)


_TOML_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: ("nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")) if not math.isfinite(f) else repr(f)
    ),
    st.sampled_from(["nan", "+nan", "-nan", "inf", "+inf", "-inf"]),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=20).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.just("[]"),
    st.just('["env://K"]'),
    st.just("{}"),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(
        [
            ("store", "url"),
            ("store", "kek"),
            ("store", "audit_reads"),
            ("store", "max_value_size"),
            ("cache", "max_age"),
            ("cache", "max_uses"),
            ("cache", "max_entries"),
            ("cache", "data_keys"),
        ]
    ),
    value=_TOML_VALUES,
)
@example(key=("cache", "max_age"), value="nan")
@example(key=("cache", "max_age"), value="inf")
@example(key=("cache", "max_uses"), value="9" * 400)
def test_any_value_for_any_key_loads_cleanly_or_is_a_config_error(
    tmp_path: Path, key: tuple[str, str], value: str
) -> None:
    table, name = key
    path = tmp_path / "kmsbox.toml"
    path.write_text(f"[{table}]\n{name} = {value}\n", encoding="utf-8")
    try:
        loaded = load_settings("memory://", KEK, config_file=path)
    except ConfigError as exc:
        assert f"[{table}] {name}" in str(exc) or "not valid TOML" in str(exc)
        return
    assert all(math.isfinite(v) and v >= 0 for v in loaded.cache.values())
    assert isinstance(loaded.audit_reads, bool)
    assert 1 <= loaded.max_value_size <= 64 * 1024 * 1024


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_bytes_in_the_file_load_or_are_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "kmsbox.toml"
    path.write_bytes(raw)
    with contextlib.suppress(ConfigError):  # anything else escaping fails the test
        load_settings("memory://", KEK, config_file=path)


def test_cli_reports_a_bad_config_file_in_one_line_with_exit_7(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, store=None, kek=False)
    run = invoker()
    (tmp_path / "kmsbox.toml").write_bytes(GOOD.encode() + b"# \xff\n")
    assert "not UTF-8" in one_error_line(run("list", "ns"), "config")
    (tmp_path / "kmsbox.toml").write_text(GOOD + "[other]\n", encoding="utf-8")
    assert "['other']" in one_error_line(run("list", "ns"), "config")
    (tmp_path / "kmsbox.toml").write_text(GOOD + "[cache]\nmax_age = nan\n", encoding="utf-8")
    assert "max_age" in one_error_line(run("list", "ns"), "config")


# --- SQLite URLs (defect 9) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("?foo=1", "unknown parameter 'foo' (known: busy_timeout)"),
        ("?busy_timeout=5&journal=off", "unknown parameter 'journal' (known: busy_timeout)"),
        ("?busy_timeout=1&busy_timeout=2", "parameter 'busy_timeout' is given twice"),
        ("?busy_timeout", "the query must look like"),
        ("?busy_timeout=", "busy_timeout must be a number of seconds"),
        ("?busy_timeout=abc", "busy_timeout must be a number of seconds"),
        ("?busy_timeout=nan", "busy_timeout must be a finite number of seconds above 0"),
        ("?busy_timeout=inf", "busy_timeout must be a finite number of seconds above 0"),
        ("?busy_timeout=-inf", "busy_timeout must be a finite number of seconds above 0"),
        ("?busy_timeout=0", "busy_timeout must be a finite number of seconds above 0"),
        ("?busy_timeout=-3", "busy_timeout must be a finite number of seconds above 0"),
        ("#part", "takes no #fragment"),
    ],
)
def test_a_bad_sqlite_url_query_is_a_config_error_saying_what_is_wrong(
    tmp_path: Path, query: str, fragment: str
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}{query}"
    for opener in (open_sqlite, open_storage):
        with pytest.raises(ConfigError) as raised:
            opener(url)
        assert fragment in str(raised.value)
    assert not (tmp_path / "x.db").exists()


def test_busy_timeout_is_taken_from_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBOX_CONFIG_TEST_KEK", os.urandom(32).hex())
    url = f"sqlite:///{tmp_path / 'x.db'}?busy_timeout=1"
    with kmsbox.open_store(url, kek="env://KMSBOX_CONFIG_TEST_KEK") as store:
        store.put("s", "v", namespace="ns")
        # Another process holds the write lock: the put gives up after the URL's 1 s, not the default 60 s.
        with closing(sqlite3.connect(tmp_path / "x.db", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(StorageError, match="stayed locked for 1s"):
                store.put("s", "v2", namespace="ns")
            assert time.monotonic() - started < 10
            other.execute("ROLLBACK")


def test_cli_reports_an_unknown_sqlite_parameter_with_exit_7(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'x.db'}?foo=1", kek=True)
    assert "unknown parameter 'foo' (known: busy_timeout)" in one_error_line(invoker()("list", "ns"), "config")
