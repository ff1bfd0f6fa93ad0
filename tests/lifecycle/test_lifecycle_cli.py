"""The lifecycle commands of the ``kmsbox`` CLI through click's runner: status, rotate,
rewrap-deks, rewrap-namespace-keys, reencrypt, compromise, cleanup-keys, kek migrate,
diagnose, repair and import; JSON output, dry runs, and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Invoke, invoker, json_of, ok, one_error_line
from lifecycle_helpers import AUDIT_TABLES, Keyring, fill, read_all, secret_blobs, table_rows, value_tail

from kmsbox.cli.output import EXIT_CODES
from kmsbox.providers.local import add_keyring_version, remove_keyring_version
from kmsbox.store.service import SecretStore

Opener = Callable[..., SecretStore]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str, keyring: Keyring) -> Invoke:
    """``kmsbox ARGS`` against this test's store and keyring (from the environment)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KMSBOX_CONFIG", raising=False)
    monkeypatch.setenv("KMSBOX_STORE", sqlite_url)
    monkeypatch.setenv("KMSBOX_KEK", keyring.uri)
    return invoker()


@pytest.fixture
def seeded(open_store: Opener) -> dict[tuple[str, str], str]:
    """Two namespaces of secrets with known values; the store is closed again."""
    store = open_store()
    expected = {("app", k): v for k, v in fill(store, "app", 12).items()}
    expected |= {("tenant-1", k): v for k, v in fill(store, "tenant-1", 3).items()}
    store.close()
    return expected


def test_status(run: Invoke, seeded: dict[tuple[str, str], str], keyring: Keyring) -> None:
    data = json_of(run("--json", "status"))
    assert [k["uri"] for k in data["keks"]] == [keyring.uri]
    assert data["keks"][0]["primary_version"] == "v1"
    app = data["namespaces"]["app"]
    assert app["active_versions"] == [1]
    assert app["secret_versions_per_namespace_key"] == {"1": 12}
    assert app["secret_versions_per_kek_version"] == {f"{keyring.uri}#v1": 12}
    assert (app["pending"], data["jobs"]) == ([], [])
    assert list(json_of(run("--json", "status", "tenant-1"))["namespaces"]) == ["tenant-1"]

    text = ok(run("status")).stdout
    assert "namespace keys" in text and "no pending work" in text
    assert not any(value in text for value in seeded.values())


def test_rotate_and_rewrap_deks(
    run: Invoke, seeded: dict[tuple[str, str], str], open_store: Opener, db_path: Path
) -> None:
    before = secret_blobs(db_path)
    dry = json_of(run("--json", "rotate", "app", "--dry-run"))
    # The rewrap after the rotation moves every DEK under the key that is active now.
    assert (dry["new_version"], dry["dry_run"], dry["rewrap"]["remaining"]) == (2, True, 12)
    text = ok(run("rotate", "app", "--dry-run")).stdout
    assert "would rotate app to key version 2" in text and "would rewrap 12 DEKs; nothing was changed" in text
    assert secret_blobs(db_path) == before

    rotated = json_of(run("--json", "rotate", "app", "--no-rewrap"))
    assert (rotated["namespace"], rotated["new_version"], rotated["rewrap"]) == ("app", 2, None)
    assert json_of(run("--json", "status", "app"))["namespaces"]["app"]["pending"] == [
        "v1: 12 secret versions still under a rotating key (kmsbox rewrap-deks app)"
    ]
    dry = json_of(run("--json", "rewrap-deks", "app", "--dry-run"))
    assert (dry["dry_run"], dry["remaining"], dry["processed"]) == (True, 12, 0)
    report = json_of(run("--json", "rewrap-deks", "app"))
    assert (report["job"], report["processed"], report["remaining"], report["details"]) == (
        "rewrap-deks",
        12,
        0,
        {"retired": [1]},
    )
    after = secret_blobs(db_path)
    assert all(value_tail(after[k][0]) == value_tail(b) for k, (b, _) in before.items())

    text = ok(run("rotate", "tenant-1")).stdout
    assert "rotated tenant-1 to key version 2" in text and "rewrap-deks tenant-1: rewrapped 3 DEKs" in text
    read_all(open_store(), seeded)


def test_rewrap_namespace_keys_after_a_kek_rotation(
    run: Invoke, seeded: dict[tuple[str, str], str], keyring: Keyring, db_path: Path, open_store: Opener
) -> None:
    before = secret_blobs(db_path)
    add_keyring_version(keyring.path)
    dry = json_of(run("--json", "rewrap-namespace-keys", "--dry-run"))
    assert (dry["dry_run"], dry["remaining"]) == (True, 3)
    one = json_of(run("--json", "rewrap-namespace-keys", "--namespace", "app"))
    assert (one["processed"], one["kek_calls"]) == (1, 1)
    rest = json_of(run("--json", "rewrap-namespace-keys"))
    assert (rest["processed"], rest["skipped"], rest["remaining"]) == (2, 1, 0)
    assert secret_blobs(db_path) == before
    remove_keyring_version(keyring.path, "v1")
    read_all(open_store(), seeded)


def test_compromise_then_reencrypt(
    run: Invoke, seeded: dict[tuple[str, str], str], db_path: Path, open_store: Opener
) -> None:
    refused = run("compromise", "app", "1")
    assert refused.exit_code == EXIT_CODES["usage"]
    assert refused.stderr.strip().splitlines()[-1] == "Error: marking a key compromised cannot be undone: pass --yes"
    assert "Traceback" not in refused.output
    marked = json_of(run("--json", "compromise", "app", "1", "--yes"))
    assert marked == {"namespace": "app", "compromised": 1, "new_active_version": 2}
    assert run("diagnose", "app").exit_code == 6  # secrets under a compromised key are critical
    dry = json_of(run("--json", "reencrypt", "app", "--dry-run"))
    assert (dry["dry_run"], dry["remaining"]) == (True, 12)
    before = secret_blobs(db_path)
    report = json_of(run("--json", "reencrypt", "app"))
    assert (report["processed"], report["remaining"]) == (12, 0)
    after = secret_blobs(db_path)
    assert all(value_tail(after[k][0]) != value_tail(b) for k, (b, _) in before.items() if k[0] == "app")
    read_all(open_store(), seeded)

    text = ok(run("compromise", "tenant-1", "1", "--yes", "--no-rotate")).stdout
    assert "marked tenant-1 v1 compromised; next: kmsbox reencrypt tenant-1" in text
    assert one_error_line(run("reencrypt", "tenant-1"), "key_unavailable").endswith(
        "has no active key: rotate one in first"
    )


def test_cleanup_keys(run: Invoke, seeded: dict[tuple[str, str], str]) -> None:
    ok(run("rotate", "app"))
    ok(run("compromise", "tenant-1", "1", "--yes"))
    assert json_of(run("--json", "cleanup-keys", "--older-than", "1h"))["details"] == {"deleted": [], "refused": []}
    dry = json_of(run("--json", "cleanup-keys", "--dry-run"))
    assert dry["details"]["would_delete"] == [{"namespace": "app", "version": 1}]
    assert (dry["dry_run"], dry["remaining"], dry["processed"]) == (True, 1, 0)
    text = ok(run("cleanup-keys", "--dry-run")).stdout
    assert "would delete 1 key version, would skip 1; nothing was changed" in text
    assert "would delete: app v1" in text and "kept (still used): tenant-1 v1 (3 secret versions use it)" in text
    report = json_of(run("--json", "cleanup-keys"))
    assert report["processed"] == dry["remaining"]
    assert report["details"] == {
        "deleted": [{"namespace": "app", "version": 1}],
        "refused": [{"namespace": "tenant-1", "version": 1, "references": 3}],
    }
    assert json_of(run("--json", "cleanup-keys", "--namespace", "app"))["details"] == {"deleted": [], "refused": []}
    one_error_line(run("cleanup-keys", "--older-than", "soon"), "usage")


def test_kek_migrate(
    run: Invoke,
    seeded: dict[tuple[str, str], str],
    keyring: Keyring,
    second_keyring: Keyring,
    db_path: Path,
    open_store: Opener,
) -> None:
    before = secret_blobs(db_path)
    dry = json_of(run("--json", "kek", "migrate", "--to", second_keyring.uri, "--dry-run"))
    assert (dry["dry_run"], dry["remaining"], dry["processed"]) == (True, 3, 0)
    report = json_of(run("--json", "kek", "migrate", "--to", second_keyring.uri))
    assert (report["processed"], report["details"]["to"]) == (3, second_keyring.uri)
    text = ok(run("kek", "migrate", "--to", second_keyring.uri, "--drop-old")).stdout
    assert "dropped wraps: 3" in text and f"next: configure {second_keyring.uri} alone" in text
    assert secret_blobs(db_path) == before
    read_all(open_store(kek=second_keyring.uri), seeded)
    line = one_error_line(run("status"), "config")  # the old KEK alone opens nothing now
    assert "cannot be opened with the configured KEK" in line
    assert json_of(run("--kek", second_keyring.uri, "--json", "status"))["keks"][0]["uri"] == second_keyring.uri


def test_diagnose_and_repair(
    run: Invoke,
    seeded: dict[tuple[str, str], str],
    keyring: Keyring,
    open_store: Opener,
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    healthy = json_of(run("--json", "diagnose"))
    assert (healthy["ok"], healthy["issues"], healthy["secret_versions_checked"]) == (True, [], 15)
    assert "no issues" in ok(run("diagnose")).stdout
    assert json_of(run("--json", "diagnose", "--keys-only"))["secret_versions_checked"] == 0

    # Lose the KEK version under tenant-1's key: a KEK rewrap stopped before tenant-1, then v1 removed.
    add_keyring_version(keyring.path)
    store = open_store()

    def stop_before_tenant_1(done: int, total: int | None) -> None:
        if done == 2:  # "!audit", "app"
            raise KeyboardInterrupt

    # One namespace per KEK batch, so the interruption leaves the first two rewrapped.
    monkeypatch.setattr("kmsbox.store.maintenance._KEK_BATCH", 1)
    with pytest.raises(KeyboardInterrupt):
        store.rewrap_namespace_keys(progress=stop_before_tenant_1)
    store.close()
    remove_keyring_version(keyring.path, "v1")

    result = run("--json", "diagnose")
    assert result.exit_code == EXIT_CODES["key_unavailable"] == 6
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert {i["code"] for i in report["issues"]} == {
        "namespace_key_unavailable",
        "kek_version_gone",
        "secret_key_unavailable",
    }
    assert not any(value in result.stdout for value in seeded.values())
    assert run("diagnose").exit_code == 6

    before = table_rows(db_path, skip=AUDIT_TABLES)
    dry = json_of(run("--json", "repair"))
    assert dry["dry_run"] and dry["done"] == [] and len(dry["needs_confirmation"]) == 4
    assert json_of(run("--json", "repair", "--confirm-delete"))["dry_run"] is True  # still needs --apply
    assert table_rows(db_path, skip=AUDIT_TABLES) == before
    text = ok(run("repair")).stdout
    assert "needs --apply --confirm-delete: delete unrecoverable secret tenant-1/s00000 v1" in text

    applied = json_of(run("--json", "repair", "--apply"))
    assert not applied["dry_run"] and len(applied["needs_confirmation"]) == 4
    assert len(secret_blobs(db_path)) == 15
    deleted = json_of(run("--json", "repair", "--apply", "--confirm-delete"))
    assert deleted["needs_confirmation"] == [] and deleted["remaining"] == []
    assert "deleted namespace key tenant-1 v1" in deleted["done"]
    assert {k[0] for k in secret_blobs(db_path)} == {"app"}
    assert json_of(run("--json", "diagnose"))["ok"]
    read_all(open_store(), {k: v for k, v in seeded.items() if k[0] == "app"})
    store = open_store()
    actions = [e.action for e in store.iter_audit_events()]
    assert actions.count("repair") >= 4 + 3  # each run, and each deletion
    assert actions.count("diagnose") >= 6
    assert store.verify_audit().ok


def test_import_from_files_and_stdin(run: Invoke, tmp_path: Path, open_store: Opener) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text('# prod\nexport DB_PASSWORD="pa ss#word"\nAPI_TOKEN=tok-123 # comment\n', encoding="utf-8")
    json_file = tmp_path / "more.json"
    json_file.write_text('{"json_secret": "from-json", "DB_PASSWORD": "ignored"}', encoding="utf-8")

    report = json_of(run("--json", "import", "app", str(env_file), "--category", "imported"))
    assert (report["job"], report["processed"], report["skipped"]) == ("import", 2, 0)
    report = json_of(run("--json", "import", "app", str(json_file)))
    assert (report["processed"], report["skipped"]) == (1, 1)
    text = ok(run("import", "app", "-", input="FROM_STDIN=stdin-value\nDB_PASSWORD=new\n")).stdout
    assert "import app: imported 1 secret, skipped 1" in text
    assert "stdin-value" not in text and "pa ss#word" not in text
    report = json_of(
        run(
            "--json",
            "import",
            "app",
            "-",
            "--format",
            "json",
            "--on-conflict",
            "overwrite",
            input='{"DB_PASSWORD": "rotated"}',
        )
    )
    assert report["processed"] == 1
    read_all(
        open_store(),
        {
            ("app", "DB_PASSWORD"): "rotated",
            ("app", "API_TOKEN"): "tok-123",
            ("app", "json_secret"): "from-json",
            ("app", "FROM_STDIN"): "stdin-value",
        },
    )


@pytest.mark.parametrize(
    ("args", "stdin", "code", "fragment"),
    [
        (["import", "app", "missing.env"], None, "usage", "cannot read missing.env: FileNotFoundError"),
        (["import", "app", "-"], "GOOD=1\nthis is s3cret-value\n", "usage", "dotenv line 2 is not KEY=VALUE"),
        (["import", "app", "-", "--format", "json"], '{"a": "s3cret-value"', "usage", "JSON is malformed at line 1"),
        (["import", "bad ns!", "-"], "A=s3cret-value\n", "usage", "namespace"),
        (["import", "app", "-"], "bad.name!x=s3cret-value\n", "usage", "dotenv line 1 is not KEY=VALUE"),
        (["rotate", "bad ns!"], None, "usage", "namespace"),
        (["compromise", "app", "7", "--yes"], None, "usage", "has no key version 7"),
        (["rewrap-deks", "Not Valid"], None, "usage", "namespace"),
    ],
)
def test_bad_input_is_one_error_line_without_a_traceback(
    run: Invoke, seeded: dict[tuple[str, str], str], args: list[str], stdin: str | None, code: str, fragment: str
) -> None:
    line = one_error_line(run(*args, input=stdin), code)
    assert fragment in line
    assert "s3cret" not in line
