"""How the store's operations reach storage and KEKs, written once for sync and async.

Every operation of the store (a put, a get, a rotation batch...) is a generator
function over a :class:`Ports` object. It does its work in plain Python and ``yield``s
each call that waits on the outside world: a storage call (``yield io.tx.get_secret(...)``),
a transaction (``yield io.transact(write, body)``), a KEK call
(``yield io.kek(provider).unwrap(...)``), a single-flight call, or blocking work
(``yield io.blocking(fn, ...)``). What comes back from the ``yield`` is the call's
result.

The sync store's ports make each call at once and hand the result straight back
(:func:`run` drives the generator); the async store's ports (:mod:`kmsbox.aio`) hand
back awaitables that its driver awaits. So the sync and async faces share every rule,
check and message, and differ only in how they wait. Two rules keep both fast and
safe: no KEK call inside a transaction body (bodies report a key they lack, and the
operation fetches it between transactions), and no transaction inside another.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Generator, Hashable
from typing import Any, Protocol, TypeVar

from kmsbox.errors import ConflictError, StorageError
from kmsbox.kek import KekProvider
from kmsbox.storage.base import StorageBackend, Transaction

__all__ = ["Op", "Ports", "Retry", "SyncPorts", "TxPorts", "run"]

T = TypeVar("T")
#: A store operation: yields calls on the outside world, returns its result.
Op = Generator[Any, Any, T]

#: A write's lost races are retried this many times before ConflictError reaches the caller.
WRITE_ATTEMPTS = 20
#: A read is retried until this deadline (seconds): a read never raises ConflictError.
READ_DEADLINE = 30.0


class Ports(Protocol):
    """What an operation uses to reach the outside world (see the module docstring)."""

    @property
    def tx(self) -> Transaction:
        """The current transaction (inside a transaction body only)."""
        ...

    def transact(self, write: bool, body: Callable[[Ports], Op[T]], *, read: bool = False) -> Any:
        """Run ``body`` in a transaction; a lost race (ConflictError) runs it again.

        ``read`` marks an operation that reads (even in a write transaction, as an audited
        read is): it is retried until :data:`READ_DEADLINE` and never raises ConflictError.
        """
        ...

    def kek(self, provider: KekProvider) -> KekProvider:
        """The provider to call (its async form in the async store)."""
        ...

    def flight(self, key: Hashable, make: Callable[[], Op[T]]) -> Any:
        """Run ``make()``'s operation once for all concurrent callers with the same
        ``key``; each gets its result or its exception, and nothing is cached."""
        ...

    def blocking(self, fn: Callable[..., T], *args: Any) -> Any:
        """Call ``fn(*args)``, a function that may block (a file write, an fsync)."""
        ...

    def on_abort(self, fn: Callable[[], object]) -> None:
        """Inside a transaction body: call ``fn()`` if this transaction does not commit."""
        ...


def run(op: Op[T]) -> T:
    """Drive an operation whose ports answer at once (the sync store)."""
    try:
        value = next(op)
        while True:
            value = op.send(value)
    except StopIteration as stop:
        result: T = stop.value
        return result


def backoff(attempt: int) -> float:
    """Seconds to wait before retrying a lost race: exponential with full jitter, up to 0.1 s."""
    return random.uniform(0, min(0.1, 0.001 * 2**attempt))


class Retry:
    """The retry budget of one transaction: a write retries a lost race up to
    :data:`WRITE_ATTEMPTS` times (then the ConflictError reaches its caller); a read retries
    until :data:`READ_DEADLINE` (then a StorageError: a read never raises ConflictError)."""

    __slots__ = ("_attempt", "_deadline", "_read")

    def __init__(self, read: bool) -> None:
        self._read = read
        self._attempt = 0
        self._deadline = time.monotonic() + READ_DEADLINE

    def next_delay(self) -> float:
        """The wait before the next attempt; raises when the budget is spent (call it from
        the ``except ConflictError`` block, so a write re-raises its ConflictError)."""
        self._attempt += 1
        if self._read:
            if time.monotonic() > self._deadline:
                raise StorageError(f"the store stayed too busy to record a read for {READ_DEADLINE:.0f}s") from None
        elif self._attempt >= WRITE_ATTEMPTS:
            raise
        return backoff(self._attempt)


class _Flight:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SyncPorts:
    """Ports that make every call at once, on the calling thread."""

    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()

    @property
    def tx(self) -> Transaction:
        """Outside a transaction body there is none."""
        raise RuntimeError("storage calls belong inside io.transact(...)")

    def transact(self, write: bool, body: Callable[[Ports], Op[T]], *, read: bool = False) -> T:
        """See :meth:`Ports.transact`."""
        retry = None  # made at the first lost race: most transactions never lose one
        while True:
            try:
                return self.transact_once(write, body)
            except ConflictError:
                if retry is None:
                    retry = Retry(read)
                time.sleep(retry.next_delay())

    def transact_once(self, write: bool, body: Callable[[Ports], Op[T]]) -> T:
        """One attempt: ``body`` in a transaction on this thread (ConflictError if it lost a race)."""
        ports: TxPorts | None = None
        try:
            with self.backend.transaction() if write else self.backend.read() as tx:
                ports = TxPorts(self, tx)
                return run(body(ports))
        except BaseException:
            if ports is not None:
                ports.aborted()
            raise

    def kek(self, provider: KekProvider) -> KekProvider:
        """The provider itself."""
        return provider

    def flight(self, key: Hashable, make: Callable[[], Op[T]]) -> T:
        """See :meth:`Ports.flight`: threads wait for the one that went first."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            result: T = flight.result
            return result
        try:
            flight.result = run(make())
            return flight.result  # type: ignore[no-any-return]
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Call it."""
        return fn(*args)

    def on_abort(self, fn: Callable[[], object]) -> None:
        """Outside a transaction there is nothing to abort."""
        raise RuntimeError("on_abort belongs inside a transaction body")


class TxPorts:
    """The ports a transaction body sees: the outer ones, plus the transaction."""

    __slots__ = ("_aborts", "_outer", "tx")

    def __init__(self, outer: object, tx: Transaction) -> None:
        self._outer = outer
        self.tx = tx
        self._aborts: list[Callable[[], object]] | None = None

    def on_abort(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` if the transaction does not commit."""
        if self._aborts is None:
            self._aborts = []
        self._aborts.append(fn)

    def aborted(self) -> None:
        """The transaction did not commit: run what was asked."""
        for fn in self._aborts or ():
            fn()
        self._aborts = None

    def transact(self, write: bool, body: Callable[[Ports], Op[T]], *, read: bool = False) -> T:
        """Nested transactions are a programming error."""
        raise RuntimeError("a transaction body cannot start another transaction")

    def kek(self, provider: KekProvider) -> KekProvider:
        """KEK calls are made between transactions, never inside one."""
        raise RuntimeError("a transaction body cannot call a KEK")

    def flight(self, key: Hashable, make: Callable[[], Op[T]]) -> T:
        """Not inside a transaction."""
        raise RuntimeError("a transaction body cannot wait on a flight")

    def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Call it (an audit sink's write, inside the transaction it records)."""
        return fn(*args)
