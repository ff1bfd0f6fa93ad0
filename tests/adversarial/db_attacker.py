"""The database-only attacker: raw SQL on a store's tables, on SQLite or PostgreSQL, and no key.

Everything here goes around kmsbox, as someone who can write the database but holds no
KEK would: copy and replay rows, edit columns, delete and insert rows, rewrite an
envelope's header (its CRC is a checksum, not a MAC, so anyone can recompute it). Each
change commits before the store sees it. Statements use ``?`` placeholders on both
engines; the values keep each column's type, so PostgreSQL's strict types accept them.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kmsbox
from kmsbox.store.service import SecretStore

__all__ = [
    "Attacker",
    "Event",
    "PostgresAttacker",
    "Snapshot",
    "SqliteAttacker",
    "in_thread",
    "key_version_of",
    "with_key_version",
]

T = TypeVar("T")
Params = Sequence[Any]

_EVENT_COLUMNS = "at, chain, seq, action, result, namespace, name, secret_version, row_version"


@dataclass(frozen=True)
class Snapshot:
    """Rows of one table as they were at one moment (to replay later)."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Event:
    """An audit event as the attacker sees it in the table."""

    at: int
    chain: int
    seq: int
    action: str
    result: str
    namespace: str | None
    name: str | None
    secret_version: int | None
    row_version: int | None

    @property
    def key(self) -> tuple[int, int, int]:
        """Its primary key."""
        return (self.at, self.chain, self.seq)


class Attacker:
    """Raw SQL on one store's database, and the stores opened on it (closed by :meth:`close`)."""

    kind = ""

    def __init__(self, url: str, kek_uri: str) -> None:
        self.url = url
        self.kek_uri = kek_uri
        self._stores: list[SecretStore] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind})"

    # --- the store -----------------------------------------------------------------------------

    def open(self, **kwargs: Any) -> SecretStore:
        """A store on this database (a new process would open the same), closed at the end."""
        store = kmsbox.open_store(self.url, kek=self.kek_uri, **kwargs)
        self._stores.append(store)
        return store

    def close(self) -> None:
        """Close every store opened here and the attacker's connection."""
        for store in self._stores:
            store.close()
        self._stores.clear()

    # --- raw SQL (each engine) -------------------------------------------------------------------

    def query(self, statement: str, params: Params = ()) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Run one statement, committed; its column names and rows."""
        raise NotImplementedError

    def script(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Run several statements in one transaction."""
        raise NotImplementedError

    # --- what every attack uses ------------------------------------------------------------------

    def sql(self, statement: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run one statement, committed; its rows."""
        return self.query(statement, params)[1]

    def snapshot(self, table: str, where: str, params: Params = ()) -> Snapshot:
        """Copy the rows of ``table`` matching ``where``."""
        columns, rows = self.query(f"SELECT * FROM {table} WHERE {where}", params)
        return Snapshot(table, columns, rows)

    def replay(self, *snapshots: tuple[Snapshot, str, Params]) -> None:
        """Put tables back as copied: for each (snapshot, where, params), delete the rows
        matching ``where`` and insert the copied ones, all in one transaction."""
        statements: list[tuple[str, Params]] = []
        for snap, where, params in snapshots:
            statements.append((f"DELETE FROM {snap.table} WHERE {where}", params))
            marks = ", ".join("?" for _ in snap.columns)
            statements += [
                (f"INSERT INTO {snap.table} ({', '.join(snap.columns)}) VALUES ({marks})", row) for row in snap.rows
            ]
        self.script(statements)

    def blob(self, namespace: str, name: str, version: int) -> bytes:
        """One version's stored envelope (the current row's or a history row's)."""
        rows = self.sql(
            "SELECT blob FROM kmsbox_secrets WHERE namespace = ? AND name = ? AND version = ? "
            "UNION ALL SELECT blob FROM kmsbox_secret_history WHERE namespace = ? AND name = ? AND version = ?",
            (namespace, name, version) * 2,
        )
        assert len(rows) == 1, f"no stored version {namespace}/{name} v{version}"
        return bytes(rows[0][0])

    def set_blob(self, namespace: str, name: str, version: int, blob: bytes) -> None:
        """Overwrite one version's stored envelope."""
        self.script(
            [
                (
                    f"UPDATE {table} SET blob = ? WHERE namespace = ? AND name = ? AND version = ?",
                    (blob, namespace, name, version),
                )
                for table in ("kmsbox_secrets", "kmsbox_secret_history")
            ]
        )

    def all_blobs(self) -> list[tuple[str, str, int, bytes]]:
        """Every stored envelope: (namespace, name, version, blob)."""
        rows = self.sql(
            "SELECT namespace, name, version, blob FROM kmsbox_secrets WHERE blob IS NOT NULL "
            "UNION ALL SELECT namespace, name, version, blob FROM kmsbox_secret_history"
        )
        return [(str(r[0]), str(r[1]), int(r[2]), bytes(r[3])) for r in rows]

    def events(self, where: str = "1 = 1", params: Params = ()) -> list[Event]:
        """Audit events in the store-wide order."""
        rows = self.sql(
            f"SELECT {_EVENT_COLUMNS} FROM kmsbox_audit_events WHERE {where} ORDER BY at, chain, seq", params
        )
        return [Event(*row) for row in rows]

    def delete_event(self, event: Event) -> None:
        """Erase one audit event."""
        self.sql("DELETE FROM kmsbox_audit_events WHERE at = ? AND chain = ? AND seq = ?", event.key)

    def heads(self) -> Snapshot:
        """Every chain head row, as it is now."""
        return self.snapshot("kmsbox_audit_chains", "1 = 1")

    def key_state(self, namespace: str) -> list[tuple[Snapshot, str, Params]]:
        """A namespace's key state (state row, key rows, wraps), ready for :meth:`replay`."""
        where = "namespace = ?"
        return [
            (self.snapshot(table, where, (namespace,)), where, (namespace,))
            for table in ("kmsbox_namespaces", "kmsbox_namespace_keys", "kmsbox_namespace_key_wraps")
        ]


class SqliteAttacker(Attacker):
    """The attacker on a SQLite file."""

    kind = "sqlite"

    def __init__(self, url: str, kek_uri: str, path: Path) -> None:
        super().__init__(url, kek_uri)
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, timeout=10)

    def query(self, statement: str, params: Params = ()) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Run one statement, committed; its column names and rows."""
        conn = self._connect()
        try:
            cursor = conn.execute(statement, tuple(params))
            rows = [tuple(r) for r in cursor.fetchall()]
            columns = tuple(d[0] for d in cursor.description or ())
        finally:
            conn.close()
        return columns, rows

    def script(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Run several statements in one transaction."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement, params in statements:
                conn.execute(statement, tuple(params))
            conn.execute("COMMIT")
        finally:
            conn.close()


class PostgresAttacker(Attacker):
    """The attacker on a PostgreSQL schema, through psycopg."""

    kind = "postgres"

    def __init__(self, url: str, kek_uri: str, server_url: str, schema: str) -> None:
        import psycopg

        super().__init__(url, kek_uri)
        self.schema = schema
        self._conn = psycopg.connect(server_url, autocommit=True, connect_timeout=5)
        # The schema may not exist before the first store opens: search_path accepts that.
        self._conn.execute(f'SET search_path TO "{schema}"')

    def close(self) -> None:
        """Close the stores and the connection."""
        super().close()
        self._conn.close()

    def query(self, statement: str, params: Params = ()) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Run one statement, committed; its column names and rows."""
        cursor = self._conn.execute(statement.replace("?", "%s"), tuple(params))
        if cursor.description is None:
            return (), []
        return tuple(d.name for d in cursor.description), [tuple(r) for r in cursor.fetchall()]

    def script(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Run several statements in one transaction."""
        with self._conn.transaction():
            for statement, params in statements:
                self._conn.execute(statement.replace("?", "%s"), tuple(params))


# --- envelopes ---------------------------------------------------------------------------------------

_KEY_VERSION = struct.Struct(">I")


def key_version_of(blob: bytes) -> int:
    """The namespace-key version an envelope's header names (bytes 4-7)."""
    value: int = _KEY_VERSION.unpack_from(blob, 4)[0]
    return value


def with_key_version(blob: bytes, version: int) -> bytes:
    """The envelope with its header naming another namespace-key version (CRC recomputed)."""
    head = blob[:4] + _KEY_VERSION.pack(version)
    return head + _KEY_VERSION.pack(zlib.crc32(head)) + blob[12:]


# --- audit chains ------------------------------------------------------------------------------------


def in_thread(call: Callable[[], T]) -> T:
    """Run ``call`` in a new thread and return its result (a thread has its own home audit chain)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def on_another_chain(attacker: Attacker, store: SecretStore, avoid: set[int], call: Callable[[], T]) -> tuple[int, T]:
    """Run ``call`` in a thread whose home audit chain is not in ``avoid``; (that chain, its result).

    Each candidate thread first makes a failed read (an audited event) to learn its
    chain; a thread on an avoided chain stays parked until the end, so that the next
    candidate gets another thread identity (and so, most likely, another chain).
    """
    release = threading.Event()
    parked: list[threading.Thread] = []
    try:
        for attempt in range(64):
            probe = f"chain-probe-{attempt}"
            outcome: dict[str, Any] = {}
            decided = threading.Event()

            def body(probe: str = probe, outcome: dict[str, Any] = outcome, decided: threading.Event = decided) -> None:
                try:
                    store.try_get(probe, namespace="chain-probe")
                    chain = attacker.events("name = ?", (probe,))[-1].chain
                    outcome["chain"] = chain
                    if chain in avoid:
                        decided.set()
                        release.wait()
                        return
                    outcome["result"] = call()
                except BaseException as exc:
                    outcome["error"] = exc
                decided.set()

            thread = threading.Thread(target=body)
            thread.start()
            decided.wait()
            if "error" in outcome:
                thread.join()
                raise outcome["error"]
            if outcome["chain"] in avoid:
                parked.append(thread)
                continue
            thread.join()
            return outcome["chain"], outcome["result"]
        raise AssertionError(f"64 threads all had their home chain in {sorted(avoid)}")
    finally:
        release.set()
        for thread in parked:
            thread.join()
