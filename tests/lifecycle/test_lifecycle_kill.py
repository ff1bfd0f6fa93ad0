"""Every long job survives SIGKILL at random points, on SQLite and on PostgreSQL.

Each test fills a store with a few thousand secrets of known value, then runs one job
(``job_runner.py``) in a child process with small batches and kills it with SIGKILL at
random points, several times, while another thread reads (and writes) secrets. Afterwards
every secret reads back to its exact value, the audit chain verifies, and one more,
uninterrupted run finishes the job.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lifecycle_helpers import fill, read_all, value_for

import kmsbox
from kmsbox import format as fmt
from kmsbox.errors import SecretNotFound
from kmsbox.providers.local import add_keyring_version, generate_keyring, remove_keyring_version
from kmsbox.store.service import SecretStore

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("job_runner.py")
KILLS = int(os.environ.get("KMSBOX_KILL_ROUNDS", "6"))
BATCH = 50
N_BIG = 2000  # secrets in the namespace the per-namespace jobs work on
N_SMALL = 30  # namespaces (10 secrets each) for the KEK-level jobs
Expected = dict[tuple[str, str], str]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL: a SQLite file, or a PostgreSQL schema from the kmsbox-postgres plugin."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'secrets.db'}"
    if importlib.util.find_spec("kmsbox_postgres") is None:
        pytest.skip("kmsbox-postgres is not installed")
    url: str = request.getfixturevalue("postgres_url")
    return url


@dataclass
class Scenario:
    """One store under test: where it is, its KEKs, and what every secret must read back as."""

    url: str
    tmp_path: Path
    keyring_path: Path
    keks: list[str]
    expected: Expected = field(default_factory=dict)
    opened: list[SecretStore] = field(default_factory=list)

    def open(self, keks: list[str] | None = None, **kwargs: Any) -> SecretStore:
        store = kmsbox.open_store(self.url, kek=keks or self.keks, **kwargs)
        self.opened.append(store)
        return store

    def add(self, ns: str, values: dict[str, str]) -> None:
        self.expected |= {(ns, name): value for name, value in values.items()}

    def verify(self, keks: list[str] | None = None) -> SecretStore:
        """Every secret reads back exactly and the audit chain verifies."""
        store = self.open(keks, audit_reads=False)
        read_all(store, self.expected)
        verification = store.verify_audit()
        assert verification.ok, verification.problems
        return store


@pytest.fixture
def scenario(backend_url: str, tmp_path: Path) -> Iterator[Scenario]:
    """A store with ``N_BIG`` secrets in ``big`` and ``N_SMALL`` small namespaces, under a file:// KEK."""
    keyring_path = tmp_path / "keyring.json"
    sc = Scenario(backend_url, tmp_path, keyring_path, [generate_keyring(keyring_path)])
    store = sc.open()
    sc.add("big", fill(store, "big", N_BIG))
    for i in range(N_SMALL):
        sc.add(f"t-{i:02d}", fill(store, f"t-{i:02d}", 10))
    yield sc
    for opened in sc.opened:
        opened.close()


class Traffic(threading.Thread):
    """Reads random secrets (checking each value) and writes new ones while a job runs."""

    def __init__(self, sc: Scenario, keks: list[str], write_namespace: str = "big") -> None:
        super().__init__(daemon=True)
        self.store = sc.open(keks)
        self.sc = sc
        self.keys = list(sc.expected)
        self.write_namespace = write_namespace
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.reads = self.writes = 0

    def run(self) -> None:
        rng = random.Random()
        while not self.stop_event.is_set():
            try:
                if rng.random() < 0.1:
                    name = f"live-{self.writes:05d}"
                    value = value_for(self.write_namespace, name, 7)
                    self.store.put(name, value, namespace=self.write_namespace)
                    self.sc.expected[(self.write_namespace, name)] = value
                    self.writes += 1
                else:
                    ns, name = rng.choice(self.keys)
                    if self.store.get(name, namespace=ns).value != self.sc.expected[(ns, name)]:
                        self.errors.append(f"{ns}/{name} read back a wrong value")
                    self.reads += 1
            except Exception as exc:  # every failure is a finding
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.001)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        assert not self.is_alive()
        assert self.errors == [], self.errors[:5]
        assert self.reads > 0


def _spawn(sc: Scenario, args: list[str]) -> subprocess.Popen[str]:
    stderr = (sc.tmp_path / "runner.err").open("a")
    return subprocess.Popen(
        [sys.executable, str(RUNNER), "--url", sc.url, "--batch-size", str(BATCH), *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _wait(proc: subprocess.Popen[str], sc: Scenario) -> str:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"job runner failed ({proc.returncode}): {(sc.tmp_path / 'runner.err').read_text()[-3000:]}")
    return out


def _kill_at_random_point(sc: Scenario, args: list[str], rng: random.Random, max_commits: int) -> bool:
    """Run the job and SIGKILL it at a random point; True if it was killed, False if it finished."""
    proc = _spawn(sc, args)
    assert proc.stdout is not None
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0.0, 0.25))  # anywhere from start-up into the first batches
    else:
        wanted = rng.randint(0, max_commits)
        line = proc.stdout.readline()
        seen = 0
        while line and not line.startswith("done") and seen < wanted:
            line = proc.stdout.readline()
            seen += line == "commit\n"
        time.sleep(rng.uniform(0.0, 0.004))  # into the middle of the next batch
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _wait(proc, sc)
    return proc.returncode == -signal.SIGKILL


def _run_to_completion(sc: Scenario, args: list[str]) -> dict[str, Any]:
    proc = _spawn(sc, args)
    out = _wait(proc, sc)
    assert proc.returncode == 0
    done = [line for line in out.splitlines() if line.startswith("done ")]
    assert len(done) == 1
    result: dict[str, Any] = json.loads(done[0][5:])
    return result


def _kill_many_times(
    sc: Scenario, args: list[str], traffic_keks: list[str], expected_commits: int, **traffic: Any
) -> dict[str, Any]:
    """Kill the job ``KILLS`` times at random points under live traffic, check every value,
    then run it once more to the end (still under traffic) and return its report."""
    rng = random.Random(os.environ.get("KMSBOX_KILL_SEED") or None)
    load = Traffic(sc, traffic_keks, **traffic)
    load.start()
    try:
        killed = sum(
            _kill_at_random_point(sc, args, rng, max(1, expected_commits // (KILLS + 1))) for _ in range(KILLS)
        )
    finally:
        load.stop_event.set()
    load.finish()
    assert killed >= KILLS - 1, f"only {killed} of {KILLS} runs were killed before they finished"
    sc.verify(traffic_keks)

    load = Traffic(sc, traffic_keks, **traffic)
    load.start()
    try:
        report = _run_to_completion(sc, args)
    finally:
        load.stop_event.set()
    load.finish()
    return report


def _versions(store: SecretStore, ns: str) -> dict[tuple[str, int], tuple[bytes, int]]:
    out: dict[tuple[str, int], tuple[bytes, int]] = {}
    after: tuple[str, int] | None = None
    while True:
        with store.backend.read() as tx:
            batch = tx.versions(ns, after, 1000)
        if not batch:
            return out
        out |= {(v.name, v.version): (v.blob, v.namespace_key_version) for v in batch}
        after = (batch[-1].name, batch[-1].version)


def _key_status(store: SecretStore, ns: str) -> dict[int, str]:
    return {k["version"]: k["status"] for k in store.status(ns)["namespaces"][ns]["keys"]}


# --- the jobs ---------------------------------------------------------------------------


def test_rewrap_deks_survives_sigkill(scenario: Scenario) -> None:
    sc = scenario
    store = sc.opened[0]
    store.rotate_namespace_key("big")
    before = _versions(store, "big")

    report = _kill_many_times(sc, ["--kek", sc.keks[0], "--job", "rewrap_deks"], sc.keks, N_BIG // BATCH)

    assert report["remaining"] == 0
    store = sc.verify()
    after = _versions(store, "big")
    assert {nkv for _, nkv in after.values()} == {2}, "nothing may be left under the old version"
    assert _key_status(store, "big") == {1: "retired", 2: "active"}
    for key, (blob, _) in before.items():
        assert fmt.parse_secret(after[key][0]).ciphertext == fmt.parse_secret(blob).ciphertext


def test_reencrypt_survives_sigkill(scenario: Scenario) -> None:
    sc = scenario
    store = sc.opened[0]
    assert store.mark_compromised("big", 1) == 2
    before = _versions(store, "big")

    report = _kill_many_times(sc, ["--kek", sc.keks[0], "--job", "reencrypt"], sc.keks, N_BIG // BATCH)

    assert report["remaining"] == 0
    store = sc.verify()
    with store.backend.read() as tx:
        assert tx.list_jobs() == [], "a finished re-encryption leaves no job row"
    after = _versions(store, "big")
    assert {nkv for _, nkv in after.values()} == {2}, "nothing may be left under the compromised key"
    renewed = [
        k
        for k, (blob, _) in before.items()
        if fmt.parse_secret(after[k][0]).ciphertext != fmt.parse_secret(blob).ciphertext
    ]
    assert len(renewed) == len(before)
    assert store.cleanup_retired_keys(namespace="big").details["deleted"] == [{"namespace": "big", "version": 1}]


def test_rewrap_namespace_keys_survives_sigkill(scenario: Scenario) -> None:
    sc = scenario
    sc.opened[0].close()
    assert add_keyring_version(sc.keyring_path) == "v2"

    report = _kill_many_times(sc, ["--kek", sc.keks[0], "--job", "rewrap_namespace_keys"], sc.keks, N_SMALL + 2)

    assert report["remaining"] == 0
    store = sc.verify()
    status = store.status()
    assert all(info["pending"] == [] for info in status["namespaces"].values())
    assert {w["kek_version"] for i in status["namespaces"].values() for k in i["keys"] for w in k["wraps"]} == {"v2"}
    store.close()
    remove_keyring_version(sc.keyring_path, "v1")  # nothing may still need it
    sc.verify()


def test_migrate_kek_with_drop_old_survives_sigkill(scenario: Scenario) -> None:
    sc = scenario
    old = sc.keks[0]
    new = generate_keyring(sc.tmp_path / "new-keyring.json")
    both = [old, new]

    args = ["--kek", old, "--kek", new, "--job", "migrate_kek", "--to", new]
    report = _kill_many_times(sc, args, both, 2 * (N_SMALL + 2))

    assert report["remaining"] == 0
    store = sc.verify([new])
    uris = {w["kek_uri"] for i in store.status()["namespaces"].values() for k in i["keys"] for w in k["wraps"]}
    assert uris == {new}
    with pytest.raises(kmsbox.ConfigError):
        sc.open([old])


def test_cleanup_expired_survives_sigkill(scenario: Scenario) -> None:
    sc = scenario
    store = sc.opened[0]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for i in range(400):
        store.put(f"gone-{i:04d}", "expired", namespace="exp", expires=past)

    report = _kill_many_times(sc, ["--kek", sc.keks[0], "--job", "cleanup_expired"], sc.keks, 400 // BATCH)

    assert report["deleted"] <= 400
    store = sc.verify()
    assert list(store.iter_secrets(namespace="exp")) == []
    with pytest.raises(SecretNotFound):
        store.get("gone-0000", namespace="exp")
    expired = [e for e in store.iter_audit_events() if e.action == "expire"]
    assert sorted(str(e.name) for e in expired) == [f"gone-{i:04d}" for i in range(400)], "each deletion audited once"


def test_import_survives_sigkill(scenario: Scenario) -> None:
    sc = scenario
    source = sc.tmp_path / "import.env"
    values = {f"IMPORTED_{i:04d}": value_for("imp", f"IMPORTED_{i:04d}") for i in range(1500)}
    source.write_text("".join(f'export {k}="{v}"\n' for k, v in values.items()), encoding="utf-8")

    args = ["--kek", sc.keks[0], "--job", "import", "--namespace", "imp", "--source", str(source)]
    report = _kill_many_times(sc, args, sc.keks, 1500 // BATCH)

    assert report["processed"] + report["skipped"] == 1500
    sc.add("imp", values)
    store = sc.verify()
    assert all(len(store.history(name, namespace="imp")) == 1 for name in values), "nothing imported twice"
    imported = [e for e in store.iter_audit_events() if e.action == "import" and e.namespace == "imp"]
    assert len(imported) == 1500
