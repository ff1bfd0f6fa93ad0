"""A storage backend over any SQL engine: a public base for backend plugins.

An engine plugin (SQLite here, PostgreSQL in ``kmsbox-postgres``, or a third party's)
implements :class:`SqlEngine` (connect, begin/commit/rollback, classify the driver's
errors, describe itself) and passes it to :class:`SqlBackend`, which does the rest: one
connection per thread, transactions, the shared migrations and every statement of
:mod:`kmsbox.storage.sql.statements`. No private name needs overriding::

    from kmsbox.storage.sql import SqlBackend, SqlDialect

    class MyEngine:
        dialect = SqlDialect(name="mydb", placeholder="%s", blob="BYTEA", ...)
        autocommit_reads = False
        def connect(self): ...
        ...

    def open_mydb(url: str) -> SqlBackend:
        return SqlBackend(url, MyEngine(url))
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from kmsbox._process import current_pid
from kmsbox.errors import ConfigError, ConflictError, KmsboxError, StorageError
from kmsbox.storage.base import (
    AuditFilter,
    AuditPosition,
    AuditRow,
    ChainHead,
    JobRow,
    NamespaceKeyRow,
    NamespaceState,
    SealEvents,
    SecretFilter,
    SecretRow,
    StateEvent,
    StoredVersion,
)
from kmsbox.storage.sql.dialect import ALL, COUNT, ONE, Execute, SqlDialect
from kmsbox.storage.sql.schema import MIGRATIONS, SCHEMA_VERSION, TABLES
from kmsbox.storage.sql.statements import SqlStatements

__all__ = ["SqlBackend", "SqlEngine", "SqlTransaction", "Statement", "WouldBlock"]

T = TypeVar("T")

#: ``statement(sql, params)``: run one statement (``?`` placeholders) during a migration
#: and return the cursor.
Statement = Callable[[str, Sequence[Any]], Any]


class SqlEngine(Protocol):
    """What an SQL engine's plugin gives :class:`SqlBackend`.

    Errors: ``error(exc)`` maps the driver's exceptions to kmsbox's, and must map every
    lost race (unique violation, serialization failure, deadlock) to
    :class:`~kmsbox.errors.ConflictError`, a value the driver cannot read at all to
    :class:`~kmsbox.storage.base.MalformedRow`, and anything else from the driver to
    :class:`~kmsbox.errors.StorageError`; None for an exception that is not the driver's.
    """

    dialect: SqlDialect
    #: Reads run statement by statement without BEGIN/COMMIT (each sees committed data).
    autocommit_reads: bool

    def connect(self) -> Any:
        """A new DB-API connection (StorageError or ConfigError when it cannot be had)."""
        ...

    def begin(self, conn: Any, write: bool) -> None:
        """Start a transaction (taking the engine's write lock for writes where it has one)."""
        ...

    def commit(self, conn: Any) -> None:
        """Commit; raise StorageError if the engine already rolled the transaction back."""
        ...

    def rollback(self, conn: Any) -> None:
        """Roll back whatever is open (nothing when nothing is)."""
        ...

    def usable(self, conn: Any) -> bool:
        """False when the connection is gone (then a new one is opened)."""
        ...

    def error(self, exc: BaseException) -> KmsboxError | None:
        """The kmsbox error for a driver exception (None if it is not the driver's)."""
        ...

    def prepare_migration(self, statement: Statement) -> None:
        """Before migrating: serialise concurrent migrations (SQLite's write lock already
        does) and create the schema where the engine has one."""
        ...

    def refuse_foreign_database(self, statement: Statement) -> None:
        """Before creating a new store: refuse a database that already holds another
        application's tables, where the engine's database is one application's (ConfigError)."""
        ...

    def describe(self) -> dict[str, str]:
        """Kind and location, never a password."""
        ...


class WouldBlock(Exception):
    """A no-wait transaction could not start (or go on) without waiting for a lock."""


class SqlTransaction:
    """The storage protocol's operations inside one transaction, on one cursor: each
    runs its statements (:class:`SqlStatements`) and returns what they return."""

    __slots__ = ("_absent", "_conn", "_cur", "_engine", "_s", "writing")

    def __init__(self, conn: Any, statements: SqlStatements, engine: SqlEngine) -> None:
        self._conn = conn
        self._cur = conn.cursor()
        self._s = statements
        self._engine = engine
        self.writing = False
        # Namespaces this write transaction found missing: saving one creates it, and a
        # row another writer committed meanwhile must fail the insert, not be overwritten.
        self._absent: set[str] = set()

    def start(self, write: bool) -> None:
        """Reset for a new transaction on the same connection."""
        self.writing = write
        self._absent.clear()

    def _run(self, gen: Generator[Execute, Any, T]) -> T:
        try:
            request = next(gen)
            while True:
                try:
                    result = self._execute(request)
                except KmsboxError as exc:
                    request = gen.throw(exc)
                else:
                    request = gen.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value

    def _execute(self, request: Execute) -> Any:
        cur = self._cur
        try:
            if request.many:
                cur.executemany(request.sql, request.params)
            else:
                cur.execute(request.sql, request.params)
            fetch = request.fetch
            if fetch is ONE:
                return cur.fetchone()
            if fetch is ALL:
                return cur.fetchall()
            if fetch is COUNT:
                return cur.rowcount
            return None
        except KmsboxError:
            raise
        except Exception as exc:
            mapped = self._engine.error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    # --- the protocol ------------------------------------------------------------------------

    def namespace_state(self, namespace: str, *, change: bool = False) -> NamespaceState | None:
        """See :meth:`kmsbox.storage.base.Transaction.namespace_state`."""
        d = self._s.dialect
        if not self.writing:
            return self._run(self._noting_absence(namespace, "", ""))
        if change:
            return self._run(self._noting_absence(namespace, d.hold_exclusive, d.namespace_queue_exclusive))
        return self._run(self._noting_absence(namespace, d.hold_shared, d.namespace_queue_shared))

    def _noting_absence(self, namespace: str, hold: str, queue: str) -> Generator[Execute, Any, NamespaceState | None]:
        # Part of the statements' generator, so the sync and async drivers both keep it.
        state = yield from self._s.namespace_state(namespace, hold, queue)
        if state is None and self.writing:
            self._absent.add(namespace)
        else:
            self._absent.discard(namespace)
        return state

    def namespace_keys(self, namespace: str) -> list[NamespaceKeyRow]:
        """See the protocol."""
        return self._run(self._s.namespace_keys(namespace))

    def save_namespace_keys(self, state: NamespaceState, upsert: list[NamespaceKeyRow], delete: list[int]) -> None:
        """See the protocol."""
        return self._run(self._saving(state, upsert, delete))

    def _saving(
        self, state: NamespaceState, upsert: list[NamespaceKeyRow], delete: list[int]
    ) -> Generator[Execute, Any, None]:
        create = state.namespace in self._absent
        yield from self._s.save_namespace_keys(state, upsert, delete, create=create)
        self._absent.discard(state.namespace)

    def namespaces(self, after: str | None, limit: int) -> list[str]:
        """See the protocol."""
        return self._run(self._s.namespaces(after, limit))

    def get_secret(self, namespace: str, name: str) -> SecretRow | None:
        """See the protocol."""
        return self._run(self._s.get_secret(namespace, name, self.writing))

    def read_secret(
        self, namespace: str, name: str, version: int | None
    ) -> tuple[SecretRow, StoredVersion | None] | None:
        """See the protocol."""
        return self._run(self._s.read_secret(namespace, name, version))

    def create_secret(self, row: SecretRow, current: StoredVersion, *, keys_seal: bytes) -> bool:
        """See the protocol."""
        return self._run(self._s.create_secret(row, current, keys_seal))

    def update_secret(self, row: SecretRow, expected_row_version: int, current: StoredVersion | None) -> None:
        """See the protocol."""
        return self._run(self._s.update_secret(row, expected_row_version, current))

    def delete_secret(self, namespace: str, name: str) -> int:
        """See the protocol."""
        return self._run(self._s.delete_secret(namespace, name))

    def delete_version(self, namespace: str, name: str, version: int) -> bool:
        """See the protocol."""
        return self._run(self._s.delete_version(namespace, name, version))

    def list_versions(self, namespace: str, name: str) -> list[StoredVersion]:
        """See the protocol."""
        return self._run(self._s.list_versions(namespace, name))

    def list_secrets(
        self, namespace: str | None, filters: SecretFilter, after: tuple[str, str] | None, limit: int
    ) -> list[SecretRow]:
        """See the protocol."""
        return self._run(self._s.list_secrets(namespace, filters, after, limit))

    def expired_secrets(
        self, before: float, limit: int, *, after: tuple[float, str, str] | None = None
    ) -> list[SecretRow]:
        """See the protocol."""
        return self._run(self._s.expired_secrets(before, limit, after))

    def versions(
        self, namespace: str, after: tuple[Any, Any] | None, limit: int, *, key_version: int | None = None
    ) -> list[StoredVersion]:
        """See the protocol."""
        return self._run(self._s.versions(namespace, after, limit, key_version))

    def replace_envelope(self, namespace: str, name: str, version: int, blob: bytes, expected_key_version: int) -> bool:
        """See the protocol."""
        return self._run(self._s.replace_envelope(namespace, name, version, blob, expected_key_version))

    def versions_per_key(self, namespace: str) -> dict[int, int]:
        """See the protocol."""
        return self._run(self._s.versions_per_key(namespace))

    def add_access(self, counter: int, counts: list[tuple[str, str, int, float]]) -> None:
        """See the protocol."""
        return self._run(self._s.add_access(counter, counts))

    def fold_access(self, counter: int) -> None:
        """See the protocol."""
        return self._run(self._s.fold_access(counter))

    def append_audit(self, chain: int, seal: SealEvents) -> ChainHead:
        """See the protocol."""
        return self._run(self._s.append_audit(chain, seal))

    def audit_heads(self) -> list[ChainHead]:
        """See the protocol."""
        return self._run(self._s.audit_heads())

    def audit_events(self, filters: AuditFilter, after: AuditPosition | None, limit: int) -> list[AuditRow]:
        """See the protocol."""
        return self._run(self._s.audit_events(filters, after, limit))

    def audit_events_at(self, positions: list[AuditPosition]) -> list[AuditRow]:
        """See the protocol."""
        return self._run(self._s.audit_events_at(positions))

    def last_state(self, namespace: str, name: str | None) -> StateEvent | None:
        """See the protocol."""
        return self._run(self._s.last_state(namespace, name))

    def state_events(self, after: tuple[str, str, int] | None, limit: int) -> list[StateEvent]:
        """See the protocol."""
        return self._run(self._s.state_events(after, limit))

    def get_job(self, job_id: str) -> JobRow | None:
        """See the protocol."""
        return self._run(self._s.get_job(job_id))

    def put_job(self, row: JobRow) -> None:
        """See the protocol."""
        return self._run(self._s.put_job(row))

    def delete_job(self, job_id: str) -> None:
        """See the protocol."""
        return self._run(self._s.delete_job(job_id))

    def list_jobs(self) -> list[JobRow]:
        """See the protocol."""
        return self._run(self._s.list_jobs())


class _TxScope:
    """One transaction on this thread's connection: commit on success, else roll back.

    A plain context manager rather than ``@contextmanager``: it runs on every read.
    """

    __slots__ = ("_backend", "_conn", "_write")

    def __init__(self, backend: SqlBackend, write: bool) -> None:
        self._backend = backend
        self._write = write
        self._conn: Any = None

    def __enter__(self) -> SqlTransaction:
        backend = self._backend
        engine = backend.engine
        local = backend._local
        if getattr(local, "active", False):
            raise RuntimeError("nested kmsbox storage transactions are not supported")
        conn = backend._connection()
        local.active = True
        try:
            if self._write or not engine.autocommit_reads:
                engine.begin(conn, self._write)
            # One transaction object (and cursor) per thread and connection, reused.
            tx: SqlTransaction | None = getattr(local, "tx", None)
            if tx is None or tx._conn is not conn:
                tx = local.tx = SqlTransaction(conn, backend.statements, engine)
        except BaseException as exc:
            local.active = False
            with contextlib.suppress(Exception):
                engine.rollback(conn)
            mapped = engine.error(exc) if isinstance(exc, Exception) and not isinstance(exc, KmsboxError) else None
            if mapped is None:
                raise
            raise mapped from exc
        tx.start(self._write)
        self._conn = conn
        return tx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        backend = self._backend
        engine = backend.engine
        try:
            if exc is None:
                try:
                    if self._write or not engine.autocommit_reads:
                        engine.commit(self._conn)
                    return
                except BaseException as commit_error:
                    exc = commit_error
            backend.statements.forget_heads()
            # The original error matters more than a failed rollback.
            with contextlib.suppress(Exception):
                engine.rollback(self._conn)
            if isinstance(exc, Exception) and not isinstance(exc, KmsboxError):
                mapped = engine.error(exc)
                if mapped is not None:
                    raise mapped from exc
            if exc_type is None:
                raise exc  # the commit failed
        finally:
            backend._local.active = False


class _NowaitScope:
    """A transaction that never waits: on this thread's no-wait connection, it raises
    :class:`WouldBlock` (having changed nothing) where the engine would have waited."""

    __slots__ = ("_backend", "_conn", "_write")

    def __init__(self, backend: SqlBackend, write: bool) -> None:
        self._backend = backend
        self._write = write
        self._conn: Any = None

    def __enter__(self) -> SqlTransaction:
        backend = self._backend
        engine: Any = backend.engine
        local = backend._local
        if getattr(local, "active", False):
            raise RuntimeError("nested kmsbox storage transactions are not supported")
        if backend._closed:
            raise StorageError("storage backend is closed")
        conn = getattr(local, "nowait_conn", None)
        if conn is None:
            conn = local.nowait_conn = engine.connect_nowait()
            with backend._conn_lock:
                backend._all_connections.append(conn)
        if (self._write or not engine.autocommit_reads) and not engine.begin_nowait(conn, self._write):
            raise WouldBlock
        tx: SqlTransaction | None = getattr(local, "nowait_tx", None)
        if tx is None:
            tx = local.nowait_tx = SqlTransaction(conn, backend.statements, engine)
        tx.start(self._write)
        local.active = True
        self._conn = conn
        return tx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        backend = self._backend
        engine: Any = backend.engine
        try:
            if exc is None:
                try:
                    if self._write or not engine.autocommit_reads:
                        engine.commit(self._conn)
                    return
                except BaseException as commit_error:
                    exc = commit_error
            backend.statements.forget_heads()
            with contextlib.suppress(Exception):
                engine.rollback(self._conn)
            cause = exc.__cause__ if isinstance(exc, KmsboxError) else exc
            if cause is not None and engine.is_busy(cause):
                raise WouldBlock from None
            if isinstance(exc, Exception) and not isinstance(exc, KmsboxError):
                mapped = engine.error(exc)
                if mapped is not None:
                    raise mapped from exc
            if exc_type is None:
                raise exc
        finally:
            backend._local.active = False


class SqlBackend:
    """A :class:`~kmsbox.storage.base.StorageBackend` over an :class:`SqlEngine`: one
    connection per thread (and per process: a forked child opens its own), migrated on
    open (with ``create`` False, a database without kmsbox's tables is a ConfigError
    instead of a new store). Nested transactions in one thread are a programming error."""

    def __init__(self, url: str, engine: SqlEngine, *, create: bool = True) -> None:
        self.url = url
        self._create = create
        self.engine = engine
        self.statements = SqlStatements(engine.dialect)
        self._local = threading.local()
        self._all_connections: list[Any] = []
        self._conn_lock = threading.Lock()
        self._pid = current_pid()
        self._closed = False
        try:
            self._migrate()
        except BaseException:
            self.close()  # a store that fails to open must not leave its connection open
            raise

    def __repr__(self) -> str:
        return f"SqlBackend({self.describe()!r})"

    def describe(self) -> dict[str, str]:
        """The engine's description."""
        return self.engine.describe()

    def _connection(self) -> Any:
        if self._closed:
            raise StorageError("storage backend is closed")
        if self._pid != current_pid():
            # A forked child must not use (or close) its parent's sessions: start afresh.
            self._pid = current_pid()
            self._local = threading.local()
            with self._conn_lock:
                self._all_connections = []
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self.engine.usable(conn):
            # The session was lost (server restart, terminated backend, network): open a new one.
            self._local.conn = None
            with self._conn_lock, contextlib.suppress(ValueError):
                self._all_connections.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        if conn is None:
            try:
                conn = self.engine.connect()
            except KmsboxError:
                raise
            except Exception as exc:
                mapped = self.engine.error(exc)
                raise (mapped or StorageError("cannot connect to storage")) from exc
            self._local.conn = conn
            with self._conn_lock:
                self._all_connections.append(conn)
        return conn

    def transaction(self) -> AbstractContextManager[SqlTransaction]:
        """A write transaction (see StorageBackend)."""
        return _TxScope(self, True)

    @property
    def supports_nowait(self) -> bool:
        """Whether :meth:`nowait_transaction` is available (the engine has
        ``connect_nowait``, ``begin_nowait`` and ``is_busy``)."""
        return all(hasattr(self.engine, m) for m in ("connect_nowait", "begin_nowait", "is_busy"))

    def nowait_transaction(self, write: bool) -> AbstractContextManager[SqlTransaction]:
        """A transaction that raises :class:`WouldBlock` instead of waiting for a lock (for
        an event loop's thread, where a wait would stall every task)."""
        return _NowaitScope(self, write)

    def async_backend(self, pool_size: int | None = None) -> Any:
        """An :class:`~kmsbox.storage.sql.aio.AsyncSqlBackend` over the same store, keeping at
        most ``pool_size`` connections (default ``DEFAULT_POOL_SIZE``), when the engine has
        async methods (``connect_async``...); None otherwise."""
        if not hasattr(self.engine, "connect_async"):
            return None
        from kmsbox.storage.sql.aio import DEFAULT_POOL_SIZE, AsyncSqlBackend

        return AsyncSqlBackend(self, pool_size=pool_size or DEFAULT_POOL_SIZE)

    def read(self) -> AbstractContextManager[SqlTransaction]:
        """A read-only transaction."""
        return _TxScope(self, False)

    # --- schema --------------------------------------------------------------------------------

    def _migrate(self) -> None:
        try:
            self._apply_migrations()
        except (StorageError, ConflictError) as exc:
            raise ConfigError(f"store {self.describe().get('location', '')} cannot be opened: {exc}") from exc

    def _apply_migrations(self) -> None:
        with self.transaction() as tx:
            cur = tx._cur
            dialect = self.engine.dialect

            def statement(sql: str, params: Sequence[Any] = ()) -> Any:
                cur.execute(dialect.sql(sql), tuple(params))
                return cur

            self.engine.prepare_migration(statement)
            current = self._recorded_schema(statement, create=True)
            if current == 0:
                if not self._create:
                    raise ConfigError(
                        f"no kmsbox store at {self.describe().get('location', '')}: check the URL, or create one "
                        "(kmsbox init, or any command that writes)"
                    )
                self.engine.refuse_foreign_database(statement)
            if current > SCHEMA_VERSION:
                raise ConfigError(
                    f"storage {self.describe().get('location', '')} has schema version {current}, newer than this "
                    f"kmsbox understands ({SCHEMA_VERSION}): upgrade kmsbox"
                )
            for number in range(current + 1, SCHEMA_VERSION + 1):
                for item in MIGRATIONS[number - 1]:
                    if isinstance(item, tuple):
                        only, item = item
                        if only != dialect.name:
                            continue
                    cur.execute(dialect.ddl(item))
            if current == 0:
                statement("INSERT INTO kmsbox_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif current < SCHEMA_VERSION:
                statement("UPDATE kmsbox_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            self._check_tables(statement)

    def _check_tables(self, statement: Statement) -> None:
        """Fail closed at open, not on first use, when a table was dropped outside kmsbox."""
        for table in TABLES:
            try:
                statement(f"SELECT 1 FROM {table} WHERE 1 = 0", ())
            except Exception as exc:
                if self.engine.error(exc) is None:
                    raise
                raise ConfigError(
                    f"storage {self.describe().get('location', '')} has no table {table} "
                    "(changed outside kmsbox): restore it from a backup"
                ) from None

    def schema_version(self) -> int:
        """The applied schema version."""
        with self.read() as tx:
            cur = tx._cur
            dialect = self.engine.dialect

            def statement(sql: str, params: Sequence[Any] = ()) -> Any:
                cur.execute(dialect.sql(sql), tuple(params))
                return cur

            return self._recorded_schema(statement, create=False)

    def _recorded_schema(self, statement: Statement, *, create: bool) -> int:
        if create:
            statement("CREATE TABLE IF NOT EXISTS kmsbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", ())
        row = statement("SELECT value FROM kmsbox_meta WHERE key = 'schema_version'", ()).fetchone()
        if row is None:
            return 0
        value = row[0]
        # Only what the migrations write: a positive decimal integer.
        if type(value) is not str or not value.isascii() or not value.isdigit() or int(value) < 1:
            raise ConfigError(
                f"storage {self.describe().get('location', '')} records an unreadable schema version: "
                "restore kmsbox_meta from a backup"
            )
        return int(value)

    def close(self) -> None:
        """Close every connection this backend opened."""
        self._closed = True
        with self._conn_lock:
            for conn in self._all_connections:
                with contextlib.suppress(Exception):  # closing is best effort
                    conn.close()
            self._all_connections.clear()
