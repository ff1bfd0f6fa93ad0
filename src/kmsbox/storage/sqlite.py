"""The embedded default backend: one SQLite file (stdlib ``sqlite3``).

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the
SQLAlchemy convention: the path is what follows the third slash). WAL journal,
a busy time-out, ``BEGIN IMMEDIATE`` for writes so that writers queue instead of
failing, and the shared migrations on open. A default plugin.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

from kmsbox.errors import ConfigError, ConflictError, KmsboxError, StorageError
from kmsbox.hookspecs import hookimpl
from kmsbox.storage.base import MalformedRow
from kmsbox.storage.sql import Dialect, SqlBackend


def not_utf8(exc: BaseException) -> bool:
    """Whether sqlite3 failed to read a TEXT value that is not UTF-8 (written through the database)."""
    return isinstance(exc, sqlite3.OperationalError) and "Could not decode to UTF-8" in str(exc)


__all__ = ["SQLITE_DIALECT", "SqliteBackend", "open_sqlite"]


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc).upper()


SQLITE_DIALECT = Dialect(
    name="sqlite",
    without_rowid=" WITHOUT ROWID",
    caches_audit_head=True,
    is_conflict=_is_conflict,
    is_undecodable=not_utf8,
)


class SqliteBackend(SqlBackend):
    """SQLite file storage. ``busy_timeout`` is how long a writer waits for the lock (seconds)."""

    dialect = SQLITE_DIALECT
    # Reads run in autocommit: each statement sees its own committed snapshot, the same
    # guarantee as PostgreSQL's READ COMMITTED, without BEGIN/COMMIT.
    autocommit_reads = True

    def __init__(self, url: str, path: str, *, busy_timeout: float = 60.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        if path != ":memory:":
            parent = Path(path).absolute().parent
            if not parent.is_dir():
                raise ConfigError(f"SQLite store folder {parent} does not exist")
        super().__init__(url)

    def _connect(self) -> Any:
        try:
            conn = sqlite3.connect(
                self.path, timeout=min(self.busy_timeout, 5.0), isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-32768")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"SQLite store {self.path} cannot be opened: {exc}") from exc
        return conn

    def _begin(self, conn: Any, write: bool) -> None:
        if not write:  # not called for reads (autocommit_reads); kept for direct callers
            return
        # Writers queue on the lock: retry BEGIN IMMEDIATE past sqlite's own busy
        # wait so that "database is locked" never reaches the caller early.
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StorageError(f"SQLite store {self.path} stayed locked for {self.busy_timeout:.0f}s") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _lost_transaction(self, conn: Any) -> bool:
        # SQLite rolls back by itself on some errors (full disk, I/O): a caller that
        # caught one must not get a silent, empty "commit".
        return not conn.in_transaction

    def _commit(self, conn: Any) -> None:
        if conn.in_transaction:
            conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _storage_error(self, exc: BaseException) -> KmsboxError | None:
        if _is_conflict(exc):
            return ConflictError("row already exists (a concurrent writer got there first)")
        if isinstance(exc, sqlite3.DatabaseError):
            if not_utf8(exc):
                return MalformedRow(
                    f"SQLite store {self.path} holds text that is not UTF-8 (changed through the database)"
                )
            if "not a database" in str(exc) or "malformed" in str(exc):
                return StorageError(f"SQLite store {self.path} is corrupt or not a kmsbox database")
            return StorageError(f"SQLite error on {self.path}: {exc}")
        return None

    def _refuse_foreign_database(self, tx: Any) -> None:
        # A SQLite file is one application's: pointing the store at the app's own
        # database by mistake must not quietly add kmsbox's tables to it.
        other = tx._q(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'kmsbox!_%' ESCAPE '!' "
            "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' LIMIT 1"
        ).fetchone()
        if other is not None:
            raise ConfigError(
                f"SQLite file {self.path} already holds tables of another application and is not a kmsbox "
                "store: use a file of its own"
            )

    def _migrate(self) -> None:
        try:
            super()._migrate()
        except StorageError as exc:
            raise ConfigError(f"SQLite store {self.path} cannot be opened: {exc}") from exc

    def describe(self) -> dict[str, str]:
        """Kind and file path."""
        return {"backend": "sqlite", "location": self.path}


_URL_PARAMETERS = ("busy_timeout",)


def open_sqlite(url: str) -> SqliteBackend:
    """Open ``sqlite:///path[?busy_timeout=SECONDS]``.

    Raises ConfigError for a malformed URL, an unknown or repeated query parameter,
    a ``busy_timeout`` that is not a finite number of seconds above 0, or an
    unreadable file.
    """
    parsed = urlparse(url)
    if parsed.scheme != "sqlite" or parsed.netloc or not parsed.path or parsed.path == "/":
        raise ConfigError(f"storage URL {url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db")
    if parsed.fragment:
        raise ConfigError(f"storage URL {url!r}: a SQLite URL takes no #fragment")
    path = unquote(parsed.path[1:])
    try:
        pairs = parse_qsl(parsed.query, keep_blank_values=True, strict_parsing=True) if parsed.query else []
    except ValueError:
        raise ConfigError(f"storage URL {url!r}: the query must look like ?busy_timeout=SECONDS") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in _URL_PARAMETERS:
            raise ConfigError(f"storage URL {url!r}: unknown parameter {key!r} (known: {', '.join(_URL_PARAMETERS)})")
        if key in params:
            raise ConfigError(f"storage URL {url!r}: parameter {key!r} is given twice")
        params[key] = value
    busy = 60.0
    if "busy_timeout" in params:
        try:
            busy = float(params["busy_timeout"])
        except ValueError:
            raise ConfigError(f"storage URL {url!r}: busy_timeout must be a number of seconds") from None
        # nan compares false to everything and inf would wait forever: neither is a time-out.
        if not math.isfinite(busy) or busy <= 0:
            raise ConfigError(f"storage URL {url!r}: busy_timeout must be a finite number of seconds above 0")
    return SqliteBackend(url, path, busy_timeout=busy)


@hookimpl(trylast=True)
def register_storage_backends(register: Any) -> None:
    """Register ``sqlite://``."""
    register("sqlite", open_sqlite, "embedded SQLite file (the default)")
