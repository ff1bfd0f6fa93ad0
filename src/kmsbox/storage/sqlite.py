"""The embedded default backend: one SQLite file (stdlib ``sqlite3``).

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the SQLAlchemy
convention: the path is what follows the third slash). The file is created readable by
its owner only (0600, and SQLite gives its ``-wal`` and ``-shm`` files the same mode),
with WAL journaling, ``secure_delete`` on (deleted values are overwritten, whatever the
distribution's build default), a busy time-out, and ``BEGIN IMMEDIATE`` for writes so
that writers queue instead of failing. An :class:`~kmsbox.storage.sql.SqlEngine` on the
public SQL base; a default plugin.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

from kmsbox.errors import ConfigError, ConflictError, KmsboxError, StorageError
from kmsbox.hookspecs import hookimpl
from kmsbox.storage.base import MalformedRow
from kmsbox.storage.sql import SqlBackend, SqlDialect, Statement

__all__ = ["SQLITE_DIALECT", "SqliteEngine", "not_utf8", "open_sqlite"]

SQLITE_DIALECT = SqlDialect(name="sqlite", without_rowid=" WITHOUT ROWID", greatest="MAX")


def not_utf8(exc: BaseException) -> bool:
    """Whether sqlite3 failed to read a TEXT value that is not UTF-8 (written through the database)."""
    return isinstance(exc, sqlite3.OperationalError) and "Could not decode to UTF-8" in str(exc)


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc).upper()


def _create_private(path: str) -> None:
    """Create an empty database file readable by its owner only, whatever the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"SQLite store {path} cannot be created: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class SqliteEngine:
    """SQLite file storage. ``busy_timeout`` is how long a writer waits for the lock
    (seconds); with ``create`` False a missing file is a ConfigError, not a new store."""

    dialect = SQLITE_DIALECT
    # Reads run in autocommit: each statement sees its own committed snapshot, the same
    # guarantee as PostgreSQL's READ COMMITTED, without BEGIN/COMMIT.
    autocommit_reads = True

    def __init__(self, path: str, *, busy_timeout: float = 60.0, create: bool = True) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        if path != ":memory:":
            parent = Path(path).absolute().parent
            if not parent.is_dir():
                raise ConfigError(f"SQLite store folder {parent} does not exist")
            if not os.path.exists(path):
                if not create:
                    raise ConfigError(
                        f"no kmsbox store at {path}: check the path, or create one (kmsbox init, or any command that writes)"
                    )
                _create_private(path)

    def connect(self) -> Any:
        """A connection with kmsbox's settings (ConfigError when the file cannot be opened)."""
        try:
            conn = sqlite3.connect(
                self.path, timeout=min(self.busy_timeout, 5.0), isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-32768")
            # Deleted rows are overwritten with zeros, not left in free pages.
            conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"SQLite store {self.path} cannot be opened: {exc}") from None
        return conn

    def connect_nowait(self) -> Any:
        """A connection that never waits for a lock (an event loop's: SQLITE_BUSY at once)."""
        conn = self.connect()
        conn.execute("PRAGMA busy_timeout = 0")
        return conn

    def begin_nowait(self, conn: Any, write: bool) -> bool:
        """Try to start a transaction once; False if the write lock is taken."""
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as exc:
            if self.is_busy(exc):
                return False
            raise
        return True

    def is_busy(self, exc: BaseException) -> bool:
        """Whether an error means "the database is locked" (the no-wait path then waits elsewhere)."""
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))

    def begin(self, conn: Any, write: bool) -> None:
        """``BEGIN IMMEDIATE`` for writes, retried past sqlite's own busy wait, so that
        "database is locked" never reaches the caller before ``busy_timeout``."""
        if not write:
            conn.execute("BEGIN")
            return
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
                    raise StorageError(f"SQLite store {self.path} stayed locked for {self.busy_timeout:.0f}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def commit(self, conn: Any) -> None:
        """Commit; SQLite rolls back by itself on some errors (full disk, I/O), and a caller
        that caught one must not get a silent, empty "commit"."""
        if not conn.in_transaction:
            raise StorageError("the database rolled this transaction back on an error caught inside it")
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        """Roll back if a transaction is open."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def usable(self, conn: Any) -> bool:
        """A SQLite connection does not drop."""
        return True

    def error(self, exc: BaseException) -> KmsboxError | None:
        """sqlite3's exceptions as kmsbox's."""
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

    def prepare_migration(self, statement: Statement) -> None:
        """Nothing to do: the migration's write transaction holds SQLite's one write lock."""

    def refuse_foreign_database(self, statement: Statement) -> None:
        """A SQLite file is one application's: pointing the store at the app's own database
        by mistake must not quietly add kmsbox's tables to it."""
        other = statement(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'kmsbox!_%' ESCAPE '!' "
            "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' LIMIT 1",
            (),
        ).fetchone()
        if other is not None:
            raise ConfigError(
                f"SQLite file {self.path} already holds tables of another application and is not a kmsbox "
                "store: use a file of its own"
            )

    def describe(self) -> dict[str, str]:
        """Kind and file path."""
        return {"backend": "sqlite", "location": self.path}


_URL_PARAMETERS = ("busy_timeout",)


def open_sqlite(url: str, *, create: bool = True) -> SqlBackend:
    """Open ``sqlite:///path[?busy_timeout=SECONDS]``.

    Raises ConfigError for a malformed URL, an unknown or repeated query parameter, a
    ``busy_timeout`` that is not a finite number of seconds above 0, an unreadable file,
    or (``create`` False) a file that does not exist. Messages show the path, never a
    query value.
    """
    parsed = urlparse(url)
    if parsed.scheme != "sqlite" or parsed.netloc or not parsed.path or parsed.path == "/":
        raise ConfigError("storage URL: use sqlite:///relative.db or sqlite:////absolute/path.db")
    shown = f"sqlite://{parsed.path}"
    if parsed.fragment:
        raise ConfigError(f"storage URL {shown!r}: a SQLite URL takes no #fragment")
    path = unquote(parsed.path[1:])
    try:
        pairs = parse_qsl(parsed.query, keep_blank_values=True, strict_parsing=True) if parsed.query else []
    except ValueError:
        raise ConfigError(f"storage URL {shown!r}: the query must look like ?busy_timeout=SECONDS") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in _URL_PARAMETERS:
            # The parameter's name is not a secret; its value may be (it is never shown).
            shown_key = key if key.isascii() and key.isprintable() and len(key) <= 40 else "?"
            raise ConfigError(
                f"storage URL {shown!r}: unknown parameter {shown_key!r} (known: {', '.join(_URL_PARAMETERS)})"
            )
        if key in params:
            raise ConfigError(f"storage URL {shown!r}: parameter {key!r} is given twice")
        params[key] = value
    busy = 60.0
    if "busy_timeout" in params:
        try:
            busy = float(params["busy_timeout"])
        except ValueError:
            raise ConfigError(f"storage URL {shown!r}: busy_timeout must be a number of seconds") from None
        # nan compares false to everything and inf would wait forever: neither is a time-out.
        if not math.isfinite(busy) or busy <= 0:
            raise ConfigError(f"storage URL {shown!r}: busy_timeout must be a finite number of seconds above 0")
    return SqlBackend(url, SqliteEngine(path, busy_timeout=busy, create=create), create=create)


@hookimpl(trylast=True)
def register_storage_backends(register: Any) -> None:
    """Register ``sqlite://``."""
    register("sqlite", open_sqlite, "embedded SQLite file (the default)")
