"""The interface of local KMS fakes, and a fault/latency injector they share.

Every cloud plugin ships a fake of its service that the official client talks
to over a real loopback socket; it registers a factory through the
``register_fake_servers`` hook. ``kmsbox fake-kms serve`` and the pytest
fixtures start them through that hook.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["FAULT_KINDS", "FakeServer", "FaultInjector"]

#: Faults every fake can inject. Transient: throttle, unavailable, timeout.
#: Permanent: denied.
FAULT_KINDS = ("throttle", "unavailable", "timeout", "denied")


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
    is added to every call, in seconds. ``calls`` counts API calls by operation.
    """

    def __init__(
        self, *, latency: float = 0.0, rate: float = 0.0, kind: str = "unavailable", seed: int | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.latency = 0.0
        self.rate = 0.0
        self.kind = "unavailable"
        self.remaining: int | None = None
        self.calls: dict[str, int] = {}
        self.configure(latency=latency, rate=rate, kind=kind)

    def configure(
        self,
        *,
        latency: float | None = None,
        rate: float | None = None,
        kind: str | None = None,
        count: int | None = None,
    ) -> None:
        """Change latency, fault rate and kind; ``count`` limits how many faults fire."""
        with self._lock:
            if latency is not None:
                if latency < 0:
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
            self.remaining = count

    def clear(self) -> None:
        """No latency, no faults."""
        self.configure(latency=0.0, rate=0.0, kind="unavailable", count=None)

    def before_call(self, operation: str) -> str | None:
        """Count the call, sleep the latency, and return a fault kind to inject or None."""
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            latency = self.latency
            fault: str | None = None
            if self.rate > 0 and (self.remaining is None or self.remaining > 0) and self._random.random() < self.rate:
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
