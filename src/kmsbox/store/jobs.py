"""Reports and progress of long maintenance jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ItemFailure", "JobReport", "Progress"]

#: ``progress(done, total)``: called after every committed batch (total may be None).
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class ItemFailure:
    """One item a job passed over: its 1-based position, whose it was (when known), and the
    typed error (a ValueError for bad input, a kmsbox error otherwise; never a value)."""

    item: int
    namespace: str | None
    name: str | None
    error: Exception

    @property
    def reason(self) -> str:
        """The error's reason code (``invalid`` for bad input)."""
        return str(getattr(self.error, "reason", "invalid"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "item": self.item,
            "namespace": self.namespace,
            "name": self.name,
            "error": type(self.error).__name__,
            "reason": self.reason,
            "message": str(self.error),
        }


@dataclass
class JobReport:
    """What a job did: rows processed, batches committed, KEK calls, time, what remains."""

    job: str
    namespace: str | None = None
    processed: int = 0
    skipped: int = 0
    batches: int = 0
    kek_calls: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    remaining: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    #: Items passed over (an import with ``on_error="skip"``).
    failures: list[ItemFailure] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic, repr=False)

    def finish(self) -> JobReport:
        """Stamp the elapsed time."""
        self.seconds = time.monotonic() - self._started
        return self

    def add(self, other: JobReport) -> None:
        """Fold a per-namespace report into this one."""
        self.processed += other.processed
        self.skipped += other.skipped
        self.batches += other.batches
        self.kek_calls += other.kek_calls
        self.remaining += other.remaining

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "job": self.job,
            "namespace": self.namespace,
            "processed": self.processed,
            "skipped": self.skipped,
            "batches": self.batches,
            "kek_calls": self.kek_calls,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "remaining": self.remaining,
            "details": self.details,
            "failures": [f.to_dict() for f in self.failures],
        }
