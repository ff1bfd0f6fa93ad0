"""kmsbox.aio under a slow KMS: event-loop stalls, KMS calls, warm throughput against sync.

A module section of ``python -m benchmarks`` (``--only aio``): ``run(quick)`` measures and
``show(result, console)`` prints. On SQLite and on PostgreSQL (a schema of its own):

- **cold reads**: a store opened with ``kmsbox.aio.open_store`` over the Vault fake (its
  transit engine, every request delayed 200 ms), read audit on. 1,000 tasks are started
  at once, each reading one secret of 10 namespaces whose keys nothing has unwrapped
  yet. A ticker task sleeps 1 ms at a time and records the longest gap between its
  wake-ups: the worst stall of the event loop (the same ticker on an idle loop, for the
  same time, is shown beside it). The KMS calls the reads made are counted on the
  provider and at the fake (opening the store, which unwraps the audit key, is before).
- **warm gets**: with every key cached, ``await store.get`` in one task and 100 tasks
  (``asyncio.gather``) against ``SecretStore.get`` of the same store in the same
  process, in interleaved rounds (ratio: median of per-round ratios).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

import kmsbox
import kmsbox.aio
from benchmarks.run import _postgres_url
from kmsbox.kek import open_kek
from kmsbox.plugins import fake_servers
from kmsbox.testing.counting import CountingKek

__all__ = ["run", "show"]

LATENCY = 0.2  # seconds per KMS request
TASKS = 1000
NAMESPACES = 10
_TICK = 0.001


class _Ticker:
    """A task that sleeps ``_TICK`` at a time and keeps the longest gap between wake-ups."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self.gaps: list[tuple[float, float]] = []  # (gap, when it ended) of gaps over 5 ms
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(_TICK)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            if now - last > 0.005:
                self.gaps.append((now - last, now))
            self.ticks += 1
            last = now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        """Stop; the worst gap in seconds."""
        self._stop.set()
        assert self._task is not None
        await self._task
        return self.worst


async def _idle_worst(seconds: float) -> float:
    """The ticker's worst gap on a loop with nothing else to do (its own jitter)."""
    ticker = _Ticker()
    ticker.start()
    await asyncio.sleep(seconds)
    return await ticker.stop()


def _read_target(i: int) -> tuple[str, str]:
    return f"s{i // NAMESPACES}", f"tenant-{i % NAMESPACES}"


async def _floor() -> dict[str, Any]:
    """The same 1,000 tasks started at once, each only waiting ``LATENCY`` and returning a value:
    what asyncio itself stalls for (creating and stepping the tasks), with no kmsbox in it."""

    async def wait(i: int) -> int:
        await asyncio.sleep(LATENCY * (1 + i % 2))  # two waves, as 10 KEK calls on 8 threads
        return i

    ticker = _Ticker()
    ticker.start()
    await asyncio.sleep(0.01)
    await asyncio.gather(*(wait(i) for i in range(TASKS)))
    worst = await ticker.stop()
    return {"worst_gap_ms": worst * 1000, "over_5ms": len(ticker.gaps)}


async def _cold_reads(url: str, kek_uri: str, server: Any) -> dict[str, Any]:
    kek = CountingKek(open_kek(kek_uri))
    store = await kmsbox.aio.open_store(url, kek)
    async with store:
        server.faults.reset_counts()
        before = kek.total
        ticker = _Ticker()
        ticker.start()
        await asyncio.sleep(0.01)  # the ticker is running before the first read
        start = time.perf_counter()
        results = await asyncio.gather(
            *(store.get(name, namespace=ns) for name, ns in map(_read_target, range(TASKS))), return_exceptions=True
        )
        elapsed = time.perf_counter() - start
        worst = await ticker.stop()
        errors = [r for r in results if isinstance(r, BaseException)]
        return {
            "tasks": TASKS,
            "seconds": elapsed,
            "worst_gap_ms": worst * 1000,
            "worst_stall_ms": max(0.0, worst - _TICK) * 1000,
            "idle_worst_gap_ms": await _idle_worst(elapsed) * 1000,
            "ticks": ticker.ticks,
            "gaps_over_5ms": len(ticker.gaps),
            "ms_in_gaps_over_5ms": sum(g for g, _ in ticker.gaps) * 1000,
            # the five longest: (gap ms, when it ended in s after the reads started)
            "longest_gaps": [[round(g * 1000, 1), round(at - start, 3)] for g, at in sorted(ticker.gaps)[-5:]],
            "asyncio_floor": await _floor(),
            "kek_calls": kek.total - before,
            "api_calls": server.faults.total_calls(),
            "errors": len(errors),
            "error_samples": [f"{type(e).__name__}: {e}"[:200] for e in errors[:3]],
        }


async def _timed(fn: Callable[[], Awaitable[int]], seconds: float) -> float:
    ops = 0
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        ops += await fn()
    return ops / (now - start)


async def _warm(url: str, kek_uri: str, seconds: float, rounds: int) -> dict[str, Any]:
    """Warm get throughput: async in one task, async in 100 tasks, sync; interleaved rounds."""
    store = await kmsbox.aio.open_store(url, kek_uri)
    sync_store = kmsbox.open_store(url, kek_uri)
    targets = [_read_target(i) for i in range(TASKS)]
    index = iter(range(10**9))
    try:
        for name, ns in targets[:NAMESPACES]:  # every namespace key cached in both
            await store.get(name, namespace=ns)
            sync_store.get(name, namespace=ns)

        async def one_task() -> int:
            for _ in range(20):
                name, ns = targets[next(index) % TASKS]
                await store.get(name, namespace=ns)
            return 20

        async def many_tasks() -> int:
            batch = [targets[next(index) % TASKS] for _ in range(100)]
            await asyncio.gather(*(store.get(name, namespace=ns) for name, ns in batch))
            return 100

        async def sync() -> int:
            for _ in range(20):
                name, ns = targets[next(index) % TASKS]
                sync_store.get(name, namespace=ns)
            return 20

        fns = {"async_1_task_per_s": one_task, "async_100_tasks_per_s": many_tasks, "sync_per_s": sync}
        per_round: dict[str, list[float]] = {label: [] for label in fns}
        for _ in range(rounds):
            for label, fn in fns.items():
                per_round[label].append(await _timed(fn, seconds))
    finally:
        sync_store.close()
        await store.close()
    out: dict[str, Any] = {label: max(values) for label, values in per_round.items()}
    for label in ("async_1_task_per_s", "async_100_tasks_per_s"):
        ratios = [a / s for a, s in zip(per_round[label], per_round["sync_per_s"], strict=True)]
        out[label.replace("_per_s", "_ratio")] = statistics.median(ratios)
        out[label.replace("_per_s", "_ratio_range")] = [min(ratios), max(ratios)]
    return out


def _fill(url: str, kek_uri: str) -> None:
    with kmsbox.open_store(url, kek_uri) as store:
        for n in range(NAMESPACES):
            store.import_secrets(
                ((f"s{i}", os.urandom(16).hex()) for i in range(TASKS // NAMESPACES)), namespace=f"tenant-{n}"
            )


async def _backend(url: str, kek_uri: str, server: Any, quick: bool) -> dict[str, Any]:
    server.faults.configure(latency=0)
    await asyncio.to_thread(_fill, url, kek_uri)
    server.faults.configure(latency=LATENCY)
    try:
        out = {"cold": await _cold_reads(url, kek_uri, server)}
        server.faults.configure(latency=0)  # warm reads make no KMS call; opening the stores does
        out["warm"] = await _warm(url, kek_uri, 0.2 if quick else 0.5, 3 if quick else 9)
        return out
    finally:
        server.faults.configure(latency=0)


def run(quick: bool) -> dict[str, Any]:
    """Cold reads under a 200 ms KMS and warm throughput, on SQLite and on PostgreSQL."""
    registry = fake_servers()
    if "vault" not in registry:
        return {"skipped": "kmsbox-vault (the Vault fake) not installed"}
    server = registry["vault"].factory()
    os.environ.update(server.env())
    out: dict[str, Any] = {"latency_ms": LATENCY * 1000, "tasks": TASKS, "namespaces": NAMESPACES}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                out["sqlite"] = asyncio.run(_backend(f"sqlite:///{tmp}/aio.db", server.kek_uri, server, quick))
            except Exception as exc:  # a benchmark reports, it does not stop the suite
                out["sqlite"] = {"error": f"{type(exc).__name__}: {exc}"}
        out["postgresql"] = _postgres(server, quick)
    finally:
        server.stop()
    return out


def _postgres(server: Any, quick: bool) -> dict[str, Any]:
    try:
        import psycopg
    except ImportError:
        return {"skipped": "psycopg / kmsbox-postgres not installed"}
    base = _postgres_url()
    schema = f"kmsbox_aio_{os.getpid()}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        return {"skipped": f"PostgreSQL unreachable: {type(exc).__name__}"}
    sep = "&" if "?" in base else "?"
    try:
        return asyncio.run(_backend(f"{base}{sep}schema={schema}", server.kek_uri, server, quick))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def show(result: dict[str, Any], console: Console) -> None:
    """Print the cold-read and warm-throughput tables."""
    if "skipped" in result:
        console.print(f"aio: skipped ({result['skipped']})")
        return
    t = Table(
        title=f"kmsbox.aio: {result['tasks']:,} tasks reading {result['namespaces']} cold namespaces, "
        f"KMS (Vault fake) {result['latency_ms']:.0f} ms per request, read audit on"
    )
    for col in (
        "backend",
        "s",
        "worst loop gap",
        "gaps > 5 ms (total)",
        "idle gap",
        "asyncio alone",
        "KEK calls / requests",
        "errors",
    ):
        t.add_column(col)
    rows = [(name, result[name]) for name in ("sqlite", "postgresql") if name in result]
    for name, r in rows:
        if "cold" not in r:
            t.add_row(name, r.get("error") or r.get("skipped", ""), "", "", "", "", "", "")
            continue
        c = r["cold"]
        t.add_row(
            name,
            f"{c['seconds']:.2f}",
            f"{c['worst_gap_ms']:.1f} ms",
            f"{c['gaps_over_5ms']} ({c['ms_in_gaps_over_5ms']:,.0f} ms)",
            f"{c['idle_worst_gap_ms']:.1f} ms",
            f"{c['asyncio_floor']['worst_gap_ms']:.1f} ms",
            f"{c['kek_calls']} / {c['api_calls']}",
            f"{c['errors']} {c['error_samples'] or ''}",
        )
    console.print(t)
    t = Table(title="warm get: async against sync, same store and process (ratio: median of rounds, range)")
    for col in ("backend", "sync/s", "async 1 task/s", "ratio", "async 100 tasks/s", "ratio"):
        t.add_column(col)
    for name, r in rows:
        if "warm" not in r:
            continue
        w = r["warm"]
        t.add_row(
            name,
            f"{w['sync_per_s']:,.0f}",
            f"{w['async_1_task_per_s']:,.0f}",
            "{:.2f} ({:.2f}-{:.2f})".format(w["async_1_task_ratio"], *w["async_1_task_ratio_range"]),
            f"{w['async_100_tasks_per_s']:,.0f}",
            "{:.2f} ({:.2f}-{:.2f})".format(w["async_100_tasks_ratio"], *w["async_100_tasks_ratio_range"]),
        )
    console.print(t)
