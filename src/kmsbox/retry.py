"""Bounded retries with exponential backoff and full jitter, for KEK providers.

Providers classify each SDK failure as transient (throttling, 5xx, unavailable,
time-outs) or permanent; transient ones are retried until the attempt count or
the deadline runs out, then raised as a transient ``ProviderError``. Permanent
ones are raised at once.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kmsbox.errors import ConfigError, ProviderError

__all__ = ["RetryPolicy", "call_with_retry"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a provider keeps trying. All times are seconds.

    ``timeout`` is the per-request time-out the provider gives its client.
    """

    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 2.0
    deadline: float = 15.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if (
            self.max_attempts < 1
            or self.base_delay < 0
            or self.max_delay < 0
            or self.deadline <= 0
            or self.timeout <= 0
        ):
            raise ConfigError("retry settings must be positive")

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Read ``KMSBOX_KMS_MAX_ATTEMPTS``, ``KMSBOX_KMS_DEADLINE`` and ``KMSBOX_KMS_TIMEOUT``."""
        try:
            return cls(
                max_attempts=int(os.environ.get("KMSBOX_KMS_MAX_ATTEMPTS", cls.max_attempts)),
                deadline=float(os.environ.get("KMSBOX_KMS_DEADLINE", cls.deadline)),
                timeout=float(os.environ.get("KMSBOX_KMS_TIMEOUT", cls.timeout)),
            )
        except ValueError:
            raise ConfigError(
                "KMSBOX_KMS_MAX_ATTEMPTS, KMSBOX_KMS_DEADLINE and KMSBOX_KMS_TIMEOUT must be numbers"
            ) from None

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter backoff before retry number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, cap)


def call_with_retry(
    operation: Callable[[], T],
    classify: Callable[[BaseException], ProviderError | None],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``operation``, retrying transient failures within ``policy``.

    ``classify(exc)`` returns the ``ProviderError`` an SDK exception maps to, or
    None for exceptions that are not the provider's (those propagate unchanged).
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except ProviderError:
            raise
        except Exception as exc:
            mapped = classify(exc)
            if mapped is None:
                raise
            if not mapped.transient:
                raise mapped from exc
            wait = policy.delay(attempt)
            if attempt >= policy.max_attempts or clock() - start + wait > policy.deadline:
                raise ProviderError(
                    f"{mapped} (gave up after {attempt} attempts in {clock() - start:.1f}s)",
                    transient=True,
                    code=mapped.code,
                ) from exc
            sleep(wait)
