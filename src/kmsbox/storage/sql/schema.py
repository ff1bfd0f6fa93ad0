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
    # 3: no copied key-version columns (jobs read the envelope header); read counts in a
    # table of their own, one row per process counter (readers never contend on the
    # secret row); a key-state row per namespace; audit events in several chains, each
    # with a head row, ordered store-wide by (at, chain, seq); the seals (MACs) that
    # authenticate rows. Rows copied here are sealed by the store at its next open.
    [
        (
            "postgres",
            "LOCK TABLE kmsbox_secrets, kmsbox_secret_history, kmsbox_namespace_keys, kmsbox_audit_events, "
            "kmsbox_audit_head IN EXCLUSIVE MODE",
        ),
        """CREATE TABLE kmsbox_secrets_v3 (
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
            row_version {bigint} NOT NULL,
            version_created_at {real} NOT NULL,
            seal {blob},
            blob {blob},
            PRIMARY KEY (namespace, name)
        ){without_rowid}""",
        """INSERT INTO kmsbox_secrets_v3 SELECT namespace, name, version, status, created_at, updated_at,
            expires_at, category, description, labels, row_version, COALESCE(version_created_at, updated_at),
            NULL, blob FROM kmsbox_secrets""",
        """CREATE TABLE kmsbox_secret_access (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            counter {bigint} NOT NULL,
            reads {bigint} NOT NULL,
            last_at {real},
            PRIMARY KEY (namespace, name, counter)
        ){without_rowid}""",
        """INSERT INTO kmsbox_secret_access SELECT namespace, name, 0, access_count, last_accessed_at
            FROM kmsbox_secrets WHERE access_count > 0""",
        "DROP TABLE kmsbox_secrets",
        "ALTER TABLE kmsbox_secrets_v3 RENAME TO kmsbox_secrets",
        "CREATE INDEX kmsbox_secrets_expiry ON kmsbox_secrets (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE kmsbox_secret_history_v3 (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            version {bigint} NOT NULL,
            created_at {real} NOT NULL,
            blob {blob} NOT NULL,
            PRIMARY KEY (namespace, name, version)
        ){without_rowid}""",
        """INSERT INTO kmsbox_secret_history_v3 SELECT namespace, name, version, created_at, blob
            FROM kmsbox_secret_history""",
        "DROP TABLE kmsbox_secret_history",
        "ALTER TABLE kmsbox_secret_history_v3 RENAME TO kmsbox_secret_history",
        """CREATE TABLE kmsbox_namespaces (
            namespace TEXT NOT NULL PRIMARY KEY,
            generation {bigint} NOT NULL,
            created_at {real} NOT NULL,
            seal {blob}
        )""",
        """INSERT INTO kmsbox_namespaces SELECT namespace, 0, MIN(created_at), NULL
            FROM kmsbox_namespace_keys GROUP BY namespace""",
        """CREATE TABLE kmsbox_audit_chains (
            chain {bigint} NOT NULL PRIMARY KEY,
            seq {bigint} NOT NULL,
            at {bigint} NOT NULL,
            mac {blob} NOT NULL,
            seal {blob}
        )""",
        """CREATE TABLE kmsbox_audit_events_v3 (
            at {bigint} NOT NULL,
            chain {bigint} NOT NULL,
            seq {bigint} NOT NULL,
            time {real} NOT NULL,
            namespace TEXT,
            name TEXT,
            secret_version {bigint},
            action TEXT NOT NULL,
            result TEXT NOT NULL,
            actor TEXT,
            context TEXT NOT NULL,
            detail TEXT NOT NULL,
            key_version {bigint} NOT NULL,
            mac {blob} NOT NULL,
            record {bigint} NOT NULL,
            row_version {bigint},
            state {blob},
            PRIMARY KEY (at, chain, seq)
        ){without_rowid}""",
        # The events written before: chain 0, MAC input format 1.
        """INSERT INTO kmsbox_audit_events_v3 SELECT CAST(time * 1000000 AS {bigint}), 0, seq, time, namespace,
            name, secret_version, action, result, actor, context, detail, audit_key_version, mac, 1, NULL, NULL
            FROM kmsbox_audit_events""",
        """INSERT INTO kmsbox_audit_chains SELECT 0, seq, at, mac, NULL FROM kmsbox_audit_events_v3
            WHERE seq = (SELECT MAX(seq) FROM kmsbox_audit_events_v3)""",
        "DROP TABLE kmsbox_audit_events",
        "DROP TABLE kmsbox_audit_head",
        "ALTER TABLE kmsbox_audit_events_v3 RENAME TO kmsbox_audit_events",
        # The last recorded state of each secret and namespace: what a put checks and
        # verify compares with (only events that record a state are in it).
        """CREATE INDEX kmsbox_audit_states ON kmsbox_audit_events (namespace, name, row_version)
            WHERE row_version IS NOT NULL""",
    ],
    # 4: on PostgreSQL, the text columns that order walks and locks compare byte by byte
    # (the "C" collation), whatever the database's default. Python's str order is the
    # same, so a merge of two walks in Python (verify), a cursor compared in Python and
    # a lock order sorted in Python agree with the database. Under a linguistic
    # collation (en_US, ICU) "A/c" sorts between "a/b" and "a1", and verify reported
    # secrets that are there as gone. SQLite compares text byte by byte already.
    [
        # Every table first, in the order writers lock rows (key state, secrets, events), as
        # migrations 2 and 3 do: taken one ALTER at a time, a writer still running older
        # code that holds a later table while waiting for an earlier one would deadlock
        # with the migration, and the open would fail.
        (
            "postgres",
            "LOCK TABLE kmsbox_namespaces, kmsbox_namespace_keys, kmsbox_namespace_key_wraps, kmsbox_secrets, "
            "kmsbox_secret_history, kmsbox_secret_access, kmsbox_audit_events, kmsbox_jobs IN ACCESS EXCLUSIVE MODE",
        ),
        (
            "postgres",
            'ALTER TABLE kmsbox_secrets ALTER COLUMN namespace TYPE TEXT COLLATE "C", '
            'ALTER COLUMN name TYPE TEXT COLLATE "C"',
        ),
        (
            "postgres",
            'ALTER TABLE kmsbox_secret_history ALTER COLUMN namespace TYPE TEXT COLLATE "C", '
            'ALTER COLUMN name TYPE TEXT COLLATE "C"',
        ),
        (
            "postgres",
            'ALTER TABLE kmsbox_secret_access ALTER COLUMN namespace TYPE TEXT COLLATE "C", '
            'ALTER COLUMN name TYPE TEXT COLLATE "C"',
        ),
        ("postgres", 'ALTER TABLE kmsbox_namespaces ALTER COLUMN namespace TYPE TEXT COLLATE "C"'),
        ("postgres", 'ALTER TABLE kmsbox_namespace_keys ALTER COLUMN namespace TYPE TEXT COLLATE "C"'),
        (
            "postgres",
            'ALTER TABLE kmsbox_namespace_key_wraps ALTER COLUMN namespace TYPE TEXT COLLATE "C", '
            'ALTER COLUMN kek_uri TYPE TEXT COLLATE "C"',
        ),
        (
            "postgres",
            'ALTER TABLE kmsbox_audit_events ALTER COLUMN namespace TYPE TEXT COLLATE "C", '
            'ALTER COLUMN name TYPE TEXT COLLATE "C"',
        ),
        ("postgres", 'ALTER TABLE kmsbox_jobs ALTER COLUMN job_id TYPE TEXT COLLATE "C"'),
    ],
]

#: The schema version this code writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)

#: The tables of the current schema: a store missing one was changed outside kmsbox.
TABLES = (
    "kmsbox_meta",
    "kmsbox_secrets",
    "kmsbox_secret_history",
    "kmsbox_secret_access",
    "kmsbox_namespaces",
    "kmsbox_namespace_keys",
    "kmsbox_namespace_key_wraps",
    "kmsbox_audit_chains",
    "kmsbox_audit_events",
    "kmsbox_jobs",
)
