"""Read bookkeeping: access counts and last access, without readers contending.

Each open store counts its reads in memory and, about once a second, adds them to rows
of its own (one per secret and *counter*, a random number per open store), never to
the secret's row and never to another process's rows: readers never wait on each other
and never deadlock. Closing the store folds its rows into the shared totals.

What ``info()`` shows: the sum over every counter flushed so far, plus this store's own
reads not flushed yet. Another process's reads show up within about a second (its flush
interval), or at once when it closes.
"""

from __future__ import annotations

import secrets
import threading
import time

from kmsbox._process import current_pid
from kmsbox.errors import KmsboxError
from kmsbox.store.io import Op, Ports

__all__ = ["AccessCounter"]

_FLUSH_ENTRIES = 16384
_FLUSH_SECONDS = 1.0


class AccessCounter:
    """This store's reads not yet written, and the counter they are written under."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._flushed = time.time()
        self._pid = current_pid()
        self.counter = _new_counter()
        #: Flushes that failed (their counts were kept for the next one).
        self.failures = 0

    def note(self, namespace: str, name: str, now: float) -> bool:
        """Count one read; True when a flush is due."""
        key = (namespace, name)
        with self._lock:
            entry = self._pending.get(key)
            self._pending[key] = (1, now) if entry is None else (entry[0] + 1, now)
            # Wall time (read once per get anyway); a clock stepped back flushes too.
            elapsed = now - self._flushed
            return len(self._pending) >= _FLUSH_ENTRIES or not 0 <= elapsed < _FLUSH_SECONDS

    def pending(self, namespace: str, name: str) -> tuple[int, float | None]:
        """This store's unwritten reads of one secret and the last one's time."""
        entry = self._pending.get((namespace, name))  # a lock-free peek: for display only
        return (0, None) if entry is None else entry

    def flush(self, io: Ports) -> Op[None]:
        """Write the pending counts under this store's counter (in key order). A failure
        keeps them for the next flush and never reaches the reader that triggered it."""
        if current_pid() != self._pid:
            # A forked child counts under a counter of its own.
            self._pid = current_pid()
            self.counter = _new_counter()
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed = time.time()
        if not pending:
            return
        counts = sorted((ns, name, n, at) for (ns, name), (n, at) in pending.items())
        counter = self.counter

        def body(t: Ports) -> Op[None]:
            yield t.tx.add_access(counter, counts)

        try:
            yield io.transact(True, body, read=True)
        except KmsboxError:
            self.failures += 1
            with self._lock:
                for ns, name, n, at in counts:
                    entry = self._pending.get((ns, name))
                    self._pending[(ns, name)] = (n, at) if entry is None else (entry[0] + n, max(entry[1], at))

    def fold(self, io: Ports) -> Op[None]:
        """Flush, then move this store's rows into the shared totals (at close)."""
        yield from self.flush(io)
        counter = self.counter

        def body(t: Ports) -> Op[None]:
            yield t.tx.fold_access(counter)

        yield io.transact(True, body)


def _new_counter() -> int:
    # Counter 0 holds the shared totals; every open store counts under a fresh one.
    return secrets.randbits(62) + 1
