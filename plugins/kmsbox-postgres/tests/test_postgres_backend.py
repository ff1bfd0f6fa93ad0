"""The storage conformance suite against PostgreSQL, plus what only a server backend has."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from kmsbox_postgres import PostgresBackend
from kmsbox_postgres.testing import with_query

from kmsbox.errors import ConfigError, ConflictError, StorageError
from kmsbox.storage import StorageBackend, open_storage
from kmsbox.storage.base import NamespaceKeyRow
from kmsbox.storage.migrations import SCHEMA_VERSION
from kmsbox.storage.sql import SqlBackend
from kmsbox.testing.storage_conformance import StorageBackendConformance, secret_row, version_row

pytestmark = pytest.mark.postgres

NS = "pg:test"
PASSWORD = "Sw0rdf1sh-never-shown"


def _backend_pid(backend: StorageBackend) -> int:
    with backend.read() as tx:
        row = tx._q("SELECT pg_backend_pid()").fetchone()  # type: ignore[attr-defined]
    return int(row[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, _, host = rest.rpartition("@")
    return f"{scheme}://{userinfo.split(':')[0] or 'postgres'}:{password}@{host}"


def _error_texts(exc: BaseException) -> str:
    """Every message in an exception's chain, plus its formatted traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        texts.append(str(seen))
        texts.append(repr(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[StorageBackend]:
    backend = open_storage(postgres_url)
    yield backend
    backend.close()


@pytest.fixture
def admin(postgres_server_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        yield conn


class TestPostgresBackend(StorageBackendConformance):
    @pytest.fixture
    def backend(self, postgres_url: str) -> Iterator[StorageBackend]:
        backend = open_storage(postgres_url)
        yield backend
        backend.close()

    @pytest.fixture
    def reopen(self, postgres_url: str) -> Iterator[Callable[[], StorageBackend]]:
        opened: list[StorageBackend] = []

        def open_again() -> StorageBackend:
            opened.append(open_storage(postgres_url))
            return opened[-1]

        yield open_again
        for backend in opened:
            backend.close()

    def test_schema_is_current(self, backend: StorageBackend) -> None:
        assert backend.schema_version() == SCHEMA_VERSION


# --- opening -----------------------------------------------------------------------------------


def test_both_schemes_open_the_postgres_backend(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        backend = open_storage(url)
        try:
            assert isinstance(backend, PostgresBackend)
            assert isinstance(backend, SqlBackend)
            assert backend.describe()["backend"] == "postgres"
        finally:
            backend.close()


def test_tables_live_in_the_url_schema(pg: StorageBackend, postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    schema = postgres_url.rsplit("schema=", 1)[1]
    rows = admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", (schema,)
    ).fetchall()
    assert {r[0] for r in rows} >= {"kmsbox_meta", "kmsbox_secrets", "kmsbox_secret_history", "kmsbox_audit_head"}
    assert pg.describe()["schema"] == schema
    assert schema in pg.describe()["location"]


def test_an_existing_empty_schema_is_used(postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    schema = postgres_url.rsplit("schema=", 1)[1]
    admin.execute(f'CREATE SCHEMA "{schema}"')
    backend = open_storage(postgres_url)
    try:
        assert backend.schema_version() == SCHEMA_VERSION
    finally:
        backend.close()


def test_unreachable_server_is_config_error_at_open() -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{_free_port()}/test?schema=kmsbox_x&connect_timeout=3"
    with pytest.raises(ConfigError, match="cannot connect") as caught:
        open_storage(url)
    assert "127.0.0.1" in str(caught.value)
    assert PASSWORD not in _error_texts(caught.value)


def test_missing_database_is_config_error_at_open(postgres_server_url: str) -> None:
    base = postgres_server_url.split("?")[0].rsplit("/", 1)[0]
    with pytest.raises(ConfigError, match="kmsbox_no_such_db"):
        open_storage(f"{base}/kmsbox_no_such_db")


@pytest.mark.parametrize(
    "suffix",
    [
        "schema=bad-name",
        "schema=1abc",
        "schema=pg_catalog",
        "schema=" + "a" * 64,
        "schema=",
        'schema=a"b',
        "schema=a&schema=b",
        "no_such_libpq_option=1",
        "sslmode=not-a-mode",
    ],
)
def test_bad_url_is_config_error_at_open(postgres_server_url: str, suffix: str) -> None:
    with pytest.raises(ConfigError):
        open_storage(with_query(postgres_server_url, suffix))


def test_newer_schema_is_config_error(pg: StorageBackend, postgres_url: str) -> None:
    with pg.transaction() as tx:
        tx._q("UPDATE kmsbox_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="newer"):
        open_storage(postgres_url)


# --- passwords -----------------------------------------------------------------------------------


def test_password_is_not_shown(postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    url = _with_password(postgres_url, PASSWORD)
    backend = open_storage(url)  # the server trusts us; the password is only carried
    try:
        assert PASSWORD not in repr(backend)
        assert PASSWORD not in str(backend.describe())
        assert PASSWORD not in backend.url
        assert "***" in backend.url
        pid = _backend_pid(backend)
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        with pytest.raises(StorageError) as caught, backend.read() as tx:
            tx.get_secret(NS, "x")
        assert PASSWORD not in _error_texts(caught.value)
    finally:
        backend.close()


def test_password_parameter_is_not_shown(postgres_url: str) -> None:
    backend = open_storage(with_query(postgres_url, f"password={PASSWORD}"))
    try:
        assert PASSWORD not in backend.url + repr(backend) + str(backend.describe())
    finally:
        backend.close()
    bad = f"postgresql://127.0.0.1:{_free_port()}/test?password={PASSWORD}&connect_timeout=3"
    with pytest.raises(ConfigError) as caught:
        open_storage(bad)
    assert PASSWORD not in _error_texts(caught.value)


# --- connections ---------------------------------------------------------------------------------


def test_killed_connection_is_storage_error_then_the_next_transaction_reconnects(
    pg: StorageBackend, admin: psycopg.Connection[Any]
) -> None:
    with pg.transaction() as tx:
        tx.insert_secret(secret_row(NS, "survivor"))
    pid = _backend_pid(pg)
    assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() == (True,)
    with pytest.raises(StorageError, match="connection") as caught, pg.read() as tx:
        tx.get_secret(NS, "survivor")
    assert "127.0.0.1" in str(caught.value) or "localhost" in str(caught.value)
    with pg.read() as tx:
        assert tx.get_secret(NS, "survivor") is not None
    assert _backend_pid(pg) != pid


def test_connection_killed_inside_a_transaction_rolls_it_back(
    pg: StorageBackend, admin: psycopg.Connection[Any]
) -> None:
    pid = _backend_pid(pg)
    with pytest.raises(StorageError), pg.transaction() as tx:
        tx.insert_secret(secret_row(NS, "half"))
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        tx.insert_version(version_row(NS, "half", 1))
    with pg.read() as tx:
        assert tx.get_secret(NS, "half") is None


def test_each_thread_has_its_own_connection(pg: StorageBackend) -> None:
    pids: list[int] = []
    threads = [threading.Thread(target=lambda: pids.append(_backend_pid(pg))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pids.append(_backend_pid(pg))
    assert len(set(pids)) == 4


def test_error_caught_inside_a_transaction_is_not_silently_committed(pg: StorageBackend) -> None:
    with pg.transaction() as tx:
        tx.insert_secret(secret_row(NS, "dup"))
    # PostgreSQL aborts the transaction at the failed statement; the commit must say so.
    with pytest.raises(StorageError, match="aborted"), pg.transaction() as tx:
        tx.insert_secret(secret_row(NS, "written-first"))
        with pytest.raises(ConflictError):
            tx.insert_secret(secret_row(NS, "dup"))
    with pg.read() as tx:
        assert tx.get_secret(NS, "written-first") is None
    with pg.transaction() as tx:
        tx.insert_secret(secret_row(NS, "later"))


def test_server_error_is_storage_error(pg: StorageBackend, postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    schema = postgres_url.rsplit("schema=", 1)[1]
    admin.execute(f'DROP TABLE "{schema}".kmsbox_jobs')
    with pytest.raises(StorageError, match="kmsbox_jobs"), pg.read() as tx:
        tx.list_jobs()
    with pg.read() as tx:
        assert tx.get_secret(NS, "x") is None


@pytest.mark.parametrize(
    ("error", "mapped"),
    [
        (psycopg.errors.UniqueViolation, ConflictError),
        (psycopg.errors.SerializationFailure, ConflictError),
        (psycopg.errors.DeadlockDetected, ConflictError),
        (psycopg.errors.AdminShutdown, StorageError),
        (psycopg.OperationalError, StorageError),
        (psycopg.errors.UndefinedTable, StorageError),
    ],
)
def test_driver_errors_map_to_kmsbox_errors(
    pg: PostgresBackend, error: type[Exception], mapped: type[Exception]
) -> None:
    result = pg._storage_error(error("boom"))
    assert type(result) is mapped
    assert pg._storage_error(ValueError("not a driver error")) is None


def test_real_deadlock_is_conflict(pg: StorageBackend) -> None:
    with pg.transaction() as tx:
        tx.insert_secret(secret_row(NS, "a"))
        tx.insert_secret(secret_row(NS, "b"))
    both_locked = threading.Barrier(2)
    outcomes: list[str] = []

    def lock(first: str, second: str) -> None:
        try:
            with pg.transaction() as tx:
                tx._q("SET LOCAL deadlock_timeout = '100ms'")  # type: ignore[attr-defined]
                tx.get_secret(NS, first, for_update=True)
                both_locked.wait(10)
                tx.get_secret(NS, second, for_update=True)
            outcomes.append("committed")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=lock, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["committed", "conflict"]


def _use_in_child(backend: StorageBackend, results: Any) -> None:
    try:
        with backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "from-child"))
        results.put(("ok", None))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_forked_child_opens_its_own_connection(pg: StorageBackend) -> None:
    parent_pid = _backend_pid(pg)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_use_in_child, args=(pg, results))
    child.start()
    assert results.get(timeout=30) == ("ok", None)
    child.join(30)
    # The parent's session survived the child (which neither used nor closed it).
    assert _backend_pid(pg) == parent_pid
    with pg.read() as tx:
        assert tx.get_secret(NS, "from-child") is not None


# --- several processes ---------------------------------------------------------------------------


def _open_and_report(url: str, start: Any, results: Any) -> None:
    start.wait(30)
    try:
        backend = open_storage(url)
        results.put(("ok", backend.schema_version()))
        backend.close()
    except BaseException as exc:
        results.put(("error", repr(exc)))


def _increment_and_report(url: str, start: Any, count: int, results: Any) -> None:
    try:
        backend = open_storage(url)
        start.wait(30)
        conflicts = 0
        for _ in range(count):
            while True:
                try:
                    with backend.transaction() as tx:
                        row = tx.get_secret(NS, "counter")
                        assert row is not None
                        expected = row.row_version
                        row.version += 1
                        row.row_version += 1
                        tx.update_secret(row, expected)
                    break
                except ConflictError:
                    conflicts += 1
        backend.close()
        results.put(("ok", conflicts))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def _run_processes(target: Callable[..., None], args_for: Callable[[Any, Any], tuple[Any, ...]], n: int) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(n), ctx.Queue()
    processes = [ctx.Process(target=target, args=args_for(start, results)) for _ in range(n)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert all(status == "ok" for status, _ in outcomes), outcomes
    return [value for _, value in outcomes]


def test_processes_migrating_a_fresh_schema_at_once_all_succeed(postgres_url: str) -> None:
    versions = _run_processes(_open_and_report, lambda start, results: (postgres_url, start, results), 4)
    assert versions == [SCHEMA_VERSION] * 4


def test_processes_doing_compare_and_set_increments_lose_no_update(postgres_url: str) -> None:
    backend = open_storage(postgres_url)
    try:
        with backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "counter"))
        per_process = 25
        _run_processes(_increment_and_report, lambda start, results: (postgres_url, start, per_process, results), 4)
        with backend.read() as tx:
            row = tx.get_secret(NS, "counter")
        assert row is not None
        assert (row.version, row.row_version) == (1 + 4 * per_process, 1 + 4 * per_process)
    finally:
        backend.close()


# --- a put racing a key compromise ---------------------------------------------------------------


def test_a_create_waits_for_a_concurrent_compromise_and_is_refused(postgres_url: str) -> None:
    # The one-statement create share-locks the key row it relies on: a compromise that
    # has changed that row but not committed is waited for, then seen.
    marker, writer = open_storage(postgres_url), open_storage(postgres_url)
    try:
        with marker.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", 1.0, 1.0, []))
        outcome: dict[str, Any] = {}
        started = threading.Event()

        def create() -> None:
            with writer.transaction() as tx:
                started.set()
                outcome["created"] = tx.create_secret(secret_row(NS, "s"), version_row(NS, "s", 1, 1), 1)
                outcome["active"] = tx.secret_for_write(NS, "s")[0]

        with marker.transaction() as tx:
            tx.set_namespace_key_status(NS, 1, "compromised", 2.0)
            tx.insert_namespace_key(NamespaceKeyRow(NS, 2, "active", 2.0, 2.0, []))
            thread = threading.Thread(target=create)
            thread.start()
            started.wait(5)
            thread.join(0.5)
            assert thread.is_alive(), "the create did not wait for the key row"
        thread.join(10)
        assert outcome == {"created": False, "active": 2}
        with writer.read() as tx:
            assert tx.get_secret(NS, "s") is None
    finally:
        marker.close()
        writer.close()
