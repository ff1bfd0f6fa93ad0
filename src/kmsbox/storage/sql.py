"""Shared SQL for the relational backends (SQLite, memory, PostgreSQL).

A backend supplies a :class:`Dialect` and connections; :class:`SqlTransaction`
holds every statement, written once with ``?`` placeholders.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from kmsbox.errors import ConfigError, ConflictError, KmsboxError, StorageError
from kmsbox.format import sorted_json_encoder
from kmsbox.kek import WrappedKey
from kmsbox.storage import rows as decode
from kmsbox.storage.base import (
    AuditFilter,
    AuditRow,
    JobRow,
    MalformedRow,
    NamespaceKeyRow,
    SecretRow,
    SecretVersionRow,
    StaleAuditHead,
)
from kmsbox.storage.migrations import MIGRATIONS, SCHEMA_VERSION, TABLES

__all__ = ["Dialect", "SqlBackend", "SqlTransaction"]

_SECRET_COLUMNS = (
    "namespace, name, version, status, created_at, updated_at, expires_at, category, description, labels, "
    "access_count, last_accessed_at, row_version"
)
# The key columns are known to the caller: the hot read fetches the rest.
_SECRET_TAIL = _SECRET_COLUMNS.split(", ", 2)[2]
_VERSION_META = "namespace, name, version, namespace_key_version, created_at"
_CURRENT_META = "namespace, name, version, namespace_key_version, version_created_at"
# Last, so that metadata reads never walk a large value's overflow pages.
_CURRENT_COLUMNS = "namespace_key_version, version_created_at, blob"
_AUDIT_COLUMNS = (
    "seq, time, namespace, name, secret_version, action, result, actor, context, detail, audit_key_version, mac"
)


# The statements of every put and get, built once (an f-string in the call would be
# rebuilt and rehashed on each).
_GET_SECRET = f"SELECT {_SECRET_COLUMNS} FROM kmsbox_secrets WHERE namespace = ? AND name = ?"
_GET_CURRENT = f"SELECT {_SECRET_TAIL}, {_CURRENT_COLUMNS} FROM kmsbox_secrets WHERE namespace = ? AND name = ?"
_INSERT_SECRET = (
    f"INSERT INTO kmsbox_secrets ({_SECRET_COLUMNS}, {_CURRENT_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@functools.lru_cache(maxsize=4)
def _create_secret_sql(for_share: str) -> str:
    # The key row is share-locked (where the engine has row locks) so that a rotation
    # or compromise committing meanwhile is waited for and seen, never written past.
    return (
        f"INSERT INTO kmsbox_secrets ({_SECRET_COLUMNS}, {_CURRENT_COLUMNS}) "
        "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM kmsbox_namespace_keys "
        f"WHERE namespace = ? AND version = ? AND status = 'active'{for_share}) AND NOT EXISTS (SELECT 1 FROM "
        "kmsbox_namespace_keys WHERE namespace = ? AND version > ? AND status = 'active') "
        "ON CONFLICT (namespace, name) DO NOTHING"
    )


@functools.lru_cache(maxsize=4)
def _active_key_sql(for_share: str) -> str:
    return (
        "SELECT version FROM kmsbox_namespace_keys WHERE namespace = ? AND status = 'active' "
        f"ORDER BY version DESC LIMIT 1{for_share}"
    )


_INSERT_EVENT = f"INSERT INTO kmsbox_audit_events ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class Dialect:
    """What differs between SQL engines."""

    name: str
    placeholder: str = "?"
    blob: str = "BLOB"
    real: str = "REAL"
    bigint: str = "INTEGER"
    empty_blob: str = "X''"
    without_rowid: str = ""
    for_update: str = ""
    for_share: str = ""
    #: Write transactions are serialised, so a connection may remember the audit head it wrote.
    caches_audit_head: bool = False
    is_conflict: Callable[[BaseException], bool] = field(default=lambda exc: False)
    #: The driver could not read a stored value at all (SQLite: TEXT that is not UTF-8).
    is_undecodable: Callable[[BaseException], bool] = field(default=lambda exc: False)
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, text: str) -> str:
        """Rewrite ``?`` placeholders for this engine (cached)."""
        out = self._cache.get(text)
        if out is None:
            out = text if self.placeholder == "?" else text.replace("?", self.placeholder)
            self._cache[text] = out
        return out

    def ddl(self, text: str) -> str:
        """Fill the type placeholders of a migration statement."""
        return text.format(
            blob=self.blob,
            real=self.real,
            bigint=self.bigint,
            empty_blob=self.empty_blob,
            without_rowid=self.without_rowid,
        )


_encode_json = sorted_json_encoder(compact=False, ensure_ascii=True)  # json.dumps(..., sort_keys=True)


def _json_object(value: Mapping[str, Any]) -> str:
    return _encode_json(value) if value else "{}"


def _secret_params(row: SecretRow, current: SecretVersionRow | None) -> tuple[Any, ...]:
    """Values of ``_SECRET_COLUMNS`` then ``_CURRENT_COLUMNS`` for an insert."""
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
        _json_object(row.labels),
        row.access_count,
        row.last_accessed_at,
        row.row_version,
        None if current is None else current.namespace_key_version,
        None if current is None else current.created_at,
        None if current is None else current.blob,
    )


def _check_current(row: SecretRow, current: SecretVersionRow | None) -> None:
    if current is not None and (current.namespace, current.name, current.version) != (
        row.namespace,
        row.name,
        row.version,
    ):
        raise ValueError("current must be the version the secret row points at")


def _version(row: Any, blob: Any = b"") -> SecretVersionRow:
    return decode.stored_version(row[0], row[1], row[2], row[3], row[4], blob)


class SqlTransaction:
    """Every statement kmsbox runs, over one DB-API cursor inside a transaction."""

    def __init__(self, cursor: Any, dialect: Dialect, connection: Any = None) -> None:
        self._cur = cursor
        self._d = dialect
        self._conn = connection
        self._head: tuple[int, bytes] | None = None
        self._head_guessed = False
        self._writing = False  # set per transaction: reads always read the head

    def _q(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        self._cur.execute(self._d.sql(sql), params)
        return self._cur

    def _insert(self, sql: str, params: tuple[Any, ...], what: str) -> None:
        try:
            self._q(sql, params)
        except Exception as exc:
            if self._d.is_conflict(exc):
                raise ConflictError(f"{what} already exists") from exc
            raise

    # --- secrets -----------------------------------------------------------------------
    #
    # A secret's current version is stored in its own row (namespace_key_version,
    # version_created_at, blob; NULL when it has none), older versions in
    # kmsbox_secret_history. The methods below present both as one set of versions.

    def get_secret(self, namespace: str, name: str, *, for_update: bool = False) -> SecretRow | None:
        """The metadata row, locked when asked (where the engine has row locks)."""
        sql = _GET_SECRET + self._d.for_update if for_update else _GET_SECRET
        row = self._fetch_secret_row(sql, namespace, name)
        return None if row is None else decode.secret(row)

    def _fetch_secret_row(self, sql: str, namespace: str, name: str) -> Any:
        # One secret's row: a value the driver cannot read at all is that secret's
        # MalformedRow (the transaction goes on, so the row can still be deleted).
        try:
            return self._q(sql, (namespace, name)).fetchone()
        except Exception as exc:
            if self._d.is_undecodable(exc):
                raise decode.malformed(namespace, name) from None
            raise

    def secret_for_write(self, namespace: str, name: str) -> tuple[int | None, SecretRow | None]:
        """The namespace's active key version and the secret's row, locked: what a put reads."""
        return self.active_namespace_key_version(namespace), self.get_secret(namespace, name, for_update=True)

    def create_secret(self, row: SecretRow, current: SecretVersionRow, active_key_version: int) -> bool:
        """Insert a new secret with its first version in one statement, if no secret has the
        name and ``active_key_version`` is still the namespace's active key; else False."""
        _check_current(row, current)
        cur = self._q(
            _create_secret_sql(self._d.for_share),
            (*_secret_params(row, current), row.namespace, active_key_version, row.namespace, active_key_version),
        )
        return bool(cur.rowcount == 1)

    def get_secret_with_blob(
        self, namespace: str, name: str, version: int | None
    ) -> tuple[SecretRow, SecretVersionRow | None] | None:
        """Metadata and one version: one statement for the current version."""
        tail = self._fetch_secret_row(_GET_CURRENT, namespace, name)
        if tail is None:
            return None
        row = (namespace, name, *tail)
        secret = decode.secret(row)
        if version is None or version == secret.version:
            if row[15] is None:
                return secret, None
            return secret, decode.stored_version(namespace, name, secret.version, row[13], row[14], row[15])
        old = self._q(
            "SELECT namespace_key_version, created_at, blob FROM kmsbox_secret_history "
            "WHERE namespace = ? AND name = ? AND version = ?",
            (namespace, name, version),
        ).fetchone()
        if old is None:
            return secret, None
        return secret, decode.stored_version(namespace, name, version, old[0], old[1], old[2])

    def insert_secret(self, row: SecretRow, current: SecretVersionRow | None = None) -> None:
        """Insert a new secret row, with its current version when given (one statement)."""
        _check_current(row, current)
        self._insert(_INSERT_SECRET, _secret_params(row, current), "secret")
        if current is None:
            self._promote_from_history(row.namespace, row.name)  # a version stored before its row

    def update_secret(self, row: SecretRow, expected_row_version: int, current: SecretVersionRow | None = None) -> None:
        """Compare-and-set on ``row_version``.

        When ``row.version`` changes, the stored current version moves to the history;
        ``current`` (the envelope of ``row.version``, a version not stored yet) then
        takes its place.
        """
        _check_current(row, current)
        key = (row.namespace, row.name)
        # Runs before the update, so it sees the old version; a no-op when it is unchanged.
        self._insert(
            "INSERT INTO kmsbox_secret_history (namespace, name, version, namespace_key_version, created_at, blob) "
            "SELECT namespace, name, version, namespace_key_version, version_created_at, blob FROM kmsbox_secrets "
            "WHERE namespace = ? AND name = ? AND row_version = ? AND version <> ? AND blob IS NOT NULL",
            (*key, expected_row_version, row.version),
            "secret version",
        )
        meta = (
            row.version,
            row.status,
            row.updated_at,
            row.expires_at,
            row.category,
            row.description,
            _json_object(row.labels),
            row.row_version,
        )
        # access_count and last_accessed_at are written only by record_access, so a
        # concurrent read's count is never overwritten by a stale row.
        set_meta = (
            "version = ?, status = ?, updated_at = ?, expires_at = ?, category = ?, description = ?, labels = ?, "
            "row_version = ?"
        )
        if current is not None:
            cur = self._q(
                f"UPDATE kmsbox_secrets SET {set_meta}, namespace_key_version = ?, version_created_at = ?, blob = ? "
                "WHERE namespace = ? AND name = ? AND row_version = ?",
                (*meta, current.namespace_key_version, current.created_at, current.blob, *key, expected_row_version),
            )
        else:
            # SET expressions read the old row: the envelope stays only if the version does.
            cur = self._q(
                f"UPDATE kmsbox_secrets SET {set_meta}, "
                "namespace_key_version = CASE WHEN version = ? THEN namespace_key_version END, "
                "version_created_at = CASE WHEN version = ? THEN version_created_at END, "
                "blob = CASE WHEN version = ? THEN blob END "
                "WHERE namespace = ? AND name = ? AND row_version = ?",
                (*meta, row.version, row.version, row.version, *key, expected_row_version),
            )
        if cur.rowcount != 1:
            raise ConflictError(f"secret {row.namespace}/{row.name} was changed by another writer")
        if current is None:
            self._promote_from_history(*key)

    def _promote_from_history(self, namespace: str, name: str) -> None:
        # A version set back to one kept in the history becomes current again.
        found = self._q(
            "SELECT h.namespace_key_version, h.created_at, h.blob, h.version FROM kmsbox_secret_history h "
            "JOIN kmsbox_secrets s ON s.namespace = h.namespace AND s.name = h.name AND s.version = h.version "
            "WHERE s.namespace = ? AND s.name = ? AND s.blob IS NULL",
            (namespace, name),
        ).fetchone()
        if found is None:
            return
        self._q(
            "UPDATE kmsbox_secrets SET namespace_key_version = ?, version_created_at = ?, blob = ? "
            "WHERE namespace = ? AND name = ?",
            (found[0], found[1], found[2], namespace, name),
        )
        self._q(
            "DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ? AND version = ?",
            (namespace, name, found[3]),
        )

    def delete_secret(self, namespace: str, name: str) -> int:
        """Delete a secret and its versions; the number of versions removed."""
        count = self._q(
            "DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ?", (namespace, name)
        ).rowcount
        count += self._q(
            "DELETE FROM kmsbox_secrets WHERE namespace = ? AND name = ? AND blob IS NOT NULL", (namespace, name)
        ).rowcount
        self._q("DELETE FROM kmsbox_secrets WHERE namespace = ? AND name = ?", (namespace, name))
        return int(count)

    def delete_version(self, namespace: str, name: str, version: int) -> bool:
        """Delete one version of a secret (repair of an unrecoverable one)."""
        cur = self._q(
            "DELETE FROM kmsbox_secret_history WHERE namespace = ? AND name = ? AND version = ?",
            (namespace, name, version),
        )
        if cur.rowcount == 1:
            return True
        cur = self._q(
            "UPDATE kmsbox_secrets SET namespace_key_version = NULL, version_created_at = NULL, blob = NULL "
            "WHERE namespace = ? AND name = ? AND version = ? AND blob IS NOT NULL",
            (namespace, name, version),
        )
        return bool(cur.rowcount == 1)

    def insert_version(self, row: SecretVersionRow) -> None:
        """Store one secret version: in its secret's row if it is the current one, else in the history."""
        key = (row.namespace, row.name, row.version)
        cur = self._q(
            "UPDATE kmsbox_secrets SET namespace_key_version = ?, version_created_at = ?, blob = ? "
            "WHERE namespace = ? AND name = ? AND version = ? AND blob IS NULL",
            (row.namespace_key_version, row.created_at, row.blob, *key),
        )
        if cur.rowcount == 1:
            return
        if self._q("SELECT 1 FROM kmsbox_secrets WHERE namespace = ? AND name = ? AND version = ?", key).fetchone():
            raise ConflictError("secret version already exists")
        self._insert(
            "INSERT INTO kmsbox_secret_history (namespace, name, version, namespace_key_version, created_at, blob) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (*key, row.namespace_key_version, row.created_at, row.blob),
            "secret version",
        )

    def list_versions(self, namespace: str, name: str) -> list[SecretVersionRow]:
        """Every version's metadata (no blob), oldest first."""
        rows = self._q(
            f"SELECT {_VERSION_META} FROM kmsbox_secret_history WHERE namespace = ? AND name = ? "
            f"UNION ALL SELECT {_CURRENT_META} FROM kmsbox_secrets "
            "WHERE namespace = ? AND name = ? AND blob IS NOT NULL ORDER BY 3",
            (namespace, name, namespace, name),
        ).fetchall()
        return [_version(r) for r in rows]

    def update_version_blob(
        self,
        namespace: str,
        name: str,
        version: int,
        blob: bytes,
        namespace_key_version: int,
        expected_namespace_key_version: int,
    ) -> bool:
        """Compare-and-set a version's blob on its namespace-key version."""
        params = (blob, namespace_key_version, namespace, name, version, expected_namespace_key_version)
        for table in ("kmsbox_secrets", "kmsbox_secret_history"):  # most versions are current ones
            cur = self._q(
                f"UPDATE {table} SET blob = ?, namespace_key_version = ? "
                "WHERE namespace = ? AND name = ? AND version = ? AND namespace_key_version = ?",
                params,
            )
            if cur.rowcount == 1:
                return True
        return False

    def record_access(self, namespace: str, name: str, count: int, at: float) -> None:
        """Count reads."""
        self._q(
            "UPDATE kmsbox_secrets SET access_count = access_count + ?, last_accessed_at = ? "
            "WHERE namespace = ? AND name = ?",
            (count, at, namespace, name),
        )

    def list_secrets(
        self, namespace: str, *, category: str | None, label: tuple[str, str] | None, after: str | None, limit: int
    ) -> list[SecretRow]:
        """A page by name; label filtering happens here so pages stay full."""
        out: list[SecretRow] = []
        cursor = after or ""
        while len(out) < limit:
            sql = f"SELECT {_SECRET_COLUMNS} FROM kmsbox_secrets WHERE namespace = ? AND name > ?"
            params: list[Any] = [namespace, cursor]
            if category is not None:
                sql += " AND category = ?"
                params.append(category)
            sql += " ORDER BY name LIMIT ?"
            params.append(limit)
            rows = [decode.secret(r) for r in self._q(sql, tuple(params)).fetchall()]
            if not rows:
                break
            for row in rows:
                if label is None or row.labels.get(label[0]) == label[1]:
                    out.append(row)
                    if len(out) == limit:
                        break
            cursor = rows[-1].name
            if len(rows) < limit:
                break
        return out

    def expired_secrets(self, before: float, limit: int) -> list[SecretRow]:
        """A batch of secrets that expired before ``before`` (malformed rows left out)."""
        found: list[SecretRow] = []
        after: tuple[Any, ...] = (float("-inf"), "", "")
        while len(found) < limit:
            page = self._q(
                f"SELECT {_SECRET_COLUMNS} FROM kmsbox_secrets WHERE expires_at IS NOT NULL AND expires_at < ? "
                "AND (expires_at, namespace, name) > (?, ?, ?) ORDER BY expires_at, namespace, name LIMIT ?",
                (before, *after, limit),
            ).fetchall()
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

    def namespaces(self) -> list[str]:
        """Namespaces that have a key (a secret is only ever written after its namespace has one)."""
        rows = self._q("SELECT DISTINCT namespace FROM kmsbox_namespace_keys ORDER BY namespace").fetchall()
        # A non-text namespace was written through the database and cannot be addressed.
        return [r[0] for r in rows if type(r[0]) is str]

    def versions_under_key(
        self, namespace: str, namespace_key_version: int, after: tuple[str, int] | None, limit: int
    ) -> list[SecretVersionRow]:
        """A batch of versions under one namespace-key version, with blobs, by (name, version)."""
        return self._versions_after(namespace, after, limit, " AND namespace_key_version = ?", (namespace_key_version,))

    def versions_in_namespace(
        self, namespace: str, after: tuple[Any, Any] | None, limit: int
    ) -> list[SecretVersionRow]:
        """A batch of every version of a namespace, with blobs, by (name, version)."""
        return self._versions_after(namespace, after, limit, "", ())

    def _versions_after(
        self, namespace: str, after: tuple[Any, Any] | None, limit: int, extra: str, extra_params: tuple[Any, ...]
    ) -> list[SecretVersionRow]:
        name, version = after or ("", 0)
        # A row-value bound lets both engines seek to the cursor instead of scanning up to it.
        where = f"namespace = ?{extra} AND (name, version) > (?, ?)"
        params = (namespace, *extra_params, name, version)
        rows = self._q(
            f"SELECT {_VERSION_META}, blob FROM kmsbox_secret_history WHERE {where} "
            f"UNION ALL SELECT {_CURRENT_META}, blob FROM kmsbox_secrets WHERE {where} AND blob IS NOT NULL "
            "ORDER BY 2, 3 LIMIT ?",
            (*params, *params, limit),
        ).fetchall()
        return [_version(r, r[5]) for r in rows]

    def count_versions_by_key(self, namespace: str) -> dict[int, int]:
        """Versions per namespace-key version."""
        rows = self._q(
            "SELECT k, COUNT(*) FROM (SELECT namespace_key_version AS k FROM kmsbox_secret_history "
            "WHERE namespace = ? UNION ALL SELECT namespace_key_version FROM kmsbox_secrets "
            "WHERE namespace = ? AND blob IS NOT NULL) AS v GROUP BY k",
            (namespace, namespace),
        ).fetchall()
        counts: dict[int, int] = {}
        for key_version, count in rows:
            try:
                counts[decode.whole(key_version)] = int(count)
            except decode.DECODE_ERRORS:
                continue  # a version row changed through the database: reading it says so
        return counts

    # --- namespace keys ----------------------------------------------------------------

    def namespace_keys(self, namespace: str) -> list[NamespaceKeyRow]:
        """Key versions with their wraps, in one statement (no torn read under READ COMMITTED)."""
        keys: dict[int, NamespaceKeyRow] = {}
        for r in self._q(
            "SELECT k.version, k.status, k.created_at, k.updated_at, w.kek_uri, w.kek_version, w.ciphertext "
            "FROM kmsbox_namespace_keys k LEFT JOIN kmsbox_namespace_key_wraps w "
            "ON w.namespace = k.namespace AND w.version = k.version "
            "WHERE k.namespace = ? ORDER BY k.version, w.created_at, w.kek_uri",
            (namespace,),
        ).fetchall():
            try:
                version = decode.whole(r[0])
                row = keys.get(version)
                if row is None:
                    row = NamespaceKeyRow(namespace, version, decode.text(r[1]), decode.real(r[2]), decode.real(r[3]))
                    keys[version] = row
                if r[4] is not None:
                    row.wraps.append(WrappedKey(decode.text(r[4]), decode.text(r[5]), bytes(memoryview(r[6]))))
            except decode.DECODE_ERRORS:
                raise MalformedRow(f"the stored row of namespace key {namespace!r} v{r[0]!r} is malformed") from None
        return list(keys.values())

    def insert_namespace_key(self, row: NamespaceKeyRow) -> None:
        """A new key version and its wraps."""
        self._insert(
            "INSERT INTO kmsbox_namespace_keys (namespace, version, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (row.namespace, row.version, row.status, row.created_at, row.updated_at),
            "namespace key version",
        )
        for wrapped in row.wraps:
            self.put_wrap(row.namespace, row.version, wrapped, row.created_at)

    def active_namespace_key_version(self, namespace: str) -> int | None:
        """The active namespace-key version (the newest if several), or None."""
        row = self._q(_active_key_sql(self._d.for_share), (namespace,)).fetchone()
        if row is None:
            return None
        try:
            return decode.whole(row[0])
        except decode.DECODE_ERRORS:
            raise MalformedRow(f"the stored row of namespace key {namespace!r} is malformed") from None

    def set_namespace_key_status(self, namespace: str, version: int, status: str, at: float) -> None:
        """Change a key version's status."""
        self._q(
            "UPDATE kmsbox_namespace_keys SET status = ?, updated_at = ? WHERE namespace = ? AND version = ?",
            (status, at, namespace, version),
        )

    def put_wrap(self, namespace: str, version: int, wrapped: WrappedKey, at: float) -> None:
        """Upsert the wrap under one KEK."""
        self._q(
            "DELETE FROM kmsbox_namespace_key_wraps WHERE namespace = ? AND version = ? AND kek_uri = ?",
            (namespace, version, wrapped.kek_uri),
        )
        self._q(
            "INSERT INTO kmsbox_namespace_key_wraps (namespace, version, kek_uri, kek_version, ciphertext, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (namespace, version, wrapped.kek_uri, wrapped.key_version, wrapped.ciphertext, at),
        )

    def delete_wrap(self, namespace: str, version: int, kek_uri: str) -> None:
        """Remove one KEK's wrap."""
        self._q(
            "DELETE FROM kmsbox_namespace_key_wraps WHERE namespace = ? AND version = ? AND kek_uri = ?",
            (namespace, version, kek_uri),
        )

    def delete_namespace_key(self, namespace: str, version: int) -> None:
        """Remove a key version and its wraps."""
        self._q("DELETE FROM kmsbox_namespace_key_wraps WHERE namespace = ? AND version = ?", (namespace, version))
        self._q("DELETE FROM kmsbox_namespace_keys WHERE namespace = ? AND version = ?", (namespace, version))

    # --- audit ---------------------------------------------------------------------------

    def audit_head(self) -> tuple[int, bytes]:
        """The last event's sequence number and MAC, with the chain locked until commit.

        Where write transactions are serialised (SQLite), the head this connection
        last wrote is answered from memory; ``append_audit`` finds out, through the
        sequence number's uniqueness, if another writer has moved it since.
        """
        if self._head is not None and self._writing:
            self._head_guessed = True
            return self._head
        self._head_guessed = False
        # Engines with row locks serialise appenders on the head row; SQLite's
        # write transaction already does.
        if (
            self._d.for_update
            and self._q(f"SELECT id FROM kmsbox_audit_head WHERE id = 1{self._d.for_update}").fetchone() is None
        ):
            raise StorageError("audit chain head row is missing")
        row = self._q("SELECT seq, mac FROM kmsbox_audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, b"") if row is None else (int(row[0]), decode.mac_bytes(row[1]))

    def append_audit(self, row: AuditRow) -> None:
        """Insert an event and move the head (StaleAuditHead if the head given was stale)."""
        params = (
            row.seq,
            row.time,
            row.namespace,
            row.name,
            row.secret_version,
            row.action,
            row.result,
            row.actor,
            _json_object(row.context),
            _json_object(row.detail),
            row.audit_key_version,
            row.mac,
        )
        try:
            self._insert(_INSERT_EVENT, params, "audit event")
        except ConflictError:
            self._head = None
            if self._head_guessed:
                self._head_guessed = False
                raise StaleAuditHead("the audit chain moved on since this connection's last write") from None
            raise
        if self._d.caches_audit_head:
            self._head = (row.seq, row.mac)  # dropped again if this transaction rolls back

    def forget_audit_head(self) -> None:
        """Drop the remembered head (after a rollback, which may have undone it)."""
        self._head = None
        self._head_guessed = False

    def list_audit(self, filters: AuditFilter, after_seq: int, limit: int) -> list[AuditRow]:
        """A filtered page of events."""
        sql = f"SELECT {_AUDIT_COLUMNS} FROM kmsbox_audit_events WHERE seq > ?"
        params: list[Any] = [after_seq]
        for column, value in (
            ("namespace", filters.namespace),
            ("name", filters.name),
            ("action", filters.action),
            ("result", filters.result),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if filters.since is not None:
            sql += " AND time >= ?"
            params.append(filters.since)
        if filters.until is not None:
            sql += " AND time < ?"
            params.append(filters.until)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        rows = [decode.audit_event(r) for r in self._q(sql, tuple(params)).fetchall()]
        for event in rows:
            if event.malformed:
                raise MalformedRow(f"audit event {event.seq} is malformed; audit verify reports every altered event")
        return rows

    def audit_range(self, after_seq: int, limit: int) -> list[AuditRow]:
        """Unfiltered events after ``after_seq``; altered ones come back marked ``malformed``."""
        rows = self._q(
            f"SELECT {_AUDIT_COLUMNS} FROM kmsbox_audit_events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return [decode.audit_event(r) for r in rows.fetchall()]

    # --- jobs ------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRow | None:
        """A job checkpoint."""
        r = self._q("SELECT job_id, kind, state, updated_at FROM kmsbox_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if r is None else decode.job(r)

    def put_job(self, row: JobRow) -> None:
        """Upsert a checkpoint."""
        self._q("DELETE FROM kmsbox_jobs WHERE job_id = ?", (row.job_id,))
        self._q(
            "INSERT INTO kmsbox_jobs (job_id, kind, state, updated_at) VALUES (?, ?, ?, ?)",
            (row.job_id, row.kind, row.state, row.updated_at),
        )

    def delete_job(self, job_id: str) -> None:
        """Forget a job."""
        self._q("DELETE FROM kmsbox_jobs WHERE job_id = ?", (job_id,))

    def list_jobs(self) -> list[JobRow]:
        """Unfinished jobs."""
        rows = self._q("SELECT job_id, kind, state, updated_at FROM kmsbox_jobs ORDER BY job_id").fetchall()
        return [decode.job(r) for r in rows]


class _TxScope:
    """One transaction on this thread's connection: commit on success, else roll back.

    A plain context manager rather than ``@contextmanager``: it runs on every read.
    """

    __slots__ = ("_backend", "_conn", "_tx", "_write")

    def __init__(self, backend: SqlBackend, write: bool) -> None:
        self._backend = backend
        self._write = write
        self._conn: Any = None
        self._tx: SqlTransaction | None = None

    def __enter__(self) -> SqlTransaction:
        backend = self._backend
        local = backend._local
        if getattr(local, "active", False):
            raise RuntimeError("nested kmsbox storage transactions are not supported")
        conn = backend._connection()
        local.active = True
        try:
            if self._write or not backend.autocommit_reads:
                backend._begin(conn, self._write)
            # One cursor per thread and connection, reused by every transaction on it.
            tx: SqlTransaction | None = getattr(local, "tx", None)
            if tx is None or tx._conn is not conn:
                tx = local.tx = SqlTransaction(conn.cursor(), backend.dialect, conn)
        except BaseException as exc:
            local.active = False
            with contextlib.suppress(Exception):
                backend._rollback(conn)
            mapped = backend._storage_error(exc) if isinstance(exc, Exception) else None
            if mapped is None:
                raise
            raise mapped from exc
        tx._writing = self._write
        self._conn = conn
        self._tx = tx
        return tx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        backend = self._backend
        try:
            if exc is None:
                try:
                    if self._write:
                        if backend._lost_transaction(self._conn):
                            raise StorageError("the database rolled this transaction back on an error caught inside it")
                        backend._commit(self._conn)
                    elif not backend.autocommit_reads:
                        backend._commit(self._conn)
                    return
                except BaseException as commit_error:
                    exc = commit_error
            # The original error matters more than a failed rollback.
            if self._tx is not None:
                self._tx.forget_audit_head()
            with contextlib.suppress(Exception):
                backend._rollback(self._conn)
            if isinstance(exc, Exception) and not isinstance(exc, (ConflictError, StorageError)):
                mapped = backend._storage_error(exc)
                if mapped is not None:
                    raise mapped from exc
            if exc_type is None:
                raise exc  # the commit failed
        finally:
            backend._local.active = False


class SqlBackend(ABC):
    """A backend over DB-API connections, one per thread, migrated on open.

    Subclasses give the dialect, connect, begin/commit/rollback and classify
    errors. Nested transactions in one thread are a programming error.
    """

    dialect: Dialect
    #: Reads run statement by statement with no BEGIN/COMMIT (each sees committed data).
    autocommit_reads = False

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all_connections: list[Any] = []
        self._conn_lock = threading.Lock()
        self._closed = False
        try:
            self._migrate()
        except BaseException:
            self.close()  # a store that fails to open must not leave its connection open
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    @abstractmethod
    def _connect(self) -> Any:
        """Open a new connection."""

    @abstractmethod
    def _begin(self, conn: Any, write: bool) -> None:
        """Start a transaction (taking the write lock for writes where needed)."""

    def _commit(self, conn: Any) -> None:
        conn.commit()

    def _rollback(self, conn: Any) -> None:
        conn.rollback()

    def _lost_transaction(self, conn: Any) -> bool:
        """True if the engine ended a write transaction by itself (nothing to commit)."""
        return False

    def _lock_for_migration(self, tx: SqlTransaction) -> None:  # noqa: B027 - optional hook
        """Serialise concurrent migrations (SQLite's write lock already does)."""

    def _refuse_foreign_database(self, tx: SqlTransaction) -> None:  # noqa: B027 - optional hook
        """Refuse to create kmsbox's tables beside another application's (before the first migration)."""

    @abstractmethod
    def _storage_error(self, exc: BaseException) -> KmsboxError | None:
        """Map a driver exception to kmsbox's errors, or None if not a driver error."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Backend kind and location."""

    def _connection(self) -> Any:
        if self._closed:
            raise StorageError("storage backend is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
            except StorageError:
                raise
            except Exception as exc:
                mapped = self._storage_error(exc)
                raise (mapped or StorageError("cannot connect to storage")) from exc
            self._local.conn = conn
            with self._conn_lock:
                self._all_connections.append(conn)
        return conn

    def _tx(self, write: bool) -> AbstractContextManager[SqlTransaction]:
        return _TxScope(self, write)

    def transaction(self) -> AbstractContextManager[SqlTransaction]:
        """A write transaction (see StorageBackend)."""
        return self._tx(True)

    def read(self) -> AbstractContextManager[SqlTransaction]:
        """A read-only transaction."""
        return self._tx(False)

    def _migrate(self) -> None:
        with self._tx(True) as tx:
            self._lock_for_migration(tx)
            tx._q("CREATE TABLE IF NOT EXISTS kmsbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            current = self._recorded_schema(tx)
            if current == 0:
                self._refuse_foreign_database(tx)
            if current > SCHEMA_VERSION:
                raise ConfigError(
                    f"storage {self.describe().get('location', '')} has schema version {current}, newer than this "
                    f"kmsbox understands ({SCHEMA_VERSION}): upgrade kmsbox"
                )
            for number in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1]:
                    if isinstance(statement, tuple):
                        only, statement = statement
                        if only != self.dialect.name:
                            continue
                    tx._q(self.dialect.ddl(statement))
            if current == 0:
                tx._q("INSERT INTO kmsbox_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif current < SCHEMA_VERSION:
                tx._q("UPDATE kmsbox_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            self._check_tables(tx)

    def _check_tables(self, tx: SqlTransaction) -> None:
        """Fail closed at open, not on first use, when a table was dropped outside kmsbox."""
        for table in TABLES:
            try:
                tx._q(f"SELECT 1 FROM {table} WHERE 1 = 0")
            except Exception as exc:
                if self._storage_error(exc) is None:
                    raise
                raise ConfigError(
                    f"storage {self.describe().get('location', '')} has no table {table} "
                    "(changed outside kmsbox): restore it from a backup"
                ) from None

    def schema_version(self) -> int:
        """The applied schema version."""
        with self.read() as tx:
            return self._recorded_schema(tx)

    def _recorded_schema(self, tx: SqlTransaction) -> int:
        row = tx._q("SELECT value FROM kmsbox_meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            return 0
        value = row[0]
        # Only what the migrations write: a positive decimal integer.
        if type(value) is not str or not value.isascii() or not value.isdigit() or int(value) < 1:
            raise ConfigError(
                f"storage {self.describe().get('location', '')} records an unreadable schema version: "
                "restore kmsbox_meta from a backup"
            )
        return int(value)

    def close(self) -> None:
        """Close every connection this backend opened."""
        self._closed = True
        with self._conn_lock:
            for conn in self._all_connections:
                with contextlib.suppress(Exception):  # closing is best effort
                    conn.close()
            self._all_connections.clear()
