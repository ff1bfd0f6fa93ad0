"""Throttling of failed authentication, per client address.

After ``failures`` failed attempts within ``lockout`` seconds a client is refused
(429, with ``Retry-After``) for ``lockout`` seconds from its last failure, even
with a right token, so guessing cannot go on at network speed. At most ``limit``
clients are tracked (the oldest entry goes first), so memory stays bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["AuthThrottle"]


@dataclass(slots=True)
class _Record:
    failures: int
    last: float


class AuthThrottle:
    """Counts failed authentications per client and says when one must wait."""

    def __init__(self, *, failures: int = 5, lockout: float = 60.0, limit: int = 10_000) -> None:
        self.failures = failures
        self.lockout = lockout
        self._limit = limit
        self._clients: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """Seconds ``client`` must still wait (0: it may try)."""
        record = self._clients.get(client)
        if record is None:
            return 0
        left = record.last + self.lockout - time.monotonic()
        if left <= 0:
            del self._clients[client]
            return 0
        return int(left) + 1 if record.failures >= self.failures else 0

    def failed(self, client: str) -> None:
        """Count a failed attempt."""
        now = time.monotonic()
        record = self._clients.pop(client, None)
        if record is None or now - record.last > self.lockout:
            record = _Record(0, now)
        record.failures += 1
        record.last = now
        self._clients[client] = record
        while len(self._clients) > self._limit:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget a client's failures after a successful authentication."""
        self._clients.pop(client, None)
