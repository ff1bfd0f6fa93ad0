"""Jobs and repair against a database-only attacker, on SQLite and PostgreSQL: they choose
keys by the envelope's own header (authenticated on use), never delete a secret that can
be read, and never let an edit through the database turn into a deletion by kmsbox."""

from __future__ import annotations

import json
import time

import pytest
from db_attacker import Attacker, key_version_of, with_key_version

from kmsbox.errors import IntegrityError
from kmsbox.store.service import SecretStore

NS = "billing"
OTHER_NS = "search"


def _rotated(db: Attacker) -> SecretStore:
    """Three secrets under namespace key v1, and v2 rotated in (v1 rotating)."""
    store = db.open()
    for name in ("alpha", "beta", "gamma"):
        store.put(name, f"{name}-value", namespace=NS)
    store.put("elsewhere", "elsewhere-value", namespace=OTHER_NS)
    assert store.rotate_namespace_key(NS) == 2
    return store


def _readable(store: SecretStore) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in ("alpha", "beta", "gamma"):
        result = store.try_get(name, namespace=NS)
        if result.ok:
            assert result.secret is not None
            values[name] = str(result.secret.value)
    return values


def test_an_envelope_header_naming_another_key_fails_to_read_and_is_diagnosed(db: Attacker) -> None:
    store = _rotated(db)
    blob = db.blob(NS, "alpha", 1)
    db.set_blob(NS, "alpha", 1, with_key_version(blob, 2))
    with pytest.raises(IntegrityError):
        db.open().get("alpha", namespace=NS)
    assert ("secret_corrupt", "alpha") in {(i.code, i.secret) for i in store.diagnose().issues}
    assert _readable(store) == {"beta": "beta-value", "gamma": "gamma-value"}


def test_rewrap_moves_every_readable_secret_and_keeps_the_key_an_unreadable_one_may_need(db: Attacker) -> None:
    store = _rotated(db)
    # Corrupt beta's wrapped DEK: its header still names v1, so the job meets it and reports it.
    blob = db.blob(NS, "beta", 1)
    db.set_blob(NS, "beta", 1, blob[:20] + bytes([blob[20] ^ 1]) + blob[21:])
    report = store.rewrap_deks(NS)
    assert report.processed == 2 and report.remaining == 1
    assert report.details["retired"] == []  # v1 stays: beta may still need it
    assert store.cleanup_retired_keys().details["deleted"] == []
    assert _readable(db.open()) == {"alpha": "alpha-value", "gamma": "gamma-value"}
    assert {key_version_of(db.blob(NS, n, 1)) for n in ("alpha", "gamma")} == {2}
    db.set_blob(NS, "beta", 1, blob)  # restored from a backup, it reads
    assert db.open().get("beta", namespace=NS).value == "beta-value"


def test_a_header_rewritten_to_the_new_key_never_gets_the_old_key_deleted(db: Attacker) -> None:
    # The issue's "jobs trust a copied column", with the header as the copy: alpha's envelope
    # now names v2, though its DEK is wrapped under v1.
    store = _rotated(db)
    blob = db.blob(NS, "alpha", 1)
    db.set_blob(NS, "alpha", 1, with_key_version(blob, 2))
    store.rewrap_deks(NS)
    report = store.cleanup_retired_keys()
    assert report.details["deleted"] == []
    assert report.details["refused"] == [
        {"namespace": NS, "version": 1, "references": 0, "unauthenticated_envelopes": 1}
    ]
    db.set_blob(NS, "alpha", 1, blob)  # the header put back from a backup
    assert db.open().get("alpha", namespace=NS).value == "alpha-value"


def test_a_header_naming_a_key_version_that_never_existed_is_an_integrity_error(db: Attacker) -> None:
    store = _rotated(db)
    db.set_blob(NS, "alpha", 1, with_key_version(db.blob(NS, "alpha", 1), 7))
    with pytest.raises(IntegrityError):
        db.open().get("alpha", namespace=NS)
    issues = {(i.code, i.secret) for i in store.diagnose().issues}
    assert ("secret_corrupt", "alpha") in issues and ("missing_namespace_key", None) not in issues


def test_repair_with_confirmed_deletion_never_deletes_a_secret_that_reads(db: Attacker) -> None:
    store = _rotated(db)
    store.rewrap_deks(NS)
    # Edits that make rows look wrong without making their values unreadable for good.
    db.sql("UPDATE kmsbox_secrets SET status = 'disabled' WHERE namespace = ? AND name = 'alpha'", (NS,))
    db.sql("UPDATE kmsbox_secrets SET expires_at = ? WHERE namespace = ? AND name = 'beta'", (time.time() - 60, NS))
    report = store.repair(dry_run=False, confirm_delete=True)
    assert not any("alpha" in step or "beta" in step for step in report.done)
    assert store.cleanup_expired(0) == 0
    db.sql("UPDATE kmsbox_secrets SET status = 'active' WHERE namespace = ? AND name = 'alpha'", (NS,))
    db.sql("UPDATE kmsbox_secrets SET expires_at = NULL WHERE namespace = ? AND name = 'beta'", (NS,))
    assert _readable(db.open()) == {"alpha": "alpha-value", "beta": "beta-value", "gamma": "gamma-value"}
    assert store.verify_audit().ok


def test_repair_deletes_only_what_cannot_be_read(db: Attacker) -> None:
    store = _rotated(db)
    blob = db.blob(NS, "alpha", 1)
    db.set_blob(NS, "alpha", 1, blob[:20] + bytes([blob[20] ^ 1]) + blob[21:])  # its wrapped DEK
    dry = store.repair()
    assert dry.needs_confirmation == [f"delete unrecoverable secret {NS}/alpha v1"]
    with pytest.raises(IntegrityError):
        store.get("alpha", namespace=NS)
    report = store.repair(dry_run=False, confirm_delete=True)
    assert report.done[-1] == f"deleted secret {NS}/alpha (1 versions; its current version was unrecoverable)"
    assert _readable(db.open()) == {"beta": "beta-value", "gamma": "gamma-value"}
    assert db.open().get("elsewhere", namespace=OTHER_NS).value == "elsewhere-value"
    assert store.verify_audit().ok


def test_jobs_pass_over_an_altered_secret_row_and_go_on_with_the_rest(db: Attacker) -> None:
    store = _rotated(db)
    db.sql("UPDATE kmsbox_secrets SET labels = ? WHERE namespace = ? AND name = 'gamma'", ('{"x": "y"}', NS))
    store.rewrap_deks(NS)
    store.reencrypt(NS)
    reader = db.open()
    assert _readable(reader) == {"alpha": "alpha-value", "beta": "beta-value"}
    with pytest.raises(IntegrityError):
        reader.get("gamma", namespace=NS)
    assert reader.get("elsewhere", namespace=OTHER_NS).value == "elsewhere-value"
    assert any("gamma" in p for p in reader.verify_audit().problems)


def test_a_secret_repair_deleted_as_malformed_comes_back_above_every_recorded_version(db: Attacker) -> None:
    # Repair records the highest version the audit log knows of, as a delete does, even
    # when the row it deleted could not be read: no version number is used twice.
    store = _rotated(db)
    store.put("alpha", "alpha-value-2", namespace=NS)
    db.sql("UPDATE kmsbox_secrets SET labels = 'not json' WHERE namespace = ? AND name = 'alpha'", (NS,))
    assert ("secret_malformed", "alpha") in {(i.code, i.secret) for i in store.diagnose().issues}
    done = store.repair(dry_run=False, confirm_delete=True).done
    assert f"deleted secret {NS}/alpha (2 versions; its stored row was malformed)" in done
    assert store.put("alpha", "alpha-value-3", namespace=NS).version == 3
    assert store.get("alpha", namespace=NS).value == "alpha-value-3"
    assert store.verify_audit().ok


def _interrupted_reencrypt(store: SecretStore, namespace: str, names: int) -> None:
    """``names`` secrets in ``namespace``, a rotation, and a re-encryption stopped after one batch."""
    for i in range(names):
        store.put(f"s{i:02d}", f"v{i}", namespace=namespace)
    store.rotate_namespace_key(namespace)

    class Interrupted(Exception):
        pass

    def stop(done: int, total: int | None) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        store.reencrypt(namespace, batch_size=2, progress=stop)


def _checkpoint(db: Attacker, job_id: str) -> str:
    rows = db.sql("SELECT state FROM kmsbox_jobs WHERE job_id = ?", (job_id,))
    assert len(rows) == 1
    return str(rows[0][0])


def _under_the_old_key(db: Attacker, namespace: str, names: int) -> list[str]:
    return [f"s{i:02d}" for i in range(names) if key_version_of(db.blob(namespace, f"s{i:02d}", 1)) == 1]


def test_a_checkpoint_moved_forward_is_refused_and_the_job_reencrypts_every_secret(db: Attacker) -> None:
    # Moving the cursor past the end would make the job skip every secret and report
    # success while they stay under the key the operator is moving off.
    store = db.open()
    _interrupted_reencrypt(store, NS, 8)
    state = json.loads(_checkpoint(db, f"reencrypt:{NS}"))
    state["name"] = "zzzz"
    db.script([("UPDATE kmsbox_jobs SET state = ? WHERE job_id = ?", (json.dumps(state), f"reencrypt:{NS}"))])
    report = db.open().reencrypt(NS)
    assert report.details["checkpoint_discarded"] == "unauthenticated"
    assert _under_the_old_key(db, NS, 8) == []
    assert db.open().get("s07", namespace=NS).value == "v7"


def test_a_checkpoint_copied_from_another_namespace_is_refused(db: Attacker) -> None:
    store = db.open()
    _interrupted_reencrypt(store, OTHER_NS, 8)
    _interrupted_reencrypt(store, NS, 8)
    copied = _checkpoint(db, f"reencrypt:{OTHER_NS}")  # sealed, but for the other job
    db.script([("UPDATE kmsbox_jobs SET state = ? WHERE job_id = ?", (copied, f"reencrypt:{NS}"))])
    report = db.open().reencrypt(NS)
    assert report.details["checkpoint_discarded"] == "unauthenticated"
    assert _under_the_old_key(db, NS, 8) == []


def test_a_checkpoint_replayed_from_an_earlier_key_version_is_stale(db: Attacker) -> None:
    # A sealed checkpoint saved during an earlier re-encryption (to v2), put back after the
    # namespace moved on to v3: resuming from it would skip the secrets before its cursor.
    store = db.open()
    _interrupted_reencrypt(store, NS, 8)
    saved = _checkpoint(db, f"reencrypt:{NS}")
    store.reencrypt(NS)
    store.rotate_namespace_key(NS)
    db.script(
        [
            (
                "INSERT INTO kmsbox_jobs (job_id, kind, state, updated_at) VALUES (?, 'reencrypt', ?, ?)",
                (f"reencrypt:{NS}", saved, time.time()),
            )
        ]
    )
    report = db.open().reencrypt(NS)
    assert report.details["checkpoint_discarded"] == "stale"
    assert {key_version_of(db.blob(NS, f"s{i:02d}", 1)) for i in range(8)} == {3}
