"""Benchmarks, reported as ratios against baselines measured in the same process.

Sections: engine (vs raw AES-GCM), store (vs raw SQLite / PostgreSQL loops and the audited yardstick),
kms (KEK calls and time through each provider's fake with injected latency),
rotation (DEK rewrap and re-encryption throughput); module sections (MODULE_SECTIONS): orm,
concurrency (PostgreSQL, 1 -> 8 processes, and a soak), aio (kmsbox.aio under a 200 ms KMS). Prints a table and writes
``benchmarks/results/latest.json``. Never used as a pass/fail test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.console import Console
from rich.table import Table

import kmsbox
from kmsbox import format as fmt
from kmsbox.kek import open_kek
from kmsbox.plugins import fake_servers
from kmsbox.store.service import SecretStore
from kmsbox.testing.counting import CountingKek

RESULTS = Path(__file__).parent / "results"
console = Console(width=130)  # the tables fit whole in a log or a pipe too


class Rounds:
    """Per-round rates of functions timed in turn, and the ratios between them."""

    def __init__(self, per_round: dict[str, list[float]]) -> None:
        self.per_round = per_round

    def best(self) -> dict[str, float]:
        """The best rate of each function (operations per second)."""
        return {label: max(values) for label, values in self.per_round.items()}

    def ratio(self, measured: str, baseline: str) -> float:
        """The median over rounds of ``measured / baseline``, each pair timed back to back."""
        return statistics.median(m / b for m, b in zip(self.per_round[measured], self.per_round[baseline], strict=True))

    def ratio_range(self, measured: str, baseline: str) -> tuple[float, float]:
        """The lowest and highest per-round ratio (how noisy the machine was)."""
        pairs = [m / b for m, b in zip(self.per_round[measured], self.per_round[baseline], strict=True)]
        return min(pairs), max(pairs)


def rates(fns: dict[str, Callable[[], object]], *, seconds: float, min_ops: int = 50, rounds: int = 15) -> Rounds:
    """Time each of ``fns`` for ``rounds`` short slices, interleaved.

    Each round times every function in turn for ``seconds * 3 / rounds``, so that a
    baseline and the code measured against it run back to back: a shared machine
    that speeds up or slows down (another tenant, a frequency change) moves both
    alike, and the ratio of each round's pair is what gets compared.
    """
    for fn in fns.values():
        for _ in range(min(min_ops, 20)):
            fn()
    per_round: dict[str, list[float]] = {label: [] for label in fns}
    slice_ = seconds * 3 / rounds
    for _ in range(rounds):
        for label, fn in fns.items():
            ops = 0
            start = time.perf_counter()
            deadline = start + slice_
            while True:
                for _ in range(min_ops):
                    fn()
                ops += min_ops
                now = time.perf_counter()
                if now >= deadline:
                    break
            per_round[label].append(ops / (now - start))
    return Rounds(per_round)


def _ratios(measured: Rounds, pairs: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Best rates, and for each named pair its median ratio and per-round range."""
    out: dict[str, Any] = dict(measured.best())
    for name, (subject, baseline) in pairs.items():
        out[name] = measured.ratio(subject, baseline)
        out[f"{name}_range"] = list(measured.ratio_range(subject, baseline))
    return out


def _local_kek_uri(var: str = "KMSBOX_BENCH_KEK") -> str:
    os.environ[var] = os.urandom(32).hex()
    return f"env://{var}"


# --- engine -----------------------------------------------------------------------------


def _engine_row(
    env: kmsbox.Envelope, raw: AESGCM, context: dict[str, str], data: bytes, seconds: float, batch: int
) -> dict[str, Any]:
    blob = env.encrypt(data, context)
    nonce = os.urandom(12)
    raw_ct = raw.encrypt(nonce, data, None)
    measured = rates(
        {
            "engine_encrypt_per_s": lambda: env.encrypt(data, context),
            "raw_encrypt_per_s": lambda: raw.encrypt(os.urandom(12), data, None),
            "engine_decrypt_per_s": lambda: env.decrypt(blob, context),
            "raw_decrypt_per_s": lambda: raw.decrypt(nonce, raw_ct, None),
        },
        seconds=seconds,
        min_ops=batch,
    )
    return _ratios(
        measured,
        {
            "encrypt_ratio": ("engine_encrypt_per_s", "raw_encrypt_per_s"),
            "decrypt_ratio": ("engine_decrypt_per_s", "raw_decrypt_per_s"),
        },
    )


def bench_engine(seconds: float) -> dict[str, Any]:
    """Envelope encrypt/decrypt vs raw AESGCM.encrypt/decrypt, warm cache."""
    env = kmsbox.Envelope(_local_kek_uri())
    raw = AESGCM(AESGCM.generate_key(bit_length=256))
    context = {"table": "payments", "column": "card"}
    out: dict[str, Any] = {}
    for label, size in (("256B", 256), ("4KiB", 4096), ("1MiB", 1 << 20)):
        large = size >= 1 << 20
        out[label] = _engine_row(
            env, raw, context, os.urandom(size), seconds * 2 if large else seconds, 5 if large else 200
        )
    out["engine_message_overhead_bytes"] = len(env.encrypt(b"", context))
    # Stored bytes per secret beyond the value: the envelope plus the 1-byte value type tag.
    out["stored_secret_overhead_bytes"] = fmt.SECRET_OVERHEAD + 1
    return out


# --- store ------------------------------------------------------------------------------


_STORED = 1000  # secrets (and raw rows) the get loops read in turn


def _connect_sqlite(path: str) -> sqlite3.Connection:
    """An autocommit connection with the store's journal settings (WAL, ``synchronous=NORMAL``)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _raw_sqlite(path: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """A raw insert and a raw select loop on a plain SQLite table; and its close."""
    conn = _connect_sqlite(path)
    conn.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, blob BLOB NOT NULL)")
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    value = os.urandom(64)
    counter = iter(range(10**9))

    def put() -> None:
        nonce = os.urandom(12)
        conn.execute(
            "INSERT INTO raw (id, blob) VALUES (?, ?)", (f"s{next(counter)}", nonce + aead.encrypt(nonce, value, None))
        )

    for _ in range(_STORED):
        put()
    index = iter(range(10**9))

    def get() -> None:
        row = conn.execute("SELECT blob FROM raw WHERE id = ?", (f"s{next(index) % _STORED}",)).fetchone()
        aead.decrypt(row[0][:12], row[0][12:], None)

    return put, get, conn.close


_FLOOR_SCHEMA = (
    # The store's own tables (schema 3) that its put and audited get touch, same keys and index.
    """CREATE TABLE kmsbox_secrets (namespace TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL, category TEXT,
    description TEXT, labels TEXT NOT NULL, row_version INTEGER NOT NULL, version_created_at REAL NOT NULL,
    seal BLOB, blob BLOB, PRIMARY KEY (namespace, name)) WITHOUT ROWID""",
    """CREATE TABLE kmsbox_secret_access (namespace TEXT NOT NULL, name TEXT NOT NULL, counter INTEGER NOT NULL,
    reads INTEGER NOT NULL, last_at REAL, PRIMARY KEY (namespace, name, counter)) WITHOUT ROWID""",
    "CREATE TABLE kmsbox_namespaces (namespace TEXT NOT NULL PRIMARY KEY, generation INTEGER NOT NULL, "
    "created_at REAL NOT NULL, seal BLOB)",
    "CREATE TABLE kmsbox_audit_chains (chain INTEGER NOT NULL PRIMARY KEY, seq INTEGER NOT NULL, "
    "at INTEGER NOT NULL, mac BLOB NOT NULL, seal BLOB)",
    """CREATE TABLE kmsbox_audit_events (at INTEGER NOT NULL, chain INTEGER NOT NULL, seq INTEGER NOT NULL,
    time REAL NOT NULL, namespace TEXT, name TEXT, secret_version INTEGER, action TEXT NOT NULL,
    result TEXT NOT NULL, actor TEXT, context TEXT NOT NULL, detail TEXT NOT NULL, key_version INTEGER NOT NULL,
    mac BLOB NOT NULL, record INTEGER NOT NULL, row_version INTEGER, state BLOB,
    PRIMARY KEY (at, chain, seq)) WITHOUT ROWID""",
    "CREATE INDEX kmsbox_audit_states ON kmsbox_audit_events (namespace, name, row_version) "
    "WHERE row_version IS NOT NULL",
)
_SECRET_COLUMNS = (
    "s.namespace, s.name, s.version, s.status, s.created_at, s.updated_at, s.expires_at, s.category, "
    "s.description, s.labels, s.row_version, s.version_created_at, s.seal, "
    "(SELECT CAST(SUM(a.reads) AS BIGINT) FROM kmsbox_secret_access a WHERE a.namespace = s.namespace "
    "AND a.name = s.name), (SELECT MAX(a.last_at) FROM kmsbox_secret_access a WHERE a.namespace = s.namespace "
    "AND a.name = s.name), s.blob"
)


def _audited_floor(path: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """Hand-written loops issuing the store's statements on SQLite and nothing else; and their close.

    The statements are those a store runs (``src/kmsbox/storage/sql/statements.py``, checked
    with ``sqlite3``'s trace callback), on the same tables, index and connection settings:

    - put of a new name: ``BEGIN IMMEDIATE``; ``INSERT INTO kmsbox_secrets … SELECT … WHERE
      EXISTS`` (the namespace row with its seal) ``AND NOT EXISTS`` (a recorded later state
      of the name) ``ON CONFLICT DO NOTHING``; ``UPDATE kmsbox_audit_chains`` (compare-and-set
      of the chain head); ``INSERT INTO kmsbox_audit_events``; ``COMMIT``.
    - audited get: ``BEGIN IMMEDIATE``; the ``SELECT`` of the secret's row (with its summed
      read counts); the same head update and event insert; ``COMMIT``.

    The values are computed for real: one AES-GCM call for the value, the event's chained
    HMAC and the HMAC seals the statements carry (the secret row's, the chain head's). No
    argument checks, no canonical record, no retry or transaction layers, no returned
    objects. What an audited put or get must cost at least: not a target, a yardstick.
    """
    conn = _connect_sqlite(path)
    conn.execute("PRAGMA cache_size=-32768")  # the store's other two settings
    conn.execute("PRAGMA secure_delete=ON")
    for statement in _FLOOR_SCHEMA:
        conn.execute(statement)
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    mac_key = hmac.HMAC(os.urandom(32), hashes.SHA256())
    seal_key = hmac.HMAC(os.urandom(32), hashes.SHA256())
    namespace, namespace_seal, chain = "bench", os.urandom(32), 7
    conn.execute("INSERT INTO kmsbox_namespaces VALUES (?, 1, ?, ?)", (namespace, time.time(), namespace_seal))
    conn.execute("INSERT INTO kmsbox_audit_chains VALUES (?, 0, 0, x'', NULL)", (chain,))
    value = os.urandom(64)
    head_seq, head_mac = 0, b""  # the chain head this connection last wrote
    counter = iter(range(10**9))
    create = (
        "INSERT INTO kmsbox_secrets (namespace, name, version, status, created_at, updated_at, expires_at, category, "
        "description, labels, row_version, version_created_at, seal, blob) "
        "SELECT ?, ?, 1, 'active', ?, ?, NULL, NULL, NULL, '{}', 1, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM kmsbox_namespaces WHERE namespace = ? AND seal = ?) "
        "AND NOT EXISTS (SELECT 1 FROM kmsbox_audit_events WHERE namespace = ? AND name = ? AND row_version >= 1) "
        "ON CONFLICT (namespace, name) DO NOTHING"
    )
    head_cas = (
        "UPDATE kmsbox_audit_chains SET seq = ?, at = ?, mac = ?, seal = ? WHERE chain = ? AND seq = ? AND mac = ?"
    )
    insert_event = (
        "INSERT INTO kmsbox_audit_events (chain, seq, at, time, namespace, name, secret_version, action, result, "
        "actor, context, detail, key_version, mac, record, row_version, state) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'success', NULL, '{}', ?, 1, ?, 2, ?, ?)"
    )
    read = f"SELECT {_SECRET_COLUMNS} FROM kmsbox_secrets s WHERE s.namespace = ? AND s.name = ?"

    def event(name: str, version: int, action: str, detail: str, row_version: int | None, state: bytes | None) -> None:
        nonlocal head_seq, head_mac
        now = time.time()
        at = int(now * 1_000_000)
        seq, last = head_seq + 1, head_mac
        mac = mac_key.copy()
        mac.update(last + f"{chain}|{seq}|{at}|{namespace}|{name}|{version}|{action}|{detail}".encode())
        event_mac = mac.finalize()
        seal = seal_key.copy()
        seal.update(f"{chain}|{seq}|{at}|".encode() + event_mac)
        if conn.execute(head_cas, (seq, at, event_mac, seal.finalize(), chain, head_seq, last)).rowcount != 1:
            raise RuntimeError("the chain head moved")  # this connection is the chain's only writer
        conn.execute(
            insert_event, (chain, seq, at, now, namespace, name, version, action, detail, event_mac, row_version, state)
        )
        head_seq, head_mac = seq, event_mac

    def put() -> None:
        name = f"s{next(counter)}"
        now = time.time()
        nonce = os.urandom(12)
        blob = nonce + aead.encrypt(nonce, value, None)
        row_seal = seal_key.copy()
        row_seal.update(f"{namespace}|{name}|1|active|{now!r}|1|".encode() + blob)
        sealed = row_seal.finalize()[:16]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(create, (namespace, name, now, now, now, sealed, blob, namespace, namespace_seal, namespace, name))
        event(name, 1, "create", '{"namespace_key_version": 1}', 1, sealed)
        conn.execute("COMMIT")

    for _ in range(_STORED):
        put()
    index = iter(range(10**9))

    def get() -> None:
        name = f"s{next(index) % _STORED}"
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(read, (namespace, name)).fetchone()
        blob = row[15]
        aead.decrypt(blob[:12], blob[12:], None)
        event(name, row[2], "read", "{}", None, None)
        conn.execute("COMMIT")

    return put, get, conn.close


def _store_loops(store: SecretStore, ns: str = "bench") -> tuple[Callable[[], None], Callable[[], None]]:
    """A put loop (new names) and a get loop over the first secrets it wrote."""
    value = os.urandom(32).hex()
    counter = iter(range(10**9))

    def put() -> None:
        store.put(f"s{next(counter)}", value, namespace=ns)

    for _ in range(_STORED):
        put()
    index = iter(range(10**9))

    def get() -> None:
        store.get(f"s{next(index) % _STORED}", namespace=ns)

    return put, get


def bench_store(seconds: float) -> dict[str, Any]:
    """put/get on SQLite (read audit on and off) and PostgreSQL vs raw loops, interleaved."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw_put, raw_get, close_raw = _raw_sqlite(f"{tmp}/raw.db")
        floor_put, floor_get, close_floor = _audited_floor(f"{tmp}/floor.db")
        kek = _local_kek_uri()
        try:
            with (
                kmsbox.open_store(f"sqlite:///{tmp}/audit-on.db", kek) as audited,
                kmsbox.open_store(f"sqlite:///{tmp}/audit-off.db", kek, audit_reads=False) as unaudited,
            ):
                put_on, get_on = _store_loops(audited)
                _, get_off = _store_loops(unaudited)
                measured = rates(
                    {
                        "raw_insert_aesgcm_per_s": raw_put,
                        "put_per_s": put_on,
                        "floor_put_per_s": floor_put,
                        "raw_select_decrypt_per_s": raw_get,
                        "get_audited_per_s": get_on,
                        "floor_get_per_s": floor_get,
                        "get_unaudited_per_s": get_off,
                    },
                    seconds=seconds,
                )
        finally:
            close_raw()
            close_floor()
    out["sqlite"] = _ratios(
        measured,
        {
            "put_ratio": ("put_per_s", "raw_insert_aesgcm_per_s"),
            "get_audited_ratio": ("get_audited_per_s", "raw_select_decrypt_per_s"),
            "get_unaudited_ratio": ("get_unaudited_per_s", "raw_select_decrypt_per_s"),
            # The yardstick: the best an audited loop does, against the raw loop and the store.
            "floor_put_ratio": ("floor_put_per_s", "raw_insert_aesgcm_per_s"),
            "floor_get_ratio": ("floor_get_per_s", "raw_select_decrypt_per_s"),
            "put_of_floor": ("put_per_s", "floor_put_per_s"),
            "get_audited_of_floor": ("get_audited_per_s", "floor_get_per_s"),
        },
    )
    out["postgresql"] = bench_store_postgres(seconds)
    return out


def _postgres_url() -> str:
    return os.environ.get("KMSBOX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def bench_store_postgres(seconds: float) -> dict[str, Any]:
    """The same on PostgreSQL, beside a raw psycopg insert/select loop."""
    try:
        import psycopg
    except ImportError:
        return {"skipped": "psycopg / kmsbox-postgres not installed"}
    base = _postgres_url()
    schema = f"kmsbox_bench_{os.getpid()}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        return {"skipped": f"PostgreSQL unreachable: {type(exc).__name__}"}
    try:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE TABLE {schema}.raw (id TEXT PRIMARY KEY, blob BYTEA NOT NULL)")
        aead = AESGCM(AESGCM.generate_key(bit_length=256))
        value = os.urandom(64)
        counter = iter(range(10**9))

        def put() -> None:
            nonce = os.urandom(12)
            admin.execute(
                f"INSERT INTO {schema}.raw (id, blob) VALUES (%s, %s)",
                (f"s{next(counter)}", nonce + aead.encrypt(nonce, value, None)),
            )

        for _ in range(_STORED):
            put()
        index = iter(range(10**9))

        def get() -> None:
            row = admin.execute(
                f"SELECT blob FROM {schema}.raw WHERE id = %s", (f"s{next(index) % _STORED}",)
            ).fetchone()
            assert row is not None
            aead.decrypt(row[0][:12], row[0][12:], None)

        sep = "&" if "?" in base else "?"
        with kmsbox.open_store(f"{base}{sep}schema={schema}", _local_kek_uri()) as store:
            store_put, store_get = _store_loops(store)
            measured = rates(
                {
                    "raw_insert_aesgcm_per_s": put,
                    "put_per_s": store_put,
                    "raw_select_decrypt_per_s": get,
                    "get_audited_per_s": store_get,
                },
                seconds=seconds,
                min_ops=20,
            )
        return _ratios(
            measured,
            {
                "put_ratio": ("put_per_s", "raw_insert_aesgcm_per_s"),
                "get_audited_ratio": ("get_audited_per_s", "raw_select_decrypt_per_s"),
            },
        )
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


# --- KMS calls through the fakes ---------------------------------------------------------


def _fill(store: SecretStore, total: int, namespaces: int) -> None:
    per = total // namespaces
    value = "x" * 32
    for n in range(namespaces):
        store.import_secrets(((f"s{i}", value) for i in range(per)), namespace=f"tenant-{n}", on_conflict="overwrite")


def bench_kms(read_secrets: int, rewrap_secrets: int, latency: float) -> dict[str, Any]:
    """Per provider through its fake: KEK calls and time to read secrets over 10
    namespaces on a cold cache, to migrate every namespace key to it, and to
    rewrap the namespace keys after a KEK rotation.

    ``*_kek_calls`` counts calls on the provider (a batch call counts once);
    ``*_api_calls`` counts the requests the fake KMS received.
    """
    out: dict[str, Any] = {}
    local_uri = _local_kek_uri("KMSBOX_BENCH_LOCAL")
    registry = fake_servers()
    with tempfile.TemporaryDirectory() as tmp:
        base_db = f"{tmp}/base.db"
        with kmsbox.open_store(f"sqlite:///{base_db}", local_uri) as store:
            _fill(store, rewrap_secrets, 10)
        targets: list[tuple[str, Any]] = [("local", None)] + [(name, reg) for name, reg in sorted(registry.items())]
        for name, reg in targets:
            server = None
            try:
                if reg is None:
                    os.environ["KMSBOX_BENCH_LOCAL2"] = f"v1:{os.urandom(32).hex()}"
                    kek_uri = "env://KMSBOX_BENCH_LOCAL2"
                else:
                    server = reg.factory()
                    os.environ.update(server.env())
                    kek_uri = server.kek_uri
                db = f"{tmp}/{name}.db"
                Path(db).write_bytes(Path(base_db).read_bytes())
                row: dict[str, Any] = {"latency_ms": latency * 1000 if server is not None else 0}

                def phase(
                    label: str,
                    run: Callable[[CountingKek], Any],
                    kek_uri: str = kek_uri,
                    row: dict[str, Any] = row,
                    server: Any = server,
                ) -> Any:
                    kek = CountingKek(open_kek(kek_uri))
                    if server is not None:
                        server.faults.reset_counts()
                        server.faults.configure(latency=latency)
                    start = time.perf_counter()
                    try:
                        result = run(kek)
                    finally:
                        row[f"{label}_seconds"] = time.perf_counter() - start
                        row[f"{label}_kek_calls"] = kek.total
                        if server is not None:
                            row[f"{label}_api_calls"] = server.faults.total_calls()
                            server.faults.configure(latency=0)
                    return result

                def migrate(kek: CountingKek, row: dict[str, Any] = row, db: str = db) -> None:
                    with kmsbox.open_store(f"sqlite:///{db}", local_uri) as store:
                        row["migrate_namespace_keys"] = store.migrate_kek(kek, drop_old=True).processed

                def read(kek: CountingKek, row: dict[str, Any] = row, db: str = db, server: Any = server) -> None:
                    with kmsbox.open_store(f"sqlite:///{db}", kek, audit_reads=False) as store:
                        # Opening unwraps the audit key (so an unusable KEK fails there):
                        # counted apart from the reads' own namespace-key unwraps.
                        row["open_kek_calls"] = kek.total
                        if server is not None:
                            row["open_api_calls"] = server.faults.total_calls()
                        per = read_secrets // 10
                        for n in range(10):
                            for i in range(per):
                                store.get(f"s{i}", namespace=f"tenant-{n}")
                        row["read_secrets"] = per * 10
                        # The same reads again within the cache lifetime: no KEK call at all.
                        before = kek.total
                        for n in range(10):
                            store.get("s0", namespace=f"tenant-{n}")
                        row["reread_kek_calls"] = kek.total - before

                phase("migrate", migrate)
                phase("read", read)
                # KEK rotation (a new primary version), then rewrap every namespace key.
                if server is not None:
                    server.rotate_key(kek_uri)
                else:
                    os.environ["KMSBOX_BENCH_LOCAL2"] = (
                        f"v2:{os.urandom(32).hex()}," + os.environ["KMSBOX_BENCH_LOCAL2"]
                    )
                # AWS rotation keeps the key ARN (KMS picks the new backing key itself), so
                # force the rewrap there to measure the same work.
                force = name == "aws"

                def rewrap(kek: CountingKek, force: bool = force, row: dict[str, Any] = row, db: str = db) -> None:
                    with kmsbox.open_store(f"sqlite:///{db}", kek) as store:
                        report = store.rewrap_namespace_keys(force=force)
                        row["rewrap_namespace_keys"] = report.processed

                phase("rewrap", rewrap)
                with kmsbox.open_store(f"sqlite:///{db}", open_kek(kek_uri)) as store:
                    row["values_intact"] = store.get("s1", namespace="tenant-3").value == "x" * 32
                row["rewrap_secrets_covered"] = rewrap_secrets
                out[name] = row
            except Exception as exc:  # a benchmark reports, it does not stop the suite
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                if server is not None:
                    server.stop()
    return out


# --- rotation throughput -----------------------------------------------------------------


def bench_rotation(secrets: int) -> dict[str, Any]:
    """Namespace-key rotation (DEK rewrap) and re-encryption throughput."""
    out: dict[str, Any] = {}
    kek = _local_kek_uri()
    with tempfile.TemporaryDirectory() as tmp:
        with kmsbox.open_store(f"sqlite:///{tmp}/rot.db", kek) as store:
            _fill(store, secrets, 1)
            store.batch_size = 2000
            store.rotate_namespace_key("tenant-0")
            report = store.rewrap_deks("tenant-0")
            reenc = store.reencrypt("tenant-0")
        out["sqlite"] = {
            "secrets": report.processed,
            "rewrap_per_s": report.processed / report.seconds,
            "reencrypt_per_s": reenc.processed / reenc.seconds,
        }
    try:
        import psycopg
    except ImportError:
        out["postgresql"] = {"skipped": "psycopg not installed"}
        return out
    base = _postgres_url()
    schema = f"kmsbox_rot_{os.getpid()}"
    sep = "&" if "?" in base else "?"
    try:
        with kmsbox.open_store(f"{base}{sep}schema={schema}", kek) as store:
            _fill(store, secrets, 1)
            store.batch_size = 2000
            store.rotate_namespace_key("tenant-0")
            report = store.rewrap_deks("tenant-0")
            reenc = store.reencrypt("tenant-0")
        out["postgresql"] = {
            "secrets": report.processed,
            "rewrap_per_s": report.processed / report.seconds,
            "reencrypt_per_s": reenc.processed / reenc.seconds,
        }
    except Exception as exc:
        out["postgresql"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    finally:
        try:
            with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except psycopg.Error:
            pass
    return out


# --- report ------------------------------------------------------------------------------


def _ratio(row: dict[str, Any], name: str) -> str:
    """``0.31 (0.27-0.35)``: the median per-round ratio and its range over the rounds."""
    low, high = row[f"{name}_range"]
    return f"{row[name]:.2f} ({low:.2f}-{high:.2f})"


def _print(results: dict[str, Any]) -> None:
    if "engine" in results:
        t = Table(title="engine vs raw AES-256-GCM (local KEK, warm cache)")
        for col in ("size", "encrypt/s", "raw/s", "ratio (range)", "decrypt/s", "raw/s", "ratio (range)"):
            t.add_column(col)
        for size in ("256B", "4KiB", "1MiB"):
            r = results["engine"][size]
            t.add_row(
                size,
                f"{r['engine_encrypt_per_s']:,.0f}",
                f"{r['raw_encrypt_per_s']:,.0f}",
                _ratio(r, "encrypt_ratio"),
                f"{r['engine_decrypt_per_s']:,.0f}",
                f"{r['raw_decrypt_per_s']:,.0f}",
                _ratio(r, "decrypt_ratio"),
            )
        console.print(t)
        console.print(
            f"stored bytes per secret beyond the value: {results['engine']['stored_secret_overhead_bytes']} (engine message overhead {results['engine']['engine_message_overhead_bytes']})"
        )
    if "store" in results:
        t = Table(title="store vs raw loops")
        for col in ("backend", "figure", "best per s", "raw best per s", "ratio (median of rounds, range)"):
            t.add_column(col)
        for backend, r in results["store"].items():
            if "skipped" in r:
                t.add_row(backend, "skipped", r["skipped"], "", "")
                continue
            t.add_row(
                backend,
                "put (audit on)",
                f"{r['put_per_s']:,.0f}",
                f"{r['raw_insert_aesgcm_per_s']:,.0f}",
                _ratio(r, "put_ratio"),
            )
            t.add_row(
                backend,
                "get (read audit on)",
                f"{r['get_audited_per_s']:,.0f}",
                f"{r['raw_select_decrypt_per_s']:,.0f}",
                _ratio(r, "get_audited_ratio"),
            )
            if "get_unaudited_per_s" in r:
                t.add_row(
                    backend,
                    "get (read audit off)",
                    f"{r['get_unaudited_per_s']:,.0f}",
                    f"{r['raw_select_decrypt_per_s']:,.0f}",
                    _ratio(r, "get_unaudited_ratio"),
                )
        console.print(t)
        floor = results["store"].get("sqlite", {})
        if "floor_put_per_s" in floor:
            t = Table(title="sqlite: a hand-written audited loop (the store's statements and MACs, nothing else)")
            for col in ("figure", "floor per s", "floor vs raw loop", "store vs floor"):
                t.add_column(col)
            t.add_row(
                "put",
                f"{floor['floor_put_per_s']:,.0f}",
                _ratio(floor, "floor_put_ratio"),
                _ratio(floor, "put_of_floor"),
            )
            t.add_row(
                "get (read audit on)",
                f"{floor['floor_get_per_s']:,.0f}",
                _ratio(floor, "floor_get_ratio"),
                _ratio(floor, "get_audited_of_floor"),
            )
            console.print(t)
    if "kms" in results:
        t = Table(title="KEK calls through the fakes: provider calls / KMS requests received")
        for col in ("provider", "latency", "read secrets", "calls", "s", "migrate calls", "s", "rewrap calls", "s"):
            t.add_column(col)
        for name, r in results["kms"].items():
            if "error" in r:
                t.add_row(name, "error", r["error"][:60], "", "", "", "", "", "")
                continue

            def calls(label: str, r: dict[str, Any] = r) -> str:
                api = r.get(f"{label}_api_calls")
                return str(r[f"{label}_kek_calls"]) + (f" / {api}" if api is not None else "")

            def reads(r: dict[str, Any] = r) -> str:
                # The reads' own calls, what opening the store took, and a re-read's.
                opened, again = r["open_kek_calls"], r["reread_kek_calls"]
                kek = r["read_kek_calls"] - opened - again
                if "read_api_calls" not in r:
                    return f"{kek} + {opened} at open; re-read {again}"
                api_open = r["open_api_calls"]
                return f"{kek} / {r['read_api_calls'] - api_open} + {opened} / {api_open} at open; re-read {again}"

            t.add_row(
                name,
                f"{r['latency_ms']:.0f} ms",
                str(r["read_secrets"]),
                reads(),
                f"{r['read_seconds']:.2f}",
                calls("migrate"),
                f"{r['migrate_seconds']:.2f}",
                calls("rewrap"),
                f"{r['rewrap_seconds']:.2f}",
            )
        console.print(t)
    if "rotation" in results:
        t = Table(title="namespace-key rotation")
        for col in ("backend", "secrets", "DEK rewrap/s", "re-encrypt/s"):
            t.add_column(col)
        for backend, r in results["rotation"].items():
            if "skipped" in r:
                t.add_row(backend, "skipped", r["skipped"], "")
            else:
                t.add_row(backend, str(r["secrets"]), f"{r['rewrap_per_s']:,.0f}", f"{r['reencrypt_per_s']:,.0f}")
        console.print(t)


#: Sections kept in a module of their own: name -> module exposing
#: ``run(quick: bool) -> dict`` and ``show(result: dict, console: Console) -> None``.
MODULE_SECTIONS: dict[str, str] = {
    "orm": "benchmarks.orm",
    "concurrency": "benchmarks.concurrency",
    "aio": "benchmarks.aio",
}


def main(argv: list[str] | None = None) -> None:
    """Run the selected sections, print the tables and write the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="Shorter runs and smaller data (for a smoke check).")
    builtin = ["engine", "store", "kms", "rotation"]
    parser.add_argument("--only", nargs="*", choices=builtin + list(MODULE_SECTIONS), help="Sections to run.")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    sections = args.only or builtin + list(MODULE_SECTIONS)
    seconds = 0.3 if args.quick else 1.5
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "quick": args.quick,
    }
    if "engine" in sections:
        results["engine"] = bench_engine(seconds)
    if "store" in sections:
        results["store"] = bench_store(seconds)
    if "kms" in sections:
        results["kms"] = bench_kms(1000 if args.quick else 10_000, 5000 if args.quick else 100_000, 0.010)
    if "rotation" in sections:
        results["rotation"] = bench_rotation(5000 if args.quick else 50_000)
    modules = {name: importlib.import_module(path) for name, path in MODULE_SECTIONS.items() if name in sections}
    for name, module in modules.items():
        results[name] = module.run(args.quick)
    _print(results)
    for name, module in modules.items():
        module.show(results[name], console)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    console.print(f"wrote {args.output}")
