"""A process killed with SIGKILL at random moments leaves no version without its audit event and nothing half-written."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kmsbox

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

KILLS = 5

# Puts (new secrets and new versions), audited reads and disables, forever, until killed.
WRITER = r"""
import os, random, sys
import kmsbox

url = sys.argv[1]
rng = random.Random(int(sys.argv[2]))
store = kmsbox.open_store(url, kek="env://KMSBOX_MASTER_KEY")
print("ready", flush=True)
while True:
    ns = f"tenant-{rng.randrange(3)}"
    name = f"secret-{rng.randrange(40)}"
    store.put(name, f"value-of-{ns}/{name}:" + os.urandom(8).hex(), namespace=ns, labels={"run": sys.argv[2]})
    roll = rng.random()
    if roll < 0.3:
        store.try_get(name, namespace=ns)
    elif roll < 0.35:
        store.disable(name, namespace=ns)
    elif roll < 0.4:
        store.enable(name, namespace=ns)
"""


@pytest.mark.slow
def test_sigkill_during_writes_never_separates_a_write_from_its_audit_event(
    kek_uri: str, sqlite_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    rng = random.Random()
    for run in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(script), sqlite_url, str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.05, 0.4))
        assert proc.poll() is None, "the writer stopped before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        report = store.verify_audit()
        assert report.ok, report.problems

        writes: dict[tuple[str | None, str | None, int | None], int] = {}
        for event in store.iter_audit_events():
            if event.action in ("create", "update") and event.name is not None:
                assert event.result == "success"
                key = (event.namespace, event.name, event.secret_version)
                writes[key] = writes.get(key, 0) + 1
        assert writes, "the writer never wrote"
        assert set(writes.values()) == {1}

        stored: set[tuple[str | None, str | None, int | None]] = set()
        for ns in store.namespaces():
            for info in store.iter_secrets(namespace=ns):
                history = store.history(info.name, namespace=ns)
                # Nothing half-written: versions 1..N with the secret row at N.
                assert [v.version for v in history] == list(range(1, info.version + 1))
                if info.status == "disabled":
                    store.enable(info.name, namespace=ns)
                for version in history:
                    stored.add((ns, info.name, version.version))
                    value = store.get(info.name, namespace=ns, version=version.version).value
                    assert isinstance(value, str) and value.startswith(f"value-of-{ns}/{info.name}:")
        # Every stored version has exactly one audit event, and every write event has its version.
        assert stored == set(writes)
        assert store.verify_audit().ok
