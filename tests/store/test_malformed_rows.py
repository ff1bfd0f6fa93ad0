"""Rows changed through the database to values kmsbox never writes (wrong types, unknown
statuses, broken JSON): every operation answers a typed IntegrityError naming the row,
other rows keep working, diagnose finds it, and delete or repair can remove it."""

from __future__ import annotations

import datetime as _dt
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
from kmsbox.store.io import run
from kmsbox.store.service import SecretStore

Opener = Callable[..., SecretStore]


def _rows(path: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return [tuple(r) for r in conn.execute(statement, params).fetchall()]


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
    ("labels", "[" * 100_000),  # nested too deeply for the JSON decoder
    ("status", "deleted-ish"),
    ("expires_at", "soon"),
    ("created_at", "yesterday"),
    ("created_at", float("inf")),  # would not even survive `--json` output
    ("updated_at", b"\x00"),
    ("version_created_at", "later"),
    ("seal", "not bytes"),
    ("row_version", "one"),
    ("row_version", 2**63 - 1),  # a put would overflow the column adding one
    ("category", b"\x00\xff"),
    ("description", b"\x01"),  # TEXT affinity would turn a number into text
    ("version", "two"),
    ("version", 2.5),  # never truncated to 2
    ("version", 0),  # versions start at 1
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
    # The others still read; the failed reads are audited; diagnose names the row.
    assert store.get("alpha", namespace="ns").value == "a"
    assert store.get("zulu", namespace="ns").value == "z"
    failures = store.audit_events(AuditFilter(name="victim", action="read", result="failure"))[0]
    assert [e.detail["reason"] for e in failures] == ["integrity", "integrity"]
    report = store.diagnose("ns")
    found = [(i.code, i.secret, i.secret_version) for i in report.issues]
    if column == "version":  # the current version's number: its version row is malformed too
        assert found == [("secret_malformed", "victim", None), ("version_malformed", "victim", None)]
        assert report.secret_versions_checked == 3
    elif column == "version_created_at":  # the current version's time, in the same row
        assert found == [("secret_malformed", "victim", None), ("version_malformed", "victim", 2)]
        assert report.secret_versions_checked == 3
    else:
        assert found == [("secret_malformed", "victim", None)]
        assert report.secret_versions_checked == 4  # its version rows are fine and still checked
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
    store.put("keeper", "k1", namespace="ns")
    store.put("keeper", "k2", namespace="ns")
    for i in range(5):
        store.put(f"bulk-{i}", "b", namespace="ns")
    store.put("omega", "o", namespace="ns")
    _sql(db_path, "UPDATE kmsbox_secrets SET labels = 'oops' WHERE name = 'victim'")
    # An old version of a secret whose current version is fine, and a later secret whose
    # envelope is corrupt: the walk must go on past both.
    _sql(db_path, "UPDATE kmsbox_secret_history SET created_at = 'then' WHERE name = 'keeper'")
    _sql(db_path, "UPDATE kmsbox_secrets SET blob = substr(blob, 1, 40) WHERE name = 'omega'")
    store.batch_size = 2  # several pages, so the scans resume around the malformed rows

    report = store.diagnose("ns")
    assert sorted((i.code, i.secret, i.secret_version) for i in report.issues) == [
        ("secret_corrupt", "omega", 1),
        ("secret_malformed", "victim", None),
        ("version_malformed", "keeper", 1),
    ]
    # Every readable version was checked: 5 bulk, alpha, keeper v2, omega, victim v1 and v2, zulu.
    assert report.secret_versions_checked == 11

    dry = store.repair("ns")
    assert "delete malformed secret ns/victim (every version)" in dry.needs_confirmation
    assert "delete unrecoverable secret ns/keeper v1" in dry.needs_confirmation
    store.repair("ns", dry_run=False)  # not confirmed: nothing deleted
    with pytest.raises(MalformedRow):
        store.get("victim", namespace="ns")
    with pytest.raises(MalformedRow):
        store.get("keeper", namespace="ns", version=1)

    done = store.repair("ns", dry_run=False, confirm_delete=True)
    assert sorted(done.done) == [
        "deleted secret ns/omega (1 versions; its current version was unrecoverable)",
        "deleted secret ns/victim (2 versions; its stored row was malformed)",
        "deleted unrecoverable version ns/keeper v1",
    ]
    assert done.remaining == []
    with pytest.raises(SecretNotFound):
        store.get("victim", namespace="ns")
    assert store.get("keeper", namespace="ns").value == "k2"  # its readable version is kept
    assert all(store.get(f"bulk-{i}", namespace="ns").value == "b" for i in range(5))
    assert store.verify_audit().ok


def test_repair_keeps_a_row_fixed_after_the_diagnosis(open_test_store: Opener, db_path: Path) -> None:
    store = _with_victim(open_test_store)
    _sql(db_path, "UPDATE kmsbox_secrets SET labels = 'oops' WHERE name = 'victim'")
    doomed = [i for i in store.diagnose("ns").issues if i.destructive]
    _sql(db_path, """UPDATE kmsbox_secrets SET labels = '{"team": "x"}' WHERE name = 'victim'""")
    parts = store._parts  # the repair step itself, run on a diagnosis that is now out of date
    assert run(parts.diagnosis._delete_unrecoverable(store._io, doomed, [])) == ["kept ns/victim: its row reads again"]
    assert store.get("victim", namespace="ns").value == "v2"


@pytest.mark.parametrize(
    ("table", "column", "value", "issue", "left"),
    [
        # The current version's envelope: the secret goes, as for any unrecoverable current version.
        ("kmsbox_secrets", "blob", None, ("version_malformed", 2, True), None),
        ("kmsbox_secrets", "blob", "text, not bytes", ("version_malformed", 2, True), None),
        # An old version: only that version goes.
        ("kmsbox_secret_history", "blob", "text, not bytes", ("version_malformed", 1, True), "v2"),
        ("kmsbox_secret_history", "created_at", "then", ("version_malformed", 1, True), "v2"),
        # No version number to delete by: kept for a person to restore or delete.
        ("kmsbox_secret_history", "version", "x", ("version_malformed", None, False), "v2"),
        ("kmsbox_secret_history", "version", 1.5, ("version_malformed", None, False), "v2"),
    ],
)
def test_diagnose_reports_a_malformed_version_row_and_checks_the_rest(
    open_test_store: Opener,
    db_path: Path,
    table: str,
    column: str,
    value: object,
    issue: tuple[str, int | None, bool],
    left: str | None,
) -> None:
    store = _with_victim(open_test_store)
    _sql(db_path, f"UPDATE {table} SET {column} = ? WHERE name = 'victim'", (value,))
    report = store.diagnose()
    assert [(i.code, i.secret, i.secret_version, i.destructive) for i in report.issues] == [
        (issue[0], "victim", issue[1], issue[2])
    ]
    assert report.secret_versions_checked == 3  # alpha, zulu and victim's other version
    assert store.status()["namespaces"]["ns"]  # counting versions per key skips the malformed one
    store.repair(dry_run=False, confirm_delete=True)
    if left is None:
        assert store.try_get("victim", namespace="ns").reason == "not_found"  # the namespace stays
    elif issue[2]:
        assert store.get("victim", namespace="ns").value == left
        assert [v.version for v in store.history("victim", namespace="ns")] == [2]
    else:
        assert store.delete("victim", namespace="ns") == 2  # kmsbox delete still removes it, every version
    assert store.diagnose().ok
    kept = ["victim"] if left and issue[2] else []
    assert [i.name for i in store.list(namespace="ns").items] == sorted(["alpha", "zulu", *kept])


def test_a_non_integer_version_never_sends_a_key_job_round_in_circles(open_test_store: Opener, db_path: Path) -> None:
    store = _with_victim(open_test_store)
    store.rotate_namespace_key("ns")
    _sql(db_path, "UPDATE kmsbox_secret_history SET version = 1.5 WHERE name = 'victim'")
    events = len(store.audit_events(limit=1000)[0])
    # Both jobs step past that row, name it, and move every other version.
    report = store.rewrap_deks("ns")
    assert report.processed == 3  # alpha, zulu and victim v2
    assert report.details["malformed"] == ["victim v1.5"] or report.details["malformed"] == ["victim vNone"]
    assert len(store.audit_events(limit=1000)[0]) - events <= 4  # not an event per retried batch
    again = store.reencrypt("ns")
    assert again.processed == 3 and again.details["malformed"]
    store.repair(dry_run=False, confirm_delete=True)
    assert [store.get(n, namespace="ns").value for n in ("alpha", "victim", "zulu")] == ["a", "v2", "z"]


def test_a_malformed_expired_secret_does_not_stop_the_cleanup_of_the_others(
    open_test_store: Opener, db_path: Path
) -> None:
    store = open_test_store()
    store.batch_size = 2
    past = _dt.datetime(2001, 1, 1, tzinfo=_dt.UTC)
    for name in ("a-old", "b-old", "z-old", "y-old"):
        store.put(name, "v", namespace="ns", expires=past)
    store.put("victim", "v", namespace="ns", expires=3600)
    store.put("fresh", "f", namespace="ns")
    for name in ("bad-1", "bad-2", "bad-3"):  # more than a batch, expiring before the others
        store.put(name, "v", namespace="ns")
    _sql(
        db_path, "UPDATE kmsbox_secrets SET expires_at = 1, labels = 'oops' WHERE name LIKE 'bad-%' OR name = 'victim'"
    )
    assert store.cleanup_expired() == 4
    assert [(i.code, i.secret) for i in store.diagnose("ns").issues] == [
        ("secret_malformed", name) for name in ("bad-1", "bad-2", "bad-3", "victim")
    ]
    assert store.get("fresh", namespace="ns").value == "f"
    assert store.cleanup_expired() == 0


def test_text_that_is_not_utf8_is_a_typed_error_and_can_be_deleted(open_test_store: Opener, db_path: Path) -> None:
    store = _with_victim(open_test_store)
    _sql(db_path, "UPDATE kmsbox_secrets SET labels = CAST(X'FF' AS TEXT) WHERE name = 'victim'")
    with pytest.raises(MalformedRow, match="'victim' in namespace 'ns' is malformed"):
        store.get("victim", namespace="ns")
    assert store.try_get("victim", namespace="ns").reason == "integrity"
    with pytest.raises(MalformedRow, match="not UTF-8"):
        store.list(namespace="ns")
    assert store.get("zulu", namespace="ns").value == "z"
    assert store.delete("victim", namespace="ns") == 2
    assert [i.name for i in store.list(namespace="ns").items] == ["alpha", "zulu"]
    _sql(db_path, "UPDATE kmsbox_audit_events SET actor = CAST(X'FF' AS TEXT) WHERE seq = 2")
    problems = store.verify_audit().problems
    assert any("cannot be read" in p for p in problems)


def test_a_namespace_key_row_with_a_blob_namespace_does_not_break_diagnosis(
    open_test_store: Opener, db_path: Path
) -> None:
    store = _with_victim(open_test_store)
    store.put("t", "w", namespace="other")
    _sql(db_path, "UPDATE kmsbox_namespace_keys SET namespace = X'00' WHERE namespace = 'other'")
    report = store.diagnose()
    # The audit key's, ns and other: other's key rows no longer match its sealed key state.
    assert report.namespaces_checked == 3
    assert ("key_state_altered", "other") in [(i.code, i.namespace) for i in report.issues]
    assert store.get("alpha", namespace="ns").value == "a"


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
    verified = store.verify_audit()
    assert [p for p in verified.problems if "'other'" in p] == []
    assert any("namespace 'ns'" in p for p in verified.problems)


def _event_of(db_path: Path, name: str) -> tuple[int, int, int]:
    """(at, chain, seq) of the create event of secret ``name``."""
    found = _rows(
        db_path, "SELECT at, chain, seq FROM kmsbox_audit_events WHERE name = ? AND action = 'create'", (name,)
    )
    at, chain, seq = found[0]
    return int(at), int(chain), int(seq)


@pytest.mark.parametrize(
    ("column", "value", "lists"),
    [
        ("time", "noon", False),
        ("context", "not json", False),
        ("detail", "[]", False),
        ("secret_version", "v", False),
        ("key_version", float("inf"), False),
        ("state", "text, not bytes", False),
        ("context", '{"a": "\\ud800"}', True),  # valid JSON, but no UTF-8 for the MAC input
    ],
)
def test_a_malformed_audit_event_is_reported_by_verify_and_the_store_goes_on(
    open_test_store: Opener, db_path: Path, column: str, value: object, lists: bool
) -> None:
    store = open_test_store()
    for i in range(4):
        store.put(f"s{i}", "v", namespace="ns")
    store.close()
    at, chain, seq = _event_of(db_path, "s2")
    _sql(db_path, f"UPDATE kmsbox_audit_events SET {column} = ? WHERE chain = ? AND seq = ?", (value, chain, seq))
    store = open_test_store()

    result = store.verify_audit()
    # Exactly that event: its MAC is intact, so the next one still follows it.
    expected = [f"chain {chain}: event {seq} was altered: it holds values kmsbox never writes"]
    if column in ("secret_version", "state"):  # the state it records can no longer be compared either
        expected.append(
            "the states the audit log records cannot all be read, so secrets were not all compared with them"
        )
    assert result.problems == expected
    everything = result.events_checked  # it went on to the end
    if lists:
        assert len(store.audit_events(limit=1000)[0]) == everything
    else:
        with pytest.raises(IntegrityError, match=f"audit event {chain}:{seq} is malformed"):
            store.audit_events(limit=1000)
    assert store.audit_events(after=f"{at}-{chain}-{seq}")[0]  # events after the damage still list
    store.put("after", "a", namespace="ns")
    assert store.get("after", namespace="ns").value == "a"
    assert store.verify_audit().problems == result.problems  # the new events chain on correctly


def test_an_altered_mac_is_reported_and_later_events_chain_on_from_its_head(
    open_test_store: Opener, db_path: Path
) -> None:
    store = open_test_store()
    for i in range(6):
        store.put(f"s{i}", "v", namespace="ns")
    store.close()
    _, chain, seq = _event_of(db_path, "s2")
    _sql(db_path, "UPDATE kmsbox_audit_events SET mac = zeroblob(32) WHERE chain = ? AND seq = ?", (chain, seq))
    store = open_test_store()
    report = store.verify_audit()
    assert report.problems == [
        f"chain {chain}: event {seq} was altered, moved or does not follow its predecessor",
        f"chain {chain}: event {seq + 1} was altered, moved or does not follow its predecessor",
    ]
    assert len(store.audit_events(limit=1000)[0]) == report.events_checked  # a wrong MAC still lists
    store.put("after", "a", namespace="ns")  # appends after the sealed head, not the altered event
    assert store.verify_audit().problems == report.problems


def test_a_chain_cut_back_together_with_its_head_is_found(open_test_store: Opener, db_path: Path) -> None:
    store = open_test_store()
    for i in range(4):
        store.put(f"s{i}", "v", namespace="ns")
    store.close()
    ((chain, seq),) = _rows(db_path, "SELECT chain, seq FROM kmsbox_audit_chains WHERE seq > 0")
    # The newest event goes, and the head row is set back to the one before it.
    _sql(db_path, "DELETE FROM kmsbox_audit_events WHERE chain = ? AND seq = ?", (chain, seq))
    ((at, mac),) = _rows(
        db_path, "SELECT at, mac FROM kmsbox_audit_events WHERE chain = ? AND seq = ?", (chain, seq - 1)
    )
    _sql(db_path, "UPDATE kmsbox_audit_chains SET seq = ?, at = ?, mac = ? WHERE chain = ?", (seq - 1, at, mac, chain))
    store = open_test_store()
    assert store.verify_audit().problems[0] == f"chain {chain}: its head row was changed through the database"
    store.put("after", "a", namespace="ns")  # a write moves to a chain whose head authenticates
    assert store.get("after", namespace="ns").value == "a"


@pytest.mark.parametrize(
    "state",
    [
        "not json",
        "[]",
        '{"name": 5, "version": 1, "started": 0.5, "to_version": 2, "seal": "00"}',
        '{"name": "a", "version": 1, "started": 0.5, "to_version": 2, "seal": "not hex"}',
        '{"name": "a"}',
        '{"name": "a", "version": 99999999999999999999, "started": 0}',
    ],
)
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
    assert runner.invoke(get_cli(), ["delete", "ns", "victim", "--yes"]).exit_code == 0
    assert runner.invoke(get_cli(), ["get", "ns", "victim"]).exit_code == EXIT_CODES["not_found"]
