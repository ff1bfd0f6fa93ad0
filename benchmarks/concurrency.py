"""PostgreSQL under concurrent client processes, and a soak with rotation jobs running.

A module section of ``python -m benchmarks`` (``--only concurrency``): ``run(quick)``
measures and ``show(result, console)`` prints.

- **scaling**: 1, 2, 4 and 8 client *processes* (``multiprocessing``, spawn), each
  opening its own stores, doing store ``put`` (audit on), audited ``get`` and unaudited
  ``get`` for a fixed slice, against a raw psycopg loop of the same shape at the same
  concurrency. Raw put: an ``INSERT … ON CONFLICT DO UPDATE`` of an AES-GCM ciphertext and
  an HMAC-ed event insert in one transaction. Raw get: a ``SELECT`` by primary key and an
  AES-GCM decrypt (autocommit). Raw audited get: the ``SELECT`` and the event insert in
  one transaction. Eight processes are started once; each phase runs its first *n* of
  them (the others wait), and every (clients, operation, store/raw) phase is timed in
  each round, store and raw back to back, so a machine that drifts moves both alike.
  Each process works on two namespaces of its own and one shared by all, in turn.
- **soak**: 8 processes doing put/get/delete/list for a fixed time while a ninth runs
  ``rotate_namespace_key``, ``rewrap_deks``, ``reencrypt`` and a forced
  ``rewrap_namespace_keys`` (the KEK rewrap) over every namespace in a loop. Each
  writer keeps the last value it wrote per name (names are its own) and checks them
  all at the end; then ``verify_audit()``.

Everything lives in a schema of its own (``kmsbox_conc_<pid>``), dropped at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.console import Console
from rich.table import Table

import kmsbox
from benchmarks.run import _postgres_url

__all__ = ["run", "show"]

_KEK_VAR = "KMSBOX_BENCH_CONC_KEK"
_RAW_VAR = "KMSBOX_BENCH_CONC_RAW"  # the raw loop's AES-GCM key (hex), shared by the processes
CLIENTS = (1, 2, 4, 8)
OPS = ("put", "get_audited", "get")
_PREFILLED = 100  # secrets (and raw rows) per namespace that the get loops read in turn
_SAMPLES = 3  # error messages kept per process and phase


@dataclass(frozen=True)
class _Setup:
    """What a client process needs to connect (picklable; no key material: the KEK is in the environment)."""

    conninfo: str
    schema: str

    @property
    def store_url(self) -> str:
        sep = "&" if "?" in self.conninfo else "?"
        return f"{self.conninfo}{sep}schema={self.schema}"


def _namespaces(index: int) -> list[str]:
    """A process's namespaces: two of its own and one every process shares."""
    return [f"app{index}-a", f"app{index}-b", "shared"]


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


# --- scaling ------------------------------------------------------------------------------


class _Client:
    """One process's stores, raw connection and loops."""

    def __init__(self, index: int, setup: _Setup) -> None:
        import psycopg

        self.index = index
        self.audited = kmsbox.open_store(setup.store_url, f"env://{_KEK_VAR}")
        self.unaudited = kmsbox.open_store(setup.store_url, f"env://{_KEK_VAR}", audit_reads=False)
        self.conn = psycopg.connect(setup.conninfo, autocommit=True)
        self.conn.execute(f'SET search_path TO "{setup.schema}"')
        self.aead = AESGCM(bytes.fromhex(os.environ[_RAW_VAR]))
        self.mac = hmac.HMAC(os.urandom(32), hashes.SHA256())
        self.value = os.urandom(32).hex()
        self.names = itertools.cycle(_namespaces(index))
        self.reads = itertools.cycle(range(_PREFILLED))
        self.counter = itertools.count()
        self.loops = {
            ("store", "put"): self.store_put,
            ("store", "get_audited"): lambda: self.store_get(self.audited),
            ("store", "get"): lambda: self.store_get(self.unaudited),
            ("raw", "put"): self.raw_put,
            ("raw", "get_audited"): self.raw_get_audited,
            ("raw", "get"): self.raw_get,
        }

    def close(self) -> None:
        self.audited.close()
        self.unaudited.close()
        self.conn.close()

    def store_put(self) -> None:
        self.audited.put(f"w{self.index}-{next(self.counter)}", self.value, namespace=next(self.names))

    def store_get(self, store: kmsbox.SecretStore) -> None:
        store.get(f"g{next(self.reads)}", namespace=next(self.names))

    def _event(self, namespace: str, name: str, action: str) -> None:
        now = time.time()
        mac = self.mac.copy()
        mac.update(f"{now!r}|{namespace}|{name}|{action}".encode())
        self.conn.execute(
            "INSERT INTO raw_event (at, namespace, name, action, mac) VALUES (%s, %s, %s, %s, %s)",
            (now, namespace, name, action, mac.finalize()),
        )

    def raw_put(self) -> None:
        namespace, name = next(self.names), f"w{self.index}-{next(self.counter)}"
        nonce = os.urandom(12)
        blob = nonce + self.aead.encrypt(nonce, self.value.encode(), None)
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO raw_secret (namespace, name, blob) VALUES (%s, %s, %s) "
                "ON CONFLICT (namespace, name) DO UPDATE SET blob = excluded.blob",
                (namespace, name, blob),
            )
            self._event(namespace, name, "put")

    def _select_decrypt(self, namespace: str, name: str) -> None:
        row = self.conn.execute(
            "SELECT blob FROM raw_secret WHERE namespace = %s AND name = %s", (namespace, name)
        ).fetchone()
        assert row is not None
        self.aead.decrypt(row[0][:12], row[0][12:], None)

    def raw_get(self) -> None:
        self._select_decrypt(next(self.names), f"g{next(self.reads)}")

    def raw_get_audited(self) -> None:
        namespace, name = next(self.names), f"g{next(self.reads)}"
        with self.conn.transaction():
            self._select_decrypt(namespace, name)
            self._event(namespace, name, "read")


def _client_main(index: int, setup: _Setup, pipe: Connection, barrier: Any) -> None:
    """A client process: run each phase it is sent (if it is among the phase's first n)."""
    client = _Client(index, setup)
    try:
        pipe.send("ready")
        while True:
            command = pipe.recv()
            if command is None:
                return
            clients, kind, op, seconds = command
            barrier.wait(timeout=300)
            if index >= clients:
                pipe.send((0, 1.0, 0, []))
                continue
            loop = client.loops[(kind, op)]
            ops = errors = 0
            samples: list[str] = []
            start = now = time.perf_counter()
            deadline = start + seconds
            while now < deadline:
                try:
                    loop()
                    ops += 1
                except Exception as exc:  # every error that reaches a caller is counted
                    errors += 1
                    if len(samples) < _SAMPLES:
                        samples.append(_error(exc))
                now = time.perf_counter()
            pipe.send((ops, now - start, errors, samples))
    finally:
        client.close()


def _prefill(setup: _Setup) -> None:
    """The schema, every namespace's readable secrets, and the raw tables with the same rows."""
    import psycopg

    namespaces = sorted({ns for i in range(max(CLIENTS)) for ns in _namespaces(i)})
    value = os.urandom(32).hex()
    with kmsbox.open_store(setup.store_url, f"env://{_KEK_VAR}") as store:
        for ns in namespaces:
            store.import_secrets(((f"g{i}", value) for i in range(_PREFILLED)), namespace=ns)
    aead = AESGCM(bytes.fromhex(os.environ[_RAW_VAR]))
    with psycopg.connect(setup.conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{setup.schema}"')
        conn.execute(
            "CREATE TABLE raw_secret (namespace TEXT, name TEXT, blob BYTEA NOT NULL, PRIMARY KEY (namespace, name))"
        )
        conn.execute(
            "CREATE TABLE raw_event (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, namespace TEXT, "
            "name TEXT, action TEXT NOT NULL, mac BYTEA NOT NULL)"
        )
        with conn.cursor() as cur:
            rows = []
            for ns in namespaces:
                for i in range(_PREFILLED):
                    nonce = os.urandom(12)
                    rows.append((ns, f"g{i}", nonce + aead.encrypt(nonce, value.encode(), None)))
            cur.executemany("INSERT INTO raw_secret (namespace, name, blob) VALUES (%s, %s, %s)", rows)


class _Pool:
    """Eight client processes, driven phase by phase."""

    def __init__(self, setup: _Setup, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(size + 1)
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for index in range(size):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_client_main, args=(index, setup, theirs, self.barrier), daemon=True)
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)
        for pipe in self.pipes:
            if not pipe.poll(300):
                raise RuntimeError("a client process did not start")
            pipe.recv()

    def phase(self, clients: int, kind: str, op: str, seconds: float) -> tuple[float, int, list[str]]:
        """Total ops/s over the first ``clients`` processes, errors, and error samples."""
        for pipe in self.pipes:
            pipe.send((clients, kind, op, seconds))
        self.barrier.wait(timeout=300)
        rate, errors, samples = 0.0, 0, []
        for pipe in self.pipes:
            ops, elapsed, errs, texts = pipe.recv()
            rate += ops / elapsed
            errors += errs
            samples.extend(texts)
        return rate, errors, samples

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()


def _scaling(setup: _Setup, rounds: int, seconds: float) -> dict[str, Any]:
    _prefill(setup)
    pool = _Pool(setup, max(CLIENTS))
    per_round: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    samples: list[str] = []
    try:
        for op in OPS:  # warm every process's caches and prepared statements
            for kind in ("store", "raw"):
                pool.phase(max(CLIENTS), kind, op, min(seconds, 0.5))
        for _ in range(rounds):
            for clients in CLIENTS:
                for op in OPS:
                    for kind in ("store", "raw"):
                        label = f"{kind}_{op}_{clients}"
                        rate, errs, texts = pool.phase(clients, kind, op, seconds)
                        per_round.setdefault(label, []).append(rate)
                        errors[label] = errors.get(label, 0) + errs
                        samples.extend(texts[: max(0, _SAMPLES - len(samples))])
    finally:
        pool.close()
    return _scaling_figures(per_round, errors, samples)


def _median_of(per_round: dict[str, list[float]], top: str, bottom: str) -> float:
    return statistics.median(a / b for a, b in zip(per_round[top], per_round[bottom], strict=True))


def _scaling_figures(per_round: dict[str, list[float]], errors: dict[str, int], samples: list[str]) -> dict[str, Any]:
    """Per operation: median rates per client count, growth 1 -> 8, and the ratios (medians of rounds)."""
    out: dict[str, Any] = {
        "errors": sum(errors.values()),
        "error_samples": samples,
        "errors_by_phase": errors,
        "per_round": per_round,  # every phase's rate in each round, for reading the noise
    }
    low, high = min(CLIENTS), max(CLIENTS)
    for op in OPS:
        row: dict[str, Any] = {}
        for kind in ("store", "raw"):
            row[kind] = {str(n): statistics.median(per_round[f"{kind}_{op}_{n}"]) for n in CLIENTS}
            row[f"{kind}_growth"] = _median_of(per_round, f"{kind}_{op}_{high}", f"{kind}_{op}_{low}")
        row["growth_ratio"] = statistics.median(
            (s8 / s1) / (r8 / r1)
            for s8, s1, r8, r1 in zip(
                per_round[f"store_{op}_{high}"],
                per_round[f"store_{op}_{low}"],
                per_round[f"raw_{op}_{high}"],
                per_round[f"raw_{op}_{low}"],
                strict=True,
            )
        )
        row["ratio_at_8"] = _median_of(per_round, f"store_{op}_{high}", f"raw_{op}_{high}")
        row["ratio_at_1"] = _median_of(per_round, f"store_{op}_{low}", f"raw_{op}_{low}")
        row["errors"] = sum(errors[f"store_{op}_{n}"] for n in CLIENTS)
        row["raw_errors"] = sum(errors[f"raw_{op}_{n}"] for n in CLIENTS)
        out[op] = row
    return out


# --- soak ---------------------------------------------------------------------------------

_SOAK_WRITERS = 8
_SOAK_NAMES = 12  # names per writer and namespace (its own namespace, and the shared one)


def _soak_namespaces(index: int) -> list[str]:
    return [f"soak{index}", "soak-shared"]


def _soak_writer(index: int, setup: _Setup, seconds: float, pipe: Connection, barrier: Any) -> None:
    """put/get/delete/list on names of its own; then check every name's last value."""
    from kmsbox.errors import SecretNotFound

    store = kmsbox.open_store(setup.store_url, f"env://{_KEK_VAR}")
    rng = random.Random(index)
    keys = [(ns, f"w{index}-n{i}") for ns in _soak_namespaces(index) for i in range(_SOAK_NAMES)]
    expected: dict[tuple[str, str], str | None] = dict.fromkeys(keys)
    uncertain: set[tuple[str, str]] = set()  # a failed write may or may not have landed
    counts = {"put": 0, "get": 0, "delete": 0, "list": 0}
    errors, wrong_reads = 0, 0
    kinds: dict[str, int] = {}  # errors by operation and exception type
    samples: list[str] = []
    serial = itertools.count()
    try:
        barrier.wait(timeout=300)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            key = rng.choice(keys)
            ns, name = key
            draw = rng.random()
            action = "put" if draw < 0.45 else "get" if draw < 0.85 else "delete" if draw < 0.93 else "list"
            try:
                if draw < 0.45:
                    value = f"{index}-{next(serial)}-{os.urandom(4).hex()}"
                    try:
                        store.put(name, value, namespace=ns)
                    except Exception:
                        uncertain.add(key)
                        raise
                    expected[key] = value
                    uncertain.discard(key)
                    counts["put"] += 1
                elif draw < 0.85:
                    if expected[key] is not None:
                        if store.get(name, namespace=ns).value != expected[key] and key not in uncertain:
                            wrong_reads += 1
                    else:
                        store.try_get(name, namespace=ns)
                    counts["get"] += 1
                elif draw < 0.93:
                    if expected[key] is not None:
                        try:
                            store.delete(name, namespace=ns)
                        except Exception:
                            uncertain.add(key)
                            raise
                        expected[key] = None
                        uncertain.discard(key)
                    counts["delete"] += 1
                else:
                    store.list(namespace=ns, limit=50)
                    counts["list"] += 1
            except Exception as exc:  # every error that reaches a caller is counted
                errors += 1
                kinds[f"{action}: {type(exc).__name__}"] = kinds.get(f"{action}: {type(exc).__name__}", 0) + 1
                if len(samples) < _SAMPLES:
                    samples.append(f"{action}: {_error(exc)}")
        lost = 0
        for key, last in expected.items():
            if key in uncertain:
                continue
            ns, name = key
            try:
                got: object = store.get(name, namespace=ns).value
            except SecretNotFound:
                got = None
            if got != last:
                lost += 1
        pipe.send(
            {
                "ops": counts,
                "errors": errors,
                "kinds": kinds,
                "samples": samples,
                "wrong_reads": wrong_reads,
                "lost": lost,
                "uncertain": len(uncertain),
                "names": len(keys),
            }
        )
    finally:
        store.close()


def _soak_maintainer(setup: _Setup, seconds: float, pipe: Connection, barrier: Any) -> None:
    """Rotation jobs over every soak namespace in turn, until the writers stop."""
    store = kmsbox.open_store(setup.store_url, f"env://{_KEK_VAR}")
    namespaces = sorted({ns for i in range(_SOAK_WRITERS) for ns in _soak_namespaces(i)})
    jobs = {"rotate_namespace_key": 0, "rewrap_deks": 0, "reencrypt": 0, "rewrap_namespace_keys": 0}
    rows = {"rewrap_deks": 0, "reencrypt": 0}
    errors = 0
    samples: list[str] = []
    try:
        barrier.wait(timeout=300)
        deadline = time.perf_counter() + seconds
        for turn in itertools.count():
            if time.perf_counter() >= deadline:
                break
            ns = namespaces[turn % len(namespaces)]
            try:
                store.rotate_namespace_key(ns)
                jobs["rotate_namespace_key"] += 1
                rows["rewrap_deks"] += store.rewrap_deks(ns).processed
                jobs["rewrap_deks"] += 1
                rows["reencrypt"] += store.reencrypt(ns).processed
                jobs["reencrypt"] += 1
                if turn % len(namespaces) == len(namespaces) - 1:
                    store.rewrap_namespace_keys(force=True)
                    jobs["rewrap_namespace_keys"] += 1
            except Exception as exc:
                errors += 1
                if len(samples) < _SAMPLES:
                    samples.append(_error(exc))
        pipe.send({"jobs": jobs, "rows": rows, "errors": errors, "samples": samples})
    finally:
        store.close()


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            out[key] = out.get(key, 0) + n
    return out


def _soak(setup: _Setup, seconds: float) -> dict[str, Any]:
    with kmsbox.open_store(setup.store_url, f"env://{_KEK_VAR}") as store:
        for ns in sorted({ns for i in range(_SOAK_WRITERS) for ns in _soak_namespaces(i)}):
            store.create_namespace(ns)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(_SOAK_WRITERS + 2)
    pipes: list[Connection] = []
    procs = []
    for index in range(_SOAK_WRITERS + 1):
        mine, theirs = ctx.Pipe()
        if index < _SOAK_WRITERS:
            proc = ctx.Process(target=_soak_writer, args=(index, setup, seconds, theirs, barrier), daemon=True)
        else:
            proc = ctx.Process(target=_soak_maintainer, args=(setup, seconds, theirs, barrier), daemon=True)
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    barrier.wait(timeout=300)
    results = []
    for pipe, proc in zip(pipes, procs, strict=True):
        if not pipe.poll(seconds + 600):
            raise RuntimeError("a soak process did not report")
        results.append(pipe.recv())
        proc.join(30)
    writers, maintainer = results[:_SOAK_WRITERS], results[_SOAK_WRITERS]
    ops = {kind: sum(w["ops"][kind] for w in writers) for kind in ("put", "get", "delete", "list")}
    with kmsbox.open_store(setup.store_url, f"env://{_KEK_VAR}") as store:
        verification = store.verify_audit()
    return {
        "seconds": seconds,
        "writers": _SOAK_WRITERS,
        "ops": ops,
        "ops_total": sum(ops.values()),
        "errors": sum(w["errors"] for w in writers),
        "error_kinds": _summed([w["kinds"] for w in writers]),
        "error_samples": [s for w in writers for s in w["samples"]][:10],
        "wrong_reads": sum(w["wrong_reads"] for w in writers),
        "lost_updates": sum(w["lost"] for w in writers),
        "uncertain_names": sum(w["uncertain"] for w in writers),
        "names_checked": sum(w["names"] for w in writers),
        "maintenance": maintainer,
        "verify_audit_ok": bool(verification.ok),
    }


# --- the section --------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    """Scaling over 1 -> 8 client processes and the soak, each in a fresh schema."""
    try:
        import psycopg
    except ImportError:
        return {"skipped": "psycopg / kmsbox-postgres not installed"}
    base = _postgres_url()
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        return {"skipped": f"PostgreSQL unreachable: {type(exc).__name__}"}
    os.environ[_KEK_VAR] = os.urandom(32).hex()
    os.environ[_RAW_VAR] = os.urandom(32).hex()
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        parts: dict[str, Callable[[_Setup], dict[str, Any]]] = {
            "scaling": lambda s: _scaling(s, 1 if quick else 3, 0.5 if quick else 2.0),
            "soak": lambda s: _soak(s, 10.0 if quick else 60.0),
        }
        for part, measure in parts.items():
            setup = _Setup(base, f"kmsbox_conc_{os.getpid()}_{part}")
            try:
                out[part] = measure(setup)
            except Exception as exc:  # a benchmark reports, it does not stop the suite
                out[part] = {"error": _error(exc)}
            finally:
                admin.execute(f'DROP SCHEMA IF EXISTS "{setup.schema}" CASCADE')
    finally:
        admin.close()
    return out


def show(result: dict[str, Any], console: Console) -> None:
    """Print the scaling and soak tables."""
    if "skipped" in result:
        console.print(f"concurrency: skipped ({result['skipped']})")
        return
    scaling = result.get("scaling", {})
    if "error" in scaling:
        console.print(f"concurrency scaling: error {scaling['error']}")
    elif scaling:
        t = Table(
            title="PostgreSQL, 1 -> 8 client processes: total ops/s (median of rounds); each process uses "
            "2 namespaces of its own and 1 shared by all, in turn"
        )
        for col in ("operation", "", *(f"{n} proc" for n in CLIENTS), "growth 1->8", "growth ratio", "store/raw at 8"):
            t.add_column(col)
        for op, label in (("put", "put (audit on)"), ("get_audited", "get, read audit on"), ("get", "get, audit off")):
            row = scaling[op]
            for kind in ("store", "raw"):
                t.add_row(
                    label if kind == "store" else "",
                    kind,
                    *(f"{row[kind][str(n)]:,.0f}" for n in CLIENTS),
                    f"{row[f'{kind}_growth']:.2f}",
                    f"{row['growth_ratio']:.2f}" if kind == "store" else "",
                    f"{row['ratio_at_8']:.2f}" if kind == "store" else "",
                )
        console.print(t)
        console.print(f"errors reaching callers: {scaling['errors']} {scaling['error_samples'] or ''}")
    soak = result.get("soak", {})
    if "error" in soak:
        console.print(f"soak: error {soak['error']}")
    elif soak:
        m = soak["maintenance"]
        t = Table(title=f"soak: {soak['writers']} writer processes for {soak['seconds']:.0f} s, rotation jobs beside")
        for col in ("figure", "value"):
            t.add_column(col)
        t.add_row("ops (put / get / delete / list)", " / ".join(f"{soak['ops'][k]:,}" for k in soak["ops"]))
        t.add_row("errors reaching callers", str(soak["errors"]))
        for kind, n in sorted(soak["error_kinds"].items()):
            t.add_row(f"  {kind}", str(n))
        t.add_row("lost updates (of names checked)", f"{soak['lost_updates']} of {soak['names_checked']}")
        t.add_row("wrong reads during the run", str(soak["wrong_reads"]))
        t.add_row("names left uncertain by a failed write", str(soak["uncertain_names"]))
        t.add_row("maintenance jobs", ", ".join(f"{k} {v}" for k, v in m["jobs"].items()))
        t.add_row("maintenance rows", ", ".join(f"{k} {v:,}" for k, v in m["rows"].items()))
        t.add_row("maintenance errors", str(m["errors"]))
        t.add_row("verify_audit().ok", str(soak["verify_audit_ok"]))
        console.print(t)
        for sample in soak["error_samples"] + m["samples"]:
            console.print(f"  error: {sample}")
