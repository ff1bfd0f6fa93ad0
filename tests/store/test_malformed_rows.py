"""Rows changed through the database to values kmsbox never writes (wrong types, unknown
statuses, broken JSON): every operation answers a typed IntegrityError naming the row,
other rows keep working, diagnose finds it, and delete or repair can remove it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from kmsbox.cli import get_cli
from kmsbox.cli.output import EXIT_CODES
from kmsbox.errors import IntegrityError, SecretNotFound
from kmsbox.storage.base import AuditFilter, MalformedRow
from kmsbox.store.service import SecretStore

Opener = Callable[..., SecretStore]


def _sql(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(statement, params)


def _with_victim(open_test_store: Opener) -> SecretStore:
    store = open_test_store()
    store.put("alpha", "a", namespace="ns")
    store.put("victim", "v1", namespace="ns", labels={"team": "x"})
    store.put("victim", "v2", namespace="ns", labels={"team": "x"})
    store.put("zulu", "z", namespace="ns")
    return store


# Each value is stored through SQLite, whose column affinity lets any type in.
METADATA = [
    ("labels", "not json"),
    ("labels", "[1, 2]"),
    ("labels", '{"team": 7}'),
    ("status", "deleted-ish"),
    ("expires_at", "soon"),
    ("created_at", "yesterday"),
    ("updated_at", b"\x00"),
    ("access_count", "many"),
    ("last_accessed_at", "x"),
    ("row_version", "one"),
    ("category", b"\x00\xff"),
    ("description", b"\x01"),  # TEXT affinity would turn a number into text
    ("version", "two"),
]


@pytest.mark.parametrize(("column", "value"), METADATA)
def test_malformed_metadata_is_a_typed_error_on_every_operation(
    open_test_store: Opener, db_path: Path, column: str, value: object
) -> None:
    store = _with_victim(open_test_store)
    _sql(db_path, f"UPDATE kmsbox_secrets SET {column} = ? WHERE name = 'victim'", (value,))

    with pytest.raises(MalformedRow, match="'victim' in namespace 'ns' is malformed") as caught:
        store.get("victim", namespace="ns")
    assert (caught.value.namespace, caught.value.name) == ("ns", "victim")
    assert store.try_get("victim", namespace="ns").reason == "integrity"
    for call in (
        lambda: store.put("victim", "v3", namespace="ns"),
        lambda: store.disable("victim", namespace="ns"),
        lambda: store.history("victim", namespace="ns"),
        lambda: store.list(namespace="ns"),
    ):
        with pytest.raises(IntegrityError):
            call()
    # The others still read; the failed reads are audited.
    assert store.get("alpha", namespace="ns").value == "a"
    assert store.get("zulu", namespace="ns").value == "z"
    failures = store.audit_events(AuditFilter(name="victim", action="read", result="failure"))[0]
    assert [e.detail["reason"] for e in failures] == ["integrity", "integrity"]
    # A malformed row can always be deleted, and the deletion is audited.
    assert store.delete("victim", namespace="ns") == 2
    with pytest.raises(SecretNotFound):
        store.get("victim", namespace="ns")
    deleted = store.audit_events(AuditFilter(name="victim", action="delete"))[0]
    assert deleted[-1].result == "success" and deleted[-1].detail["malformed"] is True
    assert [i.name for i in store.list(namespace="ns").items] == ["alpha", "zulu"]
    assert store.verify_audit().ok


def test_diagnose_names_malformed_rows_and_repair_deletes_them_only_when_confirmed(
    open_test_store: Opener, db_path: Path
) -> None:
    store = _with_victim(open_test_store)
    for i in range(5):
        store.put(f"bulk-{i}", "b", namespace="ns")
    store.put("omega", "o", namespace="ns")
    _sql(db_path, "UPDATE kmsbox_secrets SET labels = 'oops' WHERE name = 'victim'")
    # A history row, and a later secret whose envelope is corrupt: the walk must go on past both.
    _sql(db_path, "UPDATE kmsbox_secret_history SET created_at = 'then' WHERE name = 'victim'")
    _sql(db_path, "UPDATE kmsbox_secrets SET blob = substr(blob, 1, 40) WHERE name = 'omega'")
    store.batch_size = 2  # several pages, so the scans resume around the malformed row

    report = store.diagnose("ns")
    found = {(i.code, i.secret) for i in report.issues}
    assert ("secret_malformed", "victim") in found
    assert ("secret_corrupt", "omega") in found
    assert not report.ok
    assert report.secret_versions_checked >= 8  # every readable version was still checked

    dry = store.repair("ns")
    assert "delete malformed secret ns/victim (every version)" in dry.needs_confirmation
    assert store.get("alpha", namespace="ns").value == "a"
    with pytest.raises(MalformedRow):
        store.get("victim", namespace="ns")  # a dry run and an unconfirmed repair delete nothing
    store.repair("ns", dry_run=False)
    with pytest.raises(MalformedRow):
        store.get("victim", namespace="ns")

    done = store.repair("ns", dry_run=False, confirm_delete=True)
    assert any("deleted secret ns/victim" in line and "malformed" in line for line in done.done)
    assert not [i for i in done.remaining if i.code == "secret_malformed"]
    with pytest.raises(SecretNotFound):
        store.get("victim", namespace="ns")
    assert all(store.get(f"bulk-{i}", namespace="ns").value == "b" for i in range(5))
    assert store.verify_audit().ok


@pytest.mark.parametrize(
    ("table", "column", "value", "checked"),
    [
        # victim's v1 (history) is still checked before its malformed current row ...
        ("kmsbox_secrets", "namespace_key_version", "one", 3),
        ("kmsbox_secrets", "version_created_at", None, 3),
        # ... while a malformed v1 makes the walk step past the whole secret.
        ("kmsbox_secret_history", "namespace_key_version", "one", 2),
        ("kmsbox_secret_history", "blob", "text, not bytes", 2),
    ],
)
def test_diagnose_reports_a_malformed_version_row_and_checks_the_rest(
    open_test_store: Opener, db_path: Path, table: str, column: str, value: object, checked: int
) -> None:
    store = _with_victim(open_test_store)
    _sql(db_path, f"UPDATE {table} SET {column} = ? WHERE name = 'victim'", (value,))
    report = store.diagnose()
    assert [(i.code, i.secret) for i in report.issues if i.severity == "critical"] == [("secret_malformed", "victim")]
    assert report.secret_versions_checked == checked  # alpha and zulu always
    assert store.status()["namespaces"]["ns"]  # counting versions per key skips the malformed one
    store.repair(dry_run=False, confirm_delete=True)
    assert store.diagnose().ok
    assert [i.name for i in store.list(namespace="ns").items] == ["alpha", "zulu"]


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("kmsbox_namespace_keys", "created_at", "x"),
        ("kmsbox_namespace_keys", "version", "one"),
        ("kmsbox_namespace_key_wraps", "ciphertext", "text, not bytes"),
        ("kmsbox_namespace_key_wraps", "ciphertext", 12),
    ],
)
def test_a_malformed_namespace_key_row_fails_that_namespace_only(
    open_test_store: Opener, db_path: Path, table: str, column: str, value: object
) -> None:
    store = open_test_store()
    store.put("s", "v", namespace="ns")
    store.put("t", "w", namespace="other")
    store.close()
    _sql(db_path, f"UPDATE {table} SET {column} = ? WHERE namespace = 'ns'", (value,))
    store = open_test_store()

    with pytest.raises(IntegrityError):
        store.get("s", namespace="ns")
    with pytest.raises(IntegrityError):
        store.put("new", "n", namespace="ns")
    assert store.try_get("new", namespace="ns").reason == "not_found"  # nothing half-written
    assert store.get("t", namespace="other").value == "w"
    store.put("t", "w2", namespace="other")
    assert [e.detail["reason"] for e in store.audit_events(AuditFilter(name="s", result="failure"))[0]] == ["integrity"]
    report = store.diagnose()
    assert [(i.code, i.namespace) for i in report.issues if i.severity == "critical"] == [("key_row_malformed", "ns")]
    assert store.verify_audit().ok


@pytest.mark.parametrize(
    ("column", "value"),
    [("time", "noon"), ("context", "not json"), ("detail", "[]"), ("secret_version", "v"), ("mac", "text mac")],
)
def test_a_malformed_audit_event_is_reported_by_verify_and_the_store_goes_on(
    open_test_store: Opener, db_path: Path, column: str, value: object
) -> None:
    store = open_test_store()
    for i in range(4):
        store.put(f"s{i}", "v", namespace="ns")
    store.close()
    _sql(db_path, f"UPDATE kmsbox_audit_events SET {column} = ? WHERE seq = 3", (value,))
    store = open_test_store()

    result = store.verify_audit()
    assert not result.ok
    assert result.problems[0].startswith("event 3 was altered")
    assert result.events_checked == result.head_seq  # it went on to the end
    if column == "mac":
        assert len(store.audit_events()[0]) == result.head_seq  # a wrong MAC is only a wrong MAC
    else:
        with pytest.raises(IntegrityError, match="audit event 3 is malformed"):
            store.audit_events()
    # Writes and reads go on (the last event is the malformed one for the MAC case too).
    _sql(
        db_path,
        f"UPDATE kmsbox_audit_events SET {column} = ? WHERE seq = (SELECT MAX(seq) FROM kmsbox_audit_events)",
        (value,),
    )
    store.close()
    store = open_test_store()
    store.put("after", "a", namespace="ns")
    assert store.get("after", namespace="ns").value == "a"
    assert store.audit_events(after=result.head_seq + 1)[0]  # events after the damage still list
    problems = store.verify_audit().problems
    assert problems[0].startswith("event 3 was altered")
    assert len(problems) <= 4  # damage is reported where it is, not as a cascade to the end


@pytest.mark.parametrize("state", ["not json", "[]", '{"name": 5, "version": 1, "started": 0}', '{"name": "a"}'])
def test_a_malformed_job_checkpoint_is_discarded_and_the_job_starts_over(
    open_test_store: Opener, db_path: Path, state: str
) -> None:
    store = open_test_store()
    for i in range(6):
        store.put(f"s{i}", f"v{i}", namespace="ns")
    store.rotate_namespace_key("ns")
    _sql(
        db_path,
        "INSERT INTO kmsbox_jobs (job_id, kind, state, updated_at) VALUES ('reencrypt:ns', 'reencrypt', ?, 0)",
        (state,),
    )
    report = store.reencrypt("ns")
    assert report.details["checkpoint_discarded"] == "malformed"
    assert report.processed == 6
    assert [store.get(f"s{i}", namespace="ns").value for i in range(6)] == [f"v{i}" for i in range(6)]


def test_the_cli_prints_one_line_for_a_malformed_row(
    open_test_store: Opener, db_path: Path, sqlite_url: str, kek_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_victim(open_test_store).close()
    _sql(db_path, "UPDATE kmsbox_secrets SET labels = 'oops' WHERE name = 'victim'")
    monkeypatch.delenv("KMSBOX_CONFIG", raising=False)
    monkeypatch.setenv("KMSBOX_STORE", sqlite_url)
    monkeypatch.setenv("KMSBOX_KEK", kek_uri)
    runner = CliRunner()
    result = runner.invoke(get_cli(), ["get", "ns", "victim"])
    assert result.exit_code == EXIT_CODES["integrity"]
    assert result.stderr.strip() == "kmsbox: error: the stored row of secret 'victim' in namespace 'ns' is malformed"
    assert runner.invoke(get_cli(), ["delete", "ns", "victim"]).exit_code == 0
    assert runner.invoke(get_cli(), ["get", "ns", "victim"]).exit_code == EXIT_CODES["not_found"]
