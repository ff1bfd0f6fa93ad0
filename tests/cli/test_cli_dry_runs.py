"""A dry run reports exactly what the real run then does, says "would", and changes nothing.

Item 2 of issue 14: ``rotate --dry-run`` said the rewrap would process 0 where the real
run processed 3; ``cleanup-keys --dry-run`` said "would process 0", listed the keys under
"deleted", and its JSON said ``processed: 1``.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Invoke, invoker, isolate, json_of, ok

import kmsbox

#: Tables an audited command writes even when it changes nothing else.
_AUDIT_TABLES = ("kmsbox_audit_events", "kmsbox_audit_chains")


def _rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
            for t in tables
            if t not in _AUDIT_TABLES
        }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "secrets.db"


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db: Path) -> Invoke:
    """A store with 5 secrets in ``app`` and 2 in ``tenant-1``, its KEK a keyring file."""
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{db}", kek=False)
    invoke = invoker()
    monkeypatch.setenv("KMSBOX_KEK", ok(invoke("keys", "generate", str(tmp_path / "keyring.json"))).stdout.strip())
    ok(invoke("import", "app", "-", input="".join(f"S{i}=dry-run-value-{i}\n" for i in range(5))))
    ok(invoke("import", "tenant-1", "-", input="T0=t0\nT1=t1\n"))
    return invoke


def _dry_then_real(run: Invoke, db: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON of ``ARGS --dry-run`` (which must change no row and say "would" in words),
    then of ``ARGS``."""
    before = _rows(db)
    words = ok(run(*args, "--dry-run")).stdout
    assert "would" in words and "nothing was changed" in words, words
    dry = json_of(run("--json", *args, "--dry-run"))
    assert _rows(db) == before, f"kmsbox {' '.join(args)} --dry-run changed the store"
    return dry, json_of(run("--json", *args))


def test_rotate_dry_run_counts_the_deks_the_rewrap_then_moves(run: Invoke, db: Path) -> None:
    ok(run("rotate", "app", "--no-rewrap"))  # 5 DEKs under rotating v1
    ok(run("put", "app", "S9", input="under v2"))  # 1 under active v2
    dry, real = _dry_then_real(run, db, "rotate", "app")
    assert (dry["new_version"], dry["rewrap"]["remaining"], dry["rewrap"]["dry_run"]) == (3, 6, True)
    assert (real["new_version"], real["rewrap"]["processed"], real["rewrap"]["remaining"]) == (3, 6, 0)


@pytest.mark.parametrize(
    ("prepare", "args", "count"),
    [
        (lambda run, tmp: ok(run("rotate", "app", "--no-rewrap")), ("rewrap-deks", "app"), 5),
        (lambda run, tmp: None, ("reencrypt", "app"), 5),
        (
            lambda run, tmp: ok(run("keys", "add-version", str(tmp / "keyring.json"))),
            ("rewrap-namespace-keys",),
            3,  # app, tenant-1 and the audit key
        ),
    ],
)
def test_a_jobs_dry_run_counts_what_the_real_run_processes(
    run: Invoke, db: Path, tmp_path: Path, prepare: Callable[[Invoke, Path], Any], args: tuple[str, ...], count: int
) -> None:
    prepare(run, tmp_path)
    dry, real = _dry_then_real(run, db, *args)
    assert (dry["dry_run"], dry["remaining"], dry["processed"]) == (True, count, 0)
    assert (real["dry_run"], real["processed"], real["remaining"]) == (False, count, 0)


def test_cleanup_keys_dry_run_lists_what_would_be_deleted_and_then_is(run: Invoke, db: Path) -> None:
    ok(run("rotate", "app"))  # v1 retired, nothing under it
    ok(run("compromise", "tenant-1", "1", "--yes"))  # still used by 2 secret versions: kept
    dry, real = _dry_then_real(run, db, "cleanup-keys")
    assert dry["details"] == {
        "would_delete": [{"namespace": "app", "version": 1}],
        "refused": [{"namespace": "tenant-1", "version": 1, "references": 2}],
    }
    assert (dry["remaining"], dry["processed"], dry["skipped"]) == (1, 0, 1)
    assert real["details"]["deleted"] == dry["details"]["would_delete"]
    assert (real["processed"], real["skipped"]) == (dry["remaining"], dry["skipped"])
    text = ok(run("cleanup-keys", "--dry-run")).stdout
    assert "deleted" not in text  # nothing left to delete, and a dry run never says it deleted


def test_kek_migrate_dry_run(run: Invoke, db: Path, tmp_path: Path) -> None:
    target = ok(run("keys", "generate", str(tmp_path / "target.json"))).stdout.strip()
    dry, real = _dry_then_real(run, db, "kek", "migrate", "--to", target)
    assert (dry["remaining"], real["processed"]) == (3, 3)


def test_delete_dry_run(run: Invoke, db: Path) -> None:
    ok(run("put", "app", "S0", input="second version"))
    before = _rows(db)
    assert ok(run("delete", "app", "S0", "--dry-run")).stdout.strip() == (
        "would delete app/S0 (all 2 versions); nothing was deleted"
    )
    dry = json_of(run("--json", "delete", "app", "S0", "--dry-run"))
    assert _rows(db) == before
    real = json_of(run("--json", "delete", "app", "S0", "--yes"))
    assert dry["would_delete_versions"] == real["deleted_versions"] == 2


def test_cleanup_dry_run_lists_the_expired_secrets_the_real_run_deletes(run: Invoke, db: Path, tmp_path: Path) -> None:
    now = _dt.datetime.now(_dt.UTC)
    with kmsbox.open_store(f"sqlite:///{db}", kek=f"file://{tmp_path / 'keyring.json'}") as store:
        store.put("old", "v", namespace="app", expires=now - _dt.timedelta(days=3))
        store.put("recent", "v", namespace="tenant-1", expires=now - _dt.timedelta(minutes=5))
        store.put("live", "v", namespace="app", expires=now + _dt.timedelta(days=3))
    before = _rows(db)
    text = ok(run("cleanup", "--retention", "1h", "--dry-run")).stdout
    assert "would delete app/old" in text and "would delete 1 expired secret; nothing was deleted" in text
    dry = json_of(run("--json", "cleanup", "--retention", "1h", "--dry-run"))
    assert _rows(db) == before
    assert [(s["namespace"], s["name"]) for s in dry["secrets"]] == [("app", "old")]
    assert json_of(run("--json", "cleanup", "--retention", "1h")) == {"deleted": dry["would_delete"]}
    assert [s["name"] for s in json_of(run("--json", "cleanup", "--dry-run"))["secrets"]] == ["recent"]
    assert json_of(run("--json", "cleanup")) == {"deleted": 1}


def test_import_dry_run_checks_every_item_like_the_import(run: Invoke, db: Path) -> None:
    source = '{"S0": "exists already", "NEW": "fresh", "bad name!": "x", "BIG": "' + "x" * (1024 * 1024 + 1) + '"}'
    args = ("import", "app", "-", "--format", "json", "--on-error", "skip")
    before = _rows(db)
    text = ok(run(*args, "--dry-run", input=source)).stdout
    assert "import app (dry run): would import 1 secret, would skip 1; nothing was changed" in text
    assert "would fail: 2 items" in text and "exists already" not in text
    dry = json_of(run("--json", *args, "--dry-run", input=source))
    assert _rows(db) == before
    real = json_of(run("--json", *args, input=source))
    assert (dry["remaining"], dry["skipped"]) == (real["processed"], real["skipped"]) == (1, 1)
    assert (
        [(f["item"], f["error"], f["reason"]) for f in dry["failures"]]
        == [(f["item"], f["error"], f["reason"]) for f in real["failures"]]
        == [(3, "ValueError", "invalid"), (4, "ValueError", "invalid")]
    )


def test_import_dry_run_stops_where_the_import_would(run: Invoke) -> None:
    result = run(
        "import",
        "app",
        "-",
        "--dry-run",
        input="GOOD=1\nS0=again\n",
    )
    assert result.exit_code == 0  # on-conflict skip: S0 is skipped, not an error
    failed = run("import", "app", "-", "--dry-run", "--on-conflict", "fail", input="GOOD=1\nS0=again\n")
    real = run("import", "app", "-", "--on-conflict", "fail", input="GOOD=1\nS0=again\n")
    assert failed.exit_code == real.exit_code == 2
    assert failed.stderr == real.stderr == "kmsbox: error: secret 'S0' already exists in 'app'\n"
