"""acall_with_retry decides as kmsbox.retry.call_with_retry does: same attempts, same waits, same errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kmsbox_gcp.retry import acall_with_retry

from kmsbox.errors import ProviderError
from kmsbox.retry import RetryPolicy, call_with_retry


@pytest.fixture(autouse=True)
def _restore_random() -> Iterator[None]:
    """The tests seed the global generator the backoff draws from (so both loops draw the same waits)."""
    state = random.getstate()
    yield
    random.setstate(state)


class Flaky(Exception):
    """A transient SDK failure."""


class Refused(Exception):
    """A permanent SDK failure."""


def classify(exc: BaseException) -> ProviderError | None:
    if isinstance(exc, Flaky):
        return ProviderError("flaky", transient=True, code="UNAVAILABLE")
    if isinstance(exc, Refused):
        return ProviderError("refused", transient=False, code="PERMISSION_DENIED")
    return None


class Script:
    """An operation that raises the scripted exceptions in turn, then returns "done"; a clock that
    only the sleeps move."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = list(failures)
        self.attempts = 0
        self.now = 0.0
        self.waits: list[float] = []

    def step(self) -> str:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def clock(self) -> float:
        return self.now


def run_sync(failures: list[BaseException], policy: RetryPolicy) -> tuple[Any, ...]:
    script = Script(failures)
    random.seed(7)
    try:
        result: Any = call_with_retry(script.step, classify, policy, sleep=script.sleep, clock=script.clock)
    except Exception as exc:
        result = (type(exc), str(exc), getattr(exc, "transient", None), getattr(exc, "code", None))
    return result, script.attempts, script.waits


def run_async(failures: list[BaseException], policy: RetryPolicy) -> tuple[Any, ...]:
    script = Script(failures)

    async def step() -> str:
        return script.step()

    random.seed(7)
    try:
        result: Any = asyncio.run(acall_with_retry(step, classify, policy, sleep=script.asleep, clock=script.clock))
    except Exception as exc:
        result = (type(exc), str(exc), getattr(exc, "transient", None), getattr(exc, "code", None))
    return result, script.attempts, script.waits


SCENARIOS: dict[str, Callable[[], list[BaseException]]] = {
    "success": list,
    "two-transient-then-success": lambda: [Flaky(), Flaky()],
    "permanent": lambda: [Refused()],
    "transient-then-permanent": lambda: [Flaky(), Refused()],
    "not-the-providers": lambda: [ValueError("a bug")],
    "already-a-provider-error": lambda: [ProviderError("typed", transient=True, code="X")],
    "out-of-attempts": lambda: [Flaky()] * 10,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_async_loop_decides_as_the_sync_one(scenario: str) -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=1.0, deadline=100)
    assert run_async(SCENARIOS[scenario](), policy) == run_sync(SCENARIOS[scenario](), policy)


def test_the_deadline_ends_retries_as_in_the_sync_loop() -> None:
    policy = RetryPolicy(max_attempts=100, base_delay=1.0, max_delay=1.0, deadline=3)
    sync = run_sync([Flaky()] * 100, policy)
    assert run_async([Flaky()] * 100, policy) == sync
    (error, message, transient, code), attempts, waits = sync
    assert error is ProviderError and transient is True and code == "UNAVAILABLE"
    assert "gave up after" in message and 1 < attempts < 100 and sum(waits) <= 3


def test_a_cancelled_wait_between_attempts_cancels_the_call() -> None:
    attempts = 0

    async def always_flaky() -> str:
        nonlocal attempts
        attempts += 1
        raise Flaky()

    async def cancel_while_waiting() -> None:
        policy = RetryPolicy(max_attempts=10, base_delay=5.0, max_delay=5.0, deadline=100)
        random.seed(1)
        task = asyncio.ensure_future(acall_with_retry(always_flaky, classify, policy))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_waiting())
    assert attempts == 1
