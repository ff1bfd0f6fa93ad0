"""The store's SQL, written once for every engine.

Each method of :class:`SqlStatements` is one storage operation (see
:class:`~kmsbox.storage.base.Transaction`) as a generator of
:class:`~kmsbox.storage.sql.dialect.Execute` requests: a sync driver runs them on a
DB-API cursor, an async one on an async cursor, and both send each result back. So
the statements exist once, whatever runs them.

Tables (schema 3, :mod:`kmsbox.storage.sql.schema`): a secret's current envelope
lives in its row (``kmsbox_secrets``), older versions in ``kmsbox_secret_history``;
read counts in ``kmsbox_secret_access`` (one row per secret and process counter); a
key-state row per namespace (``kmsbox_namespaces``) over its key versions and their
wraps; audit events ordered by (at, chain, seq) with one head row per chain.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from typing import Any, TypeVar

from kmsbox.errors import ConflictError
from kmsbox.kek import WrappedKey
from kmsbox.storage import rows as decode
from kmsbox.storage.base import (
    AuditFilter,
    AuditPosition,
    AuditRow,
    ChainHead,
    JobRow,
    MalformedRow,
    NamespaceKeyRow,
    NamespaceState,
    SealEvents,
    SecretFilter,
    SecretRow,
    StateEvent,
    StoredVersion,
    first_micros,
)
from kmsbox.storage.sql.dialect import ALL, COUNT, ONE, Execute, SqlDialect

__all__ = ["SqlGen", "SqlStatements"]

T = TypeVar("T")
#: A storage operation as SQL: yields statements, receives their results, returns its own.
SqlGen = Generator[Execute, Any, T]

_ACCESS = "kmsbox_secret_access a WHERE a.namespace = s.namespace AND a.name = s.name"
# The 15 columns of rows.secret(), the read counts summed over every process counter.
_SECRET = (
    "s.namespace, s.name, s.version, s.status, s.created_at, s.updated_at, s.expires_at, s.category, "
    "s.description, s.labels, s.row_version, s.version_created_at, s.seal, "
    f"(SELECT CAST(SUM(a.reads) AS BIGINT) FROM {_ACCESS}), (SELECT MAX(a.last_at) FROM {_ACCESS})"
)
_SECRET_INSERT_COLUMNS = (
    "namespace, name, version, status, created_at, updated_at, expires_at, category, description, labels, "
    "row_version, version_created_at, seal, blob"
)
_EVENT_COLUMNS = (
    "chain, seq, at, time, namespace, name, secret_version, action, result, actor, context, detail, key_version, "
    "mac, record, row_version, state"
)
_STATE_COLUMNS = "namespace, name, row_version, action, state, secret_version, at, chain, seq"
# The namespace-key version in a stored envelope's header (format.SECRET_KEY_VERSION_AT).
_HEADER_KEY = "substr(blob, 5, 4)"
_encode_json = json.JSONEncoder(sort_keys=True, ensure_ascii=True, check_circular=False).encode


def _json(value: Mapping[str, Any]) -> str:
    return _encode_json(value) if value else "{}"


def _key_bytes(version: int) -> bytes:
    return version.to_bytes(4, "big")


def _header_key(value: Any) -> int:
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 4:
        return int.from_bytes(bytes(value), "big")
    return 0  # a header too short to name a key version


class SqlStatements:
    """Every statement kmsbox runs, for one dialect. One instance per backend (thread-safe:
    it keeps only a hint of each audit chain's head, checked by compare-and-set)."""

    def __init__(self, dialect: SqlDialect) -> None:
        self.dialect = dialect
        q = dialect.sql
        self._get_secret = q(f"SELECT {_SECRET} FROM kmsbox_secrets s WHERE s.namespace = ? AND s.name = ?")
        self._get_held = self._get_secret + dialect.hold_exclusive
        self._read_current = q(f"SELECT {_SECRET}, s.blob FROM kmsbox_secrets s WHERE s.namespace = ? AND s.name = ?")
        self._read_old = q(
            "SELECT created_at, blob FROM kmsbox_secret_history WHERE namespace = ? AND name = ? AND version = ?"
        )
        # Holds the namespace's key state shared, after the dialect's queue (see namespace_state).
        queued = f"({dialect.namespace_queue_shared}) AS queued, " if dialect.namespace_queue_shared else ""
        self._create = q(
            f"INSERT INTO kmsbox_secrets ({_SECRET_INSERT_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
            f"WHERE EXISTS (SELECT 1 FROM {queued}kmsbox_namespaces WHERE namespace = ? AND seal = ?"
            f"{dialect.hold_shared}) AND NOT EXISTS (SELECT 1 FROM kmsbox_audit_events WHERE namespace = ? "
            "AND name = ? AND row_version >= ?) ON CONFLICT (namespace, name) DO NOTHING"
        )
        # The copy holds the row first, so it copies the envelope a concurrent rewrap
        # committed (not the one read before waiting for it), as the update after it would.
        self._to_history = q(
            "INSERT INTO kmsbox_secret_history (namespace, name, version, created_at, blob) "
            "SELECT namespace, name, version, version_created_at, blob FROM kmsbox_secrets "
            "WHERE namespace = ? AND name = ? AND row_version = ? AND blob IS NOT NULL AND version <> ?"
            f"{dialect.hold_exclusive} ON CONFLICT (namespace, name, version) DO NOTHING"
        )
        self._update_with_version = q(
            "UPDATE kmsbox_secrets SET version = ?, status = ?, updated_at = ?, expires_at = ?, category = ?, "
            "description = ?, labels = ?, row_version = ?, version_created_at = ?, seal = ?, blob = ? "
            "WHERE namespace = ? AND name = ? AND row_version = ?"
        )
        self._update_meta = q(
            "UPDATE kmsbox_secrets SET status = ?, updated_at = ?, expires_at = ?, category = ?, description = ?, "
            "labels = ?, row_version = ?, seal = ? WHERE namespace = ? AND name = ? AND row_version = ?"
        )
        self._head_cas = q(
            "UPDATE kmsbox_audit_chains SET seq = ?, at = ?, mac = ?, seal = ? WHERE chain = ? AND seq = ? AND mac = ?"
        )
        self._head_held = q(
            "SELECT chain, seq, at, mac, seal FROM kmsbox_audit_chains WHERE chain = ?" + dialect.hold_exclusive
        )
        self._insert_event = q(
            f"INSERT INTO kmsbox_audit_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._add_access = q(
            "INSERT INTO kmsbox_secret_access (namespace, name, counter, reads, last_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (namespace, name, counter) DO UPDATE SET reads = kmsbox_secret_access.reads + excluded.reads, "
            "last_at = GREATEST(COALESCE(kmsbox_secret_access.last_at, excluded.last_at), excluded.last_at)"
        )
        self._last_secret_state = q(
            f"SELECT {_STATE_COLUMNS} FROM kmsbox_audit_events WHERE namespace = ? AND name = ? "
            "AND row_version IS NOT NULL ORDER BY row_version DESC LIMIT 1"
        )
        self._last_namespace_state = q(
            f"SELECT {_STATE_COLUMNS} FROM kmsbox_audit_events WHERE namespace = ? AND name IS NULL "
            "AND row_version IS NOT NULL ORDER BY row_version DESC LIMIT 1"
        )
        self._state_hint: dict[int, ChainHead] = {}

    # --- namespaces and their keys ---------------------------------------------------------

    def namespace_state(self, namespace: str, hold: str, queue: str = "") -> SqlGen[NamespaceState | None]:
        """A namespace's key-state row, with the hold clause the driver chose (after the
        dialect's ``queue`` statement, if any: see :class:`SqlDialect`)."""
        # The queue, a one-row subquery, comes first in the join: it is taken before the row's hold.
        source = f"({queue}) AS queued, kmsbox_namespaces" if queue else "kmsbox_namespaces"
        row = yield Execute(
            self.dialect.sql(f"SELECT namespace, generation, created_at, seal FROM {source} WHERE namespace = ?")
            + hold,
            (namespace, namespace) if queue else (namespace,),
            ONE,
        )
        return None if row is None else decode.namespace_state(*row)

    def namespace_keys(self, namespace: str) -> SqlGen[list[NamespaceKeyRow]]:
        """Key versions with their wraps, in one statement (no torn read under READ COMMITTED)."""
        rows = yield Execute(
            self.dialect.sql(
                "SELECT k.namespace, k.version, k.status, k.created_at, k.updated_at, w.kek_uri, w.kek_version, "
                "w.ciphertext FROM kmsbox_namespace_keys k LEFT JOIN kmsbox_namespace_key_wraps w "
                "ON w.namespace = k.namespace AND w.version = k.version "
                "WHERE k.namespace = ? ORDER BY k.version, w.kek_uri"
            ),
            (namespace,),
            ALL,
        )
        keys: dict[int, NamespaceKeyRow] = {}
        for r in rows:
            key = decode.namespace_key(r[0], r[1], r[2], r[3], r[4])
            row = keys.setdefault(key.version, key)
            if r[5] is not None:
                try:
                    row.wraps.append(WrappedKey(decode.text(r[5]), decode.text(r[6]), decode.blob_bytes(r[7])))
                except decode.DECODE_ERRORS:
                    raise MalformedRow(
                        f"a wrap of namespace key {namespace!r} v{row.version} is malformed", namespace=namespace
                    ) from None
        return list(keys.values())

    def save_namespace_keys(
        self, state: NamespaceState, upsert: list[NamespaceKeyRow], delete: list[int], *, create: bool = False
    ) -> SqlGen[None]:
        """Store a namespace's new key state (see the protocol). ``create``: the caller found
        no namespace, so its row is inserted, never updated: a row a concurrent creator
        committed since is a unique violation (ConflictError), not a row to overwrite."""
        q = self.dialect.sql
        ns = state.namespace
        changed = 0
        if not create:
            changed = yield Execute(
                q("UPDATE kmsbox_namespaces SET generation = ?, created_at = ?, seal = ? WHERE namespace = ?"),
                (state.generation, state.created_at, state.seal, ns),
                COUNT,
            )
        if changed == 0:
            # A new namespace: a concurrent creator's row makes this a unique violation (ConflictError).
            yield Execute(
                q("INSERT INTO kmsbox_namespaces (namespace, generation, created_at, seal) VALUES (?, ?, ?, ?)"),
                (ns, state.generation, state.created_at, state.seal),
            )
        for version in delete:
            yield Execute(
                q("DELETE FROM kmsbox_namespace_key_wraps WHERE namespace = ? AND version = ?"), (ns, version)
            )
            yield Execute(q("DELETE FROM kmsbox_namespace_keys WHERE namespace = ? AND version = ?"), (ns, version))
        for row in upsert:
            yield Execute(
                q(
                    "INSERT INTO kmsbox_namespace_keys (namespace, version, status, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, version) DO UPDATE SET status = excluded.status, "
                    "created_at = excluded.created_at, updated_at = excluded.updated_at"
                ),
                (ns, row.version, row.status, row.created_at, row.updated_at),
            )
            yield Execute(
                q("DELETE FROM kmsbox_namespace_key_wraps WHERE namespace = ? AND version = ?"), (ns, row.version)
            )
            if row.wraps:
                yield Execute(
                    q(
                        "INSERT INTO kmsbox_namespace_key_wraps (namespace, version, kek_uri, kek_version, ciphertext, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    [(ns, row.version, w.kek_uri, w.key_version, w.ciphertext, row.updated_at) for w in row.wraps],
                    many=True,
                )

    def namespaces(self, after: str | None, limit: int) -> SqlGen[list[str]]:
        """A page of namespace names."""
        rows = yield Execute(
            self.dialect.sql("SELECT namespace FROM kmsbox_namespaces WHERE namespace > ? ORDER BY namespace LIMIT ?"),
            (after or "", limit),
            ALL,
        )
        # A non-text namespace was written through the database and cannot be addressed.
        return [r[0] for r in rows if type(r[0]) is str]

    # --- secrets ---------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str, held: bool) -> SqlGen[SecretRow | None]:
        """A secret's row (locked when ``held``)."""
        try:
            row = yield Execute(self._get_held if held else self._get_secret, (namespace, name), ONE)
        except MalformedRow:  # a value the driver could not read at all
            raise decode.malformed(namespace, name) from None
        return None if row is None else decode.secret(row)

    def read_secret(
        self, namespace: str, name: str, version: int | None
    ) -> SqlGen[tuple[SecretRow, StoredVersion | None] | None]:
        """A secret's row and one version: one statement for the current version."""
        try:
            row = yield Execute(self._read_current, (namespace, name), ONE)
        except MalformedRow:
            raise decode.malformed(namespace, name) from None
        if row is None:
            return None
        secret = decode.secret(row)
        if version is None or version == secret.version:
            # kmsbox always stores the current version's envelope: NULL is a row changed outside it.
            return secret, decode.stored_version(namespace, name, secret.version, secret.version_created_at, row[15])
        old = yield Execute(self._read_old, (namespace, name, version), ONE)
        if old is None:
            return secret, None
        return secret, decode.stored_version(namespace, name, version, old[0], old[1])

    def create_secret(self, row: SecretRow, current: StoredVersion, keys_seal: bytes) -> SqlGen[bool]:
        """Create a secret and its first version if nothing stands in the way (see the protocol)."""
        queued = (row.namespace,) if self.dialect.namespace_queue_shared else ()
        count = yield Execute(
            self._create,
            (
                *_secret_values(row, current.blob),
                *queued,
                row.namespace,
                keys_seal,
                row.namespace,
                row.name,
                row.row_version,
            ),
            COUNT,
        )
        return bool(count == 1)

    def update_secret(self, row: SecretRow, expected_row_version: int, current: StoredVersion | None) -> SqlGen[None]:
        """Compare-and-set on ``row_version``; a new current version sends the old one to the history."""
        key = (row.namespace, row.name)
        labels = _json(row.labels)
        if current is not None:
            yield Execute(self._to_history, (*key, expected_row_version, row.version))
            changed = yield Execute(
                self._update_with_version,
                (
                    row.version,
                    row.status,
                    row.updated_at,
                    row.expires_at,
                    row.category,
                    row.description,
                    labels,
                    row.row_version,
                    current.created_at,
                    row.seal,
                    current.blob,
                    *key,
                    expected_row_version,
                ),
                COUNT,
            )
        else:
            changed = yield Execute(
                self._update_meta,
                (
                    row.status,
                    row.updated_at,
                    row.expires_at,
                    row.category,
                    row.description,
                    labels,
                    row.row_version,
                    row.seal,
                    *key,
                    expected_row_version,
                ),
                COUNT,
            )
        if changed != 1:
            raise ConflictError(f"secret {row.namespace}/{row.name} was changed by another writer")

    def delete_secret(self, namespace: str, name: str) -> SqlGen[int]:
        """Delete a secret, its versions and its read counts; the number of versions removed."""
        q = self.dialect.sql
        key = (namespace, name)
        current = yield Execute(
            q("DELETE FROM kmsbox_secrets WHERE namespace = ? AND name = ? AND blob IS NOT NULL"), key, COUNT
        )
        yield Execute(q("DELETE FROM kmsbox_secrets WHERE namespace = ? AND name = ?"), key)
        older = yield Execute(q("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ?"), key, COUNT)
        yield Execute(q("DELETE FROM kmsbox_secret_access WHERE namespace = ? AND name = ?"), key)
        return int(current) + int(older)

    def delete_version(self, namespace: str, name: str, version: int) -> SqlGen[bool]:
        """Delete one older version."""
        count = yield Execute(
            self.dialect.sql("DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ? AND version = ?"),
            (namespace, name, version),
            COUNT,
        )
        return bool(count == 1)

    def list_versions(self, namespace: str, name: str) -> SqlGen[list[StoredVersion]]:
        """Every stored version of a secret, oldest first."""
        rows = yield Execute(
            self.dialect.sql(
                "SELECT namespace, name, version, created_at, blob FROM kmsbox_secret_history "
                "WHERE namespace = ? AND name = ? UNION ALL SELECT namespace, name, version, version_created_at, blob "
                "FROM kmsbox_secrets WHERE namespace = ? AND name = ? AND blob IS NOT NULL ORDER BY 3"
            ),
            (namespace, name, namespace, name),
            ALL,
        )
        return [decode.stored_version(*r) for r in rows]

    def list_secrets(
        self, namespace: str | None, filters: SecretFilter, after: tuple[str, str] | None, limit: int
    ) -> SqlGen[list[SecretRow]]:
        """A page by (namespace, name); labels are matched here so that pages stay full."""
        out: list[SecretRow] = []
        cursor = after or ("", "")
        while len(out) < limit:
            if namespace is not None and cursor[0] == namespace:
                sql = f"SELECT {_SECRET} FROM kmsbox_secrets s WHERE s.namespace = ? AND s.name > ?"
                params: list[Any] = [namespace, cursor[1]]
            elif namespace is not None:
                # A cursor of another namespace comes before or after all of this one. Key
                # columns compare byte by byte (schema 4 on PostgreSQL), as Python's str does.
                if namespace < cursor[0]:
                    return out
                sql = f"SELECT {_SECRET} FROM kmsbox_secrets s WHERE s.namespace = ?"
                params = [namespace]
            else:
                sql = f"SELECT {_SECRET} FROM kmsbox_secrets s WHERE (s.namespace, s.name) > (?, ?)"
                params = [*cursor]
            if filters.category is not None:
                sql += " AND s.category = ?"
                params.append(filters.category)
            sql += " ORDER BY s.namespace, s.name LIMIT ?"
            params.append(limit)
            rows = yield Execute(self.dialect.sql(sql), tuple(params), ALL)
            decoded = [decode.secret(r) for r in rows]
            for row in decoded:
                if all(row.labels.get(k) == v for k, v in filters.labels.items()):
                    out.append(row)
                    if len(out) == limit:
                        break
            if len(decoded) < limit:
                break
            cursor = (decoded[-1].namespace, decoded[-1].name)
        return out

    def expired_secrets(
        self, before: float, limit: int, start: tuple[float, str, str] | None = None
    ) -> SqlGen[list[SecretRow]]:
        """A batch of secrets that expired before ``before``, after ``start`` (malformed rows left out)."""
        found: list[SecretRow] = []
        after: tuple[Any, ...] = start or (float("-inf"), "", "")
        while len(found) < limit:
            page = yield Execute(
                self.dialect.sql(
                    f"SELECT {_SECRET} FROM kmsbox_secrets s WHERE s.expires_at IS NOT NULL AND s.expires_at < ? "
                    "AND (s.expires_at, s.namespace, s.name) > (?, ?, ?) ORDER BY s.expires_at, s.namespace, s.name "
                    "LIMIT ?"
                ),
                (before, *after, limit),
                ALL,
            )
            for r in page:
                try:
                    found.append(decode.secret(r))
                except MalformedRow:
                    continue  # diagnose names it; the expired secrets behind it still go
                if len(found) == limit:
                    break
            if len(page) < limit:
                break
            after = (page[-1][6], page[-1][0], page[-1][1])
        return found

    def versions(
        self, namespace: str, after: tuple[Any, Any] | None, limit: int, key_version: int | None
    ) -> SqlGen[list[StoredVersion]]:
        """A batch of versions by (name, version), optionally only those under one key version."""
        name, version = after or ("", 0)
        # A row-value bound lets both engines seek to the cursor instead of scanning up to it.
        where = "namespace = ? AND (name, version) > (?, ?)"
        params: tuple[Any, ...] = (namespace, name, version)
        if key_version is not None:
            where += f" AND {_HEADER_KEY} = ?"
            params += (_key_bytes(key_version),)
        rows = yield Execute(
            self.dialect.sql(
                f"SELECT namespace, name, version, created_at, blob FROM kmsbox_secret_history WHERE {where} "
                # A current row without an envelope was changed outside kmsbox: it decodes as malformed.
                "UNION ALL SELECT namespace, name, version, version_created_at, blob FROM kmsbox_secrets "
                f"WHERE {where} ORDER BY 2, 3 LIMIT ?"
            ),
            (*params, *params, limit),
            ALL,
        )
        return [decode.stored_version(*r) for r in rows]

    def replace_envelope(
        self, namespace: str, name: str, version: int, blob: bytes, expected_key_version: int
    ) -> SqlGen[bool]:
        """Compare-and-set a version's envelope on the key version its header names."""
        q = self.dialect.sql
        expected = _key_bytes(expected_key_version)
        count = yield Execute(
            q(
                f"UPDATE kmsbox_secrets SET blob = ? WHERE namespace = ? AND name = ? AND version = ? AND {_HEADER_KEY} = ?"
            ),
            (blob, namespace, name, version, expected),
            COUNT,
        )
        if count == 1:
            return True
        if self.dialect.hold_exclusive:
            # The secret's row before its history rows: the one lock order every writer keeps.
            yield Execute(
                q("SELECT 1 FROM kmsbox_secrets WHERE namespace = ? AND name = ?") + self.dialect.hold_exclusive,
                (namespace, name),
                ONE,
            )
        count = yield Execute(
            q(
                f"UPDATE kmsbox_secret_history SET blob = ? WHERE namespace = ? AND name = ? AND version = ? "
                f"AND {_HEADER_KEY} = ?"
            ),
            (blob, namespace, name, version, expected),
            COUNT,
        )
        return bool(count == 1)

    def versions_per_key(self, namespace: str) -> SqlGen[dict[int, int]]:
        """Versions per namespace-key version, read from each envelope's header."""
        rows = yield Execute(
            self.dialect.sql(
                f"SELECT k, COUNT(*) FROM (SELECT {_HEADER_KEY} AS k FROM kmsbox_secret_history WHERE namespace = ? "
                f"UNION ALL SELECT {_HEADER_KEY} FROM kmsbox_secrets WHERE namespace = ? AND blob IS NOT NULL) v "
                "GROUP BY k"
            ),
            (namespace, namespace),
            ALL,
        )
        counts: dict[int, int] = {}
        for key, count in rows:
            version = _header_key(key)
            counts[version] = counts.get(version, 0) + int(count)
        return counts

    # --- read bookkeeping ------------------------------------------------------------------

    def add_access(self, counter: int, counts: list[tuple[str, str, int, float]]) -> SqlGen[None]:
        """Upsert this counter's rows, in the order given (key order)."""
        if counts:
            yield Execute(self._add_access, [(ns, name, counter, n, at) for ns, name, n, at in counts], many=True)

    def fold_access(self, counter: int) -> SqlGen[None]:
        """Move a counter's rows into the shared totals (counter 0), in key order."""
        if counter == 0:
            return  # the totals themselves: folding them into themselves would double, then drop them
        q = self.dialect.sql
        yield Execute(
            q(
                "INSERT INTO kmsbox_secret_access (namespace, name, counter, reads, last_at) "
                "SELECT namespace, name, 0, reads, last_at FROM kmsbox_secret_access WHERE counter = ? "
                "ORDER BY namespace, name ON CONFLICT (namespace, name, counter) DO UPDATE SET "
                "reads = kmsbox_secret_access.reads + excluded.reads, "
                "last_at = GREATEST(COALESCE(kmsbox_secret_access.last_at, excluded.last_at), excluded.last_at)"
            ),
            (counter,),
        )
        yield Execute(q("DELETE FROM kmsbox_secret_access WHERE counter = ?"), (counter,))

    # --- audit -----------------------------------------------------------------------------

    def append_audit(self, chain: int, seal: SealEvents) -> SqlGen[ChainHead]:
        """Append to a chain: first against the head this backend last saw (one compare-and-set
        that also takes the head's lock), else against the head read and held."""
        hint = self._state_hint.get(chain)
        if hint is not None:
            events, head = seal(hint)
            moved = yield Execute(self._head_cas, _head_move(head, hint), COUNT)
            if moved == 1:
                yield from self._insert_events(events)
                self._state_hint[chain] = head
                return head
        row = yield Execute(self._head_held, (chain,), ONE)
        if row is None:
            # A chain's first event: its head row starts empty (a concurrent creator wins the insert).
            yield Execute(
                self.dialect.sql(
                    "INSERT INTO kmsbox_audit_chains (chain, seq, at, mac, seal) VALUES (?, 0, 0, ?, NULL) "
                    "ON CONFLICT (chain) DO NOTHING"
                ),
                (chain, b""),
            )
            row = yield Execute(self._head_held, (chain,), ONE)
            if row is None:
                raise ConflictError(f"audit chain {chain} was removed concurrently")
        current = decode.chain_head(*row)
        events, head = seal(current)
        moved = yield Execute(self._head_cas, _head_move(head, current), COUNT)
        if moved != 1:
            raise ConflictError(f"audit chain {chain} moved on")
        yield from self._insert_events(events)
        self._state_hint[chain] = head
        return head

    def forget_heads(self) -> None:
        """Drop the head hints (after a rollback, which may have undone a head they hold)."""
        self._state_hint.clear()

    def _insert_events(self, events: list[AuditRow]) -> SqlGen[None]:
        if events:
            yield Execute(
                self._insert_event,
                [
                    (
                        e.chain,
                        e.seq,
                        e.at,
                        e.time,
                        e.namespace,
                        e.name,
                        e.secret_version,
                        e.action,
                        e.result,
                        e.actor,
                        _json(e.context),
                        _json(e.detail),
                        e.key_version,
                        e.mac,
                        e.record,
                        e.row_version,
                        e.state,
                    )
                    for e in events
                ],
                many=True,
            )

    def audit_heads(self) -> SqlGen[list[ChainHead]]:
        """Every chain's head."""
        rows = yield Execute(
            self.dialect.sql("SELECT chain, seq, at, mac, seal FROM kmsbox_audit_chains ORDER BY chain"), (), ALL
        )
        return [decode.chain_head(*r) for r in rows]

    def audit_events(self, filters: AuditFilter, after: AuditPosition | None, limit: int) -> SqlGen[list[AuditRow]]:
        """A filtered page of events in (at, chain, seq) order."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM kmsbox_audit_events WHERE (at, chain, seq) > (?, ?, ?)"
        params: list[Any] = list(after or (-1, -1, -1))
        for column, value in (
            ("namespace", filters.namespace),
            ("name", filters.name),
            ("action", filters.action),
            ("result", filters.result),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        # Times filter on ``at`` (the authenticated, indexed microseconds), not ``time``.
        if filters.since is not None:
            sql += " AND at >= ?"
            params.append(first_micros(filters.since))
        if filters.until is not None:
            sql += " AND at < ?"
            params.append(first_micros(filters.until))
        sql += " ORDER BY at, chain, seq LIMIT ?"
        params.append(limit)
        rows = yield Execute(self.dialect.sql(sql), tuple(params), ALL)
        return [decode.audit_event(r) for r in rows]

    def audit_events_at(self, positions: list[AuditPosition]) -> SqlGen[list[AuditRow]]:
        """The events at these positions."""
        found: list[AuditRow] = []
        for start in range(0, len(positions), 200):
            part = positions[start : start + 200]
            where = " OR ".join(["(at = ? AND chain = ? AND seq = ?)"] * len(part))
            rows = yield Execute(
                self.dialect.sql(f"SELECT {_EVENT_COLUMNS} FROM kmsbox_audit_events WHERE {where}"),
                tuple(value for position in part for value in position),
                ALL,
            )
            found += [decode.audit_event(r) for r in rows]
        return found

    def last_state(self, namespace: str, name: str | None) -> SqlGen[StateEvent | None]:
        """The newest recorded state of a secret or a namespace."""
        if name is None:
            row = yield Execute(self._last_namespace_state, (namespace,), ONE)
        else:
            row = yield Execute(self._last_secret_state, (namespace, name), ONE)
        return None if row is None else decode.state_event(*row)

    def state_events(self, after: tuple[str, str, int] | None, limit: int) -> SqlGen[list[StateEvent]]:
        """Secrets' recorded states by (namespace, name, row_version)."""
        rows = yield Execute(
            self.dialect.sql(
                f"SELECT {_STATE_COLUMNS} FROM kmsbox_audit_events WHERE row_version IS NOT NULL "
                "AND name IS NOT NULL AND (namespace, name, row_version) > (?, ?, ?) "
                "ORDER BY namespace, name, row_version LIMIT ?"
            ),
            (*(after or ("", "", -1)), limit),
            ALL,
        )
        return [decode.state_event(*r) for r in rows]

    # --- jobs ------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> SqlGen[JobRow | None]:
        """A job checkpoint."""
        row = yield Execute(
            self.dialect.sql("SELECT job_id, kind, state, updated_at FROM kmsbox_jobs WHERE job_id = ?"), (job_id,), ONE
        )
        return None if row is None else decode.job(row)

    def put_job(self, row: JobRow) -> SqlGen[None]:
        """Upsert a checkpoint."""
        yield Execute(
            self.dialect.sql(
                "INSERT INTO kmsbox_jobs (job_id, kind, state, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job_id) DO UPDATE SET kind = excluded.kind, state = excluded.state, "
                "updated_at = excluded.updated_at"
            ),
            (row.job_id, row.kind, row.state, row.updated_at),
        )

    def delete_job(self, job_id: str) -> SqlGen[None]:
        """Forget a job."""
        yield Execute(self.dialect.sql("DELETE FROM kmsbox_jobs WHERE job_id = ?"), (job_id,))

    def list_jobs(self) -> SqlGen[list[JobRow]]:
        """Unfinished jobs."""
        rows = yield Execute(
            self.dialect.sql("SELECT job_id, kind, state, updated_at FROM kmsbox_jobs ORDER BY job_id"), (), ALL
        )
        return [decode.job(r) for r in rows]


def _secret_values(row: SecretRow, blob: bytes | None) -> tuple[Any, ...]:
    """Values of ``_SECRET_INSERT_COLUMNS``."""
    return (
        row.namespace,
        row.name,
        row.version,
        row.status,
        row.created_at,
        row.updated_at,
        row.expires_at,
        row.category,
        row.description,
        _json(row.labels),
        row.row_version,
        row.version_created_at,
        row.seal,
        blob,
    )


def _head_move(new: ChainHead, old: ChainHead) -> tuple[Any, ...]:
    """Parameters of the head compare-and-set: the new head, where the old one was."""
    return (new.seq, new.at, new.mac, new.seal or None, new.chain, old.seq, old.mac)
