"""The plugin manager: defaults, KMSBOX_PLUGINS, errors, `kmsbox plugins`, and a real third-party plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

import kmsbox
from kmsbox import plugins
from kmsbox.cli import get_cli
from kmsbox.errors import PluginError
from kmsbox.plugins import (
    DEFAULT_PLUGINS,
    PLUGINS_ENV,
    get_plugin_manager,
    kek_factories,
    plugin_summary,
    reset_plugin_manager,
    storage_factories,
)

_SRC = Path(kmsbox.__file__).parent
_AWS_URI = "aws-kms://arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test loads plugins from its own environment, and leaves none behind."""
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def _restrict(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(PLUGINS_ENV, value)
    reset_plugin_manager()


def _plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
    """Write a plugin module on a temporary sys.path and add it to DEFAULT_PLUGINS."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", [*DEFAULT_PLUGINS, (name, name)])
    monkeypatch.delitem(sys.modules, name, raising=False)
    reset_plugin_manager()
    return name


# --- defaults and restriction ----------------------------------------------------------------------


def test_default_plugins_serve_local_memory_and_sqlite() -> None:
    assert [name for name, _ in DEFAULT_PLUGINS] == ["local", "memory", "sqlite", "audit-sinks"]
    assert {"env", "file"} <= set(kek_factories())
    assert {"memory", "sqlite"} <= set(storage_factories())
    assert kek_factories()["env"].plugin == "local"
    assert storage_factories()["sqlite"].plugin == "sqlite"


def test_plugin_manager_is_cached_until_reset() -> None:
    first = get_plugin_manager()
    assert get_plugin_manager() is first
    reset_plugin_manager()
    assert get_plugin_manager() is not first


def test_restriction_loads_only_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    _restrict(monkeypatch, " local , memory ")
    names = {name for name, _ in get_plugin_manager().list_name_plugin()}
    assert names == {"local", "memory"}
    assert set(kek_factories()) == {"env", "file"}
    assert set(storage_factories()) == {"memory"}


def test_empty_restriction_loads_no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    _restrict(monkeypatch, "")
    assert get_plugin_manager().list_name_plugin() == []
    assert kek_factories() == {} and storage_factories() == {}
    with pytest.raises(PluginError, match="'env'"):
        kmsbox.open_kek("env://KMSBOX_ANY")


def test_restriction_can_name_a_third_party_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    _restrict(monkeypatch, "chacha")
    assert set(kek_factories()) == {"chacha-file"}
    (row,) = plugin_summary()
    assert row["name"] == "chacha" and row["distribution"].startswith("kmsbox-chacha ")


# --- errors --------------------------------------------------------------------------------------------


def test_unknown_scheme_names_the_package_that_serves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _restrict(monkeypatch, "local")
    with pytest.raises(PluginError) as info:
        kmsbox.open_kek(_AWS_URI)
    message = str(info.value)
    assert "kmsbox-aws" in message and "pip install kmsbox-aws" in message
    assert "env" in message and "file" in message  # what is available now


@pytest.mark.parametrize(("scheme", "package"), sorted(plugins.KNOWN_PACKAGES.items()))
def test_every_known_scheme_names_its_package(scheme: str, package: str) -> None:
    error = plugins.missing_scheme_error(scheme, "provider", {})
    assert package in str(error)


def test_scheme_nobody_knows_lists_what_is_available() -> None:
    with pytest.raises(PluginError) as info:
        kmsbox.open_kek("no-such-kms://key")
    assert "'no-such-kms'" in str(info.value) and "env" in str(info.value)


def test_unknown_hook_is_plugin_error_from_check_pending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin_module(
        tmp_path,
        monkeypatch,
        "kmsbox_test_unknown_hook",
        """
        from kmsbox.hookspecs import hookimpl

        @hookimpl
        def register_widgets(register):
            register("widget", object)
        """,
    )
    with pytest.raises(PluginError, match="unknown hook") as info:
        get_plugin_manager()
    assert "register_widgets" in str(info.value)


def test_hook_with_wrong_arguments_is_plugin_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin_module(
        tmp_path,
        monkeypatch,
        "kmsbox_test_bad_signature",
        """
        from kmsbox.hookspecs import hookimpl

        @hookimpl
        def register_kek_providers(register, extra):
            pass
        """,
    )
    with pytest.raises(PluginError, match="specification"):
        get_plugin_manager()


def test_registering_an_empty_scheme_is_plugin_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin_module(
        tmp_path,
        monkeypatch,
        "kmsbox_test_empty_scheme",
        """
        from kmsbox.hookspecs import hookimpl

        @hookimpl
        def register_kek_providers(register):
            register("", object)
        """,
    )
    with pytest.raises(PluginError, match="kmsbox_test_empty_scheme"):
        kek_factories()


def test_a_plugin_overrides_a_trylast_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin_module(
        tmp_path,
        monkeypatch,
        "kmsbox_test_override",
        """
        from kmsbox.hookspecs import hookimpl

        def open_env(uri):
            raise LookupError("overridden")

        @hookimpl
        def register_kek_providers(register):
            register("env", open_env, "an override")
        """,
    )
    registration = kek_factories()["env"]
    assert registration.plugin == "kmsbox_test_override" and registration.description == "an override"
    assert kek_factories()["file"].plugin == "local"


def test_factory_returning_a_non_provider_is_plugin_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin_module(
        tmp_path,
        monkeypatch,
        "kmsbox_test_not_a_provider",
        """
        from kmsbox.hookspecs import hookimpl

        @hookimpl
        def register_kek_providers(register):
            register("broken", lambda uri: object())
        """,
    )
    with pytest.raises(PluginError, match="kmsbox_test_not_a_provider"):
        kmsbox.open_kek("broken://x")


# --- `kmsbox plugins` -------------------------------------------------------------------------------------


def test_plugins_command_lists_plugins_and_schemes() -> None:
    result = CliRunner().invoke(get_cli(), ["plugins"])
    assert result.exit_code == 0, result.output
    for text in ("local", "memory", "sqlite", "chacha", "env, file", "chacha-file", "(built in)"):
        assert text in result.output


@pytest.mark.parametrize("args", [["plugins", "--json"], ["--json", "plugins"]])
def test_plugins_command_json(args: list[str]) -> None:
    result = CliRunner().invoke(get_cli(), args)
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["local"]["kek_schemes"] == ["env", "file"]
    assert rows["local"]["default"] is True and rows["local"]["distribution"] is None
    assert rows["memory"]["storage_schemes"] == ["memory"]
    assert rows["chacha"]["kek_schemes"] == ["chacha-file"]
    assert rows["chacha"]["default"] is False
    assert rows["chacha"]["distribution"].startswith("kmsbox-chacha ")
    assert "register_kek_providers" in rows["chacha"]["hooks"]


def test_plugins_command_honours_the_restriction(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = get_cli()  # load commands before restricting (commands load once per process)
    _restrict(monkeypatch, "local")
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.output)] == ["local"]


# --- the example third-party plugin (docs/examples/kmsbox-chacha) -----------------------------------------


def test_example_plugin_is_installed_under_the_entry_point_group() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="kmsbox")}
    assert found.get("chacha") == "kmsbox_chacha", "pip install -e docs/examples/kmsbox-chacha"


def test_example_plugin_round_trips_through_open_kek_and_envelope(tmp_path: Path) -> None:
    keyfile = tmp_path / "chacha.keys"
    keyfile.write_text(f"# test keys\nv1:{os.urandom(32).hex()}\nv2:{os.urandom(32).hex()}\n")
    uri = f"chacha-file://{keyfile}"
    provider = kmsbox.open_kek(uri)
    assert type(provider).__module__ == "kmsbox_chacha"
    assert provider.primary_version() == "v2"
    key = os.urandom(32)
    assert provider.unwrap(provider.wrap(key, {"a": "b"}), {"a": "b"}) == key

    blob = kmsbox.Envelope(uri).encrypt(b"via a third-party plugin", {"row": "1"})
    assert kmsbox.Envelope(uri).decrypt(blob, {"row": "1"}) == b"via a third-party plugin"
    with pytest.raises(kmsbox.IntegrityError):
        kmsbox.Envelope(uri).decrypt(blob, {"row": "2"})


def test_excluded_example_plugin_scheme_is_plugin_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _restrict(monkeypatch, "local")
    with pytest.raises(PluginError, match="chacha-file"):
        kmsbox.open_kek(f"chacha-file://{tmp_path}/keys")


def test_kmsbox_never_imports_the_example_plugin() -> None:
    offenders = [
        str(path.relative_to(_SRC))
        for path in _SRC.rglob("*.py")
        if "kmsbox_chacha" in path.read_text(encoding="utf-8") or "kmsbox-chacha" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_kmsbox_core_never_imports_cloud_sdks() -> None:
    forbidden = ("import boto3", "import botocore", "google.cloud", "import hvac", "import psycopg", "from psycopg")
    offenders = [
        str(path.relative_to(_SRC))
        for path in _SRC.rglob("*.py")
        if any(word in path.read_text(encoding="utf-8") for word in forbidden)
    ]
    assert offenders == []


def test_a_store_on_a_local_key_loads_no_plugin_sdk(tmp_path: Path) -> None:
    # Every installed plugin is loaded in every process; one that imported its SDK at load
    # time put boto3, hvac, requests or SQLAlchemy in the heap of every service (a full
    # garbage collection walked 80,000 objects instead of 30,000).
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["KMSBOX_PLUGIN_TEST_KEK"] = os.urandom(32).hex()
        import kmsbox
        from kmsbox.plugins import plugin_summary
        store = kmsbox.open_store("sqlite:///{tmp_path / "s.db"}", kek="env://KMSBOX_PLUGIN_TEST_KEK")
        store.put("k", "v", namespace="ns")
        store.close()
        print(len(plugin_summary()))
        heavy = ("boto3", "botocore", "hvac", "requests", "sqlalchemy", "django", "starlette", "uvicorn",
                 "google", "grpc", "psycopg", "moto")
        print(",".join(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded, heavy = result.stdout.splitlines()
    assert int(loaded) >= 1
    assert heavy == ""


def test_a_lazily_loaded_name_comes_from_its_home_and_an_unknown_one_is_an_attribute_error() -> None:
    homes = {"dumps": "json"}
    assert plugins.load_lazily("pkg", homes, "dumps") is json.dumps
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'loads'"):
        plugins.load_lazily("pkg", homes, "loads")
