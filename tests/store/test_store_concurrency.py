"""Concurrent writers on one SQLite file: separate processes and threads lose no update and see no lock errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kmsbox
from kmsbox.storage.base import AuditFilter
from kmsbox.store.service import SecretStore

PROCESSES = 4
PUTS_PER_PROCESS = 25

# Each worker opens the (possibly brand-new) store itself, waits for the start signal so that all
# run at once, then appends its own versions of one shared secret and of a secret of its own,
# reading after each write.
WORKER = r"""
import json, os, sys, time
import kmsbox

worker, url, go, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
store = kmsbox.open_store(url, kek="env://KMSBOX_MASTER_KEY")
while not os.path.exists(go):
    time.sleep(0.005)
written = []
for i in range(count):
    shared = store.put("shared", f"w{worker}-{i}", namespace="app:prod", actor=f"worker-{worker}")
    own = store.put(f"own-{worker}", f"w{worker}-{i}", namespace=f"tenant-{worker % 2}")
    assert own.version == i + 1, own
    assert store.get(f"own-{worker}", namespace=f"tenant-{worker % 2}").value == f"w{worker}-{i}"
    seen = store.get("shared", namespace="app:prod")
    assert seen.version >= shared.version
    written.append(shared.version)
store.close()
print(json.dumps({"worker": worker, "shared_versions": written}))
"""


def _run_workers(tmp_path: Path, url: str, count: int, processes: int) -> list[dict[str, object]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(w), url, str(go), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(processes)
    ]
    time.sleep(0.3)  # let them import and open the store at about the same time
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err and "StorageError" not in err and "Traceback" not in err, err
        results.append(json.loads(out))
    return results


@pytest.mark.slow
def test_processes_writing_one_sqlite_file_lose_no_update(kek_uri: str, sqlite_url: str, tmp_path: Path) -> None:
    results = _run_workers(tmp_path, sqlite_url, PUTS_PER_PROCESS, PROCESSES)
    total = PROCESSES * PUTS_PER_PROCESS

    # Every put of the shared secret got its own version number.
    claimed = sorted(v for r in results for v in r["shared_versions"])  # type: ignore[attr-defined]
    assert claimed == list(range(1, total + 1))
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        history = store.history("shared", namespace="app:prod")
        assert [v.version for v in history] == list(range(1, total + 1))
        values = {store.get("shared", namespace="app:prod", version=v.version).value for v in history}
        assert values == {f"w{w}-{i}" for w in range(PROCESSES) for i in range(PUTS_PER_PROCESS)}
        for w in range(PROCESSES):
            own = store.history(f"own-{w}", namespace=f"tenant-{w % 2}")
            assert len(own) == PUTS_PER_PROCESS
            latest = store.get(f"own-{w}", namespace=f"tenant-{w % 2}").value
            assert latest == f"w{w}-{PUTS_PER_PROCESS - 1}"
        writes = [e for e in store.iter_audit_events() if e.action in ("create", "update") and e.name is not None]
        assert len(writes) == 2 * total
        assert store.verify_audit().ok
        # Each process's reads were audited with its own actor on the shared secret.
        for w in range(PROCESSES):
            mine = list(store.iter_audit_events(AuditFilter(namespace="app:prod", name="shared")))
            assert sum(1 for e in mine if e.actor == f"worker-{w}") == PUTS_PER_PROCESS
        assert len(store.namespaces()) == 3


def _hammer(
    store: SecretStore, worker: int, count: int, errors: list[BaseException], barrier: threading.Barrier
) -> None:
    try:
        barrier.wait(timeout=30)
        for i in range(count):
            store.put("shared", f"t{worker}-{i}", namespace="threads")
            store.put(f"own-{worker}", f"t{worker}-{i}", namespace="threads")
            assert store.get(f"own-{worker}", namespace="threads").value == f"t{worker}-{i}"
            store.get("shared", namespace="threads")
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.parametrize("shared_store", [True, False], ids=["one-store", "store-per-thread"])
def test_threads_writing_one_sqlite_file_lose_no_update(kek_uri: str, sqlite_url: str, shared_store: bool) -> None:
    threads_n, count = 6, 15
    stores = [kmsbox.open_store(sqlite_url, kek=kek_uri)]
    if not shared_store:
        stores += [kmsbox.open_store(sqlite_url, kek=kek_uri) for _ in range(threads_n - 1)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)
    threads = [
        threading.Thread(target=_hammer, args=(stores[i % len(stores)], i, count, errors, barrier))
        for i in range(threads_n)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        store = stores[0]
        history = store.history("shared", namespace="threads")
        assert [v.version for v in history] == list(range(1, threads_n * count + 1))
        values = {store.get("shared", namespace="threads", version=v.version).value for v in history}
        assert values == {f"t{w}-{i}" for w in range(threads_n) for i in range(count)}
        store.flush_access()
        assert store.verify_audit().ok
    finally:
        for s in stores:
            s.close()


def test_buffered_access_counts_add_up_across_threads(kek_uri: str, sqlite_url: str) -> None:
    with kmsbox.open_store(sqlite_url, kek=kek_uri, audit_reads=False) as store:
        store.put("hot", "v", namespace="n")
        threads = [
            threading.Thread(target=lambda: [store.get("hot", namespace="n") for _ in range(50)]) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        store.flush_access()
        assert store.info("hot", namespace="n").access_count == 200
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        assert store.info("hot", namespace="n").access_count == 200


def test_access_counts_buffered_at_close_are_written(kek_uri: str, sqlite_url: str) -> None:
    with kmsbox.open_store(sqlite_url, kek=kek_uri, audit_reads=False) as store:
        store.put("k", "v", namespace="n")
        store.get("k", namespace="n")
        store.get("k", namespace="n")
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        assert store.info("k", namespace="n").access_count == 2
    assert os.path.exists(sqlite_url.removeprefix("sqlite:///"))
