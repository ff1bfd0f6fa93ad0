"""What the async store adds: it never blocks the loop, makes one KMS call for concurrent
cold reads, does not hop threads on the warm path, and a cancelled task leaves all of a
change or none of it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

import kmsbox
import kmsbox.aio
from kmsbox.errors import SecretNotFound
from kmsbox.kek import KekProvider
from kmsbox.testing.counting import CountingKek
from kmsbox.testing.fake_kek import FakeKek

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ThreadRecordingKek(CountingKek):
    """Counts calls and records the thread each ran on."""

    def __init__(self, inner: KekProvider) -> None:
        super().__init__(inner)
        self.threads: set[int] = set()

    def unwrap(self, wrapped: Any, context: Any) -> bytes:
        self.threads.add(threading.get_ident())
        return super().unwrap(wrapped, context)

    def wrap(self, key: bytes, context: Any) -> Any:
        self.threads.add(threading.get_ident())
        return super().wrap(key, context)


class CountingExecutor(ThreadPoolExecutor):
    """A thread pool that counts what is submitted to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


class Ticker:
    """Counts ticks of the loop while it runs: a loop that is blocked does not tick."""

    def __init__(self, every: float = 0.002) -> None:
        self.every = every
        self.ticks = 0
        self.longest_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.every)
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
async def slow_kek() -> AsyncIterator[ThreadRecordingKek]:
    fake = FakeKek()
    fake.faults.configure(latency=0.2)
    yield ThreadRecordingKek(fake)


async def test_a_slow_kms_never_runs_on_the_loop_and_cold_reads_make_one_call_per_key(
    slow_kek: ThreadRecordingKek, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cold.db'}"
    setup = kmsbox.open_store(url, kek=slow_kek)
    for ns in range(3):
        for i in range(5):
            setup.put(f"s{i}", f"v{ns}-{i}", namespace=f"tenant-{ns}")
    setup.close()
    loop_thread = threading.get_ident()
    store = await kmsbox.aio.open_store(url, kek=slow_kek)
    async with store:
        slow_kek.calls.clear()
        slow_kek.threads.clear()
        with Ticker() as ticker:
            values = await asyncio.gather(*[store.get(f"s{i % 5}", namespace=f"tenant-{i % 3}") for i in range(60)])
        assert [v.value for v in values] == [f"v{i % 3}-{i % 5}" for i in range(60)]
        # One unwrap per namespace key, for 60 concurrent cold reads.
        assert slow_kek.unwraps == 3
        assert loop_thread not in slow_kek.threads
        # The loop went on ticking while the KMS took 200 ms.
        assert ticker.ticks >= 20


async def test_the_warm_path_does_not_hop_threads(kek_uri: str, tmp_path: Path) -> None:
    executor = CountingExecutor()
    store = await kmsbox.aio.open_store(f"sqlite:///{tmp_path / 'warm.db'}", kek=kek_uri, executor=executor)
    async with store:
        await store.put("k", "v", namespace="app")
        await store.get("k", namespace="app")
        before = executor.submitted
        for _ in range(50):
            assert (await store.get("k", namespace="app")).value == "v"
        assert executor.submitted == before
    executor.shutdown()


async def test_a_write_waiting_for_the_sqlite_lock_waits_off_the_loop(kek_uri: str, tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    store = await kmsbox.aio.open_store(f"sqlite:///{db}", kek=kek_uri)
    async with store:
        await store.put("k", "v1", namespace="app")
        holder = sqlite3.connect(db, isolation_level=None)
        with closing(holder):
            holder.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
            with Ticker() as ticker:
                pending = asyncio.ensure_future(store.put("k", "v2", namespace="app"))
                await asyncio.sleep(0.3)
                assert not pending.done()
                holder.execute("COMMIT")
                await pending
            assert ticker.ticks >= 20
        assert (await store.get("k", namespace="app")).value == "v2"


async def test_a_failed_kms_call_is_not_cached(tmp_path: Path) -> None:
    fake = FakeKek()
    url = f"sqlite:///{tmp_path / 'fail.db'}"
    with kmsbox.open_store(url, kek=fake) as setup:
        setup.put("k", "v", namespace="app")
    counting = CountingKek(fake)
    store = await kmsbox.aio.open_store(url, kek=counting)
    async with store:
        store.key_cache.clear()
        fake.faults.configure(rate=1.0, kind="denied", count=1)  # a permanent failure: the key is unavailable
        results = await asyncio.gather(*[store.try_get("k", namespace="app") for _ in range(10)])
        # The readers that shared the failed call all got its error (readers that came
        # after it asked again, and got the value).
        assert "key_unavailable" in {r.reason for r in results}
        assert {r.reason for r in results} <= {"key_unavailable", None}
        # The next read asks again, and the KMS answers now.
        assert (await store.get("k", namespace="app")).value == "v"


async def test_errors_and_audit_events_are_those_of_the_sync_store(kek_uri: str) -> None:
    store = await kmsbox.aio.open_store("memory://", kek=kek_uri)
    async with store:
        await store.put("k", "v", namespace="app", actor="alice")
        with pytest.raises(SecretNotFound):
            await store.get("absent", namespace="app")
        with pytest.raises(kmsbox.NamespaceNotFound):
            await store.get("k", namespace="nowhere")
        with pytest.raises(ValueError):
            await store.put("bad name", "v", namespace="app")
        events = [
            (e.name, e.action, e.result, e.actor)
            async for e in store.iter_audit_events()
            if e.namespace == "app" and e.name
        ]
        assert events[:2] == [("k", "create", "success", "alice"), ("absent", "read", "failure", None)]
        assert (await store.verify_audit()).ok


def _cancel_points() -> list[float]:
    return [0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05]


async def _cancel_puts_at_many_points(store: kmsbox.aio.AsyncSecretStore) -> None:
    for round_, delay in enumerate(_cancel_points()):
        before = (await store.get("cancel-me", namespace="app")).version
        task = asyncio.ensure_future(store.put("cancel-me", f"value-{round_}", namespace="app"))
        await asyncio.sleep(delay)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)  # a put on the pool may still be committing
        secret = await store.get("cancel-me", namespace="app")
        history = await store.history("cancel-me", namespace="app")
        # Whole or nothing: either the old version is still current, or the new one is,
        # with its value; never a version without its value or its audit event.
        assert secret.version in (before, before + 1)
        if secret.version == before + 1:
            assert secret.value == f"value-{round_}"
        assert [v.version for v in history] == list(range(1, secret.version + 1))
    assert (await store.verify_audit()).ok
    await store.put("after", "usable", namespace="app")
    assert (await store.get("after", namespace="app")).value == "usable"


async def test_a_cancelled_put_leaves_the_whole_change_or_none_sqlite(kek_uri: str, tmp_path: Path) -> None:
    slow = FakeKek()
    slow.faults.configure(latency=0.003)
    store = await kmsbox.aio.open_store(f"sqlite:///{tmp_path / 'cancel.db'}", kek=slow)
    async with store:
        await store.put("cancel-me", "first", namespace="app")
        await _cancel_puts_at_many_points(store)


@pytest.mark.postgres
async def test_a_cancelled_put_leaves_the_whole_change_or_none_postgres(kek_uri: str, postgres_url: str) -> None:
    store = await kmsbox.aio.open_store(postgres_url, kek=kek_uri)
    async with store:
        await store.put("cancel-me", "first", namespace="app")
        await _cancel_puts_at_many_points(store)
        # A cancelled delete, likewise.
        for delay in _cancel_points():
            await store.put("doomed", "x", namespace="app")
            task = asyncio.ensure_future(store.delete("doomed", namespace="app"))
            await asyncio.sleep(delay)
            task.cancel()
            with suppress(asyncio.CancelledError, SecretNotFound):
                await task
            result = await store.try_get("doomed", namespace="app")
            assert result.ok or result.reason == "not_found"
        assert (await store.verify_audit()).ok


@pytest.mark.postgres
async def test_a_cancelled_job_batch_commits_whole_and_the_job_resumes(kek_uri: str, postgres_url: str) -> None:
    store = await kmsbox.aio.open_store(postgres_url, kek=kek_uri)
    async with store:
        for i in range(120):
            await store.put(f"s{i:03d}", f"v{i}", namespace="big")
        await store.rotate_namespace_key("big")
        task = asyncio.ensure_future(store.rewrap_deks("big", batch_size=10))
        await asyncio.sleep(0.05)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        report = await store.rewrap_deks("big", batch_size=10)
        assert report.remaining == 0
        keys = (await store.status("big"))["namespaces"]["big"]["keys"]
        assert [(k["version"], k["status"], k["secret_versions"]) for k in keys] == [
            (1, "retired", 0),
            (2, "active", 120),
        ]
        values = await asyncio.gather(*[store.get(f"s{i:03d}", namespace="big") for i in range(120)])
        assert [v.value for v in values] == [f"v{i}" for i in range(120)]
        assert (await store.verify_audit()).ok


async def test_concurrent_puts_to_one_name_lose_nothing(kek_uri: str, tmp_path: Path) -> None:
    store = await kmsbox.aio.open_store(f"sqlite:///{tmp_path / 'race.db'}", kek=kek_uri)
    async with store:
        await asyncio.gather(*[store.put("shared", f"w{i}", namespace="app") for i in range(40)])
        history = await store.history("shared", namespace="app")
        assert [v.version for v in history] == list(range(1, 41))
        times = [v.created_at for v in history]
        assert times == sorted(times)  # never older than the version before
        assert (await store.verify_audit()).ok


async def test_the_async_envelope_reads_what_the_sync_one_wrote(kek_uri: str) -> None:
    sync = kmsbox.Envelope(kek_uri)
    blob = sync.encrypt(b"card", {"row": "1"})
    envelope = kmsbox.aio.Envelope(kek_uri)
    assert await envelope.decrypt(blob, {"row": "1"}) == b"card"
    mine = await envelope.encrypt(b"other", {"row": "2"})
    assert sync.decrypt(mine, {"row": "2"}) == b"other"
    with pytest.raises(kmsbox.IntegrityError):
        await envelope.decrypt(blob, {"row": "2"})
    with pytest.raises(TypeError):
        await envelope.encrypt("text", {"row": "1"})  # type: ignore[arg-type]
    await envelope.aclose()


@pytest.mark.postgres
async def test_connections_bound_the_native_pool_and_bad_values_are_refused(
    kek_uri: str, postgres_url: str, postgres_server_url: str
) -> None:
    import psycopg

    tag = f"kmsbox-pool-{time.monotonic_ns()}"
    url = f"{postgres_url}&application_name={tag}"
    seen: list[int] = []

    async def sample(stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(postgres_server_url, autocommit=True) as admin:
            while not stop.is_set():
                row = await (
                    await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (tag,))
                ).fetchone()
                assert row is not None
                seen.append(int(row[0]))
                await asyncio.sleep(0.005)

    store = await kmsbox.aio.open_store(url, kek=kek_uri, connections=2)
    async with store:
        for i in range(40):
            await store.put(f"s{i}", f"v{i}", namespace="pool")
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(sample(stop))
        for _ in range(5):
            secrets = await asyncio.gather(*(store.get(f"s{i}", namespace="pool") for i in range(40)))
            assert [s.value for s in secrets] == [f"v{i}" for i in range(40)]
        stop.set()
        await sampler
    # The sync backend that opened the store keeps one connection of its own.
    assert seen and max(seen) <= 3, seen
    for bad, error in ((0, ValueError), (1001, ValueError), (2.0, TypeError), ("2", TypeError), (True, TypeError)):
        with pytest.raises(error, match="connections"):
            await kmsbox.aio.open_store(url, kek=kek_uri, connections=bad)  # type: ignore[arg-type]


async def test_the_stores_own_pool_starts_its_threads_while_opening_off_the_loop(kek_uri: str, tmp_path: Path) -> None:
    # A pool starts a thread on demand and submit() waits for it to run: on the loop, the
    # first cold reads stalled it for each of 8 thread starts.
    def pool_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("kmsbox-aio")}

    before = pool_threads()
    store = await kmsbox.aio.open_store(f"sqlite:///{tmp_path / 'pool.db'}", kek=kek_uri)
    async with store:
        assert len(pool_threads() - before) == kmsbox.aio.DEFAULT_WORKERS
    shared = ThreadPoolExecutor(max_workers=3, thread_name_prefix="caller-pool")
    try:
        store = await kmsbox.aio.open_store(f"sqlite:///{tmp_path / 'pool.db'}", kek=kek_uri, executor=shared)
        async with store:
            # The caller's pool is the caller's to size: opening used one thread of it.
            assert len([t for t in threading.enumerate() if t.name.startswith("caller-pool")]) == 1
    finally:
        shared.shutdown(wait=True)
