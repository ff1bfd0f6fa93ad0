"""``memory://``: a store that lives and dies with the process, for tests.

It is an in-memory SQLite database on one connection, so it runs exactly the
statements of the file backend; a lock makes its transactions take turns
across threads. A default plugin.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kmsbox.errors import ConfigError, ConflictError, KmsboxError, StorageError
from kmsbox.hookspecs import hookimpl
from kmsbox.storage.base import MalformedRow
from kmsbox.storage.sql import SqlBackend, SqlTransaction
from kmsbox.storage.sqlite import SQLITE_DIALECT, not_utf8

__all__ = ["MemoryBackend", "open_memory"]


class MemoryBackend(SqlBackend):
    """In-process storage; everything is gone when it is closed."""

    dialect = SQLITE_DIALECT

    def __init__(self, url: str = "memory://") -> None:
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        super().__init__(url)

    def _connect(self) -> Any:
        return self._conn

    def _connection(self) -> Any:
        if self._closed:
            raise StorageError("storage backend is closed")
        return self._conn

    @contextmanager
    def _tx(self, write: bool) -> Iterator[SqlTransaction]:
        with self._lock, super()._tx(write) as tx:
            yield tx

    def _begin(self, conn: Any, write: bool) -> None:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _lost_transaction(self, conn: Any) -> bool:
        return not conn.in_transaction

    def _commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _storage_error(self, exc: BaseException) -> KmsboxError | None:
        if SQLITE_DIALECT.is_conflict(exc):
            return ConflictError("row already exists")
        if not_utf8(exc):
            return MalformedRow("the memory store holds text that is not UTF-8")
        if isinstance(exc, sqlite3.DatabaseError):
            return StorageError(f"memory store error: {exc}")
        return None

    def close(self) -> None:
        """Drop everything."""
        self._closed = True
        self._conn.close()

    def describe(self) -> dict[str, str]:
        """Kind only: there is no location."""
        return {"backend": "memory", "location": "process memory"}


def open_memory(url: str) -> MemoryBackend:
    """Open ``memory://`` (nothing may follow the scheme)."""
    if url.rstrip("/") != "memory:":
        raise ConfigError(f"storage URL {url!r}: use memory:// with nothing after it")
    return MemoryBackend(url)


@hookimpl(trylast=True)
def register_storage_backends(register: Any) -> None:
    """Register ``memory://``."""
    register("memory", open_memory, "in-process store for tests")
