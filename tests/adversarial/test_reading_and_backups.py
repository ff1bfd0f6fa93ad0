"""What someone who can read the database, or has a copy of it, learns: no value and no key
material on SQLite or PostgreSQL; on SQLite, files only the owner can read, deleted values
overwritten, and a copy that opens nothing without the KEK."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from db_attacker import Attacker, SqliteAttacker

import kmsbox
from kmsbox.errors import ConfigError
from kmsbox.storage.sql.schema import TABLES

NS = "app:production"
KEK_VAR = "KMSBOX_ADVERSARIAL_KEK"


def _every_stored_value(db: Attacker) -> Iterator[object]:
    for table in TABLES:
        for row in db.snapshot(table, "1 = 1").rows:
            yield from row


def test_the_database_holds_no_value_and_no_key_material(db: Attacker) -> None:
    store = db.open()
    marker = os.urandom(12).hex()
    store.put("token", f"value-{marker}", namespace=NS, description="the payment token")
    store.put("token", f"value-{marker}-2", namespace=NS)
    store.put("binary", bytes.fromhex(marker) * 4, namespace=NS)
    store.get("token", namespace=NS)
    store.delete("binary", namespace=NS)
    kek = bytes.fromhex(os.environ[KEK_VAR])
    for value in _every_stored_value(db):
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            assert bytes.fromhex(marker) not in raw and marker.encode() not in raw and kek not in raw
        elif isinstance(value, str):
            assert marker not in value and kek.hex() not in value
    # Metadata is what a reader of the database does see (the docs say so).
    assert "the payment token" in [v for v in _every_stored_value(db) if isinstance(v, str)]


def test_sqlite_files_are_readable_by_the_owner_only_whatever_the_umask(sqlite_db: SqliteAttacker) -> None:
    previous = os.umask(0)
    try:
        store = sqlite_db.open()
        store.put("token", "value", namespace=NS)
        store.get("token", namespace=NS)
        files = sorted(p.name for p in sqlite_db.path.parent.iterdir())
        assert {"secrets.db", "secrets.db-wal", "secrets.db-shm"} <= set(files)
        for path in sqlite_db.path.parent.iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, path.name
    finally:
        os.umask(previous)


def test_a_deleted_secret_leaves_no_ciphertext_in_the_sqlite_files(sqlite_db: SqliteAttacker) -> None:
    store = sqlite_db.open()
    store.put("kept", "kept-value", namespace=NS)
    store.put("gone", os.urandom(3000), namespace=NS)
    store.put("gone", os.urandom(3000), namespace=NS)
    envelopes = [sqlite_db.blob(NS, "gone", v) for v in (1, 2)]
    store.delete("gone", namespace=NS)
    store.close()
    # secure_delete overwrites freed content; the write-ahead log is checkpointed on close.
    folder = sqlite_db.path.parent
    contents = b"".join(p.read_bytes() for p in folder.iterdir())
    for envelope in envelopes:
        assert envelope[100:164] not in contents
    assert sqlite_db.open().get("kept", namespace=NS).value == "kept-value"


def test_a_copy_of_the_database_opens_nothing_without_the_kek(
    sqlite_db: SqliteAttacker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_db.open()
    store.put("token", "value", namespace=NS)
    store.close()
    stolen = tmp_path / "stolen.db"
    shutil.copy(sqlite_db.path, stolen)
    monkeypatch.setenv("THIEF_KEK", os.urandom(32).hex())
    with pytest.raises(ConfigError, match="cannot be opened with the configured KEK"):
        kmsbox.open_store(f"sqlite:///{stolen}", kek="env://THIEF_KEK")


def test_storage_url_values_are_not_echoed_in_errors(sqlite_db: SqliteAttacker) -> None:
    for query in ("password=hunter2-0f3a", "busy_timeout=hunter2-0f3a"):
        with pytest.raises(ConfigError) as caught:
            kmsbox.open_store(f"{sqlite_db.url}?{query}", kek=sqlite_db.kek_uri)
        assert "hunter2" not in str(caught.value)


def test_kek_arguments_of_the_wrong_type_are_typed_errors(sqlite_db: SqliteAttacker) -> None:
    with pytest.raises(ConfigError, match="kek entry 2"):
        kmsbox.open_store(sqlite_db.url, kek=[sqlite_db.kek_uri, 5])  # type: ignore[list-item]
    with pytest.raises((TypeError, ValueError)):
        kmsbox.Envelope([sqlite_db.kek_uri, 5])  # type: ignore[list-item]
    envelope = kmsbox.Envelope(sqlite_db.kek_uri)
    with pytest.raises((TypeError, ValueError)):
        envelope.encrypt(b"data", context="a string, not a mapping")  # type: ignore[arg-type]
