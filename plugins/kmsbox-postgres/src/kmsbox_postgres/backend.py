"""``postgresql://`` storage: kmsbox's shared SQL over psycopg 3.

One connection per thread (autocommit off at the protocol level: every
transaction is an explicit ``BEGIN ISOLATION LEVEL READ COMMITTED``). Under read
committed, every statement sequence of :class:`~kmsbox.storage.sql.SqlTransaction`
stays correct because writers meet on row locks: ``update_secret`` is a
compare-and-set whose ``WHERE row_version = ?`` is re-checked on the newest row
after a concurrent writer commits, inserts meet on primary keys, and
``audit_head`` takes ``FOR UPDATE`` on the chain head so events get contiguous
sequence numbers. Migrations are serialised across processes with a
transaction-level advisory lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from kmsbox.errors import ConfigError, ConflictError, KmsboxError, StorageError
from kmsbox.storage.sql import Dialect, SqlBackend, SqlTransaction

__all__ = ["POSTGRES_DIALECT", "PostgresBackend", "open_postgres"]

SCHEMES = ("postgresql", "postgres")

#: Seconds to wait for a connection when the URL does not say.
DEFAULT_CONNECT_TIMEOUT = 10

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# SQLSTATEs that mean the session is gone: class 08 (connection exception) and
# 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now).
_CONNECTION_LOST_STATES = ("57P01", "57P02", "57P03")


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.UniqueViolation)


POSTGRES_DIALECT = Dialect(
    name="postgres",
    placeholder="%s",
    blob="BYTEA",
    real="DOUBLE PRECISION",
    bigint="BIGINT",
    empty_blob="'\\x'::bytea",
    for_update=" FOR UPDATE",
    for_share=" FOR SHARE",
    is_conflict=_is_conflict,
)


def _lock_key(schema: str | None) -> int:
    """A stable signed 64-bit advisory-lock key for migrating one schema."""
    digest = hashlib.blake2b(f"kmsbox:migrate:{schema or ''}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresBackend(SqlBackend):
    """PostgreSQL storage.

    ``conninfo`` is the libpq URL without kmsbox's own parameters; ``schema``
    (optional) is where kmsbox's tables live (created on first open). The
    password, if the URL has one, appears in no ``describe()``, ``repr``,
    ``url`` or error message.

    Raises ConfigError at open when the URL is unusable, the server cannot be
    reached or its schema is newer than this code. Later, a lost connection or
    a server error is a StorageError (the next transaction reconnects), and a
    lost race (unique violation, serialization failure, deadlock) is a
    ConflictError that the caller retries.
    """

    dialect = POSTGRES_DIALECT

    def __init__(self, url: str, conninfo: str, *, schema: str | None = None) -> None:
        self._password = _url_password(url)
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigError(
                self._scrub(f"storage URL {_redact_url(url)!r} is not a valid PostgreSQL URL: {_reason(exc)}")
            ) from None
        self._conninfo = conninfo
        self._password = str(params.get("password") or self._password)
        self.schema = schema
        host = str(params.get("host") or "localhost")
        port = str(params.get("port") or "5432")
        self._location = f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"
        self._user = str(params.get("user") or "")
        self._pid = os.getpid()
        self._connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        try:
            super().__init__(_redact_url(url))
        except BaseException:
            self.close()
            raise

    # --- connections ---------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise StorageError(self._scrub(f"cannot connect to PostgreSQL at {self._location}: {_reason(exc)}")) from (
                None if self._leaks(exc) else exc
            )
        if self.schema is not None:
            try:
                # Session-level, so it holds for every transaction on this connection.
                conn.execute(f'SET search_path TO "{self.schema}"')
            except psycopg.Error as exc:
                conn.close()
                raise StorageError(self._scrub(f"PostgreSQL at {self._location}: {_reason(exc)}")) from exc
        return conn

    def _connection(self) -> Any:
        if self._pid != os.getpid():
            # A forked child must not use (or close) its parent's sessions: start afresh.
            self._pid = os.getpid()
            self._local = threading.local()
            with self._conn_lock:
                self._all_connections = []
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.closed:
            # The session was lost (server restart, pg_terminate_backend, network):
            # forget it so that this transaction opens a new one.
            self._local.conn = None
            with self._conn_lock:
                if conn in self._all_connections:
                    self._all_connections.remove(conn)
        return super()._connection()

    def _begin(self, conn: Any, write: bool) -> None:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            # Left over from a failed rollback: never continue someone else's transaction.
            conn.execute("ROLLBACK")
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def _commit(self, conn: Any) -> None:
        if conn.info.transaction_status == TransactionStatus.INERROR:
            # PostgreSQL would turn this COMMIT into a silent ROLLBACK: say so instead.
            conn.execute("ROLLBACK")
            raise StorageError(
                f"PostgreSQL at {self._location}: the transaction was aborted by an earlier error "
                "(caught inside the transaction) and has been rolled back"
            )
        conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")

    def _lock_for_migration(self, tx: SqlTransaction) -> None:
        """Serialise migrations of this schema across processes; create the schema if missing."""
        tx._q("SELECT pg_advisory_xact_lock(?)", (_lock_key(self.schema),))
        if self.schema is not None:
            exists = tx._q("SELECT 1 FROM pg_namespace WHERE nspname = ?", (self.schema,)).fetchone()
            if exists is None:
                tx._q(f'CREATE SCHEMA "{self.schema}"')

    def _migrate(self) -> None:
        try:
            super()._migrate()
        except (StorageError, ConflictError) as exc:
            raise ConfigError(f"PostgreSQL store {self._describe_location()} cannot be opened: {exc}") from exc

    # --- errors --------------------------------------------------------------------------

    def _storage_error(self, exc: BaseException) -> KmsboxError | None:
        if _is_conflict(exc):
            return ConflictError("row already exists (a concurrent writer got there first)")
        if isinstance(exc, (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)):
            return ConflictError(f"a concurrent transaction on PostgreSQL at {self._location} won: retry")
        if not isinstance(exc, psycopg.Error):
            return None
        sqlstate = exc.sqlstate
        if isinstance(exc, psycopg.OperationalError) and (
            sqlstate is None or sqlstate.startswith("08") or sqlstate in _CONNECTION_LOST_STATES
        ):
            return StorageError(
                self._scrub(f"lost the connection to PostgreSQL at {self._location} ({_reason(exc)}); retry")
            )
        return StorageError(self._scrub(f"PostgreSQL error at {self._location} [{sqlstate or '?'}]: {_reason(exc)}"))

    def _leaks(self, exc: BaseException) -> bool:
        return bool(self._password) and self._password in str(exc)

    def _scrub(self, message: str) -> str:
        return message.replace(self._password, "***") if self._password else message

    # --- description ---------------------------------------------------------------------

    def _describe_location(self) -> str:
        location = f"{self._user}@{self._location}" if self._user else self._location
        return f"{location}?schema={self.schema}" if self.schema else location

    def describe(self) -> dict[str, str]:
        """Kind, ``user@host:port/dbname`` and schema; never the password."""
        out = {"backend": "postgres", "location": self._describe_location()}
        if self.schema:
            out["schema"] = self.schema
        return out


def _reason(exc: BaseException) -> str:
    """The server's primary message, or the client's, on one line."""
    primary = None
    if isinstance(exc, psycopg.Error):
        primary = exc.diag.message_primary
    text = primary or str(exc) or type(exc).__name__
    return " ".join(text.split())


def _url_password(url: str) -> str:
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


def _redact_url(url: str) -> str:
    """``url`` with any password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
        query = "&".join(
            "password=***" if item.partition("=")[0] == "password" else item for item in parts.query.split("&")
        )
        return urlunsplit(parts._replace(query=query))
    except ValueError:
        return url.split("://", 1)[0] + "://***"


def open_postgres(url: str) -> PostgresBackend:
    """Open ``postgresql://user@host:port/dbname?schema=NAME&...`` (or ``postgres://``).

    ``schema`` is kmsbox's own parameter; the rest goes to libpq unchanged.
    Raises ConfigError for a malformed URL, a bad schema name, an unreachable
    server or a schema newer than this code.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"storage URL {_redact_url(url)!r} is not a valid PostgreSQL URL") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"storage URL {_redact_url(url)!r}: use postgresql://user@host:port/dbname")
    # Split the raw query so that libpq gets the other parameters exactly as written.
    items = [item for item in parts.query.split("&") if item]
    schemas = [unquote(item.partition("=")[2]) for item in items if item.partition("=")[0] == "schema"]
    if len(schemas) > 1:
        raise ConfigError(f"storage URL {_redact_url(url)!r}: give schema= once")
    schema = schemas[0] if schemas else None
    if schema is not None and (not _SCHEMA_RE.match(schema) or schema.lower().startswith("pg_")):
        raise ConfigError(
            f"storage URL {_redact_url(url)!r}: schema must be 1-63 letters, digits or '_', "
            "not starting with a digit or 'pg_'"
        )
    rest = "&".join(item for item in items if item.partition("=")[0] != "schema")
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=rest))
    return PostgresBackend(url, conninfo, schema=schema)
