"""A store written with schema 1 (every version in kmsbox_secret_versions) opens under
schema 2 (the current version in its secret's row) with nothing lost or changed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from kmsbox.errors import SecretNotFound
from kmsbox.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from kmsbox.storage.sqlite import SQLITE_DIALECT
from kmsbox.store.service import SecretStore
from kmsbox.testing.tamper import stored_blobs

Opener = Callable[..., SecretStore]
_KEPT_TABLES = ("kmsbox_namespace_keys", "kmsbox_namespace_key_wraps", "kmsbox_audit_events", "kmsbox_jobs")


def _downgrade_to_schema_1(current: Path, old: Path) -> None:
    """Write ``old`` as schema 1 would have stored the same rows as ``current``."""
    with closing(sqlite3.connect(old, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        for statement in MIGRATIONS[0]:
            assert isinstance(statement, str)
            conn.execute(SQLITE_DIALECT.ddl(statement))
        conn.execute("CREATE TABLE kmsbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO kmsbox_meta VALUES ('schema_version', '1')")
        conn.execute("ATTACH DATABASE ? AS cur", (str(current),))
        for table in _KEPT_TABLES:
            conn.execute(f"INSERT INTO {table} SELECT * FROM cur.{table}")
        conn.execute(
            "INSERT INTO kmsbox_secrets SELECT namespace, name, version, status, created_at, updated_at, expires_at, "
            "category, description, labels, access_count, last_accessed_at, row_version FROM cur.kmsbox_secrets"
        )
        conn.execute(
            "INSERT INTO kmsbox_secret_versions SELECT namespace, name, version, blob, namespace_key_version, "
            "version_created_at FROM cur.kmsbox_secrets WHERE blob IS NOT NULL UNION ALL "
            "SELECT namespace, name, version, blob, namespace_key_version, created_at FROM cur.kmsbox_secret_history"
        )
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE cur")


def test_schema_1_store_upgrades_on_open_with_every_version_intact(open_test_store: Opener, tmp_path: Path) -> None:
    current_path = tmp_path / "current.db"
    store = open_test_store(f"sqlite:///{current_path}")
    values = {}
    for i in range(30):
        for v in range(1 + i % 3):  # one, two or three versions
            value = f"value {i}.{v}" if i % 2 else f"value {i}.{v}".encode()
            store.put(f"s{i:02d}", value, namespace="app" if i < 20 else "other", labels={"n": str(i % 4)})
            values[("app" if i < 20 else "other", f"s{i:02d}", v + 1)] = value
    store.put("gone-current", "x", namespace="app")
    store.put("gone-current", "y", namespace="app")
    store.disable("s05", namespace="app")
    store.close()
    blobs = stored_blobs(current_path)

    old_path = tmp_path / "old.db"
    _downgrade_to_schema_1(current_path, old_path)
    with closing(sqlite3.connect(old_path)) as conn:
        # Repair used to be able to leave a secret whose current version was deleted.
        conn.execute("DELETE FROM kmsbox_secret_versions WHERE name = 'gone-current' AND version = 2")
        conn.commit()
    del blobs[("app", "gone-current", 2)]

    upgraded = open_test_store(f"sqlite:///{old_path}")
    assert upgraded.backend.schema_version() == SCHEMA_VERSION
    assert stored_blobs(old_path) == blobs  # moved, not rewritten
    for (ns, name, version), value in values.items():
        if (ns, name) == ("app", "s05"):
            continue
        assert upgraded.get(name, namespace=ns, version=version).value == value
    assert [v.version for v in upgraded.history("s02", namespace="app")] == [1, 2, 3]
    assert upgraded.history("s02", namespace="app")[-1].current
    assert upgraded.info("s05", namespace="app").status == "disabled"
    assert upgraded.get("gone-current", namespace="app", version=1).value == "x"
    with pytest.raises(SecretNotFound):
        upgraded.get("gone-current", namespace="app")
    assert upgraded.verify_audit().ok
    assert [s.name for s in upgraded.list(namespace="app", label="n=1").items] == [
        f"s{i:02d}" for i in range(20) if i % 4 == 1
    ]
    # And it keeps working: a new version moves the upgraded current one to the history.
    upgraded.put("s01", "newest", namespace="app")
    assert upgraded.get("s01", namespace="app").value == "newest"
    assert upgraded.get("s01", namespace="app", version=2).value == values[("app", "s01", 2)]
