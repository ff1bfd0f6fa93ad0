"""The gcp-kms provider for asyncio, over ``KeyManagementServiceAsyncClient`` (grpc.aio).

:meth:`kmsbox_gcp.provider.GcpKekProvider.as_async` returns it, and ``kmsbox.aio`` uses
it instead of running the sync provider on a thread pool: a Cloud KMS call is awaited
on the event loop, with no thread. It sends the very calls of :mod:`kmsbox_gcp.calls`
(requests, integrity checks, error mapping) under the same retry policy, waiting
between attempts with ``asyncio.sleep``, so it raises what the sync provider raises.

A grpc.aio channel belongs to the event loop it was made in, so a client is made
lazily, inside the running loop, one per loop; a client whose loop has closed is
dropped (its channel went with the loop). :meth:`AsyncGcpKekProvider.aclose` closes
them from async code, and the sync provider's ``close()`` (which an async store calls
from its thread pool when it closes) closes them from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from google.auth.credentials import Credentials
from google.cloud.kms_v1 import KeyManagementServiceAsyncClient

from kmsbox.kek import Context, WrappedKey
from kmsbox.retry import RetryPolicy
from kmsbox_gcp.calls import BATCH_CONCURRENCY, DESCRIBE_FAILURES, CallBudget, KeyCalls, KmsCall
from kmsbox_gcp.client import ClientSettings, make_async_client
from kmsbox_gcp.errors import classify
from kmsbox_gcp.retry import acall_with_retry

__all__ = ["AsyncGcpKekProvider"]

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# How long a close from another thread waits for the client's loop to close its channel.
_CLOSE_WAIT = 5.0


class AsyncGcpKekProvider:
    """A Cloud KMS KEK for asyncio: :class:`kmsbox.aio.AsyncKekProvider`, with the sync provider's
    semantics, errors and retries (see :class:`kmsbox_gcp.provider.GcpKekProvider`).

    Made by ``GcpKekProvider.as_async()``, which passes its key calls, settings, retry
    policy and credentials. Usable from several event loops (a client each).
    """

    def __init__(
        self, calls: KeyCalls, settings: ClientSettings, policy: RetryPolicy, credentials: Credentials | None
    ) -> None:
        self._calls = calls
        self._settings = settings
        self._policy = policy
        self._credentials = credentials
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, KeyManagementServiceAsyncClient] = {}
        self._closing: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"AsyncGcpKekProvider(uri={self.uri!r})"

    @property
    def uri(self) -> str:
        """The key URI."""
        return self._calls.uri

    @property
    def open_clients(self) -> int:
        """How many event loops have a client of this provider open."""
        with self._lock:
            return len(self._clients)

    async def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """See :meth:`GcpKekProvider.wrap <kmsbox_gcp.provider.GcpKekProvider.wrap>`."""
        return await self._send(self._calls.encrypt(key, context))

    async def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """See :meth:`GcpKekProvider.unwrap <kmsbox_gcp.provider.GcpKekProvider.unwrap>`."""
        return await self._send(self._calls.decrypt(wrapped, context))

    async def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """Wrap each item, a few calls at a time (Cloud KMS has no batch Encrypt)."""
        return await _parallel(lambda item: self.wrap(*item), items)

    async def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """Unwrap each item, a few calls at a time (Cloud KMS has no batch Decrypt)."""
        return await _parallel(lambda item: self.unwrap(*item), items)

    async def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """Decrypt, then Encrypt under the primary version (Cloud KMS has no re-encrypt call)."""
        return await self.wrap(await self.unwrap(wrapped, context), context)

    async def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """Unwrap every item, then wrap them all under the primary version."""
        keys = await self.unwrap_many(items)
        return await self.wrap_many([(key, context) for key, (_, context) in zip(keys, items, strict=True)])

    async def primary_version(self) -> str:
        """See :meth:`GcpKekProvider.primary_version <kmsbox_gcp.provider.GcpKekProvider.primary_version>`."""
        return await self._send(self._calls.get_primary())

    async def version_available(self, version: str) -> bool:
        """True when ``version`` (short id or full name) of this key exists and is ENABLED."""
        call = self._calls.get_version(version)
        return False if call is None else await self._send(call)

    async def describe(self) -> dict[str, str]:
        """Provider kind, key name, endpoint and primary version (never key material)."""
        primary: str | BaseException
        try:
            primary = await self.primary_version()
        except DESCRIBE_FAILURES as exc:
            primary = exc
        return self._calls.describe(self._settings, primary)

    async def aclose(self) -> None:
        """Close every client: this loop's here, another running loop's on that loop."""
        here = asyncio.get_running_loop()
        for loop, client in self._take_clients():
            if loop is here:
                await client.transport.close()  # type: ignore[no-untyped-call]  # gapic's close() is unannotated
            elif loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(client.transport.close(), loop)  # type: ignore[no-untyped-call]
                await asyncio.wait_for(asyncio.wrap_future(closing), _CLOSE_WAIT)
            # An idle loop's client is left to that loop's owner; a closed loop's went with it.

    def close_from_any_thread(self) -> None:
        """Close every client from sync code: on its loop when that runs elsewhere, else as the loop allows."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, client in self._take_clients():
            if loop.is_closed():
                continue  # its channel went with its loop
            closing = client.transport.close()  # type: ignore[no-untyped-call]  # gapic's close() is unannotated
            if loop is here:
                # A blocking close() called on the loop's own thread cannot wait: the loop finishes it.
                task = loop.create_task(closing)
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(closing, loop).result(_CLOSE_WAIT)
            elif here is None:
                loop.run_until_complete(closing)  # an idle loop (not asyncio.run's, which closes its loop)
            else:
                closing.close()  # an idle loop cannot run while this thread runs another

    def _client(self) -> KeyManagementServiceAsyncClient:
        """The running loop's client, made on first use (a grpc.aio channel is bound to its loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                for stale in [old for old in self._clients if old.is_closed()]:
                    del self._clients[stale]
                client = self._clients[loop] = make_async_client(self._settings, self._credentials)
            return client

    def _take_clients(self) -> list[tuple[asyncio.AbstractEventLoop, KeyManagementServiceAsyncClient]]:
        with self._lock:
            taken = list(self._clients.items())
            self._clients.clear()
        return taken

    async def _send(self, call: KmsCall[T]) -> T:
        """Send ``call`` under the retry policy, keeping each timeout inside the deadline."""
        budget = CallBudget(self._policy)

        async def attempt() -> T:
            method = getattr(self._client(), call.rpc)
            try:
                reply = await method(request=call.request, retry=None, timeout=budget.timeout())
            except Exception as exc:
                return call.failed(exc)
            return call.answer(reply)

        return await acall_with_retry(attempt, classify, self._policy)


async def _parallel(call: Callable[[ItemT], Awaitable[ResultT]], items: Sequence[ItemT]) -> list[ResultT]:
    """``[await call(item) for item in items]``, a few at a time; every call ends, then the first failure
    (in order) is raised, as the sync provider's thread pool does."""
    if len(items) <= 1:
        return [await call(item) for item in items]
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(item: ItemT) -> ResultT:
        async with gate:
            return await call(item)

    outcomes = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    results: list[ResultT] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results
