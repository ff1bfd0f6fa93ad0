"""Rotation on real SQLite files: KEK rotation rewraps namespace keys only, namespace-key
rotation rewraps DEKs only, re-encryption renews everything, compromise and key cleanup."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from lifecycle_helpers import Keyring, fill, read_all, secret_blobs, value_for, value_tail

from kmsbox import format as fmt
from kmsbox.errors import KeyUnavailable
from kmsbox.kek import open_kek
from kmsbox.providers.local import add_keyring_version, remove_keyring_version
from kmsbox.store.service import SecretStore
from kmsbox.testing.counting import CountingKek

Opener = Callable[..., SecretStore]


def _expected(store: SecretStore, namespace: str, count: int) -> dict[tuple[str, str], str]:
    return {(namespace, name): value for name, value in fill(store, namespace, count).items()}


def _key_statuses(store: SecretStore, namespace: str) -> dict[int, str]:
    return {k["version"]: k["status"] for k in store.status(namespace)["namespaces"][namespace]["keys"]}


def _jobs(db_path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT job_id, kind FROM kmsbox_jobs").fetchall()


# --- KEK rotation ---------------------------------------------------------------------


def test_kek_rotation_is_one_batched_kek_call_and_touches_no_secret(
    open_store: Opener, keyring: Keyring, db_path: Path
) -> None:
    store = open_store()
    expected: dict[tuple[str, str], str] = {}
    for ns in ("app:production", "tenant-1", "tenant-2"):
        expected |= _expected(store, ns, 25)
    store.close()
    before = secret_blobs(db_path)

    assert add_keyring_version(keyring.path) == "v2"
    counting = CountingKek(open_kek(keyring.uri))
    store = open_store(kek=[counting])
    counting.reset()
    report = store.rewrap_namespace_keys()

    # 3 namespaces + the audit key: one namespace-key version each, one (batched) call each.
    assert report.processed == 4
    # One batch call covers every namespace's key versions (up to the KEK batch size).
    assert counting.calls == {"rewrap_many": 1}
    assert report.kek_calls == 1
    assert secret_blobs(db_path) == before, "a KEK rotation must not rewrite any secret row"
    for info in store.status()["namespaces"].values():
        assert info["pending"] == []
        assert {w["kek_version"] for k in info["keys"] for w in k["wraps"]} == {"v2"}

    counting.reset()
    again = store.rewrap_namespace_keys()
    assert (again.processed, again.skipped, counting.total) == (0, 4, 0)
    store.close()

    # Nothing needs v1 any more: without it, every secret still opens.
    remove_keyring_version(keyring.path, "v1")
    read_all(open_store(), expected)


def test_kek_rotation_batches_every_key_version_of_a_namespace_into_one_call(
    open_store: Opener, keyring: Keyring, db_path: Path
) -> None:
    store = open_store()
    expected = _expected(store, "app", 10)
    store.rotate_namespace_key("app")
    store.rotate_namespace_key("app")
    expected[("app", "late")] = "written under v3"
    store.put("late", "written under v3", namespace="app")
    store.close()
    before = secret_blobs(db_path)

    add_keyring_version(keyring.path)
    counting = CountingKek(open_kek(keyring.uri))
    store = open_store(kek=[counting])
    counting.reset()
    report = store.rewrap_namespace_keys()

    assert report.processed == 4  # app v1, v2, v3 and the audit key
    assert counting.calls == {"rewrap_many": 1}  # one batch call for every namespace
    assert secret_blobs(db_path) == before
    read_all(store, expected)


def test_kek_rewrap_of_one_namespace_and_dry_run(open_store: Opener, keyring: Keyring, db_path: Path) -> None:
    store = open_store()
    _expected(store, "a", 3)
    _expected(store, "b", 3)
    store.close()
    add_keyring_version(keyring.path)
    store = open_store()

    dry = store.rewrap_namespace_keys(dry_run=True)
    assert (dry.dry_run, dry.remaining, dry.processed) == (True, 3, 0)
    assert all(store.status()["namespaces"][ns]["pending"] for ns in ("a", "b"))

    only_a = store.rewrap_namespace_keys("a")
    assert (only_a.processed, only_a.remaining) == (1, 0)
    status = store.status()["namespaces"]
    assert status["a"]["pending"] == []
    assert status["b"]["pending"] == [
        f"v1: wrap under {keyring.uri} is at v1, primary is v2 (kmsbox rewrap-namespace-keys)"
    ]


# --- namespace-key rotation -----------------------------------------------------------


def test_namespace_key_rotation_rewraps_deks_without_rewriting_value_ciphertext(
    open_store: Opener, keyring: Keyring, db_path: Path
) -> None:
    counting = CountingKek(open_kek(keyring.uri))
    store = open_store(kek=[counting])
    expected = _expected(store, "app", 40) | _expected(store, "other", 5)
    for i in range(5):  # some secrets have two versions
        store.put(f"s{i:05d}", f"second {i}", namespace="app")
        expected[("app", f"s{i:05d}")] = f"second {i}"
    before = secret_blobs(db_path)

    assert store.rotate_namespace_key("app") == 2
    assert _key_statuses(store, "app") == {1: "rotating", 2: "active"}
    counting.reset()
    report = store.rewrap_deks("app", batch_size=7)

    assert (report.processed, report.remaining, report.details["retired"]) == (45, 0, [1])
    assert report.batches == 7
    assert counting.total == 0, "DEKs are rewrapped locally, with no KEK call"
    after = secret_blobs(db_path)
    assert after.keys() == before.keys()
    for key, (blob, nkv) in after.items():
        old_blob, old_nkv = before[key]
        if key[0] == "other":
            assert (blob, nkv) == (old_blob, old_nkv)
            continue
        assert (old_nkv, nkv) == (1, 2)
        assert fmt.parse_secret(old_blob).namespace_key_version == 1
        assert fmt.parse_secret(blob).namespace_key_version == 2
        assert value_tail(blob) == value_tail(old_blob), "the value ciphertext must be kept byte for byte"
        assert fmt.parse_secret(blob).wrapped_dek != fmt.parse_secret(old_blob).wrapped_dek
    assert _key_statuses(store, "app") == {1: "retired", 2: "active"}
    read_all(store, expected)
    store.close()
    read_all(open_store(), expected)  # from a cold key cache too

    again = open_store().rewrap_deks("app")
    assert (again.processed, again.remaining, again.details.get("retired", [])) == (0, 0, [])


def test_rotation_dry_runs_change_nothing(open_store: Opener, db_path: Path) -> None:
    store = open_store()
    _expected(store, "app", 12)
    before = secret_blobs(db_path)
    assert store.rotate_namespace_key("app", dry_run=True) == 2
    assert _key_statuses(store, "app") == {1: "active"}

    store.rotate_namespace_key("app")
    dry = store.rewrap_deks("app", dry_run=True)
    assert (dry.dry_run, dry.processed, dry.remaining) == (True, 0, 12)
    dry = store.reencrypt("app", dry_run=True)
    assert (dry.dry_run, dry.processed, dry.remaining) == (True, 0, 12)
    assert secret_blobs(db_path) == before
    assert _key_statuses(store, "app") == {1: "rotating", 2: "active"}


def test_writes_during_rotation_use_the_new_key_and_the_old_one_retires_when_unreferenced(
    open_store: Opener, db_path: Path
) -> None:
    store = open_store()
    _expected(store, "app", 3)
    store.rotate_namespace_key("app")
    store.put("new", "after the rotation", namespace="app")
    assert secret_blobs(db_path)[("app", "new", 1)][1] == 2
    assert store.get("s00000", namespace="app").value == value_for("app", "s00000")

    # Still referenced: the old version stays rotating until every DEK has moved.
    pending = store.status("app")["namespaces"]["app"]["pending"]
    assert pending == ["v1: 3 secret versions still under a rotating key (kmsbox rewrap-deks app)"]
    store.rewrap_deks("app")
    assert _key_statuses(store, "app") == {1: "retired", 2: "active"}


# --- re-encryption and compromise --------------------------------------------------------


def test_reencrypt_gives_every_secret_a_new_dek_and_ciphertext(open_store: Opener, db_path: Path) -> None:
    store = open_store()
    expected = _expected(store, "app", 30) | _expected(store, "other", 3)
    before = secret_blobs(db_path)

    report = store.reencrypt("app", batch_size=8)

    assert (report.processed, report.remaining, report.batches) == (30, 0, 4)
    after = secret_blobs(db_path)
    for key, (blob, _) in after.items():
        if key[0] == "other":
            assert blob == before[key][0]
            continue
        old = fmt.parse_secret(before[key][0])
        new = fmt.parse_secret(blob)
        assert value_tail(blob) != value_tail(before[key][0])
        assert new.wrapped_dek != old.wrapped_dek
    assert _jobs(db_path) == []
    read_all(store, expected)
    assert store.verify_audit().ok


def test_interrupted_reencrypt_keeps_a_checkpoint_and_resumes_after_it(open_store: Opener, db_path: Path) -> None:
    store = open_store()
    expected = _expected(store, "app", 50)
    before = secret_blobs(db_path)

    class Interrupted(Exception):
        pass

    def stop_after_two_batches(done: int, total: int | None) -> None:
        if done >= 20:
            raise Interrupted

    with pytest.raises(Interrupted):
        store.reencrypt("app", batch_size=10, progress=stop_after_two_batches)
    assert _jobs(db_path) == [("reencrypt:app", "reencrypt")]
    assert [j["job"] for j in store.status()["jobs"]] == ["reencrypt:app"]
    changed = [k for k, (blob, _) in secret_blobs(db_path).items() if blob != before[k][0]]
    assert len(changed) == 20
    read_all(store, expected)

    resumed = store.reencrypt("app", batch_size=10)
    assert resumed.details["resumed_after"] == ["s00019", 1]
    assert resumed.processed == 30
    assert _jobs(db_path) == []
    assert all(blob != before[k][0] for k, (blob, _) in secret_blobs(db_path).items())
    read_all(store, expected)


def test_mark_compromised_stops_new_wraps_and_reencrypt_moves_everything_off(open_store: Opener, db_path: Path) -> None:
    store = open_store()
    expected = _expected(store, "app", 20)
    before = secret_blobs(db_path)

    assert store.mark_compromised("app", 1) == 2
    assert _key_statuses(store, "app") == {1: "compromised", 2: "active"}
    info = store.status("app")["namespaces"]["app"]
    assert info["compromised"] == [1]
    assert info["pending"] == ["v1: 20 secret versions under a compromised key (kmsbox reencrypt app)"]
    store.put("fresh", "new value", namespace="app")
    expected[("app", "fresh")] = "new value"
    assert secret_blobs(db_path)[("app", "fresh", 1)][1] == 2, "a compromised key wraps nothing new"
    assert "compromised_key_in_use" in {i.code for i in store.diagnose("app").issues}

    # rewrap-deks does not touch a compromised key: moving its DEKs would keep leaked DEKs.
    assert store.rewrap_deks("app").processed == 0
    report = store.reencrypt("app")

    assert (report.processed, report.remaining) == (21, 0)  # "fresh" too: the job renews every DEK
    after = secret_blobs(db_path)
    assert {nkv for _, nkv in after.values()} == {2}
    assert all(value_tail(after[k][0]) != value_tail(b) for k, (b, _) in before.items())
    assert "compromised_key_in_use" not in {i.code for i in store.diagnose("app").issues}
    read_all(store, expected)


def test_compromising_a_rotating_key_and_bad_versions(open_store: Opener, db_path: Path) -> None:
    store = open_store()
    expected = _expected(store, "app", 5)
    store.rotate_namespace_key("app")
    assert store.mark_compromised("app", 1) is None  # not active: nothing new to rotate in
    assert _key_statuses(store, "app") == {1: "compromised", 2: "active"}
    store.reencrypt("app")
    assert {nkv for _, nkv in secret_blobs(db_path).values()} == {2}
    read_all(store, expected)
    with pytest.raises(ValueError, match="no key version 9"):
        store.mark_compromised("app", 9)

    # Compromising the only active key without rotating leaves no key to write with.
    assert store.mark_compromised("app", 2, rotate=False) is None
    with pytest.raises(KeyUnavailable, match="no active key"):
        store.put("x", "y", namespace="app")
    assert "no_active_key" in {i.code for i in store.diagnose("app").issues}
    store.rotate_namespace_key("app")
    store.put("x", "y", namespace="app")


# --- cleanup of retired keys ------------------------------------------------------------


def _key_rows(db_path: Path) -> set[tuple[str, int, str]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return {
            (r[0], int(r[1]), r[2])
            for r in conn.execute("SELECT namespace, version, status FROM kmsbox_namespace_keys")
        }


def test_cleanup_retired_keys_deletes_unreferenced_and_refuses_referenced(open_store: Opener, db_path: Path) -> None:
    store = open_store()
    expected = _expected(store, "retiring", 6) | _expected(store, "leaked", 4)
    store.rotate_namespace_key("retiring")
    store.rewrap_deks("retiring")
    store.mark_compromised("leaked", 1)  # still referenced by 4 secret versions

    assert store.cleanup_retired_keys(dt.timedelta(hours=1)).details == {"deleted": [], "refused": []}
    dry = store.cleanup_retired_keys(dry_run=True)
    assert dry.details["would_delete"] == [{"namespace": "retiring", "version": 1}]
    assert (dry.processed, dry.remaining) == (0, 1)  # what the real run then does
    assert ("retiring", 1, "retired") in _key_rows(db_path)

    report = store.cleanup_retired_keys()
    assert report.details == {
        "deleted": [{"namespace": "retiring", "version": 1}],
        "refused": [{"namespace": "leaked", "version": 1, "references": 4}],
    }
    assert (report.processed, report.skipped) == (1, 1)
    rows = _key_rows(db_path)
    assert ("retiring", 1, "retired") not in rows
    assert ("leaked", 1, "compromised") in rows
    read_all(store, expected)

    store.reencrypt("leaked")
    assert store.cleanup_retired_keys().details == {"deleted": [{"namespace": "leaked", "version": 1}], "refused": []}
    assert {(ns, v) for ns, v, _ in _key_rows(db_path) if ns != "!audit"} == {("retiring", 2), ("leaked", 2)}
    read_all(store, expected)
    deleted = [e.detail for e in store.iter_audit_events() if e.action == "retire" and "deleted_versions" in e.detail]
    assert len(deleted) == 2
    assert store.verify_audit().ok


def test_key_commands_refuse_arguments_of_the_wrong_kind(open_store: Opener) -> None:
    store = open_store()
    fill(store, "app", 3)
    store.rotate_namespace_key("app")
    store.rewrap_deks("app")  # version 1 is retired and unreferenced now
    for bad_age in (float("nan"), -1, float("inf"), "7", None, 10**400):
        with pytest.raises(ValueError):
            store.cleanup_retired_keys(bad_age)  # type: ignore[arg-type]
    for bad_version in (True, 0, -1, 2**63, "1"):
        with pytest.raises(ValueError):
            store.mark_compromised("app", bad_version)  # type: ignore[arg-type]
    for bad_size in (0, -5, True, 10**6, 2.5):
        with pytest.raises(ValueError):
            store.rewrap_deks("app", batch_size=bad_size)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.reencrypt("app", batch_size=bad_size)  # type: ignore[arg-type]
    assert _key_statuses(store, "app") == {1: "retired", 2: "active"}
    assert store.cleanup_retired_keys(dt.timedelta(hours=1)).processed == 0  # retired moments ago
    assert store.cleanup_retired_keys(0).processed == 1
