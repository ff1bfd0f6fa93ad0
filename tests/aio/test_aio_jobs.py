"""Long operations of the async store on SQLite: the loop keeps running between (and
during) a job's batches, a job sees its caller's audit context, calls ``progress`` on the
loop, and a job cancelled at any point keeps whole batches only and can be run again.
Many tasks ready at once run their on-loop transactions a slice of a loop turn at a time."""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

import kmsbox
import kmsbox.aio

pytestmark = pytest.mark.anyio

#: Secrets in the namespace the jobs work on: a dozen batches of the default 500.
ROWS = 6000
#: The longest the loop may go without running a ready task while a job runs. A job's step
#: on the pool can hold the interpreter lock for its switch interval (5 ms) at a time, and
#: the machine is shared; the job itself takes well over this, so a job that ran its
#: batches on the loop fails the bound.
WORST_STALL = 0.100


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class StallMeter:
    """A task that wakes every millisecond and keeps the longest gap between two wakes.

    While it runs, the objects that existed before are frozen out of the garbage collector
    (``gc.freeze()``, as a latency-minded server does after start-up): a full collection
    over the test run's heap pauses every thread for 100 ms or more, and that pause is
    the interpreter's, not the store's.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> StallMeter:
        gc.collect()
        gc.freeze()
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0)  # started before the job
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        gc.unfreeze()


@pytest.fixture
def bulk_url(tmp_path: Path, kek_uri: str) -> str:
    """A SQLite store whose namespace ``bulk`` holds :data:`ROWS` secrets under a key that
    was just rotated (so every one of them has a DEK to rewrap)."""
    url = f"sqlite:///{tmp_path / 'bulk.db'}"
    with kmsbox.open_store(url, kek=kek_uri) as store:
        store.import_secrets({f"k{i:05d}": f"v{i}" for i in range(ROWS)}, namespace="bulk")
        store.rotate_namespace_key("bulk")
    return url


Job = Callable[[kmsbox.aio.AsyncSecretStore, Any], Awaitable[Any]]

JOBS: dict[str, Job] = {
    "rewrap_deks": lambda store, progress: store.rewrap_deks("bulk", progress=progress),
    "reencrypt": lambda store, progress: store.reencrypt("bulk", progress=progress),
    "import_secrets": lambda store, progress: store.import_secrets(
        {f"n{i:05d}": "v" for i in range(ROWS)}, namespace="fresh", progress=progress
    ),
    "verify_audit": lambda store, progress: store.verify_audit(),
    "diagnose": lambda store, progress: store.diagnose("bulk"),
}


@pytest.mark.parametrize("job", sorted(JOBS))
async def test_a_sqlite_job_never_freezes_the_loop(job: str, bulk_url: str, kek_uri: str) -> None:
    loop_thread = threading.get_ident()
    calls: list[tuple[int, int]] = []  # (the meter's ticks, the calling thread) at each progress call
    store = await kmsbox.aio.open_store(bulk_url, kek=kek_uri)
    async with store:
        async with StallMeter() as meter:

            def progress(done: int, total: int | None) -> None:
                calls.append((meter.ticks, threading.get_ident()))

            started = time.perf_counter()
            await JOBS[job](store, progress)
            took = time.perf_counter() - started
        assert meter.worst < WORST_STALL, f"the loop stalled {meter.worst * 1000:.0f} ms in a {took * 1000:.0f} ms job"
        assert meter.ticks > 0
        if job in ("rewrap_deks", "reencrypt", "import_secrets"):
            assert len(calls) >= ROWS // 500
            assert {thread for _, thread in calls} == {loop_thread}  # progress is called on the loop
            ticks = [t for t, _ in calls]
            # The loop ran other tasks between every two batches, not only before and after the job.
            assert all(later > earlier for earlier, later in itertools.pairwise(ticks))


async def test_a_job_writes_its_callers_audit_context(bulk_url: str, kek_uri: str) -> None:
    store = await kmsbox.aio.open_store(bulk_url, kek=kek_uri)
    async with store:
        with store.audit_context(actor="rotation-bot", request_id="r-42"):
            report = await store.rewrap_deks("bulk")
        assert report.processed == ROWS
        rewraps = [e async for e in store.iter_audit_events() if e.action == "rewrap"]
        assert sum(e.detail["count"] for e in rewraps) == ROWS
        assert {(e.actor, e.context.get("request_id")) for e in rewraps} == {("rotation-bot", "r-42")}


async def _under(store: kmsbox.aio.AsyncSecretStore) -> list[tuple[int, int]]:
    keys = (await store.status("bulk"))["namespaces"]["bulk"]["keys"]
    return [(k["version"], k["secret_versions"]) for k in keys]


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1])
async def test_a_sqlite_job_cancelled_at_any_point_keeps_whole_batches_and_resumes(
    delay: float, tmp_path: Path, kek_uri: str
) -> None:
    url = f"sqlite:///{tmp_path / 'cancel.db'}"
    rows = 1200
    with kmsbox.open_store(url, kek=kek_uri) as setup:
        setup.import_secrets({f"k{i:05d}": f"v{i}" for i in range(rows)}, namespace="bulk")
        setup.rotate_namespace_key("bulk")
    store = await kmsbox.aio.open_store(url, kek=kek_uri)
    async with store:
        done: list[int] = []
        task = asyncio.ensure_future(store.rewrap_deks("bulk", batch_size=100, progress=lambda d, t: done.append(d)))
        await asyncio.sleep(delay)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)  # a batch already on a pool thread commits whole (or not at all)
        (old, left), (new, moved) = await _under(store)
        assert (old, new) == (1, 2) and left + moved == rows
        assert moved % 100 == 0  # whole batches only
        # Still usable: the same job, run again, moves the rest.
        report = await store.rewrap_deks("bulk", batch_size=100)
        assert report.processed == left
        assert await _under(store) == [(1, 0), (2, rows)]
        values = await asyncio.gather(*[store.get(f"k{i:05d}", namespace="bulk") for i in range(0, rows, 97)])
        assert [v.value for v in values] == [f"v{i}" for i in range(0, rows, 97)]
        rewraps = [e async for e in store.iter_audit_events() if e.action == "rewrap"]
        assert sum(e.detail["count"] for e in rewraps) == rows  # every secret rewrapped once, none lost
        assert (await store.verify_audit()).ok


async def test_a_closed_store_refuses_a_job_as_the_sync_store_does(bulk_url: str, kek_uri: str) -> None:
    store = await kmsbox.aio.open_store(bulk_url, kek=kek_uri)
    await store.close()
    sync = kmsbox.open_store(bulk_url, kek=kek_uri)
    sync.close()
    for face in (sync, store):
        with pytest.raises(kmsbox.StorageError, match="storage backend is closed"):
            await _call(face.put, "k", "v", namespace="bulk")
        with pytest.raises(kmsbox.StorageError, match="storage backend is closed"):
            await _call(face.rewrap_deks, "bulk")


async def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = method(*args, **kwargs)
    return await result if asyncio.iscoroutine(result) else result


async def test_many_ready_tasks_share_the_loop_with_its_timers(bulk_url: str, kek_uri: str) -> None:
    store = await kmsbox.aio.open_store(bulk_url, kek=kek_uri)
    async with store:
        await store.get("k00000", namespace="bulk")  # the namespace key is cached: reads stay on the loop
        async with StallMeter() as meter:
            secrets = await asyncio.gather(*[store.get(f"k{i:05d}", namespace="bulk") for i in range(1000)])
        assert [s.value for s in secrets] == [f"v{i}" for i in range(1000)]
        # 1,000 audited reads are far more than one slice of a turn: the timer ran between them.
        assert meter.ticks >= 5
        assert meter.worst < WORST_STALL


async def test_tasks_past_the_slice_wait_in_line_instead_of_being_stepped_every_turn(
    bulk_url: str, kek_uri: str
) -> None:
    # Tasks that found the slice used up used to yield and retry: each was stepped again in
    # every turn until its own came (about 70 loop callbacks per read for 1,000 reads,
    # which alone filled turns). Queued, each is woken once it is admitted.
    store = await kmsbox.aio.open_store(bulk_url, kek=kek_uri)
    async with store:
        await store.get("k00000", namespace="bulk")
        loop = asyncio.get_running_loop()
        scheduled = 0
        call_soon = loop.call_soon

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal scheduled
            scheduled += 1
            return call_soon(*args, **kwargs)

        loop.call_soon = counting  # type: ignore[method-assign]
        try:
            secrets = await asyncio.gather(*[store.get(f"k{i:05d}", namespace="bulk") for i in range(1000)])
        finally:
            loop.call_soon = call_soon  # type: ignore[method-assign]
        assert [s.value for s in secrets] == [f"v{i}" for i in range(1000)]
        assert scheduled < 10 * 1000
