"""diagnose() and repair() on real SQLite files: a lost KEK version, a corrupted wrapped DEK,
unused keys; a dry run changes nothing, --apply fixes without loss, --confirm-delete deletes
what can never be opened again; neither decrypts a value; both are audited."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from lifecycle_helpers import AUDIT_TABLES, Keyring, fill, read_all, secret_blobs, table_rows

from kmsbox import _crypto
from kmsbox.errors import IntegrityError, SecretNotFound
from kmsbox.providers.local import add_keyring_version, remove_keyring_version
from kmsbox.store.diagnosis import DiagnosisReport
from kmsbox.store.service import SecretStore
from kmsbox.testing.tamper import stored_blobs_of, write_blob

Opener = Callable[..., SecretStore]
DEK_OFFSET = 8 + 4 + 12  # header, header CRC, DEK nonce (see format.py)


@pytest.fixture(autouse=True)
def _one_namespace_per_kek_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests here interrupt a KEK rewrap between namespaces; make each its own batch."""
    monkeypatch.setattr("kmsbox.store.maintenance._KEK_BATCH", 1)


class _Interrupted(Exception):
    pass


def _fill(store: SecretStore, ns: str, count: int) -> dict[tuple[str, str], str]:
    return {(ns, name): value for name, value in fill(store, ns, count).items()}


def _codes(report: DiagnosisReport) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    for issue in report.issues:
        out.setdefault(issue.code, set()).add(issue.namespace)
    return out


def _lose_kek_version_under(open_store: Opener, keyring: Keyring, lost_ns: str) -> None:
    """Add KEK version v2, rewrap every namespace key except ``lost_ns``'s (an interrupted job),
    then remove v1 from the keyring: ``lost_ns``'s key can no longer be unwrapped."""
    add_keyring_version(keyring.path)
    store = open_store()
    targets = ["!audit", *store.namespaces()]
    stop_at = targets.index(lost_ns)

    def interrupt(done: int, total: int | None) -> None:
        if done == stop_at:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        store.rewrap_namespace_keys(progress=interrupt)
    store.close()
    remove_keyring_version(keyring.path, "v1")


def _flip(db_path: Path, ns: str, name: str, offset: int) -> None:
    (version, blob), *_ = sorted(stored_blobs_of(db_path, ns, name).items(), reverse=True)
    flipped = bytearray(blob)
    flipped[offset] ^= 0x01
    write_blob(db_path, ns, name, version, bytes(flipped))


def test_a_healthy_store_has_no_issues(open_store: Opener) -> None:
    store = open_store()
    _fill(store, "app", 20)
    report = store.diagnose()
    assert (report.ok, report.issues, report.namespaces_checked, report.secret_versions_checked) == (True, [], 2, 20)
    assert store.diagnose("app", check_secrets=False).secret_versions_checked == 0


def test_a_lost_kek_version_is_found_then_repaired_with_confirmed_deletion(
    open_store: Opener, keyring: Keyring, db_path: Path
) -> None:
    store = open_store()
    good = _fill(store, "app", 10)
    lost = _fill(store, "zz-legacy", 4)
    store.close()
    _lose_kek_version_under(open_store, keyring, "zz-legacy")

    store = open_store()
    report = store.diagnose()
    assert not report.ok
    codes = _codes(report)
    assert codes["namespace_key_unavailable"] == {"zz-legacy"}
    assert codes["kek_version_gone"] == {"zz-legacy"}
    assert codes["secret_key_unavailable"] == {"zz-legacy"}
    unavailable = [i for i in report.issues if i.code == "secret_key_unavailable"]
    assert sorted(str(i.secret) for i in unavailable) == sorted(name for _, name in lost)
    for issue in report.issues:
        assert issue.severity in ("critical", "warning", "info") and issue.message and issue.action
    key_issue = next(i for i in report.issues if i.code == "namespace_key_unavailable")
    assert (key_issue.severity, key_issue.key_version, key_issue.destructive) == ("critical", 1, True)
    assert "restore the KEK version" in key_issue.action and "--confirm-delete" in key_issue.action
    assert report.issues[0].severity == "critical"  # worst first
    text = json.dumps(report.to_dict())
    assert not any(value in text for value in (good | lost).values())
    read_all(store, good)

    # A dry run (the default) says what it would do and changes nothing but the audit log.
    before = table_rows(db_path, skip=AUDIT_TABLES)
    dry = store.repair()
    assert dry.dry_run and dry.done == []
    assert sorted(dry.needs_confirmation) == sorted(
        [f"delete unrecoverable secret zz-legacy/{name} v1" for _, name in lost]
        + ["delete namespace key zz-legacy v1 (no KEK can unwrap it)"]
    )
    assert {i.code for i in dry.remaining} >= {"namespace_key_unavailable", "secret_key_unavailable"}
    assert table_rows(db_path, skip=AUDIT_TABLES) == before

    # --apply alone: only the non-destructive steps; the lost secrets stay.
    applied = store.repair(dry_run=False)
    assert not applied.dry_run
    assert len(applied.needs_confirmation) == 5
    assert len(secret_blobs(db_path)) == 14
    assert "namespace_key_unavailable" in {i.code for i in applied.remaining}

    # --apply --confirm-delete: the unrecoverable secrets and key go, nothing else.
    deleted = store.repair(dry_run=False, confirm_delete=True)
    assert deleted.needs_confirmation == []
    assert sum(line.startswith("deleted secret zz-legacy/") for line in deleted.done) == 4
    assert "deleted namespace key zz-legacy v1" in deleted.done
    assert deleted.remaining == []
    assert {k[0] for k in secret_blobs(db_path)} == {"app"}
    with pytest.raises(SecretNotFound):
        store.get(lost_name := next(iter(lost))[1], namespace="zz-legacy")
    read_all(store, good)
    assert store.diagnose().ok

    events = list(store.iter_audit_events())
    repairs = [e for e in events if e.action == "repair"]
    assert {e.name for e in repairs if e.detail.get("deleted")} == {name for _, name in lost}
    assert lost_name in {e.name for e in repairs}
    assert [e.detail["dry_run"] for e in repairs if "dry_run" in e.detail] == [True, False, False]
    assert sum(e.action == "diagnose" for e in events) >= 4
    assert store.verify_audit().ok


def test_restoring_the_lost_kek_version_then_repair_apply_fixes_everything(
    open_store: Opener, keyring: Keyring, tmp_path: Path
) -> None:
    store = open_store()
    expected = _fill(store, "app", 5) | _fill(store, "zz-legacy", 5)
    store.close()
    backup = tmp_path / "keyring-backup.json"
    add_keyring_version(keyring.path)
    shutil.copy(keyring.path, backup)  # the escrowed keyring, v1 and v2
    store = open_store()
    targets = ["!audit", *store.namespaces()]

    def interrupt(done: int, total: int | None) -> None:
        if done == targets.index("zz-legacy"):
            raise _Interrupted

    with pytest.raises(_Interrupted):
        store.rewrap_namespace_keys(progress=interrupt)
    store.close()
    remove_keyring_version(keyring.path, "v1")
    assert not open_store().diagnose().ok

    shutil.copy(backup, keyring.path)  # restore the KEK version from escrow
    store = open_store()
    report = store.diagnose()
    assert report.ok
    assert _codes(report) == {"stale_kek_version": {"zz-legacy"}}
    fixed = store.repair(dry_run=False)
    assert fixed.done == ["rewrapped 1 namespace-key wraps"]
    assert store.diagnose().issues == []
    store.close()
    remove_keyring_version(keyring.path, "v1")  # now safe
    read_all(open_store(), expected)


def test_a_gone_kek_version_is_repaired_through_another_kek(open_store: Opener, keyring: Keyring, env_kek: str) -> None:
    store = open_store(kek=[keyring.uri, env_kek])
    expected = _fill(store, "app", 5)
    store.close()
    add_keyring_version(keyring.path)
    remove_keyring_version(keyring.path, "v1")  # every file:// wrap is now at a gone version

    store = open_store(kek=[keyring.uri, env_kek])
    report = store.diagnose()
    gone = [i for i in report.issues if i.code == "kek_version_gone"]
    assert {(i.namespace, i.severity) for i in gone} == {(None, "warning"), ("app", "warning")}
    assert "namespace_key_unavailable" not in _codes(report)

    fixed = store.repair(dry_run=False)
    assert fixed.done == ["rewrapped 2 namespace-key wraps"]
    assert fixed.remaining == []
    store.close()
    read_all(open_store(kek=[keyring.uri]), expected)


def test_a_corrupted_wrapped_dek_is_found_and_its_secret_deleted_on_confirmation(
    open_store: Opener, db_path: Path
) -> None:
    store = open_store()
    expected = _fill(store, "app", 6)
    store.put("s00002", "second version", namespace="app")  # the corrupt row will be its current version
    del expected[("app", "s00002")]
    _flip(db_path, "app", "s00003", DEK_OFFSET + 5)
    write_blob(db_path, "app", "s00002", 1, b"KB\x01garbage")
    del expected[("app", "s00003")]

    report = store.diagnose("app")
    corrupt = sorted((i.secret, i.secret_version) for i in report.issues if i.code == "secret_corrupt")
    assert corrupt == [("s00002", 1), ("s00003", 1)]
    assert all(i.severity == "critical" and i.destructive for i in report.issues if i.code == "secret_corrupt")
    with pytest.raises(IntegrityError):
        store.get("s00003", namespace="app")

    store.repair("app", dry_run=False)
    assert ("app", "s00003", 1) in secret_blobs(db_path), "deleting needs --confirm-delete"
    done = store.repair("app", dry_run=False, confirm_delete=True).done
    assert sorted(done) == [
        "deleted secret app/s00003 (1 versions; its current version was unrecoverable)",
        "deleted unrecoverable version app/s00002 v1",
    ]
    assert store.get("s00002", namespace="app").value == "second version"
    assert [v.version for v in store.history("s00002", namespace="app")] == [2]
    read_all(store, expected)
    assert store.diagnose("app").ok


def test_diagnose_never_decrypts_a_value(open_store: Opener, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    expected = _fill(store, "app", 8)
    for _, name in expected:  # make every value unreadable: flip the last tag byte
        _flip(db_path, "app", name, -1)
    opened_aads: list[bytes] = []
    real_open = _crypto.Aead.open

    def spying_open(self: _crypto.Aead, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        opened_aads.append(aad)
        return real_open(self, nonce, ciphertext, aad)

    monkeypatch.setattr(_crypto.Aead, "open", spying_open)
    report = store.diagnose()

    assert report.ok and report.secret_versions_checked == 8
    assert len(opened_aads) == 8 and all(aad.startswith(b"KB\x01dek") for aad in opened_aads)
    assert not any(aad.startswith(b"KB\x01val") for aad in opened_aads)
    with pytest.raises(IntegrityError):
        store.get("s00000", namespace="app")


def test_unused_and_retired_keys_are_reported_and_apply_retires_them(open_store: Opener) -> None:
    store = open_store()
    _fill(store, "app", 3)
    store.put("gone", "x", namespace="empty")
    store.delete("gone", namespace="empty")
    store.rotate_namespace_key("empty")  # v1 rotating, nothing references it
    store.rotate_namespace_key("app")  # v1 rotating with 3 secret versions
    codes = _codes(store.diagnose())
    assert codes["unused_key"] == {"empty"}
    assert codes["pending_rewrap"] == {"app"}
    assert store.diagnose().ok  # informational only

    repaired = store.repair(dry_run=False)
    assert sorted(repaired.done) == ["rewrapped 0 DEKs in empty", "rewrapped 3 DEKs in app"]
    assert _codes(store.diagnose()) == {"retired_key": {"app", "empty"}}
    store.cleanup_retired_keys()
    assert store.diagnose().issues == []


def test_repair_reencrypts_off_a_compromised_key_and_skips_what_it_cannot_open(
    open_store: Opener, keyring: Keyring, db_path: Path
) -> None:
    store = open_store()
    expected = _fill(store, "app", 4)
    store.mark_compromised("app", 1)
    assert _codes(store.diagnose())["compromised_key_in_use"] == {"app"}
    repaired = store.repair(dry_run=False)
    assert repaired.done == ["re-encrypted 4 secret versions in app"]
    assert {nkv for _, nkv in secret_blobs(db_path).values()} == {2}
    read_all(store, expected)

    # A rotating key lost with its KEK version: the DEK rewrap cannot run, the deletion can.
    lost = _fill(store, "zz-old", 3)
    store.rotate_namespace_key("zz-old")
    store.close()
    _lose_kek_version_under(open_store, keyring, "zz-old")
    store = open_store()
    assert {"pending_rewrap", "namespace_key_unavailable"} <= set(_codes(store.diagnose()))
    applied = store.repair(dry_run=False)
    assert any(line.startswith("skipped rewrap DEKs of zz-old") for line in applied.done)
    assert len(applied.needs_confirmation) == 5  # 3 secrets, key versions 1 and 2 (both under the lost v1)
    deleted = store.repair(dry_run=False, confirm_delete=True)
    assert {"deleted namespace key zz-old v1", "deleted namespace key zz-old v2"} <= set(deleted.done)
    assert deleted.remaining == []
    assert not any(k[0] == "zz-old" for k in secret_blobs(db_path))
    assert all(store.try_get(name, namespace=ns).ok is False for ns, name in lost)
    read_all(store, expected)
    store.put("fresh", "after the repair", namespace="zz-old")  # the namespace gets a new key
    assert store.get("fresh", namespace="zz-old").value == "after the repair"
