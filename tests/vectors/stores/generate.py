"""Write the stores of earlier releases that every later release must still open.

``schema-2.db`` was written by kmsbox at commit 746cfb2 (schema 2: one audit chain, no
seals); ``schema-1.db`` holds the same rows as schema 1 stored them (every version in
``kmsbox_secret_versions``). Never regenerate them with a later release: run this with
that commit's source on the path::

    git worktree add --detach /tmp/kmsbox-746cfb2 746cfb2
    PYTHONPATH=/tmp/kmsbox-746cfb2/src python tests/vectors/stores/generate.py

The KEK is derived from a public label (like the format vectors' keys): it protects
nothing and is for tests only. ``expected.json`` lists each secret version's value.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

HERE = Path(__file__).parent
KEK_LABEL = "kmsbox-test-vector-key:store-kek"


def kek_hex() -> str:
    """The test KEK (public, derived)."""
    return hashlib.sha256(KEK_LABEL.encode()).hexdigest()


def main() -> None:
    from kmsbox.storage.migrations import MIGRATIONS, SCHEMA_VERSION

    import kmsbox
    from kmsbox.storage.sqlite import SQLITE_DIALECT

    assert SCHEMA_VERSION == 2, "run with the source of commit 746cfb2 (schema 2)"
    os.environ["KMSBOX_LEGACY_KEK"] = kek_hex()
    current = HERE / "schema-2.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{current}{suffix}").unlink(missing_ok=True)
    values: dict[str, str] = {}
    store = kmsbox.open_store(f"sqlite:///{current}", kek="env://KMSBOX_LEGACY_KEK")
    for i in range(12):
        ns = "app" if i < 8 else "other"
        for v in range(1 + i % 3):
            value = f"value {i}.{v}"
            store.put(f"s{i:02d}", value, namespace=ns, labels={"n": str(i % 4)}, category="test")
            values[f"{ns}/s{i:02d}/{v + 1}"] = value
    store.put("expiring", "soon gone", namespace="app", expires=3600 * 24 * 365 * 50)
    values["app/expiring/1"] = "soon gone"
    store.disable("s05", namespace="app")
    store.rotate_namespace_key("app")
    store.rewrap_deks("app")
    for _ in range(3):
        store.get("s01", namespace="app")
    store.flush_access()
    store.close()
    with closing(sqlite3.connect(current)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (HERE / "expected.json").write_text(json.dumps(values, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    old = HERE / "schema-1.db"
    old.unlink(missing_ok=True)
    with closing(sqlite3.connect(old, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        for statement in MIGRATIONS[0]:
            assert isinstance(statement, str)
            conn.execute(SQLITE_DIALECT.ddl(statement))
        conn.execute("CREATE TABLE kmsbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO kmsbox_meta VALUES ('schema_version', '1')")
        conn.execute("ATTACH DATABASE ? AS cur", (str(current),))
        for table in ("kmsbox_namespace_keys", "kmsbox_namespace_key_wraps", "kmsbox_audit_events", "kmsbox_jobs"):
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
    print(f"wrote {current.name}, {old.name}, expected.json", file=sys.stderr)


if __name__ == "__main__":
    main()
