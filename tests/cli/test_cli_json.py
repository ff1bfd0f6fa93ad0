"""``kmsbox --json COMMAND``: stdout is exactly one JSON document for every built-in command."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from cli_helpers import Invoke, invoker, isolate, json_of, leaf_commands, ok, one_error_line
from click.testing import CliRunner

import kmsbox.cli.fake_kms as fake_kms_cli
from kmsbox.cli import get_cli
from kmsbox.cli.main import Settings, _accept_json_after, pass_settings

DEMO_VALUES = ("correct horse battery staple", "sk-demo-not-a-real-key", "short-lived", "a newer passphrase")


class _FakeServer:
    """Stands in for a plugin's fake KMS: what `fake-kms serve` prints, without a socket."""

    name = "dummy"
    kek_uri = "dummy-kms://key/1"

    def env(self) -> dict[str, str]:
        return {"DUMMY_ENDPOINT": "http://127.0.0.1:1"}

    def stop(self) -> None:
        pass


class _SetEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.set()  # `serve` returns at once instead of waiting for Ctrl-C


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=True)
    registry = {"dummy": SimpleNamespace(description="a stand-in", factory=lambda **options: _FakeServer())}
    monkeypatch.setattr(fake_kms_cli, "fake_servers", lambda: registry)
    monkeypatch.setattr(fake_kms_cli.threading, "Event", _SetEvent)
    monkeypatch.setattr(fake_kms_cli.signal, "signal", lambda *args: None)
    return invoker()


def test_every_command_prints_one_json_document(run: Invoke, tmp_path: Path) -> None:
    keyring = tmp_path / "keys" / "keyring.json"
    checkpoint = tmp_path / "checkpoint.json"
    outputs: dict[str, Any] = {}

    def json_run(command: str, *args: str, input: str | bytes | None = None) -> Any:
        document = json_of(run("--json", *command.split(), *args, input=input))
        outputs.setdefault(command, document)
        return document

    assert len(json_run("keys new-hex")["key"]) == 64
    kek_uri = json_run("keys generate", str(keyring))["kek_uri"]
    assert json_run("keys add-version", str(keyring)) == {"primary_version": "v2"}
    assert json_run("keys remove-version", str(keyring), "v1", "--yes") == {"removed_version": "v1"}

    assert json_run("init", "--namespace", "ns") == {
        "created": True,
        "store": f"sqlite {tmp_path / 'secrets.db'}",
        "namespaces_created": ["ns"],
    }
    assert json_run("put", "ns", "a", input="value-one")["version"] == 1
    json_run("put", "ns", "b", input="value-two")
    assert json_run("get", "ns", "a")["value"] == "value-one"
    assert json_run("info", "ns", "a")["version"] == 1
    assert json_run("namespaces") == {"namespaces": ["ns"]}
    assert [i["name"] for i in json_run("list", "ns")["items"]] == ["a", "b"]
    assert json_run("history", "ns", "a")[0]["version"] == 1
    assert json_run("disable", "ns", "b")["status"] == "disabled"
    assert json_run("enable", "ns", "b")["status"] == "active"
    assert json_of(run("--json", "cleanup", "--dry-run")) == {"dry_run": True, "secrets": [], "would_delete": 0}
    assert json_run("cleanup") == {"deleted": 0}

    assert json_run("audit list")["events"]
    head = json_run("audit checkpoint")
    events = sum(c["seq"] for c in head["chains"])
    written = json_of(run("--json", "audit", "checkpoint", "--to", str(checkpoint)))
    assert written == {"output": str(checkpoint), "chains": len(head["chains"]), "events": events}
    assert sum(c["seq"] for c in json.loads(checkpoint.read_text())["chains"]) == events
    assert json_run("audit verify", "--checkpoint", str(checkpoint))["ok"] is True

    assert "ns" in json_run("status")["namespaces"]
    assert json_run("rotate", "ns")["new_version"] == 2
    json_run("rewrap-deks", "ns")
    json_run("rewrap-namespace-keys")
    json_run("reencrypt", "ns", "--dry-run")
    json_run("cleanup-keys")
    json_run("diagnose")
    json_run("repair")
    assert json_run("import", "ns", "-", input="IMPORTED=value-three\n")["processed"] == 1
    assert json_run("compromise", "ns", "2", "--yes")["compromised"] == 2

    envelope = json_run("encrypt", input="plain text")
    assert envelope["encoding"] == "hex"
    decrypted = json_run("decrypt", input=bytes.fromhex(envelope["envelope"]))
    assert bytes.fromhex(decrypted["value"]) == b"plain text"

    assert any(p["name"] == "sqlite" for p in json_run("plugins"))
    assert json_run("fake-kms list") == {"dummy": "a stand-in"}
    assert json_run("fake-kms serve")["dummy"]["kek_uri"] == "dummy-kms://key/1"

    assert json_of(run("--json", "delete", "ns", "b", "--dry-run")) == {
        "namespace": "ns",
        "name": "b",
        "dry_run": True,
        "would_delete_versions": 1,
    }
    assert json_run("delete", "ns", "b", "--yes")["deleted_versions"] == 1
    assert json_run("kek migrate", "--to", kek_uri)["job"]

    missing = {name for name, _ in leaf_commands(get_cli())} - set(outputs) - {"demo"}
    assert not missing, f"commands without a --json check: {sorted(missing)}"


def test_demo_json_describes_each_step_without_a_value(run: Invoke, tmp_path: Path) -> None:
    result = run("--json", "demo", "--dir", str(tmp_path / "demo"))
    document = json_of(result)
    assert [s["step"] for s in document["steps"]] == ["put", "put_again", "get", "list", "expiry", "disable", "audit"]
    steps = {s["step"]: s for s in document["steps"]}
    assert steps["put_again"]["version"] == 2
    assert steps["get"]["value_length"] == len("a newer passphrase")
    assert steps["expiry"]["error"]["type"] == "SecretExpired" and steps["expiry"]["cleaned_up"] == 1
    assert steps["disable"]["try_get"] == {"ok": False, "reason": "disabled"}
    assert steps["audit"]["verify"]["ok"] is True
    assert document["env"]["KMSBOX_STORE"] == document["store"]
    for value in DEMO_VALUES:
        assert value not in result.stdout


def test_json_after_the_command_gives_the_same_document(run: Invoke) -> None:
    written = json_of(run("put", "app:production", "db/password", "--json", input="pw-after\n"))
    assert (written["name"], written["version"]) == ("db/password", 1)
    assert "pw-after" not in str(written)
    for command in (["list", "app:production"], ["history", "app:production", "db/password"], ["plugins"]):
        assert json_of(run(*command, "--json")) == json_of(run("--json", *command))
    before, after = (
        json_of(run("--json", "get", "app:production", "db/password")),
        json_of(run("get", "app:production", "db/password", "--json")),
    )
    assert before["value"] == after["value"] == "pw-after"
    assert after["access_count"] == before["access_count"] + 1
    # A failure still ends in one error line and its exit code, with --json in either place.
    assert one_error_line(run("get", "app:production", "missing", "--json"), "not_found")
    assert json_of(run("audit", "list", "--name", "missing", "--json"))["events"][0]["result"] == "failure"


def test_every_command_accepts_json_after_it(run: Invoke) -> None:
    for name, _command in leaf_commands(get_cli()):
        shown = ok(run(*name.split(), "--help")).stdout
        assert "--json" in shown, f"kmsbox {name} does not take --json after it"


def test_commands_added_by_a_plugin_take_json_after_them_unless_they_have_their_own() -> None:
    seen: list[object] = []

    @click.command("hello")
    @pass_settings
    def hello(settings: Settings) -> None:
        seen.append(settings.as_json)

    @click.command("own")
    @click.option("--json", "mine", is_flag=True)
    def own(mine: bool) -> None:
        seen.append(("own", mine))

    group = click.Group("plugin-tools", commands=[hello, own])
    root = click.Group("kmsbox", commands=[group])
    _accept_json_after(root)
    runner = CliRunner()
    for args in (["plugin-tools", "hello", "--json"], ["plugin-tools", "hello"], ["plugin-tools", "own", "--json"]):
        assert runner.invoke(root, args, catch_exceptions=False).exit_code == 0
    assert seen == [True, False, ("own", True)]
    assert [p.name for p in own.params] == ["mine"]  # its own option is left alone
