"""The storage conformance suite against memory:// and sqlite://, plus SQLite's own bad inputs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kmsbox.errors import ConfigError, StorageError
from kmsbox.storage import StorageBackend, open_storage
from kmsbox.storage.migrations import SCHEMA_VERSION
from kmsbox.storage.sql import SqlTransaction
from kmsbox.storage.sqlite import SqliteBackend
from kmsbox.store.audit import AuditLog
from kmsbox.testing.storage_conformance import StorageBackendConformance, secret_row


class TestMemoryBackend(StorageBackendConformance):
    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        backend = open_storage("memory://")
        yield backend
        backend.close()

    def test_schema_is_current(self, backend: StorageBackend) -> None:
        assert backend.schema_version() == SCHEMA_VERSION


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


class TestSqliteBackend(StorageBackendConformance):
    @pytest.fixture
    def backend(self, sqlite_url: str) -> Iterator[StorageBackend]:
        backend = open_storage(sqlite_url)
        yield backend
        backend.close()

    @pytest.fixture
    def reopen(self, sqlite_url: str) -> Iterator[Callable[[], StorageBackend]]:
        opened: list[StorageBackend] = []

        def open_again() -> StorageBackend:
            opened.append(open_storage(sqlite_url))
            return opened[-1]

        yield open_again
        for backend in opened:
            backend.close()

    def test_schema_is_current(self, backend: StorageBackend) -> None:
        assert backend.schema_version() == SCHEMA_VERSION


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/file.db",
        "sqlite:///store.db?busy_timeout=soon",
        "sqlite:///store.db?busy_timeout=0",
        "sqlite:///store.db?busy_timeout=-1",
    ],
)
def test_malformed_sqlite_url_is_config_error(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        open_storage(url)


def test_sqlite_path_in_a_missing_folder_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'no-such-folder' / 'store.db'}")
    assert not (tmp_path / "no-such-folder").exists()


def test_sqlite_file_that_is_not_a_database_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    with pytest.raises(ConfigError):
        open_storage(f"sqlite:///{path}")
    assert path.read_bytes().startswith(b"these are not")


def test_sqlite_schema_newer_than_the_code_is_config_error(sqlite_url: str, tmp_path: Path) -> None:
    open_storage(sqlite_url).close()
    with sqlite3.connect(tmp_path / "store.db") as conn:
        conn.execute("UPDATE kmsbox_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(ConfigError, match="newer"):
        open_storage(sqlite_url)


def test_sqlite_relative_path_is_relative_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_storage("sqlite:///relative.db")
    try:
        assert backend.describe() == {"backend": "sqlite", "location": "relative.db"}
    finally:
        backend.close()
    assert (tmp_path / "relative.db").exists()


def test_sqlite_busy_timeout_parameter(sqlite_url: str) -> None:
    backend = open_storage(sqlite_url + "?busy_timeout=0.3")
    try:
        assert isinstance(backend, SqliteBackend)
        assert backend.busy_timeout == pytest.approx(0.3)
    finally:
        backend.close()


def test_sqlite_writer_gives_up_after_busy_timeout(sqlite_url: str) -> None:
    holder = open_storage(sqlite_url)
    waiter = open_storage(sqlite_url + "?busy_timeout=0.3")
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with holder.transaction() as tx:
            tx.insert_secret(secret_row("ns", "holder"))
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=hold_the_write_lock)
    thread.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked"), waiter.transaction() as tx:
            tx.insert_secret(secret_row("ns", "waiter"))
        assert 0.25 <= time.monotonic() - started < 5
    finally:
        release.set()
        thread.join()
        holder.close()
        waiter.close()


def test_sqlite_writers_queue_within_busy_timeout(sqlite_url: str) -> None:
    holder = open_storage(sqlite_url)
    waiter = open_storage(sqlite_url + "?busy_timeout=10")
    locked = threading.Event()

    def hold_briefly() -> None:
        with holder.transaction() as tx:
            tx.insert_secret(secret_row("ns", "holder"))
            locked.set()
            time.sleep(0.2)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    try:
        assert locked.wait(10)
        with waiter.transaction() as tx:
            tx.insert_secret(secret_row("ns", "waiter"))
    finally:
        thread.join()
        holder.close()
        waiter.close()
    check = open_storage(sqlite_url)
    try:
        with check.read() as tx:
            assert tx.get_secret("ns", "holder") is not None
            assert tx.get_secret("ns", "waiter") is not None
    finally:
        check.close()


def test_memory_url_with_a_path_is_config_error() -> None:
    with pytest.raises(ConfigError):
        open_storage("memory://somewhere")


def test_a_transaction_sqlite_rolled_back_by_itself_is_an_error_not_a_commit(sqlite_url: str) -> None:
    # SQLITE_FULL (and I/O errors) roll the whole transaction back; a caller that
    # swallows the error must not get a silent empty commit, nor a remembered audit head.
    backend = open_storage(sqlite_url)
    log = AuditLog(backend, os.urandom(32))
    try:
        with backend.transaction() as tx:
            log.append(tx, action="create", result="success")
        with pytest.raises(StorageError, match="rolled this transaction back"), backend.transaction() as tx:
            log.append(tx, action="update", result="success")
            assert isinstance(tx, SqlTransaction)
            with contextlib.suppress(StorageError, sqlite3.DatabaseError):
                tx._q("PRAGMA max_page_count = 1")
                tx._q("INSERT INTO kmsbox_jobs VALUES ('j', 'k', ?, 0)", ("x" * 100_000,))
            tx._q("PRAGMA max_page_count = 1073741823")
        with backend.transaction() as tx:
            assert log.append(tx, action="delete", result="success") == 2
        verification = log.verify()
        assert verification.ok, verification.problems
        assert [e.action for e in log.events()[0]] == ["create", "delete"]
    finally:
        backend.close()
