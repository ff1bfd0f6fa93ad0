"""Alter a SQLite store's stored envelopes directly, as someone with only database access could.

For fault tests: a corrupted, swapped or moved ciphertext must fail to read with
``IntegrityError`` and be audited. These helpers know where each secret version's
envelope lives (the current version in its secret's row, older ones in the history
table), so tests need not.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

__all__ = ["read_blob", "stored_blobs", "stored_blobs_of", "write_blob"]

_ALL_VERSIONS = (
    "SELECT namespace, name, version, blob, namespace_key_version FROM kmsbox_secrets WHERE blob IS NOT NULL "
    "UNION ALL SELECT namespace, name, version, blob, namespace_key_version FROM kmsbox_secret_history"
)


def stored_blobs(db_path: str | Path) -> dict[tuple[str, str, int], tuple[bytes, int]]:
    """Every version's envelope and namespace-key version, keyed by (namespace, name, version)."""
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(_ALL_VERSIONS).fetchall()
    return {(r[0], r[1], int(r[2])): (bytes(r[3]), int(r[4])) for r in rows}


def read_blob(db_path: str | Path, namespace: str, name: str, version: int) -> bytes:
    """One version's stored envelope; KeyError if there is none."""
    return stored_blobs_of(db_path, namespace, name)[version]


def stored_blobs_of(db_path: str | Path, namespace: str, name: str) -> dict[int, bytes]:
    """The envelopes of one secret, by version."""
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            f"SELECT version, blob FROM ({_ALL_VERSIONS}) AS v WHERE namespace = ? AND name = ?", (namespace, name)
        ).fetchall()
    return {int(r[0]): bytes(r[1]) for r in rows}


def write_blob(db_path: str | Path, namespace: str, name: str, version: int, blob: bytes) -> None:
    """Overwrite one version's stored envelope in place; KeyError if there is none."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for table in ("kmsbox_secrets", "kmsbox_secret_history"):
            cur = conn.execute(
                f"UPDATE {table} SET blob = ? WHERE namespace = ? AND name = ? AND version = ? AND blob IS NOT NULL",
                (blob, namespace, name, version),
            )
            if cur.rowcount == 1:
                return
    raise KeyError(f"no stored version {namespace}/{name} v{version}")
