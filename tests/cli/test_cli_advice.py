"""Advice that never undoes work: every command ``status``, ``diagnose``, ``repair`` and a
``next:`` hint suggests is a real command, and following them after a KEK migration
leaves the migration done.

Item 2 of issue 14: right after ``kek migrate --to NEW --drop-old`` (with both KEKs
configured, as the runbook says) ``status`` advised ``rewrap-namespace-keys``, which puts
the old wraps back; ``diagnose`` suggested ``cleanup-retired-keys``, which is not a command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Invoke, invoker, isolate, json_of, ok, resolve_suggestion, suggested_commands

import kmsbox

SECRETS = {f"s{i}": f"advice-value-{i}" for i in range(4)}


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``kmsbox`` on a SQLite store, its KEK a keyring made with ``kmsbox keys generate``."""
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=False)
    invoke = invoker()
    old = ok(invoke("keys", "generate", str(tmp_path / "keys" / "old.json"))).stdout.strip()
    monkeypatch.setenv("KMSBOX_KEK", old)
    for name, value in SECRETS.items():
        ok(invoke("put", "app", name, input=value))
    ok(invoke("put", "tenant-1", "token", input="advice-token"))
    return invoke


def _texts(run: Invoke, *global_args: str) -> list[str]:
    """Everything status, diagnose and repair say, in words and in JSON."""
    texts = [run(*global_args, command).stdout for command in ("status", "diagnose", "repair")]
    status = json_of(run(*global_args, "--json", "status"))
    texts += [line for info in status["namespaces"].values() for line in info["pending"]]
    diagnosis = json.loads(run(*global_args, "--json", "diagnose").stdout)
    texts += [issue["action"] for issue in diagnosis["issues"]]
    repair = json_of(run(*global_args, "--json", "repair"))
    texts += [issue["action"] for issue in repair["remaining"]]
    return texts


def _suggestions(texts: list[str]) -> list[list[str]]:
    return [resolve_suggestion(words) for text in texts for words in suggested_commands(text)]


def _kek_uris(status: dict[str, Any]) -> set[str]:
    return {w["kek_uri"] for info in status["namespaces"].values() for k in info["keys"] for w in k["wraps"]}


def test_every_suggested_action_is_a_real_command(run: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts: list[str] = []
    texts.append(ok(run("rotate", "app", "--no-rewrap")).stdout)  # pending rewrap
    texts.append(ok(run("compromise", "tenant-1", "1", "--yes", "--no-rotate")).stdout)  # no active key, in use
    texts.append(ok(run("put", "spare", "x", input="v")).stdout)
    texts.append(ok(run("rotate", "spare")).stdout)
    texts += _texts(run)
    old = tmp_path / "keys" / "old.json"
    texts.append(ok(run("keys", "add-version", str(old))).stdout)  # stale KEK version
    escrow = ok(run("keys", "generate", str(tmp_path / "keys" / "escrow.json"))).stdout.strip()
    other = ok(run("keys", "generate", str(tmp_path / "keys" / "other.json"))).stdout.strip()
    texts.append(ok(run("kek", "migrate", "--to", other)).stdout)  # a wrap under a KEK not configured
    texts += _texts(run)
    monkeypatch.setenv("KMSBOX_KEK", f"file://{old},{escrow}")
    texts += _texts(run)  # a configured KEK with no wraps at all

    found = _suggestions(texts)
    named = {words[0] if not words[0].startswith("--") else words[2] for words in found}
    # Not vacuous: the conditions above ask for each of these.
    assert {"rewrap-deks", "reencrypt", "rotate", "cleanup-keys", "rewrap-namespace-keys", "kek"} <= named
    assert "cleanup-retired-keys" not in " ".join(texts)


def test_following_the_advice_after_a_migration_never_undoes_it(
    run: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = f"file://{tmp_path / 'keys' / 'old.json'}"
    new = ok(run("keys", "generate", str(tmp_path / "keys" / "new.json"))).stdout.strip()

    # Step 2 of the runbook: an escrow copy under NEW. The hint is the runbook's next steps.
    hint = ok(run("kek", "migrate", "--to", new)).stdout
    assert [resolve_suggestion(w) for w in suggested_commands(hint)] == [
        ["--kek", new, "status"],
        ["kek", "migrate", "--to", new, "--drop-old"],
    ]
    # With the old KEK alone, the new wraps are "unknown": nothing may suggest dropping them.
    for action in [i["action"] for i in json.loads(run("--json", "diagnose").stdout)["issues"]]:
        for words in suggested_commands(action):
            assert resolve_suggestion(words) == ["kek", "migrate", "--to", new, "--drop-old"]

    # Steps 4 and 5: both configured, NEW first; drop the old wraps.
    monkeypatch.setenv("KMSBOX_KEK", f"{new},{old}")
    dropped = ok(run("kek", "migrate", "--to", new, "--drop-old")).stdout
    assert f"next: configure {new} alone (remove {old} from --kek, KMSBOX_KEK or [store] kek)" in dropped
    assert _kek_uris(json_of(run("--json", "status"))) == {new}

    texts = _texts(run)
    pending = [line for line in json_of(run("--json", "status"))["namespaces"]["app"]["pending"]]
    assert pending and all(f"stop configuring {old}: the store was moved to {new}" in line for line in pending)
    missing = [i for i in json.loads(run("--json", "diagnose").stdout)["issues"] if i["code"] == "missing_wrap"]
    assert missing and all(i["action"].startswith(f"stop configuring {old}") for i in missing)
    suggestions = _suggestions(texts)
    assert ["rewrap-namespace-keys"] not in suggestions
    assert not any(words[:3] == ["kek", "migrate", "--to"] and words[3] == old for words in suggestions)
    # Follow every command suggested: the old wraps stay gone.
    for words in suggestions:
        run(*words)
        assert _kek_uris(json_of(run("--json", "status"))) == {new}, words

    # Step 6: NEW alone. Nothing is pending and every secret reads.
    monkeypatch.setenv("KMSBOX_KEK", new)
    assert "no pending work" in ok(run("status")).stdout
    assert json_of(run("--json", "diagnose"))["ok"] is True
    assert {name: ok(run("get", "app", name)).stdout.rstrip("\n") for name in SECRETS} == SECRETS


def test_a_new_escrow_kek_is_advised_to_be_wrapped_under(
    run: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = f"file://{tmp_path / 'keys' / 'old.json'}"
    escrow = ok(run("keys", "generate", str(tmp_path / "keys" / "escrow.json"))).stdout.strip()
    monkeypatch.setenv("KMSBOX_KEK", f"{old},{escrow}")
    suggestions = _suggestions(_texts(run))
    assert ["kek", "migrate", "--to", escrow] in suggestions
    for words in suggestions:
        if words[:2] == ["kek", "migrate"]:
            ok(run(*words))
    assert _kek_uris(json_of(run("--json", "status"))) == {old, escrow}
    assert "no pending work" in ok(run("status")).stdout


def test_an_interrupted_job_is_resumed_by_the_command_status_names(run: Invoke, tmp_path: Path) -> None:
    def stop_after_the_first_batch(done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with kmsbox.open_store(os.environ["KMSBOX_STORE"], kek=os.environ["KMSBOX_KEK"]) as store:
        store.batch_size = 2
        with pytest.raises(KeyboardInterrupt):
            store.reencrypt("app", progress=stop_after_the_first_batch)
    shown = ok(run("status")).stdout
    assert "unfinished job: reencrypt:app (resume it: kmsbox reencrypt app)" in shown
    [suggestion] = [resolve_suggestion(w) for w in suggested_commands(shown.split("unfinished job:", 1)[1])]
    report = json_of(run("--json", *suggestion))
    assert (report["processed"], report["remaining"]) == (len(SECRETS) - 2, 0)
    assert json_of(run("--json", "status"))["jobs"] == []
