"""The storage conformance suite against PostgreSQL, plus what only a server backend has."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from kmsbox_postgres import POSTGRES_DIALECT, PostgresEngine
from kmsbox_postgres.testing import with_query

import kmsbox
from kmsbox.errors import ConfigError, ConflictError, SecretDisabled, StorageError
from kmsbox.storage import StorageBackend, open_storage
from kmsbox.storage.base import JobRow, MalformedRow
from kmsbox.storage.sql import MIGRATIONS, SCHEMA_VERSION, TABLES, SqlBackend
from kmsbox.testing.storage_conformance import (
    Sealer,
    SqlBackendConformance,
    key_row,
    namespace_state,
    secret_row,
    stored_version,
)

pytestmark = pytest.mark.postgres

NS = "pg:test"
PASSWORD = "Sw0rdf1sh-never-shown"


def _schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1].split("&", 1)[0]


def _raw(server_url: str, schema: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store's schema directly, outside kmsbox (``?`` placeholders)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(statement.replace("?", "%s"), tuple(params))
        return cur.fetchall() if cur.description is not None else []


@pytest.fixture
def app_url(postgres_url: str) -> str:
    """The store's URL with an application_name, so the server's sessions of this test can be found."""
    return with_query(postgres_url, f"application_name=kmsbox-{uuid.uuid4().hex[:12]}")


def _sessions(admin: psycopg.Connection[Any], url: str) -> list[int]:
    name = url.rsplit("application_name=", 1)[1]
    rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid", (name,))
    return [int(r[0]) for r in rows.fetchall()]


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
def pg(app_url: str) -> Iterator[StorageBackend]:
    backend = open_storage(app_url)
    yield backend
    backend.close()


@pytest.fixture
def admin(postgres_server_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        yield conn


class TestPostgresBackend(SqlBackendConformance):
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

    @pytest.fixture
    def sql(self, postgres_server_url: str, postgres_url: str) -> Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]:
        schema = _schema_of(postgres_url)
        return lambda statement, params: _raw(postgres_server_url, schema, statement, params)

    def test_schema_is_current(self, backend: StorageBackend) -> None:
        assert backend.schema_version() == SCHEMA_VERSION


# --- opening -----------------------------------------------------------------------------------


def test_both_schemes_open_the_postgres_backend(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        backend = open_storage(url)
        try:
            assert isinstance(backend, SqlBackend)
            assert isinstance(backend.engine, PostgresEngine)
            assert backend.describe()["backend"] == "postgres"
        finally:
            backend.close()


def test_tables_live_in_the_url_schema(pg: StorageBackend, postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    schema = _schema_of(postgres_url)
    rows = admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", (schema,)
    ).fetchall()
    assert {r[0] for r in rows} == set(TABLES)
    assert pg.describe()["schema"] == schema
    assert schema in pg.describe()["location"]


def test_an_existing_empty_schema_is_used(postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    admin.execute(f'CREATE SCHEMA "{_schema_of(postgres_url)}"')
    backend = open_storage(postgres_url)
    try:
        assert backend.schema_version() == SCHEMA_VERSION
    finally:
        backend.close()


def test_create_false_on_a_schema_without_a_store_is_config_error_that_creates_nothing(
    postgres_url: str, admin: psycopg.Connection[Any]
) -> None:
    schema = _schema_of(postgres_url)
    with pytest.raises(ConfigError, match="no kmsbox store"):
        open_storage(postgres_url, create=False)
    assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchall() == []
    open_storage(postgres_url).close()
    backend = open_storage(postgres_url, create=False)
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


# --- passwords -----------------------------------------------------------------------------------


def test_password_is_not_shown(app_url: str, admin: psycopg.Connection[Any]) -> None:
    url = _with_password(app_url, PASSWORD)
    backend = open_storage(url)  # the server trusts us; the password is only carried
    try:
        assert PASSWORD not in repr(backend)
        assert PASSWORD not in str(backend.describe())
        assert PASSWORD not in backend.url
        assert "***" in backend.url
        for pid in _sessions(admin, app_url):
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


def test_a_killed_connection_is_storage_error_then_the_next_transaction_reconnects(
    pg: StorageBackend, app_url: str, admin: psycopg.Connection[Any]
) -> None:
    with pg.transaction() as tx:
        tx.put_job(JobRow("survivor", "k", "{}", 1.0))
    (pid,) = _sessions(admin, app_url)
    assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() == (True,)
    with pytest.raises(StorageError, match="connection") as caught, pg.read() as tx:
        tx.get_job("survivor")
    assert "127.0.0.1" in str(caught.value) or "localhost" in str(caught.value)
    with pg.read() as tx:
        assert tx.get_job("survivor") is not None
    assert _sessions(admin, app_url) != [pid]


def test_a_connection_killed_inside_a_transaction_rolls_it_back(
    pg: StorageBackend, app_url: str, admin: psycopg.Connection[Any]
) -> None:
    with pg.read() as tx:
        tx.list_jobs()
    (pid,) = _sessions(admin, app_url)
    with pytest.raises(StorageError), pg.transaction() as tx:
        tx.put_job(JobRow("half", "k", "{}", 1.0))
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        tx.put_job(JobRow("other-half", "k", "{}", 1.0))
    with pg.read() as tx:
        assert tx.list_jobs() == []


def test_each_thread_has_its_own_connection(pg: StorageBackend, app_url: str, admin: psycopg.Connection[Any]) -> None:
    ready = threading.Barrier(4)

    def use() -> None:
        with pg.read() as tx:
            tx.list_jobs()
        ready.wait(10)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    with pg.read() as tx:
        tx.list_jobs()
    ready.wait(10)
    for thread in threads:
        thread.join()
    assert len(_sessions(admin, app_url)) == 4
    pg.close()
    deadline = time.monotonic() + 10
    while _sessions(admin, app_url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sessions(admin, app_url) == []  # close() closed every thread's connection


def test_an_error_caught_inside_a_transaction_is_not_silently_committed(pg: StorageBackend) -> None:
    # PostgreSQL aborts the transaction at the failed statement; the commit must say so.
    with pytest.raises(StorageError, match="aborted"), pg.transaction() as tx:
        tx.put_job(JobRow("written-first", "k", "{}", 1.0))
        with pytest.raises(StorageError, match="out of range"):
            tx.add_access(1, [(NS, "s", 2**64, 1.0)])  # bigint out of range, on the server
    with pg.read() as tx:
        assert tx.list_jobs() == []
    with pg.transaction() as tx:
        tx.put_job(JobRow("later", "k", "{}", 1.0))
    with pg.read() as tx:
        assert [j.job_id for j in tx.list_jobs()] == ["later"]


def test_a_server_error_is_storage_error(pg: StorageBackend, postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    admin.execute(f'DROP TABLE "{_schema_of(postgres_url)}".kmsbox_jobs')
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
    pg: StorageBackend, error: type[Exception], mapped: type[Exception]
) -> None:
    assert isinstance(pg, SqlBackend)
    result = pg.engine.error(error("boom"))
    assert type(result) is mapped
    assert pg.engine.error(ValueError("not a driver error")) is None


def test_a_real_deadlock_is_conflict(pg: StorageBackend) -> None:
    state = TestPostgresBackend._namespace(pg, NS)
    with pg.transaction() as tx:
        for name in ("a", "b"):
            assert tx.create_secret(secret_row(NS, name), stored_version(NS, name, 1), keys_seal=state.seal)
    both_held = threading.Barrier(2)
    outcomes: list[str] = []

    def hold(first: str, second: str) -> None:
        try:
            with pg.transaction() as tx:
                tx.get_secret(NS, first)
                both_held.wait(10)
                tx.get_secret(NS, second)  # against the lock order: one of the two must lose
            outcomes.append("committed")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=hold, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["committed", "conflict"]


def test_a_value_the_driver_cannot_read_is_malformed_row(
    pg: StorageBackend, postgres_server_url: str, postgres_url: str
) -> None:
    # PostgreSQL's types keep out most bad values; a label that is not JSON still gets in.
    state = TestPostgresBackend._namespace(pg, NS)
    with pg.transaction() as tx:
        assert tx.create_secret(secret_row(NS, "s"), stored_version(NS, "s", 1), keys_seal=state.seal)
    _raw(postgres_server_url, _schema_of(postgres_url), "UPDATE kmsbox_secrets SET labels = ?", ('{"a": 1}',))
    with pg.read() as tx, pytest.raises(MalformedRow):
        tx.get_secret(NS, "s")


def _use_in_child(backend: StorageBackend, results: Any) -> None:
    try:
        with backend.transaction() as tx:
            tx.put_job(JobRow("from-child", "k", "{}", 1.0))
        results.put(("ok", None))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_a_forked_child_opens_its_own_connection(
    pg: StorageBackend, app_url: str, admin: psycopg.Connection[Any]
) -> None:
    with pg.read() as tx:
        tx.list_jobs()
    (parent,) = _sessions(admin, app_url)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_use_in_child, args=(pg, results))
    child.start()
    assert results.get(timeout=30) == ("ok", None)
    child.join(30)
    assert child.exitcode == 0
    # The parent's session survived the child (which neither used nor closed it).
    assert parent in _sessions(admin, app_url)
    with pg.read() as tx:
        assert tx.get_job("from-child") is not None
    assert parent in _sessions(admin, app_url)


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
                    with backend.read() as tx:
                        row = tx.get_secret(NS, "counter")
                    assert row is not None
                    expected = row.row_version
                    row.version += 1
                    row.row_version += 1
                    with backend.transaction() as tx:
                        tx.update_secret(row, expected, stored_version(NS, "counter", row.version))
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
    outcomes = [results.get(timeout=120) for _ in processes]
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
        state = TestPostgresBackend._namespace(backend, NS)
        with backend.transaction() as tx:
            assert tx.create_secret(secret_row(NS, "counter"), stored_version(NS, "counter", 1), keys_seal=state.seal)
        per_process = 15
        _run_processes(_increment_and_report, lambda start, results: (postgres_url, start, per_process, results), 4)
        with backend.read() as tx:
            row = tx.get_secret(NS, "counter")
            versions = tx.list_versions(NS, "counter")
        total = 1 + 4 * per_process
        assert row is not None
        assert (row.version, row.row_version) == (total, total)
        assert [v.version for v in versions] == list(range(1, total + 1))
    finally:
        backend.close()


# --- stores of earlier releases --------------------------------------------------------------------

LEGACY = Path(__file__).parent / "legacy" / "stores.json"


def _load_legacy_store(server_url: str, schema: str, tables: dict[str, Any], schema_version: int) -> None:
    """Create ``schema`` as release ``schema_version``'s migrations left it and fill it with
    the rows that release wrote (legacy/generate.py)."""
    with psycopg.connect(server_url, autocommit=True) as conn, conn.transaction():
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        conn.execute("CREATE TABLE kmsbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for migration in MIGRATIONS[:schema_version]:
            for item in migration:
                if isinstance(item, tuple):
                    only, item = item
                    if only != POSTGRES_DIALECT.name:
                        continue
                conn.execute(POSTGRES_DIALECT.ddl(item))
        for table, content in tables.items():
            columns = content["columns"]
            rows = [
                tuple(bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for v in row) for row in content["rows"]
            ]
            if rows:
                placeholders = ", ".join(["%s"] * len(columns))
                conn.cursor().executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING", rows
                )


@pytest.mark.parametrize("schema_version", [1, 2])
def test_a_store_of_an_earlier_release_upgrades_on_open_with_everything_kept(
    schema_version: int, postgres_server_url: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = json.loads(LEGACY.read_text(encoding="utf-8"))
    _load_legacy_store(
        postgres_server_url, _schema_of(postgres_url), legacy[f"schema-{schema_version}"], schema_version
    )
    monkeypatch.setenv("KMSBOX_LEGACY_KEK", hashlib.sha256(legacy["kek_label"].encode()).hexdigest())
    with kmsbox.open_store(postgres_url, kek="env://KMSBOX_LEGACY_KEK") as store:
        assert store.backend.schema_version() == SCHEMA_VERSION
        for key, value in legacy["values"].items():
            ns, name, version = key.split("/")
            if (ns, name) == ("app", "s05"):
                with pytest.raises(SecretDisabled):
                    store.get(name, namespace=ns, version=int(version))
                continue
            assert store.get(name, namespace=ns, version=int(version)).value == value
        assert [v.version for v in store.history("s02", namespace="app")] == [1, 2, 3]
        assert store.info("s05", namespace="app").status == "disabled"
        assert store.info("s01", namespace="app").labels == {"n": "1"}
        assert store.info("s01", namespace="app").category == "test"
        assert store.info("s01", namespace="app").access_count >= 3
        # The rotation and rewrap the old release did are still there.
        keys = store.status("app")["namespaces"]["app"]["keys"]
        assert [(k["version"], k["status"]) for k in keys] == [(1, "retired"), (2, "active")]
        report = store.verify_audit()
        assert report.ok, report.problems
        assert report.events_checked >= len(legacy[f"schema-{schema_version}"]["kmsbox_audit_events"]["rows"])
        # And it keeps working: versions go on from where the old release left them.
        assert store.put("s01", "newest", namespace="app").version == 3
        assert store.get("s01", namespace="app").value == "newest"
        assert store.get("s01", namespace="app", version=2).value == legacy["values"]["app/s01/2"]
        report = store.verify_audit()
        assert report.ok, report.problems
    # A second open finds nothing left to migrate.
    with kmsbox.open_store(postgres_url, kek="env://KMSBOX_LEGACY_KEK") as store:
        assert store.get("s01", namespace="app").value == "newest"
        assert store.verify_audit().ok


def test_an_event_of_an_earlier_release_altered_in_the_database_is_found_after_the_upgrade(
    postgres_server_url: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = json.loads(LEGACY.read_text(encoding="utf-8"))
    schema = _schema_of(postgres_url)
    _load_legacy_store(postgres_server_url, schema, legacy["schema-2"], 2)
    _raw(postgres_server_url, schema, "UPDATE kmsbox_audit_events SET actor = ? WHERE seq = 3", ("mallory",))
    monkeypatch.setenv("KMSBOX_LEGACY_KEK", hashlib.sha256(legacy["kek_label"].encode()).hexdigest())
    with kmsbox.open_store(postgres_url, kek="env://KMSBOX_LEGACY_KEK") as store:
        report = store.verify_audit()
    assert not report.ok
    assert any("event 3" in problem for problem in report.problems), report.problems


# --- lock order ----------------------------------------------------------------------------------


def test_writers_following_the_lock_order_never_deadlock(postgres_url: str) -> None:
    """Puts, rewraps, key changes, read-count flushes and audit appends at once, each
    taking its holds in the protocol's order: a race may be lost, but nothing deadlocks."""
    backends = [open_storage(postgres_url) for _ in range(2)]
    names = [f"s{i}" for i in range(6)]
    state = TestPostgresBackend._namespace(backends[0], NS)
    with backends[0].transaction() as tx:
        for name in names:
            assert tx.create_secret(secret_row(NS, name), stored_version(NS, name, 1), keys_seal=state.seal)
    deadline = time.monotonic() + 4
    conflicts: list[str] = []
    done: list[str] = []

    def attempt(body: Callable[[], None]) -> None:
        try:
            body()
            done.append(body.__name__)
        except ConflictError as exc:
            cause = exc.__cause__
            conflicts.append(getattr(cause, "sqlstate", None) or "?")

    def put(backend: StorageBackend, i: int) -> None:
        def put_a_version() -> None:
            with backend.transaction() as tx:
                assert tx.namespace_state(NS) is not None
                row = tx.get_secret(NS, names[i % len(names)])
                assert row is not None
                expected, row.version, row.row_version = row.row_version, row.version + 1, row.row_version + 1
                tx.update_secret(row, expected, stored_version(NS, row.name, row.version, 2))
                tx.append_audit(i % 2, Sealer({"name": row.name, "row_version": row.row_version, "state": b"s"}))

        attempt(put_a_version)

    def rewrap(backend: StorageBackend) -> None:
        def rewrap_a_batch() -> None:
            with backend.transaction() as tx:
                for v in tx.versions(NS, None, 4, key_version=2):
                    tx.replace_envelope(NS, v.name, v.version, stored_version(NS, v.name, v.version, 3).blob, 2)
                tx.append_audit(1, Sealer({"action": "rewrap"}))

        attempt(rewrap_a_batch)

    def change_keys(backend: StorageBackend, generation: int) -> None:
        def change_the_key_state() -> None:
            with backend.transaction() as tx:
                held = tx.namespace_state(NS, change=True)
                assert held is not None
                tx.save_namespace_keys(namespace_state(NS, generation), [key_row(NS, 1)], [])
                tx.append_audit(0, Sealer({"name": None, "action": "rotate"}))

        attempt(change_the_key_state)

    def flush_reads(backend: StorageBackend, counter: int) -> None:
        def add_reads() -> None:
            with backend.transaction() as tx:
                tx.add_access(counter, [(NS, name, 1, time.time()) for name in names])

        attempt(add_reads)

    def worker(i: int) -> None:
        backend = backends[i % 2]
        n = 0
        while time.monotonic() < deadline:
            n += 1
            if i == 0:
                rewrap(backend)
            elif i == 1:
                change_keys(backend, n + 1)
            elif i == 2:
                flush_reads(backend, 7)
            else:
                put(backend, i + n)

    try:
        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(worker, i) for i in range(6)]:
                future.result()
    finally:
        for backend in backends:
            backend.close()
    assert "40P01" not in conflicts, f"{conflicts.count('40P01')} deadlocks"
    assert {"put_a_version", "rewrap_a_batch", "change_the_key_state", "add_reads"} <= set(done)
