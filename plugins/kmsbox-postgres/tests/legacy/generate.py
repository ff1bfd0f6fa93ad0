"""Write the PostgreSQL stores of earlier releases that every later release must still open.

``stores.json`` holds the rows of a store that kmsbox at commit 746cfb2 (schema 2: one
audit chain, no seals) wrote on a real PostgreSQL server through its own
``kmsbox-postgres``, and the same rows as schema 1 stored them (every version in
``kmsbox_secret_versions``), with each secret version's value. Never regenerate it with
a later release: run this with that commit's source on the path::

    git archive 746cfb2 src plugins/kmsbox-postgres/src | tar -x -C /tmp/kmsbox-746cfb2
    PYTHONPATH=/tmp/kmsbox-746cfb2/src:/tmp/kmsbox-746cfb2/plugins/kmsbox-postgres/src \\
        python plugins/kmsbox-postgres/tests/legacy/generate.py [postgresql://...]

The KEK is derived from a public label (like the format vectors' keys): it protects
nothing and is for tests only.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
KEK_LABEL = "kmsbox-test-vector-key:postgres-store-kek"
TABLES_2 = (
    "kmsbox_meta",
    "kmsbox_secrets",
    "kmsbox_secret_history",
    "kmsbox_namespace_keys",
    "kmsbox_namespace_key_wraps",
    "kmsbox_audit_events",
    "kmsbox_audit_head",
    "kmsbox_jobs",
)


def kek_hex() -> str:
    """The test KEK (public, derived)."""
    return hashlib.sha256(KEK_LABEL.encode()).hexdigest()


def _value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    return value


def _dump(conn: Any, table: str) -> dict[str, Any]:
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2") if table != "kmsbox_audit_head" else None
    if cur is None:
        cur = conn.execute(f"SELECT * FROM {table}")
    columns = [d.name for d in cur.description]
    return {"columns": columns, "rows": [[_value(v) for v in row] for row in cur.fetchall()]}


def _schema_1(tables: dict[str, Any]) -> dict[str, Any]:
    """The same store as schema 1 kept it: every version in kmsbox_secret_versions."""
    secrets, history = tables["kmsbox_secrets"], tables["kmsbox_secret_history"]
    s_cols, h_cols = secrets["columns"], history["columns"]
    v1_secret_cols = [
        "namespace", "name", "version", "status", "created_at", "updated_at", "expires_at", "category",
        "description", "labels", "access_count", "last_accessed_at", "row_version",
    ]  # fmt: skip
    version_cols = ["namespace", "name", "version", "blob", "namespace_key_version", "created_at"]
    rows_1 = [[row[s_cols.index(c)] for c in v1_secret_cols] for row in secrets["rows"]]
    versions = [
        [row[s_cols.index(c)] for c in ("namespace", "name", "version", "blob", "namespace_key_version")]
        + [row[s_cols.index("version_created_at")]]
        for row in secrets["rows"]
        if row[s_cols.index("blob")] is not None
    ]
    versions += [[row[h_cols.index(c)] for c in version_cols] for row in history["rows"]]
    versions.sort(key=lambda r: (r[0], r[1], r[2]))
    out = {k: v for k, v in tables.items() if k not in ("kmsbox_secrets", "kmsbox_secret_history")}
    out["kmsbox_meta"] = {"columns": ["key", "value"], "rows": [["schema_version", "1"]]}
    out["kmsbox_secrets"] = {"columns": v1_secret_cols, "rows": rows_1}
    out["kmsbox_secret_versions"] = {"columns": version_cols, "rows": versions}
    return out


def main() -> None:
    import psycopg

    import kmsbox

    # A module of the release this runs against (746cfb2) only, not of the one that lints it.
    migrations = importlib.import_module("kmsbox.storage.migrations")
    assert migrations.SCHEMA_VERSION == 2, "run with the source of commit 746cfb2 (schema 2)"
    server = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"kmsbox_legacy_{uuid.uuid4().hex[:8]}"
    os.environ["KMSBOX_LEGACY_KEK"] = kek_hex()
    values: dict[str, str] = {}
    store = kmsbox.open_store(f"{server}?schema={schema}", kek="env://KMSBOX_LEGACY_KEK")
    try:
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
    finally:
        store.close()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        tables = {table: _dump(conn, table) for table in TABLES_2}
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    stores = {"kek_label": KEK_LABEL, "values": values, "schema-2": tables, "schema-1": _schema_1(tables)}
    (HERE / "stores.json").write_text(json.dumps(stores, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {HERE / 'stores.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
