"""A namespace's key state changed, rolled back or taken apart through the database, on
SQLite and PostgreSQL: a compromised or retired key never comes back into use (every use
of that namespace's keys fails with IntegrityError, so nothing is sealed under the leaked
key), diagnose and verify report it, and other namespaces keep working."""

from __future__ import annotations

import pytest
from db_attacker import Attacker, key_version_of

from kmsbox.errors import IntegrityError, KeyUnavailable
from kmsbox.storage.base import MalformedRow
from kmsbox.store.service import SecretStore

NS = "tenant-123"
OTHER_NS = "tenant-456"


def _compromised(db: Attacker) -> SecretStore:
    """A store whose namespace's key v1 was marked compromised (v2 rotated in, secrets re-encrypted)."""
    store = db.open()
    store.put("old", "old-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    assert store.mark_compromised(NS, 1) == 2
    store.reencrypt(NS)
    return store


def _assert_namespace_refused(store: SecretStore, match: str) -> None:
    """Every use of the namespace's keys fails with IntegrityError; nothing is written."""
    with pytest.raises(IntegrityError, match=match):
        store.get("old", namespace=NS)
    with pytest.raises(IntegrityError, match=match):
        store.put("new", "new-value", namespace=NS)
    with pytest.raises(IntegrityError, match=match):
        store.rotate_namespace_key(NS)


def _assert_other_namespace_works(store: SecretStore) -> None:
    assert store.get("elsewhere", namespace=OTHER_NS).value == "elsewhere-value"
    assert store.put("elsewhere", "elsewhere-value-2", namespace=OTHER_NS).version == 2
    assert store.put("fresh", "fresh-value", namespace="tenant-789").version == 1


def _key_issues(store: SecretStore) -> list[tuple[str, str | None]]:
    return [(i.code, i.namespace) for i in store.diagnose().issues if i.namespace == NS]


def _sealed_under(db: Attacker, version: int) -> list[tuple[str, int]]:
    """(name, secret version) of the envelopes in NS whose header names key ``version``."""
    return [(name, v) for ns, name, v, blob in db.all_blobs() if ns == NS and key_version_of(blob) == version]


def test_un_compromising_a_key_through_the_database_stops_every_use_of_the_namespace(db: Attacker) -> None:
    # The issue's recipe: delete the rotated-in version, set the compromised one back to active.
    store = _compromised(db)
    checkpoint = store.audit_checkpoint()
    db.script(
        [
            ("DELETE FROM kmsbox_namespace_key_wraps WHERE namespace = ? AND version = 2", (NS,)),
            ("DELETE FROM kmsbox_namespace_keys WHERE namespace = ? AND version = 2", (NS,)),
            ("UPDATE kmsbox_namespace_keys SET status = 'active' WHERE namespace = ? AND version = 1", (NS,)),
        ]
    )
    # The running store checks the key state it writes under; another process checks on load.
    with pytest.raises(IntegrityError, match="changed through the database"):
        store.put("new", "new-value", namespace=NS)
    _assert_namespace_refused(db.open(), "changed through the database")
    assert _sealed_under(db, 1) == []  # nothing is sealed under the leaked key
    changed = f"namespace {NS!r}: its key rows were changed through the database"
    assert changed in store.verify_audit().problems
    assert changed in store.verify_audit(checkpoint).problems
    assert ("key_state_altered", NS) in _key_issues(store)
    _assert_other_namespace_works(db.open())


def test_a_replayed_key_state_from_before_the_compromise_stops_every_use_of_the_namespace(db: Attacker) -> None:
    store = db.open()
    store.put("old", "old-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    before = db.key_state(NS)  # validly sealed: v1 active
    store.mark_compromised(NS, 1)
    store.reencrypt(NS)
    db.replay(*before)

    reader = db.open()
    _assert_namespace_refused(reader, "rolled back")
    with pytest.raises(IntegrityError, match="rolled back"):
        store.put("new", "new-value", namespace=NS)
    assert _sealed_under(db, 1) == []
    assert f"namespace {NS!r}: its keys are at generation 1, the audit log records 2: they were rolled back" in (
        reader.verify_audit().problems
    )
    assert ("key_state_altered", NS) in _key_issues(reader)
    _assert_other_namespace_works(reader)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", "rotating"),  # un-retire
        ("status", "active"),
        ("updated_at", 1_000_000.0),
        ("created_at", 1_000_000.0),
    ],
    ids=["un-retired", "retired-made-active", "updated_at", "created_at"],
)
def test_a_key_row_column_changed_through_the_database_stops_every_use_of_the_namespace(
    db: Attacker, column: str, value: object
) -> None:
    store = db.open()
    store.put("old", "old-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    store.rotate_namespace_key(NS)
    store.rewrap_deks(NS)  # v1 is retired now
    assert [k["status"] for k in store.status(NS)["namespaces"][NS]["keys"]] == ["retired", "active"]
    db.sql(f"UPDATE kmsbox_namespace_keys SET {column} = ? WHERE namespace = ? AND version = 1", (value, NS))

    reader = db.open()
    _assert_namespace_refused(reader, "changed through the database")
    assert _sealed_under(db, 1) == []  # the retired key is never used again
    assert f"namespace {NS!r}: its key rows were changed through the database" in reader.verify_audit().problems
    assert ("key_state_altered", NS) in _key_issues(reader)
    _assert_other_namespace_works(reader)


def test_a_key_status_kmsbox_never_writes_is_a_malformed_row(db: Attacker) -> None:
    store = db.open()
    store.put("old", "old-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    db.sql("UPDATE kmsbox_namespace_keys SET status = 'revoked' WHERE namespace = ?", (NS,))

    reader = db.open()
    for use in (
        lambda: reader.get("old", namespace=NS),
        lambda: reader.put("new", "new-value", namespace=NS),
        lambda: reader.rotate_namespace_key(NS),
    ):
        with pytest.raises(MalformedRow, match="namespace-key row of namespace 'tenant-123' is malformed"):
            use()
    # Reported as what it is, not as a namespace that merely lacks an active key.
    codes = [code for code, _ in _key_issues(reader)]
    assert "key_row_malformed" in codes and "no_active_key" not in codes
    assert any(p.startswith(f"namespace {NS!r}: its key rows cannot be read") for p in reader.verify_audit().problems)
    assert "revoked" not in str(reader.status()["namespaces"][NS])  # the value is not echoed
    _assert_other_namespace_works(reader)


def test_diagnose_of_one_namespace_reports_its_altered_key_state(db: Attacker) -> None:
    _compromised(db)
    db.sql("UPDATE kmsbox_namespace_keys SET status = 'active' WHERE namespace = ? AND version = 1", (NS,))
    report = db.open().diagnose(NS)
    assert [i.code for i in report.issues if i.code == "key_state_altered"] == ["key_state_altered"]


def test_deleted_wraps_make_the_namespace_unavailable_and_are_reported(db: Attacker) -> None:
    store = db.open()
    store.put("old", "old-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    db.sql("DELETE FROM kmsbox_namespace_key_wraps WHERE namespace = ?", (NS,))

    reader = db.open()
    with pytest.raises(KeyUnavailable, match="not wrapped by any configured KEK"):
        reader.get("old", namespace=NS)
    with pytest.raises(KeyUnavailable):
        reader.put("new", "new-value", namespace=NS)
    assert ("namespace_key_unavailable", NS) in _key_issues(reader)
    assert ("missing_wrap", NS) in _key_issues(reader)
    _assert_other_namespace_works(reader)


def test_wraps_swapped_between_key_versions_do_not_unwrap(db: Attacker) -> None:
    store = db.open()
    store.put("old", "old-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    store.rotate_namespace_key(NS)
    store.put("new", "new-value", namespace=NS)
    # Each wrap is bound to its namespace and version: swapped, neither opens.
    db.script(
        [
            ("UPDATE kmsbox_namespace_key_wraps SET version = -1 WHERE namespace = ? AND version = 1", (NS,)),
            ("UPDATE kmsbox_namespace_key_wraps SET version = 1 WHERE namespace = ? AND version = 2", (NS,)),
            ("UPDATE kmsbox_namespace_key_wraps SET version = 2 WHERE namespace = ? AND version = -1", (NS,)),
        ]
    )
    reader = db.open()
    for name in ("old", "new"):
        with pytest.raises(KeyUnavailable, match="wrap does not authenticate"):
            reader.get(name, namespace=NS)
    assert [c for c, _ in _key_issues(reader)].count("namespace_key_unavailable") == 2
    _assert_other_namespace_works(reader)


def test_a_wrap_moved_to_another_namespace_does_not_unwrap(db: Attacker) -> None:
    store = db.open()
    store.put("old", "old-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    wrap = db.sql("SELECT ciphertext FROM kmsbox_namespace_key_wraps WHERE namespace = ?", (OTHER_NS,))[0][0]
    db.sql("UPDATE kmsbox_namespace_key_wraps SET ciphertext = ? WHERE namespace = ?", (wrap, NS))
    reader = db.open()
    with pytest.raises(KeyUnavailable, match="wrap does not authenticate"):
        reader.get("old", namespace=NS)
    assert ("namespace_key_unavailable", NS) in _key_issues(reader)
    assert reader.get("elsewhere", namespace=OTHER_NS).value == "elsewhere-value"
