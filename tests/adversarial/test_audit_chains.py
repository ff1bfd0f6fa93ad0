"""The audit log against a database-only attacker, on SQLite and PostgreSQL: altered, forged,
reordered and erased events, chain heads changed or replayed, whole chains deleted, the
schema marker changed. Each is found by ``verify_audit`` or, for the newest events of a
chain cut back together with its head, by a checkpoint or a sink's copy taken after them
(the window the docs' threat model names)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from db_attacker import Attacker, on_another_chain

from kmsbox.errors import IntegrityError
from kmsbox.store.service import SecretStore

NS = "app:production"


@pytest.fixture
def copy_path(tmp_path: Path) -> Path:
    """Where the JSON-lines sink keeps its copy of the log (outside the database)."""
    return tmp_path / "audit.jsonl"


def _store(db: Attacker, copy_path: Path) -> SecretStore:
    store = db.open(audit_sinks=[f"jsonl://{copy_path}"])
    store.put("alpha", "alpha-value", namespace=NS)
    store.put("beta", "beta-value", namespace=NS)
    store.put("alpha", "alpha-value-2", namespace=NS)
    return store


def _copy_problems(store: SecretStore, copy_path: Path) -> list[str]:
    with copy_path.open(encoding="utf-8") as lines:
        return store.verify_audit_copy(lines).problems


def _assert_keeps_working(store: SecretStore) -> None:
    assert store.get("beta", namespace=NS).value == "beta-value"
    assert store.put("gamma", "gamma-value", namespace=NS).version == 1
    assert store.get("gamma", namespace=NS).value == "gamma-value"


# --- erasing the newest events -------------------------------------------------------------------


def test_an_erased_newest_event_shows_at_its_chain_head(db: Attacker, copy_path: Path) -> None:
    store = _store(db, copy_path)
    store.get("alpha", namespace=NS)
    read = db.events("action = 'read'")[-1]
    db.delete_event(read)
    gone = f"chain {read.chain}: events {read.seq}..{read.seq} after the last one stored are gone"
    assert gone in store.verify_audit().problems
    # A later event chains onto the head, which still counts the erased one: the gap stays visible.
    store.put("delta", "delta-value", namespace=NS)
    assert f"chain {read.chain}: events {read.seq}..{read.seq} are missing (or reordered)" in (
        db.open().verify_audit().problems
    )
    assert any(f"event {read.chain}:{read.seq}" in p and "erased" in p for p in _copy_problems(store, copy_path))


def test_an_erased_newest_event_with_its_head_replayed_is_found_by_a_checkpoint_and_the_copy(
    db: Attacker, copy_path: Path
) -> None:
    store = _store(db, copy_path)
    heads = db.heads()
    store.get("alpha", namespace=NS)  # the read the attacker wants to hide
    checkpoint = store.audit_checkpoint()
    read = db.events("action = 'read'")[-1]
    db.delete_event(read)
    db.replay((heads, "1 = 1", ()))
    # The chain alone now ends where its (validly sealed) old head says: this is the window
    # that only something kept outside the database closes.
    assert store.verify_audit().ok
    cut = f"chain {read.chain}: event {read.seq} from the checkpoint is gone: the chain was cut back"
    assert cut in store.verify_audit(checkpoint).problems
    erased = f"event {read.chain}:{read.seq} is in the copy but not in the database: it was erased"
    assert any(erased in p for p in _copy_problems(store, copy_path))
    # A later event built on the shortened chain does not hide it from either.
    store.put("delta", "delta-value", namespace=NS)
    assert f"chain {read.chain}: event {read.seq} differs from the checkpoint" in (
        store.verify_audit(checkpoint).problems
    )
    assert any(erased in p for p in _copy_problems(store, copy_path))
    _assert_keeps_working(store)


def test_a_chain_head_row_changed_through_the_database_is_reported_and_writes_go_on(
    db: Attacker, copy_path: Path
) -> None:
    store = _store(db, copy_path)
    chain = db.events()[-1].chain
    db.sql("UPDATE kmsbox_audit_chains SET seq = seq - 1, mac = ? WHERE chain = ?", (os.urandom(32), chain))
    assert f"chain {chain}: its head row was changed through the database" in store.verify_audit().problems
    # Appends pass over the broken chain to the next one.
    _assert_keeps_working(db.open())
    assert {e.chain for e in db.events("name = 'gamma'")} - {chain}


# --- whole chains --------------------------------------------------------------------------------


def test_a_deleted_chain_that_recorded_changes_is_reported_without_a_checkpoint(db: Attacker, copy_path: Path) -> None:
    store = _store(db, copy_path)
    chain = db.events("name = 'alpha'")[-1].chain
    checkpoint = store.audit_checkpoint()
    db.script(
        [
            ("DELETE FROM kmsbox_audit_events WHERE chain = ?", (chain,)),
            ("DELETE FROM kmsbox_audit_chains WHERE chain = ?", (chain,)),
        ]
    )
    problems = db.open().verify_audit().problems
    assert f"namespace {NS!r}: the audit log records no change of its keys, yet they changed" in problems
    assert any("from the checkpoint is gone" in p for p in store.verify_audit(checkpoint).problems)
    assert any("erased" in p for p in _copy_problems(store, copy_path))
    # Without a record of the namespace's keys, no new process builds on them.
    with pytest.raises(IntegrityError, match="no audit record"):
        db.open().put("gamma", "gamma-value", namespace=NS)


def test_a_deleted_chain_of_reads_only_is_found_by_a_checkpoint_and_the_copy(db: Attacker, copy_path: Path) -> None:
    store = _store(db, copy_path)
    writes = {e.chain for e in db.events()}
    chain, _ = on_another_chain(db, store, writes, lambda: store.get("alpha", namespace=NS))
    checkpoint = store.audit_checkpoint()
    db.script(
        [
            ("DELETE FROM kmsbox_audit_events WHERE chain = ?", (chain,)),
            ("DELETE FROM kmsbox_audit_chains WHERE chain = ?", (chain,)),
        ]
    )
    # Reads change nothing the cross-check compares, so the chain alone leaves no trace ...
    assert store.verify_audit().ok
    # ... but what was kept outside the database still has it.
    assert any(f"chain {chain}: event" in p and "cut back" in p for p in store.verify_audit(checkpoint).problems)
    assert any(f"event {chain}:" in p and "erased" in p for p in _copy_problems(store, copy_path))
    _assert_keeps_working(store)


# --- altered, reordered and forged events --------------------------------------------------------

ALTERATIONS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "action": ("action = 'create'", ()),
    "result": ("result = 'denied'", ()),
    "actor": ("actor = 'someone-else'", ()),
    "namespace": ("namespace = 'tenant-2'", ()),
    "name": ("name = 'beta'", ()),
    "secret_version": ("secret_version = 9", ()),
    "row_version": ("row_version = 9", ()),
    "state": ("state = ?", (os.urandom(16),)),
    "time": ("time = time - 3600", ()),
    "detail": ("detail = '{}'", ()),
    "context": ('context = \'{"ip": "10.0.0.9"}\'', ()),
    "mac": ("mac = ?", (os.urandom(32),)),
}


@pytest.mark.parametrize(("change", "params"), list(ALTERATIONS.values()), ids=list(ALTERATIONS))
def test_an_event_altered_through_the_database_is_reported(
    db: Attacker, copy_path: Path, change: str, params: tuple[Any, ...]
) -> None:
    store = _store(db, copy_path)
    update = db.events("name = 'alpha' AND action = 'update'")[0]
    checkpoint = store.audit_checkpoint()
    db.sql(f"UPDATE kmsbox_audit_events SET {change} WHERE at = ? AND chain = ? AND seq = ?", (*params, *update.key))
    for report in (store.verify_audit(), store.verify_audit(checkpoint)):
        assert any(p.startswith(f"chain {update.chain}: event {update.seq} was altered") for p in report.problems)
    _assert_keeps_working(store)


def test_reordered_events_are_reported(db: Attacker, copy_path: Path) -> None:
    store = _store(db, copy_path)
    first, second = db.events("name = 'alpha'")[:2]
    assert first.chain == second.chain
    swap = "UPDATE kmsbox_audit_events SET seq = ? WHERE at = ? AND chain = ? AND seq = ?"
    db.script(
        [
            (swap, (-1, *first.key)),
            (swap, (first.seq, *second.key)),
            (swap, (second.seq, first.at, first.chain, -1)),
        ]
    )
    assert any(f"chain {first.chain}: event" in p for p in store.verify_audit().problems)
    _assert_keeps_working(store)


def test_a_forged_event_is_reported(db: Attacker, copy_path: Path) -> None:
    store = _store(db, copy_path)
    chain, seq, at = db.sql("SELECT chain, seq, at FROM kmsbox_audit_chains ORDER BY seq DESC")[0]
    # An innocent-looking read by someone else, and a record of a state to build on.
    db.sql(
        "INSERT INTO kmsbox_audit_events (at, chain, seq, time, namespace, name, secret_version, action, result, "
        "actor, context, detail, key_version, mac, record, row_version, state) "
        "VALUES (?, ?, ?, ?, ?, 'alpha', 2, 'read', 'success', 'auditor', '{}', '{}', 1, ?, 2, NULL, NULL)",
        (at + 1, chain, seq + 1, (at + 1) / 1e6, NS, os.urandom(32)),
    )
    problems = store.verify_audit().problems
    assert f"chain {chain}: event {seq + 1} was altered, moved or does not follow its predecessor" in problems
    _assert_keeps_working(store)


def test_a_rollback_with_its_recording_event_erased_is_still_reported(db: Attacker, copy_path: Path) -> None:
    store = db.open(audit_sinks=[f"jsonl://{copy_path}"])
    store.put("alpha", "alpha-value", namespace=NS)
    where = "namespace = ? AND name = 'alpha'"
    older = db.snapshot("kmsbox_secrets", where, (NS,))
    store.put("alpha", "alpha-value-2", namespace=NS)
    store.put("beta", "beta-value", namespace=NS)  # so the erased event is not the newest
    db.replay((older, where, (NS,)))
    db.sql("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = 'alpha'", (NS,))
    update = db.events("name = 'alpha' AND action = 'update'")[0]
    db.delete_event(update)
    assert f"chain {update.chain}: events {update.seq}..{update.seq} are missing (or reordered)" in (
        store.verify_audit().problems
    )
    assert any(f"event {update.chain}:{update.seq}" in p for p in _copy_problems(store, copy_path))


# --- seals and the schema marker ------------------------------------------------------------------


def test_a_nulled_seal_is_never_sealed_again_by_the_store(db: Attacker, copy_path: Path) -> None:
    store = _store(db, copy_path)
    store.disable("alpha", namespace=NS)
    store.close()
    db.sql("UPDATE kmsbox_secrets SET status = 'active', seal = NULL WHERE namespace = ? AND name = 'alpha'", (NS,))
    reopened = db.open()  # an open seals only what an older release stored: not this
    with pytest.raises(IntegrityError, match="changed through the database"):
        reopened.get("alpha", namespace=NS)
    assert f"secret {NS}/alpha: its row was changed through the database" in reopened.verify_audit().problems
    _assert_keeps_working(reopened)


def test_a_changed_schema_marker_with_a_nulled_seal_is_reported(db: Attacker, copy_path: Path) -> None:
    store = _store(db, copy_path)
    store.disable("alpha", namespace=NS)
    store.close()
    marker = db.events("name = '!schema'")[0]
    db.sql("UPDATE kmsbox_audit_events SET row_version = 1 WHERE at = ? AND chain = ? AND seq = ?", marker.key)
    db.sql("UPDATE kmsbox_secrets SET status = 'active', seal = NULL WHERE namespace = ? AND name = 'alpha'", (NS,))
    reopened = db.open()  # believes it is the first open after an upgrade
    problems = reopened.verify_audit().problems
    assert f"chain {marker.chain}: event {marker.seq} was altered, moved or does not follow its predecessor" in problems
    assert any(p.startswith(f"secret {NS}/alpha: the database holds row version") for p in problems)
    with pytest.raises(IntegrityError, match="rolled back"):
        reopened.put("alpha", "alpha-value-3", namespace=NS)


def test_a_deleted_schema_marker_chain_never_gets_an_altered_row_sealed(db: Attacker, copy_path: Path) -> None:
    store = db.open()
    marker_chain = db.events("name = '!schema'")[0].chain
    # The namespace's key record lives on another chain (as when another process made it).
    on_another_chain(db, store, {marker_chain}, lambda: store.create_namespace(NS))
    store.put("alpha", "alpha-value", namespace=NS)
    store.disable("alpha", namespace=NS)
    assert {e.chain for e in db.events("name = 'alpha'")} == {marker_chain}
    store.close()
    db.sql("UPDATE kmsbox_secrets SET status = 'active', seal = NULL WHERE namespace = ? AND name = 'alpha'", (NS,))
    db.script(
        [
            ("DELETE FROM kmsbox_audit_events WHERE chain = ?", (marker_chain,)),
            ("DELETE FROM kmsbox_audit_chains WHERE chain = ?", (marker_chain,)),
        ]
    )
    reopened = db.open()
    refused = not reopened.try_get("alpha", namespace=NS).ok
    assert refused or not reopened.verify_audit().ok
    # Nothing was sealed again, and the erased marker is named.
    assert refused
    problems = reopened.verify_audit().problems
    assert "the audit log's schema marker is gone: events were erased through the database" in problems
    assert f"secret {NS}/alpha: its row was changed through the database" in problems
