"""A sync view of an async store, for running the sync conformance suites against
kmsbox.aio (shared by tests/aio's conftest and its tests; tests/ is on the path)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from typing import Any

import kmsbox.aio

__all__ = ["LoopThread", "SyncView"]


class LoopThread:
    """An event loop on a thread of its own, for calling an async store from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the loop in the caller's context (its namespace block, its actor)."""
        context = contextvars.copy_context()
        done: asyncio.Future[Any] | None = None
        ready = threading.Event()
        box: dict[str, Any] = {}

        def start() -> None:
            box["future"] = context.run(self.loop.create_task, coro)
            ready.set()

        self.loop.call_soon_threadsafe(start)
        ready.wait()
        done = box["future"]
        return asyncio.run_coroutine_threadsafe(_wait(done), self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _wait(future: Any) -> Any:
    return await future


class SyncView:
    """Calls an :class:`~kmsbox.aio.AsyncSecretStore` as if it were a ``SecretStore``: each
    coroutine method runs on the loop thread, each async iterator is drained. It lets the
    store conformance suite check that the async face behaves exactly as the sync one."""

    def __init__(self, store: kmsbox.aio.AsyncSecretStore, loop: LoopThread) -> None:
        self._store = store
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if inspect.isasyncgenfunction(attribute):
            return lambda *a, **k: iter(self._loop.run(_drain(attribute(*a, **k))))
        if inspect.iscoroutinefunction(attribute):
            return lambda *a, **k: self._loop.run(attribute(*a, **k))
        return attribute

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._store, name, value)


async def _drain(iterator: Any) -> list[Any]:
    return [item async for item in iterator]
