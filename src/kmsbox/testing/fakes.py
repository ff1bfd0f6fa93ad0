"""The interface of local KMS fakes, and a fault/latency injector they share.

Every cloud plugin ships a fake of its service that the official client talks
to over a real loopback socket; it registers a factory through the
``register_fake_servers`` hook. ``kmsbox fake-kms serve`` and the pytest
fixtures start them through that hook.

Faults can be aimed at some operations only, named as each service names them
(``Decrypt`` for AWS KMS and Cloud KMS, ``decrypt`` for Vault transit)::

    fake.faults.configure(rate=1.0, kind="reset", operations={"Decrypt"})
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

__all__ = ["FAULT_KINDS", "TRANSIENT_FAULT_KINDS", "FakeServer", "FaultInjector", "abort_connection"]

#: Faults every fake can inject. Transient (a client should retry): throttle,
#: unavailable (a 5xx), timeout (no answer in time), reset (the TCP connection is
#: reset). Permanent: denied (access denied), malformed (a reply that does not parse).
FAULT_KINDS = ("throttle", "unavailable", "timeout", "denied", "reset", "malformed")
#: The fault kinds a client should treat as transient.
TRANSIENT_FAULT_KINDS = frozenset({"throttle", "unavailable", "timeout", "reset"})


@runtime_checkable
class FakeServer(Protocol):
    """A started fake KMS on loopback."""

    name: str

    @property
    def kek_uri(self) -> str:
        """URI of the ready key created at start."""
        ...

    def env(self) -> dict[str, str]:
        """Environment variables a client needs to reach this fake (endpoint, token...)."""
        ...

    def create_key(self, name: str) -> str:
        """Create another key and return its KEK URI."""
        ...

    def rotate_key(self, kek_uri: str) -> str:
        """Give the key a new primary version; return the new version's name."""
        ...

    @property
    def faults(self) -> FaultInjector:
        """The fault and latency injector in front of every API call."""
        ...

    def stop(self) -> None:
        """Stop serving and release the port."""
        ...


class FaultInjector:
    """Latency and faults applied to each API call of a fake; also counts calls.

    ``rate`` is the probability (0..1) that a call fails with ``kind``; ``latency``
    is added to every call, in seconds. ``operations`` limits faults to the calls of
    those operations (empty: every operation); latency still applies to all calls.
    ``calls`` counts API calls by operation.

    A fake passes ``known_operations`` (its service's operation names), so that a
    misspelt name in ``operations`` is a ValueError instead of a fault that never fires.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        rate: float = 0.0,
        kind: str = "unavailable",
        seed: int | None = None,
        operations: Iterable[str] = (),
        known_operations: Iterable[str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._known = frozenset(known_operations) if known_operations is not None else None
        self.latency = 0.0
        self.rate = 0.0
        self.kind = "unavailable"
        self.remaining: int | None = None
        self.operations: frozenset[str] = frozenset()
        self.calls: dict[str, int] = {}
        self.configure(latency=latency, rate=rate, kind=kind, operations=operations)

    @property
    def known_operations(self) -> frozenset[str] | None:
        """The operation names this fake serves (None when the fake did not say)."""
        return self._known

    def configure(
        self,
        *,
        latency: float | None = None,
        rate: float | None = None,
        kind: str | None = None,
        count: int | None = None,
        operations: Iterable[str] | None = None,
    ) -> None:
        """Change latency, fault rate, kind and targeted operations; ``count`` limits how many faults fire.

        Arguments left as None keep their value, except ``count``, which is set each
        time (None: no limit). ``operations`` replaces the targeted set; an empty
        collection targets every operation again.
        """
        targeted = self._checked_operations(operations) if operations is not None else None
        if count is not None and count < 0:
            raise ValueError("fault count must be >= 0")
        with self._lock:
            if latency is not None:
                if not latency >= 0:  # also refuses nan
                    raise ValueError("latency must be >= 0")
                self.latency = latency
            if rate is not None:
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("fault rate must be between 0 and 1")
                self.rate = rate
            if kind is not None:
                if kind not in FAULT_KINDS:
                    raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
                self.kind = kind
            if targeted is not None:
                self.operations = targeted
            self.remaining = count

    def _checked_operations(self, operations: Iterable[str]) -> frozenset[str]:
        # A lone string is one name, not a set of one-letter names.
        names = frozenset([operations] if isinstance(operations, str) else operations)
        if not all(isinstance(name, str) and name for name in names):
            raise ValueError("operation names must be non-empty strings")
        if self._known is not None:
            unknown = sorted(names - self._known)
            if unknown:
                raise ValueError(
                    f"unknown operation {', '.join(map(repr, unknown))} for this fake; "
                    f"it serves: {', '.join(sorted(self._known))}"
                )
        return names

    def clear(self) -> None:
        """No latency, no faults, every operation targeted again."""
        self.configure(latency=0.0, rate=0.0, kind="unavailable", count=None, operations=())

    def before_call(self, operation: str) -> str | None:
        """Count the call, sleep the latency, and return a fault kind to inject or None."""
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            latency = self.latency
            fault: str | None = None
            targeted = not self.operations or operation in self.operations
            if (
                targeted
                and self.rate > 0
                and (self.remaining is None or self.remaining > 0)
                and self._random.random() < self.rate
            ):
                fault = self.kind
                if self.remaining is not None:
                    self.remaining -= 1
        if latency:
            time.sleep(latency)
        return fault

    def total_calls(self, *operations: str) -> int:
        """Calls counted, of the named operations or of all."""
        with self._lock:
            if not operations:
                return sum(self.calls.values())
            return sum(self.calls.get(op, 0) for op in operations)

    def reset_counts(self) -> None:
        """Zero the call counters."""
        with self._lock:
            self.calls.clear()


def abort_connection(sock: socket.socket) -> None:
    """Reset a TCP connection: the peer gets an RST ("connection reset by peer"), not a FIN.

    With SO_LINGER on and a zero time-out, closing the socket discards unsent data and
    sends a reset. If file objects made by ``makefile()`` are still open (as in
    ``socketserver`` handlers), the reset goes out when they are closed.
    """
    with contextlib.suppress(OSError):  # already closed by the peer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
