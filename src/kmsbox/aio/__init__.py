"""kmsbox for asyncio: a store and an engine that never block the event loop.

    store = await kmsbox.aio.open_store("sqlite:///secrets.db", kek="env://KMSBOX_MASTER_KEY")
    async with store:
        await store.put("db/password", "hunter2", namespace="app:production")
        secret = await store.get("db/password", namespace="app:production")

A KMS call or a database wait never runs on the loop's thread; with keys cached, a read
of a SQLite or PostgreSQL store makes no thread hop at all; concurrent cold reads of one
namespace make one KMS call. See ``docs/async.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kmsbox.aio.engine import Envelope
from kmsbox.aio.kek import AsyncKekProvider, InlineKek, ThreadedKek, async_kek
from kmsbox.aio.store import AsyncSecretStore
from kmsbox.errors import KmsboxError
from kmsbox.kek import KekProvider
from kmsbox.keys import KeyCache
from kmsbox.storage.sql.aio import check_connections
from kmsbox.store.config import PreparedStore, opening_error, prepare_store
from kmsbox.store.runtime import StoreRuntime

__all__ = [
    "AsyncKekProvider",
    "AsyncSecretStore",
    "Envelope",
    "InlineKek",
    "ThreadedKek",
    "async_kek",
    "open_store",
]

#: Worker threads of a store's pool (KEK calls of sync providers, waits for a lock).
DEFAULT_WORKERS = 8


def start_workers(pool: ThreadPoolExecutor, count: int) -> None:
    """Start ``count`` threads of ``pool`` now, from one of its own threads.

    A ThreadPoolExecutor starts a thread when a task finds none idle, and ``submit`` waits
    until the new thread runs: called from the event loop, the first KMS calls of a cold
    store each stalled the loop for a thread's start (10 ms for 8 threads on a busy
    machine). Each task here waits until all ``count`` are running, so none is reused.
    """
    gate = threading.Barrier(count)

    def wait() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait(timeout=5)

    started = [pool.submit(wait) for _ in range(count - 1)]
    wait()
    for future in started:
        future.result()


async def open_store(
    url: str | None = None,
    kek: str | KekProvider | Sequence[str | KekProvider] | None = None,
    *,
    audit_reads: bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
    cache: KeyCache[Any] | None = None,
    create: bool = True,
    audit_chains: int | None = None,
    audit_sinks: Sequence[str] | None = None,
    executor: ThreadPoolExecutor | None = None,
    connections: int | None = None,
) -> AsyncSecretStore:
    """Open an :class:`AsyncSecretStore` (the arguments and errors of :func:`kmsbox.open_store`).

    ``executor`` is the bounded thread pool for what cannot be awaited natively (a sync
    KEK provider's calls, a SQLite write that must wait for the lock); by default the
    store makes one of :data:`DEFAULT_WORKERS` threads and shuts it down at ``close()``.
    ``connections`` bounds the database connections a backend awaited natively
    (PostgreSQL) keeps open, 1 to 1,000 (default
    :data:`kmsbox.storage.sql.aio.DEFAULT_POOL_SIZE`); tasks beyond it wait their turn.
    TypeError or ValueError for another value. Opening (settings, schema migration, the
    audit key's unwrap) runs off the loop too.
    """
    if connections is not None:
        check_connections(connections)
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=DEFAULT_WORKERS, thread_name_prefix="kmsbox-aio")
    loop = asyncio.get_running_loop()

    def prepare() -> PreparedStore:
        prepared = prepare_store(
            url,
            kek,
            audit_reads=audit_reads,
            config_file=config_file,
            cache=cache,
            create=create,
            audit_chains=audit_chains,
            audit_sinks=audit_sinks,
        )
        if own:
            start_workers(pool, DEFAULT_WORKERS)
        return prepared

    try:
        prepared = await loop.run_in_executor(pool, prepare)
    except BaseException:
        if own:
            pool.shutdown(wait=False)
        raise
    runtime = StoreRuntime(
        prepared.backend,
        prepared.providers,
        cache=prepared.cache,
        settings=prepared.runtime_settings,
        sinks=prepared.sinks,
    )
    store = AsyncSecretStore(runtime, pool, own_executor=own, connections=connections)
    try:
        await store._open()
    except BaseException as exc:
        await loop.run_in_executor(pool, prepared.close)
        if own:
            pool.shutdown(wait=False)
        if isinstance(exc, KmsboxError):
            raise opening_error(exc) from exc.__cause__
        raise
    return store
