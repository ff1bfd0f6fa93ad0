"""``memory://``: a store that lives and dies with the process, for tests.

Pure Python dictionaries behind one lock (transactions take turns, so every hold of
the storage protocol is kept), with an undo log per write transaction for rollback.
It passes the same storage conformance suite as the SQL backends, which shows that
the protocol asks for nothing SQL-shaped. A default plugin.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kmsbox.errors import ConfigError, ConflictError, StorageError
from kmsbox.hookspecs import hookimpl
from kmsbox.storage.base import (
    AuditFilter,
    AuditPosition,
    AuditRow,
    ChainHead,
    JobRow,
    NamespaceKeyRow,
    NamespaceState,
    SealEvents,
    SecretFilter,
    SecretRow,
    StateEvent,
    StoredVersion,
    first_micros,
)
from kmsbox.storage.sql.schema import SCHEMA_VERSION

__all__ = ["MemoryBackend", "open_memory"]

_MISSING = object()


class _Data:
    """Everything a memory store holds."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], tuple[SecretRow, bytes | None]] = {}
        self.names: dict[str, list[str]] = {}  # sorted names per namespace
        self.history: dict[tuple[str, str], dict[int, tuple[float, bytes]]] = {}
        self.access: dict[tuple[str, str], dict[int, tuple[int, float | None]]] = {}
        self.states: dict[str, NamespaceState] = {}
        self.namespace_order: list[str] = []
        self.keys: dict[str, dict[int, NamespaceKeyRow]] = {}
        self.heads: dict[int, ChainHead] = {}
        self.events: list[tuple[AuditPosition, AuditRow]] = []
        self.last: dict[tuple[str, str | None], StateEvent] = {}
        self.state_order: list[tuple[str, str, int]] = []
        self.state_index: dict[tuple[str, str, int], StateEvent] = {}
        self.jobs: dict[str, JobRow] = {}


def _copy_secret(row: SecretRow) -> SecretRow:
    copy = dataclasses.replace(row)
    copy.labels = dict(row.labels)
    return copy


def _copy_key(row: NamespaceKeyRow) -> NamespaceKeyRow:
    return dataclasses.replace(row, wraps=list(row.wraps))


def _copy_event(row: AuditRow) -> AuditRow:
    # Context and detail are (nested) dicts: neither the writer nor a reader may share them.
    return dataclasses.replace(row, context=copy.deepcopy(row.context), detail=copy.deepcopy(row.detail))


class MemoryTransaction:
    """The storage protocol over :class:`_Data`; writes log how to undo themselves."""

    def __init__(self, data: _Data, write: bool) -> None:
        self._d = data
        self._write = write
        self.undo: list[Callable[[], None]] = []

    # --- logged changes ----------------------------------------------------------------------

    def _writable(self) -> None:
        if not self._write:
            raise StorageError("a read transaction cannot write")

    def _set(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        self._writable()
        old = mapping.get(key, _MISSING)
        self.undo.append(lambda: mapping.pop(key, None) if old is _MISSING else mapping.__setitem__(key, old))
        mapping[key] = value

    def _pop(self, mapping: dict[Any, Any], key: Any) -> Any:
        self._writable()
        old = mapping.pop(key, _MISSING)
        if old is not _MISSING:
            self.undo.append(lambda: mapping.__setitem__(key, old))
        return None if old is _MISSING else old

    def _insort(self, items: list[Any], item: Any) -> None:
        index = bisect.bisect_left(items, item)
        if index < len(items) and items[index] == item:
            return
        items.insert(index, item)
        self.undo.append(lambda: items.remove(item))

    def _remove(self, items: list[Any], item: Any) -> None:
        index = bisect.bisect_left(items, item)
        if index < len(items) and items[index] == item:
            del items[index]
            self.undo.append(lambda: bisect.insort(items, item))

    # --- namespaces and their keys -----------------------------------------------------------

    def namespace_state(self, namespace: str, *, change: bool = False) -> NamespaceState | None:
        """See the protocol (transactions take turns, so every state is held)."""
        state = self._d.states.get(namespace)
        return None if state is None else dataclasses.replace(state)

    def namespace_keys(self, namespace: str) -> list[NamespaceKeyRow]:
        """See the protocol."""
        rows = self._d.keys.get(namespace, {})
        return [_copy_key(rows[v]) for v in sorted(rows)]

    def save_namespace_keys(self, state: NamespaceState, upsert: list[NamespaceKeyRow], delete: list[int]) -> None:
        """See the protocol."""
        self._writable()
        ns = state.namespace
        if ns not in self._d.states:
            self._insort(self._d.namespace_order, ns)
        self._set(self._d.states, ns, dataclasses.replace(state))
        keys = self._d.keys.get(ns)
        if keys is None:
            keys = {}
            self._set(self._d.keys, ns, keys)
        for version in delete:
            self._pop(keys, version)
        for row in upsert:
            self._set(keys, row.version, _copy_key(row))

    def namespaces(self, after: str | None, limit: int) -> list[str]:
        """See the protocol."""
        order = self._d.namespace_order
        start = bisect.bisect_right(order, after or "")
        return order[start : start + limit]

    # --- secrets -------------------------------------------------------------------------------

    def _with_access(self, row: SecretRow) -> SecretRow:
        copy = _copy_secret(row)
        counters = self._d.access.get((row.namespace, row.name), {})
        copy.access_count = sum(reads for reads, _ in counters.values())
        times = [at for _, at in counters.values() if at is not None]
        copy.last_accessed_at = max(times) if times else None
        return copy

    def get_secret(self, namespace: str, name: str) -> SecretRow | None:
        """See the protocol."""
        found = self._d.secrets.get((namespace, name))
        return None if found is None else self._with_access(found[0])

    def read_secret(
        self, namespace: str, name: str, version: int | None
    ) -> tuple[SecretRow, StoredVersion | None] | None:
        """See the protocol."""
        found = self._d.secrets.get((namespace, name))
        if found is None:
            return None
        row, blob = found
        secret = self._with_access(row)
        if version is None or version == row.version:
            if blob is None:
                return secret, None
            return secret, StoredVersion(namespace, name, row.version, blob, row.version_created_at)
        old = self._d.history.get((namespace, name), {}).get(version)
        if old is None:
            return secret, None
        return secret, StoredVersion(namespace, name, version, old[1], old[0])

    def create_secret(self, row: SecretRow, current: StoredVersion, *, keys_seal: bytes) -> bool:
        """See the protocol."""
        key = (row.namespace, row.name)
        state = self._d.states.get(row.namespace)
        last = self._d.last.get(key)
        if key in self._d.secrets or state is None or state.seal != keys_seal:
            return False
        if last is not None and last.row_version >= row.row_version:
            return False
        self._put_secret(row, current.blob)
        return True

    def _put_secret(self, row: SecretRow, blob: bytes | None) -> None:
        key = (row.namespace, row.name)
        if key not in self._d.secrets:
            names = self._d.names.get(row.namespace)
            if names is None:
                names = []
                self._set(self._d.names, row.namespace, names)
            self._insort(names, row.name)
        stored = _copy_secret(row)
        stored.access_count, stored.last_accessed_at = 0, None
        self._set(self._d.secrets, key, (stored, blob))

    def update_secret(self, row: SecretRow, expected_row_version: int, current: StoredVersion | None) -> None:
        """See the protocol."""
        key = (row.namespace, row.name)
        found = self._d.secrets.get(key)
        if found is None or found[0].row_version != expected_row_version:
            raise ConflictError(f"secret {row.namespace}/{row.name} was changed by another writer")
        old, blob = found
        if current is not None:
            if blob is not None and old.version != row.version:
                history = self._d.history.get(key)
                if history is None:
                    history = {}
                    self._set(self._d.history, key, history)
                if old.version not in history:
                    self._set(history, old.version, (old.version_created_at, blob))
            blob = current.blob
            row = dataclasses.replace(row, version_created_at=current.created_at)
        else:
            row = dataclasses.replace(row, version=old.version, version_created_at=old.version_created_at)
        self._put_secret(row, blob)

    def delete_secret(self, namespace: str, name: str) -> int:
        """See the protocol."""
        key = (namespace, name)
        found = self._pop(self._d.secrets, key)
        if found is None:
            return 0
        self._remove(self._d.names.get(namespace, []), name)
        history = self._pop(self._d.history, key) or {}
        self._pop(self._d.access, key)
        return len(history) + (0 if found[1] is None else 1)

    def delete_version(self, namespace: str, name: str, version: int) -> bool:
        """See the protocol."""
        history = self._d.history.get((namespace, name))
        return history is not None and self._pop(history, version) is not None

    def _versions_of(self, namespace: str, name: str) -> list[StoredVersion]:
        out = [
            StoredVersion(namespace, name, v, blob, created)
            for v, (created, blob) in sorted(self._d.history.get((namespace, name), {}).items())
        ]
        found = self._d.secrets.get((namespace, name))
        if found is not None and found[1] is not None:
            out.append(StoredVersion(namespace, name, found[0].version, found[1], found[0].version_created_at))
        return out

    def list_versions(self, namespace: str, name: str) -> list[StoredVersion]:
        """See the protocol."""
        return self._versions_of(namespace, name)

    def list_secrets(
        self, namespace: str | None, filters: SecretFilter, after: tuple[str, str] | None, limit: int
    ) -> list[SecretRow]:
        """See the protocol."""
        out: list[SecretRow] = []
        for key in self._keys_after(namespace, after):
            row = self._d.secrets[key][0]
            if filters.category is not None and row.category != filters.category:
                continue
            if all(row.labels.get(k) == v for k, v in filters.labels.items()):
                out.append(self._with_access(row))
                if len(out) == limit:
                    break
        return out

    def _keys_after(self, namespace: str | None, after: tuple[str, str] | None) -> Iterator[tuple[str, str]]:
        spaces = [namespace] if namespace is not None else sorted(self._d.names)
        start = after or ("", "")
        for ns in spaces:
            if ns < start[0]:
                continue
            names = self._d.names.get(ns, [])
            index = bisect.bisect_right(names, start[1]) if ns == start[0] else 0
            for name in names[index:]:
                yield ns, name

    def expired_secrets(
        self, before: float, limit: int, *, after: tuple[float, str, str] | None = None
    ) -> list[SecretRow]:
        """See the protocol."""
        expired = sorted(
            (row.expires_at, row.namespace, row.name)
            for row, _ in self._d.secrets.values()
            if row.expires_at is not None
            and row.expires_at < before
            and (after is None or (row.expires_at, row.namespace, row.name) > after)
        )
        return [self._with_access(self._d.secrets[(ns, name)][0]) for _, ns, name in expired[:limit]]

    def versions(
        self, namespace: str, after: tuple[Any, Any] | None, limit: int, *, key_version: int | None = None
    ) -> list[StoredVersion]:
        """See the protocol."""
        out: list[StoredVersion] = []
        start_name, start_version = after or ("", 0)
        names = self._d.names.get(namespace, [])
        for name in names[bisect.bisect_left(names, start_name) :]:
            for stored in self._versions_of(namespace, name):
                if (name, stored.version) <= (start_name, start_version):
                    continue
                if key_version is not None and _header_key(stored.blob) != key_version:
                    continue
                out.append(stored)
                if len(out) == limit:
                    return out
        return out

    def replace_envelope(self, namespace: str, name: str, version: int, blob: bytes, expected_key_version: int) -> bool:
        """See the protocol."""
        key = (namespace, name)
        found = self._d.secrets.get(key)
        if found is None:
            return False
        row, current = found
        if row.version == version:
            if current is None or _header_key(current) != expected_key_version:
                return False
            self._set(self._d.secrets, key, (row, blob))
            return True
        history = self._d.history.get(key, {})
        old = history.get(version)
        if old is None or _header_key(old[1]) != expected_key_version:
            return False
        self._set(history, version, (old[0], blob))
        return True

    def versions_per_key(self, namespace: str) -> dict[int, int]:
        """See the protocol."""
        counts: dict[int, int] = {}
        for name in self._d.names.get(namespace, []):
            for stored in self._versions_of(namespace, name):
                key = _header_key(stored.blob)
                counts[key] = counts.get(key, 0) + 1
        return counts

    # --- read bookkeeping ----------------------------------------------------------------------

    def add_access(self, counter: int, counts: list[tuple[str, str, int, float]]) -> None:
        """See the protocol."""
        for ns, name, reads, at in counts:
            counters = self._d.access.get((ns, name))
            if counters is None:
                counters = {}
                self._set(self._d.access, (ns, name), counters)
            old_reads, old_at = counters.get(counter, (0, None))
            self._set(counters, counter, (old_reads + reads, at if old_at is None else max(old_at, at)))

    def fold_access(self, counter: int) -> None:
        """See the protocol."""
        for counters in self._d.access.values():
            mine = counters.get(counter)
            if mine is None or counter == 0:
                continue
            self._pop(counters, counter)
            reads, at = counters.get(0, (0, None))
            last = mine[1] if at is None else (at if mine[1] is None else max(at, mine[1]))
            self._set(counters, 0, (reads + mine[0], last))

    # --- audit ---------------------------------------------------------------------------------

    def append_audit(self, chain: int, seal: SealEvents) -> ChainHead:
        """See the protocol."""
        self._writable()
        head = self._d.heads.get(chain) or ChainHead(chain, 0, 0, b"")
        events, new = seal(dataclasses.replace(head))
        for event in events:
            position = event.position
            index = bisect.bisect_left(self._d.events, (position,))
            if index < len(self._d.events) and self._d.events[index][0] == position:
                raise ConflictError(f"audit event {position} exists")
            self._insort(self._d.events, (position, _copy_event(event)))
            if event.row_version is not None and event.namespace is not None:
                state = StateEvent(
                    event.namespace,
                    event.name,
                    event.row_version,
                    event.action,
                    event.state,
                    event.secret_version,
                    position,
                )
                last = self._d.last.get((event.namespace, event.name))
                if last is None or last.row_version < event.row_version:
                    self._set(self._d.last, (event.namespace, event.name), state)
                if event.name is not None:
                    order_key = (event.namespace, event.name, event.row_version)
                    self._set(self._d.state_index, order_key, state)
                    self._insort(self._d.state_order, order_key)
        self._set(self._d.heads, chain, dataclasses.replace(new))
        return new

    def audit_heads(self) -> list[ChainHead]:
        """See the protocol."""
        return [dataclasses.replace(self._d.heads[c]) for c in sorted(self._d.heads)]

    def audit_events(self, filters: AuditFilter, after: AuditPosition | None, limit: int) -> list[AuditRow]:
        """See the protocol."""
        out: list[AuditRow] = []
        start = 0 if after is None else bisect.bisect_right(self._d.events, (after, _Last()))
        for _, event in self._d.events[start:]:
            if (
                (filters.namespace is None or event.namespace == filters.namespace)
                and (filters.name is None or event.name == filters.name)
                and (filters.action is None or event.action == filters.action)
                and (filters.result is None or event.result == filters.result)
                and (filters.since is None or event.at >= first_micros(filters.since))
                and (filters.until is None or event.at < first_micros(filters.until))
            ):
                out.append(_copy_event(event))
                if len(out) == limit:
                    break
        return out

    def audit_events_at(self, positions: list[AuditPosition]) -> list[AuditRow]:
        """See the protocol."""
        out: list[AuditRow] = []
        for position in positions:
            index = bisect.bisect_left(self._d.events, (position,))
            if index < len(self._d.events) and self._d.events[index][0] == position:
                out.append(_copy_event(self._d.events[index][1]))
        return out

    def last_state(self, namespace: str, name: str | None) -> StateEvent | None:
        """See the protocol."""
        last = self._d.last.get((namespace, name))
        return None if last is None else dataclasses.replace(last)

    def state_events(self, after: tuple[str, str, int] | None, limit: int) -> list[StateEvent]:
        """See the protocol."""
        order = self._d.state_order
        start = 0 if after is None else bisect.bisect_right(order, after)
        return [dataclasses.replace(self._d.state_index[k]) for k in order[start : start + limit]]

    # --- jobs ----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRow | None:
        """See the protocol."""
        job = self._d.jobs.get(job_id)
        return None if job is None else dataclasses.replace(job)

    def put_job(self, row: JobRow) -> None:
        """See the protocol."""
        self._set(self._d.jobs, row.job_id, dataclasses.replace(row))

    def delete_job(self, job_id: str) -> None:
        """See the protocol."""
        self._pop(self._d.jobs, job_id)

    def list_jobs(self) -> list[JobRow]:
        """See the protocol."""
        return [dataclasses.replace(self._d.jobs[k]) for k in sorted(self._d.jobs)]


class _Last:
    """Sorts after any AuditRow in a (position, row) pair: bisects past a whole position."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True


def _header_key(blob: bytes) -> int:
    return int.from_bytes(blob[4:8], "big") if len(blob) >= 8 else 0


class MemoryBackend:
    """In-process storage; everything is gone when it is closed."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._data = _Data()
        self._lock = threading.RLock()
        self._local = threading.local()
        self._closed = False

    def __repr__(self) -> str:
        return "MemoryBackend()"

    @contextmanager
    def _scope(self, write: bool) -> Iterator[MemoryTransaction]:
        if self._closed:
            raise StorageError("storage backend is closed")
        if getattr(self._local, "active", False):
            raise RuntimeError("nested kmsbox storage transactions are not supported")
        with self._lock:
            self._local.active = True
            tx = MemoryTransaction(self._data, write)
            try:
                yield tx
            except BaseException:
                for undo in reversed(tx.undo):
                    undo()
                raise
            finally:
                self._local.active = False

    def transaction(self) -> Any:
        """A write transaction: changes are undone if the block raises."""
        return self._scope(True)

    def read(self) -> Any:
        """A read transaction."""
        return self._scope(False)

    def schema_version(self) -> int:
        """Always the current schema (nothing is stored across processes)."""
        return SCHEMA_VERSION

    def close(self) -> None:
        """Drop everything."""
        self._closed = True
        self._data = _Data()

    def describe(self) -> dict[str, str]:
        """Kind only: there is no location."""
        return {"backend": "memory", "location": "process memory"}


def open_memory(url: str, *, create: bool = True) -> MemoryBackend:
    """Open ``memory://`` (nothing may follow the scheme)."""
    if url.rstrip("/") != "memory:":
        raise ConfigError(f"storage URL {url!r}: use memory:// with nothing after it")
    return MemoryBackend(url)


@hookimpl(trylast=True)
def register_storage_backends(register: Any) -> None:
    """Register ``memory://``."""
    register("memory", open_memory, "in-process store for tests")
