"""The versioned schema migrations, shared by every SQL backend.

Each entry is applied once, in order, inside a transaction; the applied version
is recorded in ``kmsbox_meta``. Type names are dialect placeholders:
``{blob}``, ``{real}``, ``{bigint}`` and ``{without_rowid}`` (a table option
only SQLite has). A ``(dialect, statement)`` pair runs on that dialect only.
Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Statement"]

Statement = str | tuple[str, str]

MIGRATIONS: list[list[Statement]] = [
    # 1: secrets, versions, namespace keys, audit chain, jobs
    [
        """CREATE TABLE kmsbox_secrets (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            version {bigint} NOT NULL,
            status TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            expires_at {real},
            category TEXT,
            description TEXT,
            labels TEXT NOT NULL,
            access_count {bigint} NOT NULL DEFAULT 0,
            last_accessed_at {real},
            row_version {bigint} NOT NULL,
            PRIMARY KEY (namespace, name)
        )""",
        # Partial: secrets without expiry never touch this index on write.
        "CREATE INDEX kmsbox_secrets_expiry ON kmsbox_secrets (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE kmsbox_secret_versions (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            version {bigint} NOT NULL,
            blob {blob} NOT NULL,
            namespace_key_version {bigint} NOT NULL,
            created_at {real} NOT NULL,
            PRIMARY KEY (namespace, name, version)
        )""",
        "CREATE INDEX kmsbox_versions_by_key ON kmsbox_secret_versions (namespace, namespace_key_version, name, version)",
        """CREATE TABLE kmsbox_namespace_keys (
            namespace TEXT NOT NULL,
            version {bigint} NOT NULL,
            status TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            PRIMARY KEY (namespace, version)
        )""",
        """CREATE TABLE kmsbox_namespace_key_wraps (
            namespace TEXT NOT NULL,
            version {bigint} NOT NULL,
            kek_uri TEXT NOT NULL,
            kek_version TEXT NOT NULL,
            ciphertext {blob} NOT NULL,
            created_at {real} NOT NULL,
            PRIMARY KEY (namespace, version, kek_uri)
        )""",
        """CREATE TABLE kmsbox_audit_events (
            seq {bigint} PRIMARY KEY,
            time {real} NOT NULL,
            namespace TEXT,
            name TEXT,
            secret_version {bigint},
            action TEXT NOT NULL,
            result TEXT NOT NULL,
            actor TEXT,
            context TEXT NOT NULL,
            detail TEXT NOT NULL,
            audit_key_version {bigint} NOT NULL,
            mac {blob} NOT NULL
        )""",
        # No secondary index on audit events: every write appends one, so each index
        # would cost every write a page; filtered listings walk the sequence instead.
        # One row that appenders lock (FOR UPDATE) so the chain grows one event at a time.
        "CREATE TABLE kmsbox_audit_head (id INTEGER PRIMARY KEY)",
        "INSERT INTO kmsbox_audit_head (id) VALUES (1)",
        """CREATE TABLE kmsbox_jobs (
            job_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at {real} NOT NULL
        )""",
    ],
    # 2: the current version's envelope lives in its secret's row (a put writes one
    # row, a get reads one); older versions move to kmsbox_secret_history. On SQLite
    # both are clustered on their primary key (WITHOUT ROWID) and carry no secondary
    # index, so a write dirties one page per table instead of two or three.
    [
        # Writers still running older code must wait, not write into tables being moved:
        # the copies below would not see what they commit (SQLite's migration transaction
        # already holds the write lock).
        ("postgres", "LOCK TABLE kmsbox_secrets, kmsbox_secret_versions IN EXCLUSIVE MODE"),
        """CREATE TABLE kmsbox_secrets_v2 (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            version {bigint} NOT NULL,
            status TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            expires_at {real},
            category TEXT,
            description TEXT,
            labels TEXT NOT NULL,
            access_count {bigint} NOT NULL DEFAULT 0,
            last_accessed_at {real},
            row_version {bigint} NOT NULL,
            namespace_key_version {bigint},
            version_created_at {real},
            blob {blob},
            PRIMARY KEY (namespace, name)
        ){without_rowid}""",
        """INSERT INTO kmsbox_secrets_v2 SELECT s.namespace, s.name, s.version, s.status, s.created_at,
            s.updated_at, s.expires_at, s.category, s.description, s.labels, s.access_count,
            s.last_accessed_at, s.row_version, v.namespace_key_version, v.created_at, v.blob
            FROM kmsbox_secrets s LEFT JOIN kmsbox_secret_versions v
            ON v.namespace = s.namespace AND v.name = s.name AND v.version = s.version""",
        """CREATE TABLE kmsbox_secret_history (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            version {bigint} NOT NULL,
            namespace_key_version {bigint} NOT NULL,
            created_at {real} NOT NULL,
            blob {blob} NOT NULL,
            PRIMARY KEY (namespace, name, version)
        ){without_rowid}""",
        """INSERT INTO kmsbox_secret_history SELECT v.namespace, v.name, v.version, v.namespace_key_version,
            v.created_at, v.blob FROM kmsbox_secret_versions v WHERE NOT EXISTS (
                SELECT 1 FROM kmsbox_secrets s
                WHERE s.namespace = v.namespace AND s.name = v.name AND s.version = v.version)""",
        "DROP TABLE kmsbox_secret_versions",
        "DROP TABLE kmsbox_secrets",
        "ALTER TABLE kmsbox_secrets_v2 RENAME TO kmsbox_secrets",
        "CREATE INDEX kmsbox_secrets_expiry ON kmsbox_secrets (expires_at) WHERE expires_at IS NOT NULL",
        # PostgreSQL keeps an index for rotation jobs; SQLite's jobs walk the primary key.
        (
            "postgres",
            "CREATE INDEX kmsbox_history_by_key ON kmsbox_secret_history "
            "(namespace, namespace_key_version, name, version)",
        ),
    ],
]

#: The schema version this code writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)

#: The tables of the current schema: a store missing one was changed outside kmsbox.
TABLES = (
    "kmsbox_meta",
    "kmsbox_secrets",
    "kmsbox_secret_history",
    "kmsbox_namespace_keys",
    "kmsbox_namespace_key_wraps",
    "kmsbox_audit_events",
    "kmsbox_audit_head",
    "kmsbox_jobs",
)
