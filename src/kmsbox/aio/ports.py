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

A long operation (a job: rewrap, re-encrypt, migrate, import, diagnose, audit
verification) is driven with :func:`drive_off_loop` over :class:`JobPorts`: its plain
Python steps (rewrapping or re-encrypting a batch, checking a chain) run on the pool, one
step at a time, and so do its transactions (natively where the backend has an async form);
between two steps the loop runs other tasks. So a job never holds the loop for more than
one small hop, however many batches it has.

A lost race is retried as in the sync store. A task cancelled mid-transaction leaves all
of the change or none of it: a native transaction is rolled back (or was committed
whole), and one on the pool runs to its end while the task moves on. A job cancelled
during a step on the pool is closed once that step ends, before its next transaction.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Any, TypeVar

from kmsbox.aio.kek import AsyncKekProvider, async_kek
from kmsbox.errors import ConflictError, StorageError
from kmsbox.kek import KekProvider
from kmsbox.storage.base import StorageBackend, Transaction
from kmsbox.storage.memory import MemoryBackend
from kmsbox.storage.sql.backend import WouldBlock
from kmsbox.store.io import Op, Ports, Retry, SyncPorts, TxPorts, run

__all__ = ["AsyncPorts", "JobPorts", "drive", "drive_off_loop", "on_loop"]

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


def _advance(op: Op[T], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Run ``op`` up to its next awaitable ``(False, awaitable)`` or its end ``(True, result)``,
    sending back at once what is not awaitable."""
    while True:
        try:
            request = op.send(value) if error is None else op.throw(error)
        except StopIteration as stop:
            return True, stop.value
        if hasattr(type(request), "__await__"):
            return False, request
        value, error = request, None


def _abandon(op: Op[Any], step: concurrent.futures.Future[tuple[bool, Any]]) -> None:
    """Close an operation whose task was cancelled while a step ran (the step has ended)."""
    if not step.cancelled() and step.exception() is None:
        finished, request = step.result()
        if not finished and asyncio.iscoroutine(request):
            request.close()  # the transaction or KEK call it asked for never starts
    op.close()


async def drive_off_loop(op: Op[T], executor: Executor) -> T:
    """Run an operation whose steps may be long: each stretch of plain Python between two
    awaitables runs on ``executor`` (in the caller's context), each awaitable is awaited on
    the loop. A cancelled task leaves the step that is running to end, then closes ``op``."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    value: Any = None
    error: BaseException | None = None
    while True:
        step = executor.submit(context.run, _advance, op, value, error)
        try:
            finished, request = await asyncio.wrap_future(step, loop=loop)
        except asyncio.CancelledError:
            if step.cancelled():
                op.close()  # the step never started
            else:
                step.add_done_callback(functools.partial(_abandon, op))
            raise
        if finished:
            result: T = request
            return result
        try:
            value = await request
            error = None
        except asyncio.CancelledError:
            op.close()
            raise
        except BaseException as exc:
            value, error = None, exc


def on_loop(fn: Callable[..., T] | None, loop: asyncio.AbstractEventLoop) -> Callable[..., T] | None:
    """``fn`` as called from a step of :func:`drive_off_loop`: it runs on ``loop``'s thread
    (as a job's ``progress`` callback is promised to) and the step waits for it."""
    if fn is None:
        return None
    loop_thread = threading.get_ident()
    call = fn

    def called(*args: Any) -> T:
        if threading.get_ident() == loop_thread:
            return call(*args)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(call(*args))
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        while True:
            try:
                return done.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                if loop.is_closed() or not loop.is_running():
                    raise RuntimeError("the event loop stopped before a job's callback ran") from None

    return called


#: Seconds of transactions on the loop's thread in one turn of the loop, after which the
#: next ones wait for a later turn (a turn that wakes a thousand tasks at once runs their
#: transactions a slice at a time, not all in one go).
LOOP_SLICE = 0.002


class LoopSlice:
    """The share of one turn of the event loop that on-loop transactions may take.

    The first transaction of a turn opens a slice (its end is scheduled with
    ``loop.call_soon``, which runs in the next turn, after the loop has polled and run its
    timers). Once the slice is older than :data:`LOOP_SLICE`, a task that wants a
    transaction queues (first come, first served) and an admitter wakes, once a turn, as
    many queued tasks as fit in a slice at the measured cost of a transaction; one woken
    into a turn whose slice is already used up goes back to the head of the queue. Tasks
    that only yielded and retried would each be stepped again every turn: with a thousand
    of them that alone filled a turn.
    """

    __slots__ = ("_admitting", "_cost", "_started", "_waiting")

    def __init__(self) -> None:
        self._started: float | None = None
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._admitting = False
        self._cost = 0.0001  # seconds per on-loop transaction, a moving average

    async def enter(self) -> None:
        """Return at once while this turn's slice has room and no task is queued; otherwise
        wait for a turn that admits this task."""
        if not self._waiting and not self._spent():
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.append(waiter)
        while True:
            if not self._admitting:
                self._admitting = True
                loop.call_soon(self._admit)
            await waiter
            if not self._spent():
                return
            # Admitted into a turn whose slice the tasks admitted before it used up: first
            # in line for the next turn.
            waiter = loop.create_future()
            self._waiting.appendleft(waiter)

    def took(self, seconds: float) -> None:
        """Record how long an on-loop transaction took."""
        self._cost += (seconds - self._cost) * 0.125

    def _spent(self) -> bool:
        now = time.perf_counter()
        if self._started is None:
            self._started = now
            asyncio.get_running_loop().call_soon(self._end)
            return False
        return now - self._started > LOOP_SLICE

    def _end(self) -> None:
        self._started = None

    def _admit(self) -> None:
        # Once a turn while tasks queue: wake as many as fit in a slice (at least one); they
        # run in the next turn, before this is called again.
        room = max(1, int(LOOP_SLICE / max(self._cost, 1e-6)))
        while room and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a cancelled task's waiter is skipped
                waiter.set_result(None)
                room -= 1
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._admit)
        else:
            self._admitting = False


class AsyncPorts:
    """Ports over one backend and executor, for one event loop."""

    def __init__(
        self,
        backend: StorageBackend,
        executor: Executor,
        *,
        blocking_sinks: Callable[[], bool],
        connections: int | None = None,
    ) -> None:
        self.backend = backend
        self.executor = executor
        self.sync = SyncPorts(backend)
        factory = getattr(backend, "async_backend", None)
        if not callable(factory):
            self.native: Any = None
        else:
            # A third party's async_backend() may take no pool size: pass one only when asked.
            self.native = factory() if connections is None else factory(pool_size=connections)
        self._memory = isinstance(backend, MemoryBackend)
        self._nowait = bool(getattr(backend, "supports_nowait", False))
        self._blocking_sinks = blocking_sinks
        self._keks: dict[int, AsyncKekProvider] = {}
        self._flights: dict[Hashable, asyncio.Task[Any]] = {}
        self._slice = LoopSlice()
        #: Set when the store closed: every transaction then fails as the sync store's does.
        self.closed = False
        self.jobs = JobPorts(self)

    @property
    def tx(self) -> Transaction:
        """Outside a transaction body there is none."""
        raise RuntimeError("storage calls belong inside io.transact(...)")

    # --- transactions --------------------------------------------------------------------------

    def transact(self, write: bool, body: Callable[[Ports], Op[T]], *, read: bool = False) -> Any:
        """See :meth:`kmsbox.store.io.Ports.transact` (an awaitable here)."""
        return self._transact(write, body, read)

    async def _transact(self, write: bool, body: Callable[[Ports], Op[T]], read: bool, off_loop: bool = False) -> T:
        retry = Retry(read)
        while True:
            try:
                return await self._once(write, body, off_loop)
            except ConflictError:
                await asyncio.sleep(retry.next_delay())

    async def _once(self, write: bool, body: Callable[[Ports], Op[T]], off_loop: bool) -> T:
        if self.closed:
            raise StorageError("storage backend is closed")
        if self.native is not None:
            async with self.native.transaction(write) as tx:
                ports = AsyncTxPorts(self, tx)
                try:
                    return await drive(body(ports))
                except BaseException:
                    ports.aborted()
                    raise
        if not off_loop and not self._blocking_sinks() and (self._memory or self._nowait):
            await self._slice.enter()
            if self._memory:
                return self.sync.transact_once(write, body)
            started = time.perf_counter()
            try:
                return self._on_loop(write, body)
            except WouldBlock:
                pass  # another writer holds the lock: wait for it off the loop
            finally:
                self._slice.took(time.perf_counter() - started)
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

    async def flight_later(self, key: Hashable, make: Callable[[], Op[T]]) -> T:
        """:meth:`flight`, joined when awaited (so it may be asked for off the loop)."""
        result: T = await self.flight(key, make)
        return result

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


class JobPorts:
    """The ports of an operation driven by :func:`drive_off_loop`: asked for on a pool
    thread, each call is an awaitable the loop awaits. Its transactions run natively or on
    the pool (never on the loop), its KEK calls and flights on the loop as usual, and its
    blocking work right on the pool thread that asked."""

    __slots__ = ("_outer",)

    def __init__(self, outer: AsyncPorts) -> None:
        self._outer = outer

    @property
    def tx(self) -> Transaction:
        """Outside a transaction body there is none."""
        raise RuntimeError("storage calls belong inside io.transact(...)")

    def transact(self, write: bool, body: Callable[[Ports], Op[T]], *, read: bool = False) -> Any:
        """See :meth:`kmsbox.store.io.Ports.transact` (an awaitable, never run on the loop)."""
        return self._outer._transact(write, body, read, True)

    def kek(self, provider: KekProvider) -> Any:
        """The provider's async form, reached from the loop."""
        return _LoopKek(self._outer, provider)

    def flight(self, key: Hashable, make: Callable[[], Op[T]]) -> Any:
        """See :meth:`AsyncPorts.flight` (joined on the loop)."""
        return self._outer.flight_later(key, make)

    def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Call it: the step that asks already runs on the pool."""
        return fn(*args)

    def on_abort(self, fn: Callable[[], object]) -> None:
        """Outside a transaction there is nothing to abort."""
        raise RuntimeError("on_abort belongs inside a transaction body")


class _LoopKek:
    """A provider's async form for a step on the pool: each method call is a coroutine
    that, awaited on the loop, calls the provider's async form there."""

    __slots__ = ("_outer", "_provider")

    def __init__(self, outer: AsyncPorts, provider: KekProvider) -> None:
        self._outer = outer
        self._provider = provider

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            return self._call(name, args)

        return call

    async def _call(self, name: str, args: tuple[Any, ...]) -> Any:
        return await getattr(self._outer.kek(self._provider), name)(*args)


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
