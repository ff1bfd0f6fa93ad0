"""Eight OS processes on one SQLite file: readers, writers, and writers during every lifecycle job.

The SQLite side of plugins/kmsbox-postgres/tests/test_postgres_processes.py (what
test_store_concurrency.py does not cover: eight processes, read audit on and off, access
counts across processes, version times, lifecycle jobs under load). Each process
(``multiprocessing`` spawn) opens its own store on the same file. Workers never raise:
they report what they did and every exception type they saw, and the test asserts on
the reports.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import kmsbox
from kmsbox.storage.base import AuditFilter

pytestmark = pytest.mark.slow

PROCESSES = 8
NS = "app:prod"
#: Reader processes run this long (seconds): several access-count flushes (about 1 s apart) each.
READ_SECONDS = 3.0
#: A close() (flush and fold of the access counts) must return within this many seconds.
CLOSE_BOUND = 10.0
#: Every worker of a test must have reported within this many seconds.
WORKERS_DEADLINE = 90.0
#: Seconds each writer waits between puts while the lifecycle jobs run (their work grows
#: with every version written).
PUT_PAUSE = 0.01
SECOND_KEK_VAR = "KMSBOX_MASTER_KEY_NEXT"


@pytest.fixture
def second_kek(monkeypatch: pytest.MonkeyPatch) -> str:
    """A second ``env://`` KEK (the target of a KEK migration), generated for this test."""
    monkeypatch.setenv(SECOND_KEK_VAR, os.urandom(32).hex())
    return f"env://{SECOND_KEK_VAR}"


def _run(targets: list[Callable[..., None]], args: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Start one spawned process per ``args`` entry, running its target (each gets a start
    barrier and a result queue appended), release them together and return their
    reports, by worker number. Fails (after killing them) past :data:`WORKERS_DEADLINE`."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(len(args)), ctx.Queue()
    processes = [ctx.Process(target=t, args=(*a, start, results)) for t, a in zip(targets, args, strict=True)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + WORKERS_DEADLINE
    reports: list[dict[str, Any]] = []
    try:
        for _ in processes:
            reports.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    except queue.Empty:
        pytest.fail(f"{len(processes) - len(reports)} workers still running after {WORKERS_DEADLINE:.0f}s")
    finally:
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()) if len(reports) == len(processes) else 0.1)
            if process.exitcode is None:
                process.kill()
                process.join(5)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return sorted(reports, key=lambda r: int(r["worker"]))


class _Errors:
    """Every exception a worker caught, by type (with the first message of each, for the report)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def add(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.counts[kind] += 1
        self.first.setdefault(kind, str(exc)[:300])

    def report(self) -> dict[str, Any]:
        return {"errors": dict(self.counts), "first_errors": self.first}


def _value(name: str) -> str:
    return f"value-of-{name}"


# --- workers (top level: spawn pickles them by name) ---------------------------------------------


def _reader(worker: int, url: str, kek: str, audit_reads: bool, names: list[str], start: Any, results: Any) -> None:
    errors = _Errors()
    reads: Counter[str] = Counter()
    close_seconds = -1.0
    try:
        store = kmsbox.open_store(url, kek=kek, audit_reads=audit_reads)
        order = list(names)
        random.Random(worker).shuffle(order)
        start.wait(60)
        deadline = time.monotonic() + READ_SECONDS
        i = 0
        while time.monotonic() < deadline:
            name = order[i % len(order)]
            i += 1
            try:
                if store.get(name, namespace=NS).value != _value(name):
                    errors.add(AssertionError(f"{name} read back a wrong value"))
                reads[name] += 1
            except Exception as exc:
                errors.add(exc)
        began = time.monotonic()
        store.close()
        close_seconds = time.monotonic() - began
    except BaseException as exc:
        errors.add(exc)
    results.put({"worker": worker, "reads": dict(reads), "close_seconds": close_seconds, **errors.report()})


def _writer(worker: int, url: str, kek: str, count: int, start: Any, results: Any) -> None:
    errors = _Errors()
    written: list[tuple[str, str, int, str]] = []
    try:
        store = kmsbox.open_store(url, kek=kek)
        start.wait(60)
        for i in range(count):
            targets = [(NS, "shared"), (NS, f"pair-{worker // 2}"), (f"tenant-{worker % 4}", f"own-{worker}")]
            for namespace, name in targets:
                value = f"w{worker}-{i}-{name}"
                try:
                    written.append((namespace, name, store.put(name, value, namespace=namespace).version, value))
                except Exception as exc:
                    errors.add(exc)
        store.close()
    except BaseException as exc:
        errors.add(exc)
    results.put({"worker": worker, "written": written, **errors.report()})


def _busy_writer(worker: int, url: str, keks: list[str], names: list[str], stop: Any, start: Any, results: Any) -> None:
    errors = _Errors()
    written: list[tuple[str, int, str]] = []
    try:
        store = kmsbox.open_store(url, kek=keks)
        rng = random.Random(worker)
        start.wait(60)
        i = 0
        while not stop.is_set():
            name, value = rng.choice(names), f"w{worker}-{i}"
            i += 1
            try:
                written.append((name, store.put(name, value, namespace=NS).version, value))
            except Exception as exc:
                errors.add(exc)
            time.sleep(PUT_PAUSE)
        store.close()
    except BaseException as exc:
        errors.add(exc)
    results.put({"worker": worker, "written": written, **errors.report()})


def _lifecycle(worker: int, url: str, old_kek: str, new_kek: str, stop: Any, start: Any, results: Any) -> None:
    """Each lifecycle job on ``NS`` in turn while the writers put (the KEK migration as in
    docs/operations.md), then set ``stop``."""
    errors = _Errors()
    jobs: list[str] = []
    store = None
    try:
        store = kmsbox.open_store(url, kek=old_kek)
        start.wait(60)
        time.sleep(0.3)

        def active() -> int:
            assert store is not None
            versions: list[int] = store.status(NS)["namespaces"][NS]["active_versions"]
            return versions[-1]

        def reopen() -> None:
            nonlocal store
            assert store is not None
            store.close()
            store = kmsbox.open_store(url, kek=new_kek)

        steps: list[tuple[str, Callable[[], object]]] = [
            ("rotate", lambda: store.rotate_namespace_key(NS)),
            ("rewrap_deks", lambda: store.rewrap_deks(NS, batch_size=20)),
            ("mark_compromised", lambda: store.mark_compromised(NS, active())),
            ("reencrypt", lambda: store.reencrypt(NS, batch_size=20)),
            ("migrate_kek", lambda: store.migrate_kek(new_kek)),
            ("migrate_kek_drop_old", lambda: store.migrate_kek(new_kek, drop_old=True)),
            ("reopen_with_new_kek", reopen),
            *[("rotate", lambda: store.rotate_namespace_key(NS))] * 5,
            ("rewrap_deks", lambda: store.rewrap_deks(NS, batch_size=20)),
        ]
        for label, step in steps:
            try:
                step()
                jobs.append(label)
            except Exception as exc:
                errors.add(exc)
            time.sleep(0.1)
    except BaseException as exc:
        errors.add(exc)
    finally:
        stop.set()
        if store is not None:
            store.close()
    results.put({"worker": worker, "jobs": jobs, **errors.report()})


# --- tests -------------------------------------------------------------------------------------


def test_eight_processes_reading_one_file_never_fail_and_their_counts_add_up(kek_uri: str, sqlite_url: str) -> None:
    names = [f"s-{i:03d}" for i in range(200)]
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        for name in names:
            store.put(name, _value(name), namespace=NS)

    # Half the processes audit their reads, half do not.
    args = [(w, sqlite_url, kek_uri, w % 2 == 0, names) for w in range(PROCESSES)]
    reports = _run([_reader] * PROCESSES, args)

    assert [r["errors"] for r in reports] == [{}] * PROCESSES, [r["first_errors"] for r in reports]
    assert all(0 <= r["close_seconds"] < CLOSE_BOUND for r in reports), [r["close_seconds"] for r in reports]
    assert all(r["reads"] for r in reports)
    # Every reader has closed (folding its counts): info() is exact. While a reader is
    # open, its reads reach info() of other stores within about a second (its flushes).
    expected: Counter[str] = Counter()
    for report in reports:
        expected.update(report["reads"])
    audited = sum(sum(r["reads"].values()) for r in reports if r["worker"] % 2 == 0)
    with kmsbox.open_store(sqlite_url, kek=kek_uri, audit_reads=False) as store:
        assert {name: store.info(name, namespace=NS).access_count for name in names} == dict(expected)
        reads = store.iter_audit_events(AuditFilter(namespace=NS, action="read", result="success"))
        assert sum(1 for _ in reads) == audited
        assert store.verify_audit().ok


def test_eight_processes_writing_one_file_get_gapless_versions_in_time_order(kek_uri: str, sqlite_url: str) -> None:
    count = 10
    reports = _run([_writer] * PROCESSES, [(w, sqlite_url, kek_uri, count) for w in range(PROCESSES)])

    assert [r["errors"] for r in reports] == [{}] * PROCESSES, [r["first_errors"] for r in reports]
    claimed: dict[tuple[str, str], list[int]] = {}
    values: dict[tuple[str, str, int], str] = {}
    for report in reports:
        for namespace, name, version, value in report["written"]:
            claimed.setdefault((namespace, name), []).append(version)
            values[(namespace, name, version)] = value
    expected_puts = {(NS, "shared"): PROCESSES * count}
    expected_puts |= {(NS, f"pair-{p}"): 2 * count for p in range(PROCESSES // 2)}
    expected_puts |= {(f"tenant-{w % 4}", f"own-{w}"): count for w in range(PROCESSES)}
    assert {key: sorted(v) for key, v in claimed.items()} == {
        k: list(range(1, n + 1)) for k, n in expected_puts.items()
    }
    with kmsbox.open_store(sqlite_url, kek=kek_uri, audit_reads=False) as store:
        for (namespace, name), n in expected_puts.items():
            history = store.history(name, namespace=namespace)
            assert [h.version for h in history] == list(range(1, n + 1))
            created = [h.created_at for h in history]
            assert created == sorted(created), f"{namespace}/{name}: created_at goes backwards against version order"
        for (namespace, name, version), value in values.items():
            assert store.get(name, namespace=namespace, version=version).value == value
        assert store.verify_audit().ok


def test_puts_from_eight_processes_succeed_during_every_lifecycle_job_on_one_file(
    kek_uri: str, sqlite_url: str, second_kek: str
) -> None:
    names = [f"s-{i:02d}" for i in range(40)]
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        for name in names:
            store.put(name, _value(name), namespace=NS)
    keks = [second_kek, kek_uri]  # the applications run with both KEKs while the old one is dropped
    stop = multiprocessing.get_context("spawn").Event()
    args: list[tuple[Any, ...]] = [(w, sqlite_url, keks, names, stop) for w in range(PROCESSES)]
    args.append((PROCESSES, sqlite_url, kek_uri, second_kek, stop))
    reports = _run([_busy_writer] * PROCESSES + [_lifecycle], args)

    job, writers = reports[-1], reports[:-1]
    assert job["errors"] == {}, job["first_errors"]
    assert job["jobs"] == [
        "rotate",
        "rewrap_deks",
        "mark_compromised",
        "reencrypt",
        "migrate_kek",
        "migrate_kek_drop_old",
        "reopen_with_new_kek",
        *["rotate"] * 5,
        "rewrap_deks",
    ]
    assert [r["errors"] for r in writers] == [{}] * PROCESSES, [r["first_errors"] for r in writers]
    written = [(name, version, value) for r in writers for name, version, value in r["written"]]
    assert len(written) >= PROCESSES * 10, "the writers ran during the jobs"
    by_name: dict[str, list[int]] = {}
    for name, version, _ in written:
        by_name.setdefault(name, []).append(version)
    assert all(sorted(v) == list(range(2, len(v) + 2)) for v in by_name.values())
    with kmsbox.open_store(sqlite_url, kek=second_kek, audit_reads=False) as store:
        for name, version, value in written:
            assert store.get(name, namespace=NS, version=version).value == value
        for name in set(names) - set(by_name):
            assert store.get(name, namespace=NS).value == _value(name)
        verification = store.verify_audit()
        assert verification.ok, verification.problems
