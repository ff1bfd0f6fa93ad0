"""Eight OS processes on one PostgreSQL database: readers, writers, and writers during every lifecycle job.

Each process (``multiprocessing`` spawn) opens its own store on the same database; each
test gets a database of its own (so ``pg_stat_database.deadlocks`` counts only its
sessions), dropped afterwards. Workers never raise: they report what they did and every
exception type they saw through a queue, and the test asserts on the reports.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import kmsbox
from kmsbox.storage.base import AuditFilter

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROCESSES = 8
NS = "app:prod"
#: Reader processes run this long (seconds): several access-count flushes (about 1 s apart) each.
READ_SECONDS = 4.0
#: A close() (flush and fold of the access counts) must return within this many seconds.
CLOSE_BOUND = 10.0
SECOND_KEK_VAR = "KMSBOX_TEST_KEK_NEXT"
#: Every worker of a test must have reported within this many seconds.
WORKERS_DEADLINE = 90.0
#: Seconds each writer waits between puts while the long lifecycle jobs run (their work
#: grows with every version written); rotations run against puts at full speed.
PUT_PAUSE = 0.01
#: Rotations in a row at the end of the lifecycle run, and how long one may take (seconds).
ROTATIONS = 10
ROTATION_BOUND = 10.0


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A ``postgresql://`` URL of a database created for this test (dropped afterwards)."""
    name = f"kmsbox_proc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(postgres_server_url)._replace(path=f"/{name}"))
    with psycopg.connect(postgres_server_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def second_kek(monkeypatch: pytest.MonkeyPatch) -> str:
    """A second ``env://`` KEK (the target of a KEK migration), generated for this test."""
    monkeypatch.setenv(SECOND_KEK_VAR, os.urandom(32).hex())
    return f"env://{SECOND_KEK_VAR}"


def _deadlocks(url: str) -> int:
    """``pg_stat_database.deadlocks`` of the URL's database (a backend reports at its exit)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


# --- running workers ---------------------------------------------------------------------------


def _run(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Start one spawned process per ``args`` entry, all running ``target``."""
    return _run_mixed([target] * len(args), args)


def _run_mixed(targets: list[Callable[..., None]], args: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Start one spawned process per ``args`` entry, running its target (each gets a start
    barrier and a result queue appended), release them together and return their
    reports, by worker number. Fails (after killing them) if they take over
    :data:`WORKERS_DEADLINE` seconds: a hang is a failure, not a stuck suite."""
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
        pytest.fail(
            f"{len(processes) - len(reports)} of {len(processes)} workers still running after {WORKERS_DEADLINE:.0f}s"
        )
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


def _reader(
    worker: int, url: str, kek: str, audit_reads: bool, names: list[str], seconds: float, start: Any, results: Any
) -> None:
    errors = _Errors()
    reads: Counter[str] = Counter()
    close_seconds = -1.0
    try:
        store = kmsbox.open_store(url, kek=kek, audit_reads=audit_reads)
        order = list(names)
        random.Random(worker).shuffle(order)  # each process its own order of the same secrets
        start.wait(60)
        deadline = time.monotonic() + seconds
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
            # One name every process writes, one shared with the neighbour, one of its own
            # (in a namespace of its own half of the time: chains are sharded by namespace).
            targets = [(NS, "shared"), (NS, f"pair-{worker // 2}"), (f"tenant-{worker % 4}", f"own-{worker}")]
            for namespace, name in targets:
                value = f"w{worker}-{i}-{name}"
                try:
                    secret = store.put(name, value, namespace=namespace)
                    written.append((namespace, name, secret.version, value))
                except Exception as exc:
                    errors.add(exc)
        store.close()
    except BaseException as exc:
        errors.add(exc)
    results.put({"worker": worker, "written": written, **errors.report()})


def _busy_writer(
    worker: int, url: str, keks: list[str], names: list[str], pause: Any, stop: Any, start: Any, results: Any
) -> None:
    """Put to the shared names (in ``NS``) until ``stop`` is set, ``pause.value`` seconds
    apart; report every version written."""
    errors = _Errors()
    written: list[tuple[str, int, str]] = []
    try:
        store = kmsbox.open_store(url, kek=keks)
        rng = random.Random(worker)
        start.wait(60)
        i = 0
        while not stop.is_set():
            name = rng.choice(names)
            value = f"w{worker}-{i}"
            i += 1
            try:
                written.append((name, store.put(name, value, namespace=NS).version, value))
            except Exception as exc:
                errors.add(exc)
            if pause.value:
                time.sleep(pause.value)
        store.close()
    except BaseException as exc:
        errors.add(exc)
    results.put({"worker": worker, "written": written, **errors.report()})


def _lifecycle(
    worker: int, url: str, old_kek: str, new_kek: str, pause: Any, stop: Any, start: Any, results: Any
) -> None:
    """Run each lifecycle job on ``NS`` in turn while the writers put, then set ``stop``.

    The KEK migration follows docs/operations.md: migrate and drop the old wraps from a
    store opened with the old KEK, then reopen with the new one alone and rotate again.
    """
    errors = _Errors()
    jobs: list[tuple[str, float]] = []
    store = None
    try:
        store = kmsbox.open_store(url, kek=old_kek)
        start.wait(60)
        time.sleep(0.5)  # let the writers get going

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
        ]
        # Then rotations in a row against puts at full speed: each commit is a moment a put
        # could miss the active key, and each rotation must get its turn among the puts.
        steps += [("full_speed", lambda: setattr(pause, "value", 0.0))]
        steps += [("rotate", lambda: store.rotate_namespace_key(NS))] * ROTATIONS
        steps += [("paced", lambda: setattr(pause, "value", PUT_PAUSE))]
        steps += [("rewrap_deks", lambda: store.rewrap_deks(NS, batch_size=20))]
        for label, step in steps:
            began = time.monotonic()
            try:
                step()
                jobs.append((label, time.monotonic() - began))
            except Exception as exc:
                errors.add(exc)
            time.sleep(0.1)  # puts between jobs as well as during them
    except BaseException as exc:
        errors.add(exc)
    finally:
        stop.set()
        if store is not None:
            store.close()
    results.put({"worker": worker, "jobs": jobs, **errors.report()})


# --- tests -------------------------------------------------------------------------------------


def test_eight_readers_of_the_same_secrets_never_fail_deadlock_or_hang_on_close(
    database_url: str, kmsbox_local_kek: str
) -> None:
    names = [f"s-{i:03d}" for i in range(200)]
    with kmsbox.open_store(database_url, kek=kmsbox_local_kek) as store:
        for name in names:
            store.put(name, _value(name), namespace=NS)
    deadlocks_before = _deadlocks(database_url)

    # Half the processes audit their reads, half do not.
    args = [(w, database_url, kmsbox_local_kek, w % 2 == 0, names, READ_SECONDS) for w in range(PROCESSES)]
    reports = _run(_reader, args)

    assert [r["errors"] for r in reports] == [{}] * PROCESSES, [r["first_errors"] for r in reports]
    assert all(0 <= r["close_seconds"] < CLOSE_BOUND for r in reports), [r["close_seconds"] for r in reports]
    # Every reader read all along (the machine may be slow: no rate is asserted).
    assert all(r["reads"] for r in reports) and sum(sum(r["reads"].values()) for r in reports) > len(names)
    time.sleep(0.5)  # backends report their statistics as they exit
    assert _deadlocks(database_url) == deadlocks_before

    # What info() shows: the shared totals (every closed store's reads, folded at close) plus
    # every open store's flushed counter rows. An open store flushes about once a second, so
    # another process's reads may be missing for up to about a second (or until it flushes
    # at close); this store's own unflushed reads are added in. Every reader has closed
    # here, so the counts are exact.
    expected: Counter[str] = Counter()
    for report in reports:
        expected.update(report["reads"])
    audited = sum(sum(r["reads"].values()) for r in reports if r["worker"] % 2 == 0)
    with kmsbox.open_store(database_url, kek=kmsbox_local_kek, audit_reads=False) as store:
        assert {name: store.info(name, namespace=NS).access_count for name in names} == dict(expected)
        assert all(store.info(name, namespace=NS).last_accessed_at is not None for name in names)
        reads = store.iter_audit_events(AuditFilter(namespace=NS, action="read", result="success"))
        assert sum(1 for _ in reads) == audited
        assert store.verify_audit().ok


def test_eight_writers_to_the_same_and_different_names_get_gapless_versions_in_time_order(
    database_url: str, kmsbox_local_kek: str
) -> None:
    count = 12
    deadlocks_before = _deadlocks(database_url)
    reports = _run(_writer, [(w, database_url, kmsbox_local_kek, count) for w in range(PROCESSES)])

    assert [r["errors"] for r in reports] == [{}] * PROCESSES, [r["first_errors"] for r in reports]
    claimed: dict[tuple[str, str], list[int]] = {}
    values: dict[tuple[str, str, int], str] = {}
    for report in reports:
        for namespace, name, version, value in report["written"]:
            claimed.setdefault((namespace, name), []).append(version)
            values[(namespace, name, version)] = value
    # Each name's versions are 1..N: no gap, no version handed to two puts.
    expected_puts = {(NS, "shared"): PROCESSES * count}
    expected_puts |= {(NS, f"pair-{p}"): 2 * count for p in range(PROCESSES // 2)}
    expected_puts |= {(f"tenant-{w % 4}", f"own-{w}"): count for w in range(PROCESSES)}
    assert {key: sorted(versions) for key, versions in claimed.items()} == {
        key: list(range(1, n + 1)) for key, n in expected_puts.items()
    }
    with kmsbox.open_store(database_url, kek=kmsbox_local_kek, audit_reads=False) as store:
        for (namespace, name), n in expected_puts.items():
            history = store.history(name, namespace=namespace)
            assert [h.version for h in history] == list(range(1, n + 1))
            created = [h.created_at for h in history]
            assert created == sorted(created), f"{namespace}/{name}: created_at goes backwards against version order"
            assert store.get(name, namespace=namespace, version=n).value == values[(namespace, name, n)]
        for namespace, name, version in random.Random(0).sample(sorted(values), 40):
            assert store.get(name, namespace=namespace, version=version).value == values[(namespace, name, version)]
        assert store.verify_audit().ok
    time.sleep(0.5)
    assert _deadlocks(database_url) == deadlocks_before


def test_puts_from_eight_processes_succeed_during_every_lifecycle_job(
    database_url: str, kmsbox_local_kek: str, second_kek: str
) -> None:
    names = [f"s-{i:02d}" for i in range(40)]
    with kmsbox.open_store(database_url, kek=kmsbox_local_kek) as store:
        for name in names:
            store.put(name, _value(name), namespace=NS)
    # As the runbook has it: the applications run with both KEKs while the old one is dropped.
    keks = [second_kek, kmsbox_local_kek]
    ctx = multiprocessing.get_context("spawn")
    stop, pause = ctx.Event(), ctx.Value("d", PUT_PAUSE)
    args: list[tuple[Any, ...]] = [(w, database_url, keks, names, pause, stop) for w in range(PROCESSES)]
    args.append((PROCESSES, database_url, kmsbox_local_kek, second_kek, pause, stop))
    targets = [_busy_writer] * PROCESSES + [_lifecycle]
    reports = _run_mixed(targets, args)

    job = reports[-1]
    assert job["errors"] == {}, job["first_errors"]
    labels = ["rotate", "rewrap_deks", "mark_compromised", "reencrypt", "migrate_kek", "migrate_kek_drop_old"]
    labels += ["reopen_with_new_kek", "full_speed"] + ["rotate"] * ROTATIONS + ["paced", "rewrap_deks"]
    assert [label for label, _ in job["jobs"]] == labels
    # A rotation waits only for the puts under way (PostgreSQL's FOR SHARE alone let a
    # steady stream of puts hold it off for a minute).
    assert max(seconds for label, seconds in job["jobs"] if label == "rotate") < ROTATION_BOUND, job["jobs"]
    writers = reports[:-1]
    assert [r["errors"] for r in writers] == [{}] * PROCESSES, [r["first_errors"] for r in writers]
    written = [(name, version, value) for r in writers for name, version, value in r["written"]]
    assert len(written) >= PROCESSES * 10, "the writers ran during the jobs"
    by_name: dict[str, list[int]] = {}
    for name, version, _ in written:
        by_name.setdefault(name, []).append(version)
    assert all(sorted(v) == list(range(2, len(v) + 2)) for v in by_name.values())

    # The new KEK alone opens the store and reads every value written (the old one is gone).
    with kmsbox.open_store(database_url, kek=second_kek, audit_reads=False) as store:
        for name, version, value in written:
            assert store.get(name, namespace=NS, version=version).value == value
        for name in set(names) - set(by_name):
            assert store.get(name, namespace=NS).value == _value(name)
        verification = store.verify_audit()
        assert verification.ok, verification.problems
