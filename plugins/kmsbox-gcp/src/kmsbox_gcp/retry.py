"""Bounded retries for coroutines: :func:`kmsbox.retry.call_with_retry` for the async provider.

The same policy, classification and errors as the sync loop; only the wait between
attempts is ``asyncio.sleep``, so a retrying call never holds the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kmsbox.errors import ProviderError
from kmsbox.retry import RetryPolicy

__all__ = ["acall_with_retry"]

T = TypeVar("T")


async def acall_with_retry(
    operation: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], ProviderError | None],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Await ``operation()``, retrying transient failures within ``policy``.

    ``classify(exc)`` returns the ``ProviderError`` an SDK exception maps to, or None
    for exceptions that are not the provider's (those propagate unchanged). A permanent
    failure is raised at once; a transient one, once the attempts or the deadline run
    out, as a transient ``ProviderError`` saying how many attempts were made.
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
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
        await sleep(wait)
