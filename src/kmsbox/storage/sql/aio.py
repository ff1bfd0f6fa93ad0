"""The SQL storage base for asyncio: the same statements, run on async connections.

:class:`AsyncSqlTransaction` is :class:`~kmsbox.storage.sql.backend.SqlTransaction` with
one difference: it runs each operation's statements on an async cursor, so every
protocol method returns an awaitable of what the sync one returns. An engine offers it
by having async counterparts of its connection methods (``connect_async``,
``begin_async``, ``commit_async``, ``rollback_async``), as the PostgreSQL plugin does
over psycopg's ``AsyncConnection``; the store's async face then never waits on a thread
for the database.

Connections come from a small pool per backend (bounded by ``pool_size``). A
transaction whose task is cancelled, or that fails in a way that leaves the session in
doubt, gives its connection up rather than back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from kmsbox.errors import KmsboxError, StorageError
from kmsbox.storage.sql.dialect import ALL, COUNT, ONE, Execute

if TYPE_CHECKING:
    from kmsbox.storage.sql.backend import SqlBackend

from kmsbox.storage.sql.backend import SqlTransaction

__all__ = ["DEFAULT_POOL_SIZE", "MAX_POOL_SIZE", "AsyncSqlBackend", "AsyncSqlTransaction", "check_connections"]

#: Connections one async backend keeps open at most (``kmsbox.aio.open_store(connections=)``).
DEFAULT_POOL_SIZE = 10
#: The most connections a store may be asked to keep.
MAX_POOL_SIZE = 1000


def check_connections(value: object) -> int:
    """A pool size: an int from 1 to :data:`MAX_POOL_SIZE` (TypeError, ValueError otherwise)."""
    if type(value) is not int:
        raise TypeError(f"connections must be an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_POOL_SIZE:
        raise ValueError(f"connections must be from 1 to {MAX_POOL_SIZE}, got {value}")
    return value


class AsyncSqlTransaction(SqlTransaction):
    """Every protocol method of :class:`SqlTransaction`, returning an awaitable."""

    __slots__ = ()

    def _run(self, gen: Generator[Execute, Any, Any]) -> Any:  # the awaitable of the result
        return self._drive(gen)

    async def _drive(self, gen: Generator[Execute, Any, Any]) -> Any:
        try:
            request = next(gen)
            while True:
                try:
                    result = await self._execute_async(request)
                except KmsboxError as exc:
                    request = gen.throw(exc)
                else:
                    request = gen.send(result)
        except StopIteration as stop:
            return stop.value

    async def _execute_async(self, request: Execute) -> Any:
        cur = self._cur
        try:
            if request.many:
                await cur.executemany(request.sql, request.params)
            else:
                await cur.execute(request.sql, request.params)
            fetch = request.fetch
            if fetch is ONE:
                return await cur.fetchone()
            if fetch is ALL:
                return await cur.fetchall()
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


class AsyncSqlBackend:
    """Async transactions over the store a :class:`SqlBackend` opened (and migrated)."""

    def __init__(self, backend: SqlBackend, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        check_connections(pool_size)
        self.backend = backend
        self.engine: Any = backend.engine
        self.statements = backend.statements
        self._idle: list[Any] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._closed = False

    def describe(self) -> dict[str, str]:
        """The engine's description."""
        return self.backend.describe()

    async def _acquire(self) -> Any:
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if self.engine.usable(conn):
                    return conn
                await _close(conn)
            try:
                return await self.engine.connect_async()
            except KmsboxError:
                raise
            except Exception as exc:
                mapped = self.engine.error(exc)
                raise (mapped or StorageError("cannot connect to storage")) from exc
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn: Any, reuse: bool) -> None:
        if reuse and not self._closed and self.engine.usable(conn):
            self._idle.append(conn)
        else:
            # In a cancelled task the session may be mid-statement: close it in the background.
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(_close(conn))
        self._slots.release()

    @contextlib.asynccontextmanager
    async def transaction(self, write: bool) -> AsyncIterator[AsyncSqlTransaction]:
        """A transaction: commits when the block ends, rolls back when it raises."""
        if self._closed:
            raise StorageError("storage backend is closed")
        conn = await self._acquire()
        reuse = False
        try:
            try:
                await self.engine.begin_async(conn, write)
            except KmsboxError:
                raise
            except Exception as exc:
                raise (self.engine.error(exc) or StorageError("cannot start a transaction")) from exc
            tx = AsyncSqlTransaction(conn, self.statements, self.engine)
            tx.start(write)
            try:
                yield tx
            except BaseException:
                self.statements.forget_heads()
                if not isinstance(asyncio.current_task(), asyncio.Task) or not _cancelling():
                    with contextlib.suppress(Exception):
                        await self.engine.rollback_async(conn)
                        reuse = True
                raise
            try:
                await self.engine.commit_async(conn)
            except KmsboxError:
                raise
            except Exception as exc:
                raise (self.engine.error(exc) or StorageError("commit failed")) from exc
            reuse = True
        finally:
            self._release(conn, reuse)

    async def close(self) -> None:
        """Close every idle connection (those in use close when their transaction ends)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
