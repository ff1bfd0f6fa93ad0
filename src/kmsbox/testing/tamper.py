"""Alter a SQLite store's rows directly, as someone with only database access could.

For fault and adversarial tests: a corrupted, swapped or moved ciphertext must fail to
read with ``IntegrityError``; a changed or rolled-back row must be refused or reported.
These helpers know where each secret version's envelope lives (the current version in
its secret's row, older ones in the history table), so tests need not.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

__all__ = ["execute", "read_blob", "stored_blobs", "stored_blobs_of", "write_blob"]

_ALL_VERSIONS = (
    "SELECT namespace, name, version, blob FROM kmsbox_secrets WHERE blob IS NOT NULL "
    "UNION ALL SELECT namespace, name, version, blob FROM kmsbox_secret_history"
)


def _key_version(blob: bytes) -> int:
    # The namespace-key version the envelope's header names (bytes 4-7).
    return int.from_bytes(blob[4:8], "big") if len(blob) >= 8 else 0


def stored_blobs(db_path: str | Path) -> dict[tuple[str, str, int], tuple[bytes, int]]:
    """Every version's envelope and the namespace-key version its header names, keyed by
    (namespace, name, version)."""
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(_ALL_VERSIONS).fetchall()
    return {(r[0], r[1], int(r[2])): (bytes(r[3]), _key_version(bytes(r[3]))) for r in rows}


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


def execute(db_path: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store's file outside kmsbox (committed); its rows."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
