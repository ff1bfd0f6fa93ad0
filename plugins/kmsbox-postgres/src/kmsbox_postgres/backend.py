"""``postgresql://`` storage: kmsbox's public SQL base over psycopg 3.

:class:`PostgresEngine` is an :class:`~kmsbox.storage.sql.SqlEngine`, built only on
kmsbox's public API, as another SQL engine's plugin would be; :func:`open_postgres`
gives the :class:`~kmsbox.storage.sql.SqlBackend` over it. One connection per thread
(and per process); every transaction is an explicit ``BEGIN ISOLATION LEVEL READ
COMMITTED``. Under read committed the store's statements stay correct because writers
meet on row locks: the protocol's holds are ``FOR SHARE`` / ``FOR UPDATE`` on the
namespace's key-state row and ``FOR UPDATE`` on a secret's row, compare-and-set
statements re-check their ``WHERE`` on the newest row after a concurrent writer commits,
and inserts meet on primary keys. Unique violations, serialization failures and
deadlocks are ConflictErrors, which the store retries. Migrations are serialised
across processes with a transaction-level advisory lock.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from kmsbox.errors import ConfigError, ConflictError, KmsboxError, StorageError
from kmsbox.storage.sql import SqlBackend, SqlDialect, Statement

__all__ = ["POSTGRES_DIALECT", "PostgresEngine", "open_postgres"]

SCHEMES = ("postgresql", "postgres")

#: Seconds to wait for a connection when the URL does not say.
DEFAULT_CONNECT_TIMEOUT = 10

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# SQLSTATEs that mean the session is gone: class 08 (connection exception) and
# 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now).
_CONNECTION_LOST_STATES = ("57P01", "57P02", "57P03")
# Lost races: unique violation, serialization failure, deadlock (also CockroachDB's
# and YugabyteDB's retry errors, which use 40001).
_CONFLICT_STATES = ("23505", "40001", "40P01")

_NAMESPACE_LOCK_KEY = "hashtextextended('kmsbox:namespace:' || current_schema() || ':' || ?, 0)"

POSTGRES_DIALECT = SqlDialect(
    name="postgres",
    placeholder="%s",
    blob="BYTEA",
    real="DOUBLE PRECISION",
    bigint="BIGINT",
    hold_shared=" FOR SHARE",
    hold_exclusive=" FOR UPDATE",
    greatest="GREATEST",
    # FOR SHARE lets new shared holders overtake a waiting FOR UPDATE without end: an
    # advisory lock (whose queue is fair), taken in the same statement before the row,
    # makes a rotation wait only for the puts already under way. One 64-bit key per
    # schema and namespace (a collision only makes two namespaces queue together).
    namespace_queue_shared=f"SELECT pg_advisory_xact_lock_shared({_NAMESPACE_LOCK_KEY})",
    namespace_queue_exclusive=f"SELECT pg_advisory_xact_lock({_NAMESPACE_LOCK_KEY})",
)


def _lock_key(schema: str | None) -> int:
    """A stable signed 64-bit advisory-lock key for migrating one schema."""
    digest = hashlib.blake2b(f"kmsbox:migrate:{schema or ''}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresEngine:
    """PostgreSQL for :class:`~kmsbox.storage.sql.SqlBackend`.

    ``conninfo`` is the libpq URL without kmsbox's own parameters; ``schema`` (optional)
    is where kmsbox's tables live (created on first open). The password, if the URL has
    one, appears in no ``describe()``, ``repr`` or error message.
    """

    dialect = POSTGRES_DIALECT
    autocommit_reads = False

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
        self._connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT

    def __repr__(self) -> str:
        return f"PostgresEngine({self.describe()!r})"

    # --- connections and transactions ---------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        """A session with ``search_path`` set to the store's schema."""
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

    def begin(self, conn: Any, write: bool) -> None:
        """``BEGIN ISOLATION LEVEL READ COMMITTED`` (after rolling back anything left over)."""
        if conn.info.transaction_status != TransactionStatus.IDLE:
            # Left over from a failed rollback: never continue someone else's transaction.
            conn.execute("ROLLBACK")
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def commit(self, conn: Any) -> None:
        """Commit, refusing to let PostgreSQL turn it into a silent rollback."""
        if conn.info.transaction_status == TransactionStatus.INERROR:
            conn.execute("ROLLBACK")
            raise StorageError(
                f"PostgreSQL at {self._location}: the transaction was aborted by an earlier error "
                "(caught inside the transaction) and has been rolled back"
            )
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        """Roll back whatever is open."""
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")

    # --- the same, for asyncio (psycopg's AsyncConnection) -------------------------------------

    async def connect_async(self) -> psycopg.AsyncConnection[Any]:
        """An async session with ``search_path`` set to the store's schema."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise StorageError(self._scrub(f"cannot connect to PostgreSQL at {self._location}: {_reason(exc)}")) from (
                None if self._leaks(exc) else exc
            )
        if self.schema is not None:
            try:
                await conn.execute(f'SET search_path TO "{self.schema}"')
            except psycopg.Error as exc:
                await conn.close()
                raise StorageError(self._scrub(f"PostgreSQL at {self._location}: {_reason(exc)}")) from exc
        return conn

    async def begin_async(self, conn: Any, write: bool) -> None:
        """``BEGIN ISOLATION LEVEL READ COMMITTED``."""
        if conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.execute("ROLLBACK")
        await conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    async def commit_async(self, conn: Any) -> None:
        """Commit, refusing to let PostgreSQL turn it into a silent rollback."""
        if conn.info.transaction_status == TransactionStatus.INERROR:
            await conn.execute("ROLLBACK")
            raise StorageError(
                f"PostgreSQL at {self._location}: the transaction was aborted by an earlier error "
                "(caught inside the transaction) and has been rolled back"
            )
        await conn.execute("COMMIT")

    async def rollback_async(self, conn: Any) -> None:
        """Roll back whatever is open."""
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.execute("ROLLBACK")

    def usable(self, conn: Any) -> bool:
        """False once the session was lost (server restart, terminated backend, network)."""
        return not conn.closed and conn.info.transaction_status != TransactionStatus.UNKNOWN

    def prepare_migration(self, statement: Statement) -> None:
        """Serialise migrations of this schema across processes; create the schema if missing."""
        statement("SELECT pg_advisory_xact_lock(?)", (_lock_key(self.schema),))
        if self.schema is not None:
            exists = statement("SELECT 1 FROM pg_namespace WHERE nspname = ?", (self.schema,)).fetchone()
            if exists is None:
                statement(f'CREATE SCHEMA "{self.schema}"', ())

    def refuse_foreign_database(self, statement: Statement) -> None:
        """A PostgreSQL database is shared by many applications: kmsbox's tables (all
        named ``kmsbox_*``, or in their own schema) live beside theirs."""

    # --- errors --------------------------------------------------------------------------

    def error(self, exc: BaseException) -> KmsboxError | None:
        """psycopg's exceptions as kmsbox's (lost races as ConflictError)."""
        if not isinstance(exc, psycopg.Error):
            return None
        sqlstate = exc.sqlstate
        if sqlstate in _CONFLICT_STATES:
            return ConflictError(f"a concurrent transaction on PostgreSQL at {self._location} won: retry")
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


def open_postgres(url: str, *, create: bool = True) -> SqlBackend:
    """Open ``postgresql://user@host:port/dbname?schema=NAME&...`` (or ``postgres://``).

    ``schema`` is kmsbox's own parameter; the rest goes to libpq unchanged.
    Raises ConfigError for a malformed URL, a bad schema name, an unreachable
    server, a schema newer than this code, or (``create`` False) a database or schema
    without a kmsbox store.
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
    return SqlBackend(_redact_url(url), PostgresEngine(url, conninfo, schema=schema), create=create)
