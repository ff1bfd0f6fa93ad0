"""Secret rows changed, replayed, moved or re-inserted through the database, on SQLite and
PostgreSQL: each change is caught (a read fails with an audited IntegrityError, or
``verify_audit`` / ``diagnose`` reports it), no version number the audit log recorded is
used again, and every secret the attack did not touch keeps working."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from db_attacker import Attacker

from kmsbox.errors import IntegrityError, SecretDisabled, SecretExpired
from kmsbox.storage.base import AuditFilter
from kmsbox.store.service import SecretStore

NS = "app:production"
OTHER_NS = "tenant-2"
VICTIM = "victim"
WHERE_VICTIM = "namespace = ? AND name = ?"
VICTIM_KEY = (NS, VICTIM)


def _populated(db: Attacker) -> SecretStore:
    """A store with the victim at version 2 and secrets the attacks leave alone."""
    store = db.open()
    store.put(VICTIM, "victim-value-1", namespace=NS, labels={"team": "pay"}, category="api")
    store.put(VICTIM, "victim-value-2", namespace=NS, labels={"team": "pay"}, category="api")
    store.put("bystander", "bystander-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    return store


def _assert_read_refused(store: SecretStore, name: str = VICTIM, namespace: str = NS) -> None:
    """The read fails with IntegrityError, and the failure is in the audit log."""
    with pytest.raises(IntegrityError):
        store.get(name, namespace=namespace)
    assert store.try_get(name, namespace=namespace).reason == "integrity"
    failures = store.audit_events(AuditFilter(namespace=namespace, name=name, action="read", result="failure"))[0]
    assert [e.detail["reason"] for e in failures[-2:]] == ["integrity", "integrity"]


def _assert_untouched_work(store: SecretStore) -> None:
    """What the attack did not touch reads, changes and is created as before."""
    assert store.get("bystander", namespace=NS).value == "bystander-value"
    assert store.get("elsewhere", namespace=OTHER_NS).value == "elsewhere-value"
    assert store.put("bystander", "bystander-value-2", namespace=NS).version == 2
    assert store.get("bystander", namespace=NS).value == "bystander-value-2"
    assert store.put("newcomer", "newcomer-value", namespace=NS).version == 1
    assert store.get("newcomer", namespace=NS).value == "newcomer-value"


def _problems(store: SecretStore, **kwargs: Any) -> list[str]:
    report = store.verify_audit(**kwargs)
    assert report.ok is (not report.problems)
    return report.problems


def _diagnosed(store: SecretStore) -> set[tuple[str, str | None]]:
    return {(i.code, i.secret) for i in store.diagnose().issues}


# --- the rollback of one secret ---------------------------------------------------------------


def test_version_one_written_into_the_current_row_fails_to_read(db: Attacker) -> None:
    # The issue's recipe: version 1's envelope and number in the current row, its history row gone.
    store = _populated(db)
    checkpoint = store.audit_checkpoint()
    old = db.blob(NS, VICTIM, 1)
    db.script(
        [
            ("UPDATE kmsbox_secrets SET blob = ?, version = 1 WHERE namespace = ? AND name = ?", (old, *VICTIM_KEY)),
            ("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ? AND version = 1", VICTIM_KEY),
        ]
    )
    for reader in (store, db.open()):  # the running store, and another process
        _assert_read_refused(reader)
        with pytest.raises(IntegrityError):
            reader.info(VICTIM, namespace=NS)
    expected = f"secret {NS}/{VICTIM}: its row was changed through the database"
    assert expected in _problems(store)
    assert expected in _problems(store, checkpoint=checkpoint)
    assert ("secret_altered", VICTIM) in _diagnosed(store)
    with pytest.raises(IntegrityError):
        store.put(VICTIM, "victim-value-3", namespace=NS)
    _assert_untouched_work(store)


def test_a_replayed_older_row_is_reported_and_a_put_never_reuses_its_version(db: Attacker) -> None:
    store = db.open()
    store.put(VICTIM, "victim-value-1", namespace=NS)
    older = db.snapshot("kmsbox_secrets", WHERE_VICTIM, VICTIM_KEY)  # validly sealed, at version 1
    store.put(VICTIM, "victim-value-2", namespace=NS)
    store.put("bystander", "bystander-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    checkpoint = store.audit_checkpoint()
    db.replay((older, WHERE_VICTIM, VICTIM_KEY))
    db.sql("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ?", VICTIM_KEY)

    rolled_back = f"secret {NS}/{VICTIM}: the database holds row version 1, the audit log records 2: it was rolled back"
    other = db.open()
    for verifier in (store, other):
        assert rolled_back in _problems(verifier)
        assert rolled_back in _problems(verifier, checkpoint=checkpoint)
    # A change never builds on it: version 2 stays the one the audit log recorded.
    for writer in (store, other):
        with pytest.raises(IntegrityError, match="rolled back"):
            writer.put(VICTIM, "victim-value-3", namespace=NS)
        with pytest.raises(IntegrityError, match="rolled back"):
            writer.disable(VICTIM, namespace=NS)
    assert [
        e.secret_version for e in store.audit_events(AuditFilter(name=VICTIM, action="update", result="success"))[0]
    ] == [2]
    _assert_untouched_work(store)


def test_delete_then_put_after_a_replay_starts_above_every_recorded_version(db: Attacker) -> None:
    store = db.open()
    store.put(VICTIM, "victim-value-1", namespace=NS)
    older = db.snapshot("kmsbox_secrets", WHERE_VICTIM, VICTIM_KEY)
    store.put(VICTIM, "victim-value-2", namespace=NS)
    db.replay((older, WHERE_VICTIM, VICTIM_KEY))
    db.sql("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ?", VICTIM_KEY)
    store.delete(VICTIM, namespace=NS)
    # The audit log recorded versions 1 and 2: a new life of the name starts at 3.
    assert store.put(VICTIM, "victim-value-3", namespace=NS).version == 3


# --- sealed fields: status, expiry, metadata, times --------------------------------------------

_FUTURE = time.time() + 365 * 86400

EDITS = {
    "status-active": ("status", "active"),
    "expiry-lifted": ("expires_at", None),
    "expiry-extended": ("expires_at", _FUTURE),
    "labels": ("labels", '{"team": "attacker"}'),
    "category": ("category", "public"),
    "description": ("description", "harmless, really"),
    "created_at": ("created_at", 1_000_000.0),
    "updated_at": ("updated_at", _FUTURE),
    "version_created_at": ("version_created_at", 1_000_000.0),
    "row_version": ("row_version", 7),
    "version": ("version", 1),
}


@pytest.mark.parametrize(("column", "value"), list(EDITS.values()), ids=list(EDITS))
def test_a_sealed_column_changed_through_the_database_fails_to_read(db: Attacker, column: str, value: object) -> None:
    store = _populated(db)
    # A disabled victim that has expired: re-enabling it or lifting its expiry is the goal.
    store.put(VICTIM, "victim-value-3", namespace=NS, expires=0.5)
    store.disable(VICTIM, namespace=NS)
    time.sleep(0.6)
    with pytest.raises(SecretDisabled):
        store.get(VICTIM, namespace=NS)
    db.sql(f"UPDATE kmsbox_secrets SET {column} = ? WHERE namespace = ? AND name = ?", (value, *VICTIM_KEY))

    for reader in (store, db.open()):
        _assert_read_refused(reader)
        with pytest.raises(IntegrityError):
            reader.info(VICTIM, namespace=NS)
        # A listing leaves the altered row out rather than show what the attacker wrote.
        assert VICTIM not in [i.name for i in reader.list(namespace=NS).items]
    with pytest.raises(IntegrityError):
        store.enable(VICTIM, namespace=NS)
    with pytest.raises(IntegrityError):
        store.put(VICTIM, "victim-value-4", namespace=NS)
    assert f"secret {NS}/{VICTIM}: its row was changed through the database" in _problems(store)
    assert ("secret_altered", VICTIM) in _diagnosed(store)
    _assert_untouched_work(store)


def test_a_replayed_row_from_before_the_disable_is_reported(db: Attacker) -> None:
    store = _populated(db)
    enabled = db.snapshot("kmsbox_secrets", WHERE_VICTIM, VICTIM_KEY)
    store.disable(VICTIM, namespace=NS)
    db.replay((enabled, WHERE_VICTIM, VICTIM_KEY))

    # Reads check the seal, which the old row still carries; verify compares it with the
    # audit log's record of the disable, and no change builds on it.
    problems = _problems(db.open())
    assert any(p.startswith(f"secret {NS}/{VICTIM}: the database holds row version 2") for p in problems)
    changes: list[Callable[[], object]] = [
        lambda: store.enable(VICTIM, namespace=NS),
        lambda: store.disable(VICTIM, namespace=NS),
        lambda: store.put(VICTIM, "victim-value-3", namespace=NS),
    ]
    for change in changes:
        with pytest.raises(IntegrityError, match="rolled back"):
            change()
    _assert_untouched_work(store)


def test_a_replayed_row_from_before_the_expiry_is_reported_and_never_renewed(db: Attacker) -> None:
    store = _populated(db)
    unexpiring = db.snapshot("kmsbox_secrets", WHERE_VICTIM, VICTIM_KEY)
    store.put(VICTIM, "victim-value-3", namespace=NS, expires=0.5)
    time.sleep(0.6)
    with pytest.raises(SecretExpired):
        store.get(VICTIM, namespace=NS)
    db.replay((unexpiring, WHERE_VICTIM, VICTIM_KEY))
    assert any("rolled back" in p and VICTIM in p for p in _problems(store))
    with pytest.raises(IntegrityError, match="rolled back"):
        store.put(VICTIM, "victim-value-4", namespace=NS)
    _assert_untouched_work(store)


# --- rows moved, swapped, re-inserted ------------------------------------------------------------


@pytest.mark.parametrize("target", [(NS, "stolen-name"), (OTHER_NS, VICTIM)], ids=["other-name", "other-namespace"])
def test_a_row_moved_to_another_name_or_namespace_fails_to_read_there(db: Attacker, target: tuple[str, str]) -> None:
    store = _populated(db)
    db.script(
        [
            (
                f"UPDATE {table} SET namespace = ?, name = ? WHERE namespace = ? AND name = ?",
                (*target, *VICTIM_KEY),
            )
            for table in ("kmsbox_secrets", "kmsbox_secret_history")
        ]
    )
    namespace, name = target
    _assert_read_refused(store, name, namespace)
    problems = _problems(store)
    assert f"secret {namespace}/{name}: its row was changed through the database" in problems
    assert f"secret {NS}/{VICTIM}: the audit log records it, but its row is gone from the database" in problems
    assert ("secret_altered", name) in _diagnosed(store)
    _assert_untouched_work(store)


def test_envelopes_swapped_between_secrets_fail_to_read(db: Attacker) -> None:
    store = _populated(db)
    store.put("second", "second-value", namespace=NS)
    mine, theirs = db.blob(NS, VICTIM, 2), db.blob(NS, "second", 1)
    db.set_blob(NS, VICTIM, 2, theirs)
    db.set_blob(NS, "second", 1, mine)
    _assert_read_refused(store, VICTIM)
    _assert_read_refused(store, "second")
    assert {("secret_corrupt", VICTIM), ("secret_corrupt", "second")} <= _diagnosed(store)
    _assert_untouched_work(store)


def test_an_older_version_written_over_the_current_envelope_fails_to_read(db: Attacker) -> None:
    # The version number stays; only the envelope is an older one (bound to version 1).
    store = _populated(db)
    db.set_blob(NS, VICTIM, 2, db.blob(NS, VICTIM, 1))
    _assert_read_refused(store)
    assert ("secret_corrupt", VICTIM) in _diagnosed(store)
    assert store.get(VICTIM, namespace=NS, version=1).value == "victim-value-1"
    _assert_untouched_work(store)


def test_a_deleted_secret_reinserted_through_the_database_is_reported(db: Attacker) -> None:
    store = _populated(db)
    row = db.snapshot("kmsbox_secrets", WHERE_VICTIM, VICTIM_KEY)
    history = db.snapshot("kmsbox_secret_history", WHERE_VICTIM, VICTIM_KEY)
    assert store.delete(VICTIM, namespace=NS) == 2
    db.replay((row, WHERE_VICTIM, VICTIM_KEY), (history, WHERE_VICTIM, VICTIM_KEY))

    assert f"secret {NS}/{VICTIM}: it was deleted, but a row of it is back in the database" in _problems(db.open())
    with pytest.raises(IntegrityError, match="deleted"):
        store.put(VICTIM, "victim-value-3", namespace=NS)
    # Deleting it again acknowledges the deletion, and the name then starts above version 2.
    store.delete(VICTIM, namespace=NS)
    assert store.put(VICTIM, "victim-value-3", namespace=NS).version == 3
    assert store.verify_audit().ok
    _assert_untouched_work(store)


def test_a_current_row_deleted_through_the_database_is_reported(db: Attacker) -> None:
    store = _populated(db)
    db.script(
        [
            ("DELETE FROM kmsbox_secrets WHERE namespace = ? AND name = ?", VICTIM_KEY),
            ("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ?", VICTIM_KEY),
        ]
    )
    missing = f"secret {NS}/{VICTIM}: the audit log records it, but its row is gone from the database"
    assert missing in _problems(store)
    # A put refuses to start the name over until the loss is acknowledged with a delete.
    with pytest.raises(IntegrityError, match="gone from the database"):
        store.put(VICTIM, "victim-value-3", namespace=NS)
    assert store.delete(VICTIM, namespace=NS) == 0
    assert store.put(VICTIM, "victim-value-3", namespace=NS).version == 3
    _assert_untouched_work(store)


def test_an_older_version_deleted_through_the_database_is_reported(db: Attacker) -> None:
    store = _populated(db)
    db.sql("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ? AND version = 1", VICTIM_KEY)
    assert store.get(VICTIM, namespace=NS).value == "victim-value-2"
    # Destroying data cannot be prevented, but it must not go unnoticed.
    reported = bool(store.verify_audit().problems) or any(i.secret == VICTIM for i in store.diagnose().issues)
    assert reported
    gone = f"secret {NS}/{VICTIM}: version 1 the audit log records is gone from the database"
    assert store.verify_audit().problems == [gone]


def test_cleanup_never_deletes_a_secret_whose_expiry_was_set_through_the_database(db: Attacker) -> None:
    store = _populated(db)
    db.sql(
        "UPDATE kmsbox_secrets SET expires_at = ? WHERE namespace = ? AND name = ?", (time.time() - 86400, *VICTIM_KEY)
    )
    assert store.cleanup_expired(0) == 0
    # Put back as it was, it reads: nothing was deleted.
    db.sql("UPDATE kmsbox_secrets SET expires_at = NULL WHERE namespace = ? AND name = ?", VICTIM_KEY)
    assert store.get(VICTIM, namespace=NS).value == "victim-value-2"
    assert store.verify_audit().ok
    _assert_untouched_work(store)
