"""The storage conformance suite against memory:// and sqlite://, plus SQLite's own bad inputs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from kmsbox.errors import ConfigError, StorageError
from kmsbox.storage import StorageBackend, open_storage
from kmsbox.storage.base import AuditFilter, JobRow, MalformedRow, SecretFilter
from kmsbox.storage.sql import SCHEMA_VERSION, SqlBackend
from kmsbox.storage.sqlite import SqliteEngine
from kmsbox.testing.storage_conformance import (
    Sealer,
    SqlBackendConformance,
    StorageBackendConformance,
    secret_row,
    stored_version,
)

NS = "conformance:one"


class TestMemoryBackend(StorageBackendConformance):
    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        backend = open_storage("memory://")
        yield backend
        backend.close()

    @pytest.fixture
    def peer(self, backend: StorageBackend) -> StorageBackend:
        """A memory store cannot be opened twice: concurrent writers are threads on it."""
        return backend

    def test_schema_is_current(self, backend: StorageBackend) -> None:
        assert backend.schema_version() == SCHEMA_VERSION


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


def _raw(path: Path, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the file directly (as someone with only database access could)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return conn.execute(statement, tuple(params)).fetchall()


class TestSqliteBackend(SqlBackendConformance):
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

    @pytest.fixture
    def sql(self, db_path: Path) -> Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]:
        return lambda statement, params: _raw(db_path, statement, params)

    def test_schema_is_current(self, backend: StorageBackend) -> None:
        assert backend.schema_version() == SCHEMA_VERSION

    # SQLite keeps whatever type it is given in any column: values of the wrong type too.

    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("version", "three"),
            ("version", 1.5),
            ("row_version", b"\x01"),
            ("created_at", "yesterday"),
            ("expires_at", b"\x00"),
            ("category", b"\x00"),
            ("description", b"bytes"),
            ("labels", 12),
            ("seal", "text, not a blob"),
            ("labels", sqlite3.Binary(b"\xff")),
        ],
    )
    def test_a_value_of_the_wrong_type_is_malformed(
        self, backend: StorageBackend, db_path: Path, column: str, value: Any
    ) -> None:
        _, good = self._two_secrets(backend)
        _raw(db_path, f"UPDATE kmsbox_secrets SET {column} = ? WHERE name = 'bad'", (value,))
        self._assert_only_bad_is_malformed(backend, good)

    @pytest.mark.parametrize(
        ("statement", "read"),
        [
            ("UPDATE kmsbox_namespace_key_wraps SET kek_uri = X'00'", "keys"),
            ("UPDATE kmsbox_namespace_key_wraps SET ciphertext = 'text'", "keys"),
            ("UPDATE kmsbox_namespace_keys SET updated_at = 'later'", "keys"),
            ("UPDATE kmsbox_namespaces SET seal = 'text'", "state"),
            ("UPDATE kmsbox_namespaces SET created_at = X'01'", "state"),
            ("UPDATE kmsbox_audit_chains SET mac = 12", "heads"),
            ("UPDATE kmsbox_audit_chains SET at = 'now'", "heads"),
            ("UPDATE kmsbox_jobs SET kind = X'00'", "jobs"),
            ("UPDATE kmsbox_jobs SET updated_at = 'soon'", "jobs"),
            ("UPDATE kmsbox_audit_events SET row_version = 'two' WHERE row_version IS NOT NULL", "states"),
            ("UPDATE kmsbox_audit_events SET state = 7 WHERE row_version IS NOT NULL", "states"),
        ],
    )
    def test_a_value_of_the_wrong_type_in_any_table_is_malformed(
        self, backend: StorageBackend, db_path: Path, statement: str, read: str
    ) -> None:
        self._namespace(backend)
        self._append(backend, 0, {"name": "s", "row_version": 1, "state": b"x"})
        with backend.transaction() as tx:
            tx.put_job(JobRow("job", "rotate", "{}", 1.0))
        _raw(db_path, statement)
        reads: dict[str, Callable[[Any], object]] = {
            "keys": lambda tx: tx.namespace_keys(NS),
            "state": lambda tx: tx.namespace_state(NS),
            "heads": lambda tx: tx.audit_heads(),
            "jobs": lambda tx: tx.list_jobs(),
            "states": lambda tx: tx.state_events(None, 10),
        }
        with backend.read() as tx, pytest.raises(MalformedRow):
            reads[read](tx)

    def test_text_that_is_not_utf8_is_malformed_row_for_that_secret(
        self, backend: StorageBackend, db_path: Path
    ) -> None:
        _, good = self._two_secrets(backend)
        _raw(db_path, "UPDATE kmsbox_secrets SET labels = CAST(X'FF' AS TEXT) WHERE name = 'bad'")
        with backend.read() as tx:
            with pytest.raises(MalformedRow, match="'bad' in namespace 'conformance:one' is malformed"):
                tx.get_secret(NS, "bad")
            # A page over it cannot be read at all; one that does not reach it can.
            with pytest.raises(MalformedRow, match="not UTF-8"):
                tx.list_secrets(NS, SecretFilter(), None, 10)
            assert tx.list_secrets(NS, SecretFilter(), (NS, "bad"), 10) == [good]
        self._assert_only_bad_is_malformed(backend, good)

    def test_an_older_version_whose_text_is_not_utf8_is_malformed_for_that_version(
        self, backend: StorageBackend, db_path: Path
    ) -> None:
        self._create(backend, secret_row(NS, "s"))
        self._new_version(backend, NS, "s")
        _raw(db_path, "UPDATE kmsbox_secret_history SET name = CAST(X'73FF' AS TEXT) WHERE version = 1")
        with backend.read() as tx:
            found = tx.read_secret(NS, "s", 2)
            assert found is not None and found[1] is not None
            with pytest.raises(MalformedRow):
                tx.versions(NS, None, 10)

    def test_an_audit_event_whose_text_is_not_utf8_makes_its_page_malformed(
        self, backend: StorageBackend, db_path: Path
    ) -> None:
        self._append(backend, 0, {}, {})
        _raw(db_path, "UPDATE kmsbox_audit_events SET actor = CAST(X'FF' AS TEXT) WHERE seq = 2")
        with backend.read() as tx:
            with pytest.raises(MalformedRow):
                tx.audit_events(AuditFilter(), None, 10)
            assert [e.seq for e in tx.audit_events(AuditFilter(), None, 1)] == [1]

    def test_a_namespace_that_is_not_text_cannot_be_listed_and_is_passed_over(
        self, backend: StorageBackend, db_path: Path
    ) -> None:
        self._namespace(backend, "a-ns")
        self._namespace(backend, "b-ns")
        _raw(db_path, "UPDATE kmsbox_namespaces SET namespace = X'00' WHERE namespace = 'a-ns'")
        with backend.read() as tx:
            assert tx.namespaces(None, 10) == ["b-ns"]
        _raw(db_path, "UPDATE kmsbox_namespace_keys SET namespace = X'00' WHERE namespace = 'b-ns'")
        with backend.read() as tx:
            assert tx.namespace_keys("b-ns") == []

    def test_a_secret_name_that_is_not_text_is_malformed_in_a_listing(
        self, backend: StorageBackend, db_path: Path
    ) -> None:
        self._create(backend, secret_row(NS, "bad"))
        _raw(db_path, "UPDATE kmsbox_secrets SET name = X'62616400' WHERE name = 'bad'")
        with backend.read() as tx, pytest.raises(MalformedRow) as caught:
            tx.list_secrets(NS, SecretFilter(), None, 10)
        assert caught.value.name is None and caught.value.namespace == NS
        assert "bytes of length 4" in str(caught.value)


# --- opening ---------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_the_file_and_its_wal_and_shm_are_created_readable_by_the_owner_only(db_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        backend = open_storage(f"sqlite:///{db_path}")
        try:
            with backend.transaction() as tx:
                tx.put_job(JobRow("job", "rotate", "{}", 1.0))
            files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
            assert all(f.exists() for f in files)
            assert [_mode(f) for f in files] == [0o600, 0o600, 0o600]
        finally:
            backend.close()
    finally:
        os.umask(previous)


def test_an_existing_file_keeps_its_mode(db_path: Path) -> None:
    db_path.touch(mode=0o640)
    os.chmod(db_path, 0o640)  # whatever the umask made of it
    backend = open_storage(f"sqlite:///{db_path}")
    backend.close()
    assert _mode(db_path) == 0o640


def test_deleted_values_are_overwritten_in_the_file(db_path: Path) -> None:
    # secure_delete: a deleted envelope does not linger in free pages, whatever SQLite's build default.
    backend = open_storage(f"sqlite:///{db_path}")
    current = stored_version(NS, "doomed", 1, value=os.urandom(3000))
    marker = current.blob[-64:]
    try:
        state = TestSqliteBackend._namespace(backend)
        with backend.transaction() as tx:
            assert tx.create_secret(secret_row(NS, "doomed"), current, keys_seal=state.seal)
        _raw(db_path, "PRAGMA wal_checkpoint(TRUNCATE)")
        assert marker in db_path.read_bytes()  # it was in the file
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "doomed") == 1
    finally:
        backend.close()
    _raw(db_path, "PRAGMA wal_checkpoint(TRUNCATE)")
    assert marker not in db_path.read_bytes()
    assert not Path(f"{db_path}-wal").exists() or marker not in Path(f"{db_path}-wal").read_bytes()


def test_create_false_on_a_missing_file_is_config_error_that_creates_nothing(db_path: Path) -> None:
    with pytest.raises(ConfigError, match="no kmsbox store"):
        open_storage(f"sqlite:///{db_path}", create=False)
    assert list(db_path.parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["empty file", "database without tables"])
def test_create_false_on_an_empty_database_is_config_error_that_creates_nothing(db_path: Path, kind: str) -> None:
    if kind == "empty file":
        db_path.touch()
    else:
        _raw(db_path, "PRAGMA user_version = 7")
    with pytest.raises(ConfigError, match="no kmsbox store"):
        open_storage(f"sqlite:///{db_path}", create=False)
    assert _raw(db_path, "SELECT name FROM sqlite_master") == []
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["store.db"]


def test_create_false_opens_an_existing_store(sqlite_url: str) -> None:
    open_storage(sqlite_url).close()
    backend = open_storage(sqlite_url, create=False)
    try:
        assert backend.schema_version() == SCHEMA_VERSION
    finally:
        backend.close()


def test_a_file_of_another_application_is_refused_and_left_as_it_was(db_path: Path) -> None:
    _raw(db_path, "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    _raw(db_path, "INSERT INTO users (email) VALUES ('a@example.com')")
    with pytest.raises(ConfigError, match="another application"):
        open_storage(f"sqlite:///{db_path}")
    assert [r[0] for r in _raw(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users"]
    assert _raw(db_path, "SELECT email FROM users") == [("a@example.com",)]


def test_a_file_that_is_not_a_database_is_config_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    with pytest.raises(ConfigError):
        open_storage(f"sqlite:///{path}")
    assert path.read_bytes() == b"these are not the pages you are looking for\n" * 200


def test_a_path_in_a_missing_folder_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'no-such-folder' / 'store.db'}")
    assert not (tmp_path / "no-such-folder").exists()


def test_a_relative_path_is_relative_to_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_storage("sqlite:///relative.db")
    try:
        assert backend.describe() == {"backend": "sqlite", "location": "relative.db"}
    finally:
        backend.close()
    assert (tmp_path / "relative.db").exists()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/file.db",
        "sqlite:store.db",
        "sqlite:///store.db?busy_timeout=soon",
        "sqlite:///store.db?busy_timeout=0",
        "sqlite:///store.db?busy_timeout=-1",
        "sqlite:///store.db?busy_timeout=nan",
        "sqlite:///store.db?busy_timeout=inf",
        "sqlite:///store.db?busy_timeout=1&busy_timeout=2",
        "sqlite:///store.db?journal_mode=off",
        "sqlite:///store.db?busy_timeout",
        "sqlite:///store.db#fragment",
    ],
)
def test_a_malformed_sqlite_url_is_config_error(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        open_storage(url)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "query",
    [
        "busy_timeout=hunter2-SECRET",
        "password=hunter2-SECRET",
        "busy_timeout=1&busy_timeout=hunter2-SECRET",
        "hunter2-SECRET",
        "busy_timeout=1#hunter2-SECRET",
    ],
)
def test_sqlite_url_errors_never_echo_query_values(query: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        open_storage(f"sqlite:///{tmp_path / 'store.db'}?{query}")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)
    assert caught.value.__cause__ is None or "hunter2" not in str(caught.value.__cause__)
    assert str(tmp_path / "store.db") in str(caught.value)


def test_the_busy_timeout_parameter_is_used(sqlite_url: str) -> None:
    backend = open_storage(sqlite_url + "?busy_timeout=0.3")
    try:
        assert isinstance(backend, SqlBackend) and isinstance(backend.engine, SqliteEngine)
        assert backend.engine.busy_timeout == pytest.approx(0.3)
    finally:
        backend.close()


def test_a_writer_gives_up_after_busy_timeout(sqlite_url: str) -> None:
    holder = open_storage(sqlite_url)
    waiter = open_storage(sqlite_url + "?busy_timeout=0.3")
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with holder.transaction() as tx:
            tx.put_job(JobRow("holder", "k", "{}", 1.0))
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=hold_the_write_lock)
    thread.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked"), waiter.transaction() as tx:
            tx.put_job(JobRow("waiter", "k", "{}", 1.0))
        assert 0.25 <= time.monotonic() - started < 5
    finally:
        release.set()
        thread.join()
        holder.close()
        waiter.close()
    check = open_storage(sqlite_url)
    try:
        with check.read() as tx:
            assert [j.job_id for j in tx.list_jobs()] == ["holder"]
    finally:
        check.close()


def test_writers_queue_within_busy_timeout(sqlite_url: str) -> None:
    holder = open_storage(sqlite_url)
    waiter = open_storage(sqlite_url + "?busy_timeout=10")
    locked = threading.Event()

    def hold_briefly() -> None:
        with holder.transaction() as tx:
            tx.put_job(JobRow("holder", "k", "{}", 1.0))
            locked.set()
            time.sleep(0.2)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    try:
        assert locked.wait(10)
        with waiter.transaction() as tx:
            tx.put_job(JobRow("waiter", "k", "{}", 1.0))
    finally:
        thread.join()
        holder.close()
        waiter.close()
    check = open_storage(sqlite_url)
    try:
        with check.read() as tx:
            assert [j.job_id for j in tx.list_jobs()] == ["holder", "waiter"]
    finally:
        check.close()


def test_a_transaction_sqlite_rolled_back_by_itself_is_an_error_not_a_commit(sqlite_url: str) -> None:
    # SQLITE_FULL (and I/O errors) roll the whole transaction back; a caller that swallows
    # the error must not get a silent, empty commit, nor an audit head remembered from it.
    backend = open_storage(sqlite_url)
    try:
        kept = Sealer({"action": "create"})
        with backend.transaction() as tx:
            tx.append_audit(0, kept)
        assert isinstance(backend, SqlBackend)
        with pytest.raises(StorageError, match="rolled this transaction back"), backend.transaction() as tx:
            tx.append_audit(0, Sealer({"action": "update"}))
            with contextlib.suppress(StorageError):
                tx._cur.execute("PRAGMA max_page_count = 1")
                tx.put_job(JobRow("j", "k", "x" * 100_000, 0.0))
            tx._cur.execute("PRAGMA max_page_count = 1073741823")
        with backend.transaction() as tx:
            tx.append_audit(0, Sealer({"action": "delete"}))
        with backend.read() as tx:
            events = tx.audit_events(AuditFilter(), None, 10)
            assert tx.list_jobs() == []
        assert [(e.seq, e.action) for e in events] == [(1, "create"), (2, "delete")]
        TestSqliteBackend._assert_chains(events)
    finally:
        backend.close()


def test_a_memory_url_with_a_path_is_config_error() -> None:
    for url in ("memory://somewhere", "memory:///x", "memory://?a=b"):
        with pytest.raises(ConfigError):
            open_storage(url)
