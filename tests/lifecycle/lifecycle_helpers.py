"""Helpers of the key-lifecycle tests (imported by the tests, conftest.py and job_runner.py):
known secret values, and raw views of the stored rows read with ``sqlite3``."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsbox import format as fmt
from kmsbox.store.service import SecretStore
from kmsbox.testing.tamper import stored_blobs

ENV_KEK_VAR = "KMSBOX_LIFECYCLE_KEK"

#: (namespace, name, version) -> (blob, namespace-key version) as stored.
Blobs = dict[tuple[str, str, int], tuple[bytes, int]]


@dataclass(frozen=True)
class Keyring:
    """A ``file://`` keyring of this test: its path and its KEK URI."""

    path: Path
    uri: str


def value_for(namespace: str, name: str, version: int = 1) -> str:
    """The known value of a test secret (recomputable in another process)."""
    digest = hashlib.sha256(f"{namespace}/{name}/{version}".encode()).hexdigest()
    return f"val-{digest[:24]}-ünï-{version}"


def fill(store: SecretStore, namespace: str, count: int, *, prefix: str = "s") -> dict[str, str]:
    """Import ``count`` secrets with known values into ``namespace``; return name -> value."""
    values = {f"{prefix}{i:05d}": value_for(namespace, f"{prefix}{i:05d}") for i in range(count)}
    store.import_secrets(values, namespace=namespace)
    return values


def read_all(store: SecretStore, expected: Mapping[tuple[str, str], str]) -> None:
    """Assert that every ``(namespace, name)`` reads back to exactly its expected value."""
    wrong = [key for key, value in expected.items() if store.get(key[1], namespace=key[0]).value != value]
    assert not wrong, f"{len(wrong)} secrets read back wrong, e.g. {wrong[:3]}"


def secret_blobs(db_path: Path) -> Blobs:
    """Every stored secret version's blob, read straight from the SQLite file."""
    return stored_blobs(db_path)


def value_tail(blob: bytes) -> bytes:
    """The bytes after the wrapped DEK: the value nonce, ciphertext and tag (see format.py)."""
    env = fmt.parse_secret(blob)
    tail = env.nonce + env.ciphertext
    assert blob.endswith(tail)
    return blob[len(blob) - len(tail) :]


def table_rows(db_path: Path, *, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every kmsbox table (except ``skip``), sorted, from the SQLite file."""
    with closing(sqlite3.connect(db_path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables if t not in skip}


#: The tables an audited operation writes to even when it changes nothing else.
AUDIT_TABLES = ("kmsbox_audit_events", "kmsbox_audit_chains")
