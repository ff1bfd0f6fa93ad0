"""The async store's ports: the store's operations, driven on an event loop.

:class:`AsyncPorts` runs the very operations the sync store runs (:mod:`kmsbox.store.io`),
awaiting what they yield. Where each kind of call goes:

- **KEK calls** go to the provider's async form (:mod:`kmsbox.aio.kek`): a native async
  client, or the sync provider on a bounded thread pool; a local key is called directly.
  Concurrent misses of one key make one call (single flight); a failure is not cached.
- **Transactions** run natively where the backend has an async form (PostgreSQL over
  psycopg's ``AsyncConnection``: no thread at all). A SQLite store runs them on the loop
  with a connection that never waits for a lock, and only when it would have to wait
  (another writer holds the lock) on the thread pool; the warm path of a read makes no
  thread hop. ``memory://`` never waits. Any other backend runs on the thread pool.
- With audit sinks configured (their writes block), every transaction runs on the pool.

A lost race is retried as in the sync store. A task cancelled mid-transaction leaves all
of the change or none of it: a native transaction is rolled back (or was committed
whole), and one on the pool runs to its end while the task moves on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Any, TypeVar

from kmsbox.aio.kek import AsyncKekProvider, async_kek
from kmsbox.errors import ConflictError
from kmsbox.kek import KekProvider
from kmsbox.storage.base import StorageBackend, Transaction
from kmsbox.storage.memory import MemoryBackend
from kmsbox.storage.sql.backend import WouldBlock
from kmsbox.store.io import Op, Ports, Retry, SyncPorts, TxPorts, run

__all__ = ["AsyncPorts", "drive"]

T = TypeVar("T")


async def drive(op: Op[T]) -> T:
    """Run an operation, awaiting each awaitable it yields (values pass straight back)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = op.send(value) if error is None else op.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        if hasattr(type(request), "__await__"):
            try:
                value = await request
                error = None
            except asyncio.CancelledError:
                op.close()
                raise
            except BaseException as exc:
                value, error = None, exc
        else:
            value, error = request, None


class AsyncPorts:
    """Ports over one backend and executor, for one event loop."""

    def __init__(self, backend: StorageBackend, executor: Executor, *, blocking_sinks: Callable[[], bool]) -> None:
        self.backend = backend
        self.executor = executor
        self.sync = SyncPorts(backend)
        factory = getattr(backend, "async_backend", None)
        self.native: Any = factory() if callable(factory) else None
        self._memory = isinstance(backend, MemoryBackend)
        self._nowait = bool(getattr(backend, "supports_nowait", False))
        self._blocking_sinks = blocking_sinks
        self._keks: dict[int, AsyncKekProvider] = {}
        self._flights: dict[Hashable, asyncio.Task[Any]] = {}

    @property
    def tx(self) -> Transaction:
        """Outside a transaction body there is none."""
        raise RuntimeError("storage calls belong inside io.transact(...)")

    # --- transactions --------------------------------------------------------------------------

    def transact(self, write: bool, body: Callable[[Ports], Op[T]], *, read: bool = False) -> Any:
        """See :meth:`kmsbox.store.io.Ports.transact` (an awaitable here)."""
        return self._transact(write, body, read)

    async def _transact(self, write: bool, body: Callable[[Ports], Op[T]], read: bool) -> T:
        retry = Retry(read)
        while True:
            try:
                return await self._once(write, body)
            except ConflictError:
                await asyncio.sleep(retry.next_delay())

    async def _once(self, write: bool, body: Callable[[Ports], Op[T]]) -> T:
        if self.native is not None:
            async with self.native.transaction(write) as tx:
                ports = AsyncTxPorts(self, tx)
                try:
                    return await drive(body(ports))
                except BaseException:
                    ports.aborted()
                    raise
        if not self._blocking_sinks():
            if self._memory:
                return self.sync.transact_once(write, body)
            if self._nowait:
                try:
                    return self._on_loop(write, body)
                except WouldBlock:
                    pass  # another writer holds the lock: wait for it off the loop
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.sync.transact_once, write, body)

    def _on_loop(self, write: bool, body: Callable[[Ports], Op[T]]) -> T:
        ports: TxPorts | None = None
        try:
            with self.backend.nowait_transaction(write) as tx:  # type: ignore[attr-defined]
                ports = TxPorts(self.sync, tx)
                return run(body(ports))
        except BaseException:
            if ports is not None:
                ports.aborted()
            raise

    # --- KEKs, flights, blocking work ----------------------------------------------------------

    def kek(self, provider: KekProvider) -> Any:
        """The provider's async form (made once per provider)."""
        adapted = self._keks.get(id(provider))
        if adapted is None:
            adapted = self._keks[id(provider)] = async_kek(provider, self.executor)
        return adapted

    def flight(self, key: Hashable, make: Callable[[], Op[T]]) -> Any:
        """See :meth:`kmsbox.store.io.Ports.flight`: one task per key; every caller awaits it."""
        task = self._flights.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(drive(make()))
            self._flights[key] = task
            task.add_done_callback(functools.partial(self._landed, key))
        return asyncio.shield(task)

    def _landed(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # every waiter may have gone: nothing is left unretrieved

    def blocking(self, fn: Callable[..., T], *args: Any) -> Any:
        """``fn(*args)`` on the thread pool (an awaitable)."""
        return asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    def on_abort(self, fn: Callable[[], object]) -> None:
        """Outside a transaction there is nothing to abort."""
        raise RuntimeError("on_abort belongs inside a transaction body")


class AsyncTxPorts:
    """The ports an async transaction body sees: its transaction, whose calls are awaitables."""

    __slots__ = ("_aborts", "_outer", "tx")

    def __init__(self, outer: AsyncPorts, tx: Any) -> None:
        self._outer = outer
        self.tx = tx
        self._aborts: list[Callable[[], object]] = []

    def transact(self, write: bool, body: Callable[[Ports], Op[T]], *, read: bool = False) -> T:
        """Nested transactions are a programming error."""
        raise RuntimeError("a transaction body cannot start another transaction")

    def kek(self, provider: KekProvider) -> KekProvider:
        """KEK calls are made between transactions, never inside one."""
        raise RuntimeError("a transaction body cannot call a KEK")

    def flight(self, key: Hashable, make: Callable[[], Op[T]]) -> T:
        """Not inside a transaction."""
        raise RuntimeError("a transaction body cannot wait on a flight")

    def blocking(self, fn: Callable[..., T], *args: Any) -> Any:
        """On the thread pool (an audit sink's write, inside the transaction it records)."""
        return self._outer.blocking(fn, *args)

    def on_abort(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` if the transaction does not commit."""
        self._aborts.append(fn)

    def aborted(self) -> None:
        """The transaction did not commit."""
        for fn in self._aborts:
            fn()
        self._aborts.clear()
