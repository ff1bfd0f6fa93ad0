"""Secrets: put, get, try_get, info, list, history, delete, disable/enable, expiry cleanup.

Operations over a :class:`~kmsbox.store.runtime.StoreRuntime` (see
:mod:`kmsbox.store.io` for how they run). Every change of a secret's row is sealed and
audited with the row version and seal it leaves; a change refuses to build on a row
that does not match its seal or the last state the audit log recorded (IntegrityError:
it was changed or rolled back through the database), so no version number is ever
used twice. Timestamps never go backwards against version order.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kmsbox.errors import (
    ConflictError,
    IntegrityError,
    KeyUnavailable,
    KmsboxError,
    NamespaceNotFound,
    ProviderError,
    SecretDisabled,
    SecretExpired,
    SecretNotFound,
    StorageError,
)
from kmsbox.keys import open_secret, seal_secret
from kmsbox.limits import check_count, check_text, seconds_of
from kmsbox.storage.base import MalformedRow, NamespaceState, SecretFilter, SecretRow, StateEvent, StoredVersion
from kmsbox.store.audit import DELETIONS, Event
from kmsbox.store.io import Op, Ports
from kmsbox.store.keyring import ActiveKey
from kmsbox.store.models import GetResult, Page, Secret, SecretInfo, SecretVersionInfo
from kmsbox.store.names import validate_name
from kmsbox.store.runtime import StoreRuntime
from kmsbox.store.values import (
    Expiry,
    check_labels,
    check_optional_text,
    decode_value,
    encode_value,
    expiry_time,
    parse_label_filters,
)

__all__ = ["Secrets", "failure_reason", "info_of"]

#: Errors a read reports as a failed read (audited; ``try_get`` returns them).
READ_FAILURES = (SecretNotFound, SecretExpired, SecretDisabled, KeyUnavailable, IntegrityError, ProviderError)
_KEY_RELOADS = 5


def failure_reason(error: BaseException) -> str:
    """The ``reason`` an audit event and a ``GetResult`` give for a failure."""
    return error.reason if isinstance(error, KmsboxError) else type(error).__name__


def info_of(row: SecretRow, pending: tuple[int, float | None] = (0, None)) -> SecretInfo:
    """A secret's public metadata (``pending``: this store's reads not written yet)."""
    count, last = pending
    last_at = row.last_accessed_at if last is None else max(last, row.last_accessed_at or last)
    return SecretInfo._of(
        {
            "namespace": row.namespace,
            "name": row.name,
            "version": row.version,
            "status": row.status,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "expires_at": row.expires_at,
            "category": row.category,
            "description": row.description,
            "labels": dict(row.labels) if row.labels else {},
            "access_count": row.access_count + count,
            "last_accessed_at": last_at,
        }
    )


@dataclass(slots=True)
class _Failure:
    """Why a read failed, and the secret version it was of (when known)."""

    error: KmsboxError
    version: int | None


@dataclass(slots=True)
class _NeedKey:
    """A read found a namespace-key version that is not in the cache."""

    version: int
    secret_version: int | None = None


class _KeyMissing(Exception):
    def __init__(self, version: int) -> None:
        self.version = version


_STALE = object()  # a write found the namespace's key state changed since it chose its key


@dataclass(slots=True)
class _Change:
    """What a put changes besides the value (None: keep what the secret has)."""

    expires: Expiry
    expires_at: float | None
    category: str | None
    category_given: bool
    description: str | None
    description_given: bool
    labels: dict[str, str] | None

    def fresh(self, namespace: str, name: str, version: int, row_version: int, now: float) -> SecretRow:
        return SecretRow(
            namespace,
            name,
            version,
            "active",
            now,
            now,
            self.expires_at,
            self.category,
            self.description,
            self.labels or {},
            row_version,
            now,
        )

    def apply(self, row: SecretRow, now: float) -> None:
        if self.expires is not None:
            row.expires_at = self.expires_at
        elif row.expires_at is not None and row.expires_at <= now:
            # An expiry that has passed went with the value it expired: a new version
            # written over it without an expiry of its own starts without one.
            row.expires_at = None
        if self.category_given:
            row.category = self.category
        if self.description_given:
            row.description = self.description
        if self.labels is not None:
            row.labels = self.labels


class Secrets:
    """The secret operations of a store."""

    def __init__(self, rt: StoreRuntime) -> None:
        self.rt = rt

    # --- checks shared by every change --------------------------------------------------------

    def trust(self, row: SecretRow, last: StateEvent | None) -> None:
        """Refuse to build on a row changed or rolled back through the database."""
        where = f"secret {row.namespace}/{row.name}"
        if not self.rt.seals.secret_ok(row):
            raise IntegrityError(f"{where}: its row was changed through the database")
        if last is None:
            return  # stored before schema 3 and not changed since
        if last.action in DELETIONS:
            raise IntegrityError(f"{where}: it was deleted, but its row is back in the database")
        if last.row_version != row.row_version or last.state != row.seal:
            raise IntegrityError(
                f"{where}: the database holds row version {row.row_version}, the audit log records "
                f"{last.row_version}: it was rolled back (delete it to start again)"
            )

    def _next_versions(self, existing: SecretRow | None, last: StateEvent | None) -> tuple[int, int]:
        """The secret version and row version a new version gets (never one recorded before)."""
        if existing is not None:
            return existing.version + 1, existing.row_version + 1
        if last is None:
            return 1, 1
        return (last.secret_version or 0) + 1, last.row_version + 1

    def missing(self, t: Ports, ns: str, name: str) -> Op[SecretNotFound]:
        """The error for a secret not found: NamespaceNotFound when the namespace itself does not exist."""
        exists = yield t.tx.namespace_state(ns)
        if exists is None:
            return NamespaceNotFound(f"namespace {ns!r} does not exist (no secret {name!r} either)")
        return SecretNotFound(f"no secret {name!r} in namespace {ns!r}")

    # --- put -----------------------------------------------------------------------------------

    def put(
        self,
        io: Ports,
        ns: str,
        name: str,
        value: str | bytes | bytearray | memoryview,
        *,
        expires: Expiry = None,
        category: str | None = None,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> Op[SecretInfo]:
        """Create or update a secret; every put makes a new secret version (see ``SecretStore.put``)."""
        rt = self.rt
        validate_name(name)
        payload = encode_value(value, rt.settings.max_value_size)
        change = _Change(
            expires,
            expiry_time(expires, time.time()),
            check_optional_text(category, "category", 128),
            category is not None,
            check_optional_text(description, "description", 1024),
            description is not None,
            None if labels is None else check_labels(labels),
        )
        who, req = rt.who(actor, request)
        try:
            fresh = False
            for _ in range(_KEY_RELOADS):
                active = yield from rt.keyring.active(io, ns, create=True, fresh=fresh, actor=who, request=req)

                def body(t: Ports, chosen: ActiveKey = active) -> Op[Any]:
                    return self._put_body(t, ns, name, payload, change, chosen, who, req)

                outcome = yield io.transact(True, body)
                if outcome is not _STALE:
                    break
                rt.keyring.forget(ns)
                fresh = True
            else:
                raise ConflictError(f"the keys of namespace {ns!r} kept changing during the put; try again")
        except (KeyUnavailable, ProviderError, IntegrityError, ConflictError) as exc:
            yield from self.audit_write_failure(io, ns, name, None, who, req, exc)
            raise exc
        rt.recent.add(ns, name)
        info: SecretInfo = outcome
        return info

    def _put_body(
        self,
        t: Ports,
        ns: str,
        name: str,
        payload: bytes,
        change: _Change,
        active: ActiveKey,
        who: str | None,
        req: dict[str, str],
    ) -> Op[Any]:
        rt = self.rt
        now = time.time()
        if (ns, name) not in rt.recent:
            # Most likely a new name: one statement that also checks the key state.
            row = rt.seals.seal_secret(change.fresh(ns, name, 1, 1, now))
            current = StoredVersion(ns, name, 1, seal_secret(active.key, active.version, ns, name, 1, payload), now)
            created = yield t.tx.create_secret(row, current, keys_seal=active.state_seal)
            if created:
                yield from self._written(t, row, "create", active.version, who, req)
                return info_of(row)
        held: NamespaceState | None = yield t.tx.namespace_state(ns)
        if held is None or held.seal != active.state_seal:
            return _STALE
        existing: SecretRow | None = yield t.tx.get_secret(ns, name)
        last: StateEvent | None = yield t.tx.last_state(ns, name)
        version, row_version = self._next_versions(existing, last)
        if existing is not None:
            self.trust(existing, last)
            expected = existing.row_version
            # A new version is never older than the one before it, whatever the clocks say.
            now = max(now, existing.updated_at, existing.version_created_at)
            row = existing
            change.apply(row, now)
            row.version, row.row_version, row.updated_at, row.version_created_at = version, row_version, now, now
            rt.seals.seal_secret(row)
            blob = seal_secret(active.key, active.version, ns, name, version, payload)
            yield t.tx.update_secret(row, expected, StoredVersion(ns, name, version, blob, now))
            yield from self._written(t, row, "update", active.version, who, req)
            return info_of(row, rt.access.pending(ns, name))
        if last is not None and last.action not in DELETIONS:
            raise IntegrityError(
                f"secret {ns}/{name}: the audit log records it, but its row is gone from the database "
                "(delete it to acknowledge, then put it again)"
            )
        if last is not None:
            now = max(now, last.position[0] / 1_000_000)
        row = rt.seals.seal_secret(change.fresh(ns, name, version, row_version, now))
        blob = seal_secret(active.key, active.version, ns, name, version, payload)
        created = yield t.tx.create_secret(
            row, StoredVersion(ns, name, version, blob, now), keys_seal=active.state_seal
        )
        if not created:
            raise ConflictError(f"secret {ns}/{name} was created by a concurrent writer")
        yield from self._written(t, row, "create", active.version, who, req)
        return info_of(row)

    def _written(
        self, t: Ports, row: SecretRow, action: str, key_version: int, who: str | None, req: dict[str, str]
    ) -> Op[None]:
        yield from self.rt.audit.append(
            t,
            [
                Event(
                    action,
                    namespace=row.namespace,
                    name=row.name,
                    secret_version=row.version,
                    actor=who,
                    context=req,
                    detail={"namespace_key_version": key_version},
                    row_version=row.row_version,
                    state=row.seal,
                )
            ],
        )

    def audit_write_failure(
        self,
        io: Ports,
        ns: str,
        name: str | None,
        action: str | None,
        who: str | None,
        req: dict[str, str],
        error: BaseException,
    ) -> Op[None]:
        """Record a write that failed (its own transaction rolled back, nothing written).

        ``action`` None means a put: ``create`` or ``update`` by whether the secret exists.
        """

        def body(t: Ports) -> Op[None]:
            chosen = action
            if chosen is None:
                try:
                    found = None if name is None else (yield t.tx.get_secret(ns, name))
                except MalformedRow:
                    found = True
                chosen = "create" if found is None else "update"
            yield from self.rt.audit.append(
                t,
                [
                    Event(
                        chosen,
                        "failure",
                        namespace=ns,
                        name=name,
                        actor=who,
                        context=req,
                        detail={"reason": failure_reason(error)},
                    )
                ],
            )

        # The write has failed either way; if even its failure cannot be recorded (the
        # store is down), the caller gets the write's own error, which says more.
        with contextlib.suppress(StorageError, ConflictError, IntegrityError):
            yield io.transact(True, body)

    # --- get -----------------------------------------------------------------------------------

    def get(
        self,
        io: Ports,
        ns: str,
        name: str,
        *,
        version: int | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> Op[Secret]:
        """Read a secret (see ``SecretStore.get``)."""
        rt = self.rt
        validate_name(name)
        if version is not None:
            check_count(version, "version")
        audited = rt.settings.audit_reads
        who, req = rt.who(actor, request) if audited or actor is not None or request is not None else (None, {})
        outcome: Secret | _Failure | _NeedKey = _NeedKey(0, version)
        for _ in range(_KEY_RELOADS):
            outcome = yield io.transact(
                audited,
                lambda t: self._read_body(t, ns, name, version, who, req, audited),  # noqa: B023
                read=True,
            )
            if type(outcome) is not _NeedKey:
                break
            try:
                yield from rt.keyring.key(io, ns, outcome.version)
            except (KeyUnavailable, IntegrityError, ProviderError) as exc:
                outcome = _Failure(exc, outcome.secret_version)
                if audited:
                    who, req = rt.who(actor, request)
                    yield from self._audit_read_failure(io, ns, name, outcome, who, req)
                break
        if type(outcome) is _Failure:
            if not audited:
                # Failures are audited even when successful reads are not.
                who, req = rt.who(actor, request)
                yield from self._audit_read_failure(io, ns, name, outcome, who, req)
            raise outcome.error
        if type(outcome) is _NeedKey:
            raise KeyUnavailable(f"namespace key {ns!r} version {outcome.version} keeps leaving the cache")
        # Read counts go in batches (the audit event, when reads are audited, is the durable record).
        if rt.access.note(ns, name, time.time()):
            yield from rt.access.flush(io)
        rt.recent.add(ns, name)
        assert isinstance(outcome, Secret)
        return outcome

    def _read_body(
        self,
        t: Ports,
        ns: str,
        name: str,
        version: int | None,
        who: str | None,
        req: dict[str, str],
        audited: bool,
    ) -> Op[Secret | _Failure | _NeedKey]:
        """One read inside a transaction: the secret, the failure (audited here when
        ``audited``), or the key version it lacks (then nothing is audited yet)."""
        rt = self.rt
        error: KmsboxError
        try:
            found = yield t.tx.read_secret(ns, name, version)
        except IntegrityError as exc:  # a malformed stored row
            failure = _Failure(exc, version)
        else:
            stored = None if found is None else found[1]
            if found is None:
                error = yield from self.missing(t, ns, name)
            elif not rt.seals.secret_ok(found[0]):
                error = IntegrityError(f"secret {ns}/{name}: its row was changed through the database")
            elif stored is None:
                error = SecretNotFound(
                    f"secret {name!r} in namespace {ns!r} has no readable current version"
                    if version is None
                    else f"secret {name!r} in namespace {ns!r} has no version {version}"
                )
            else:
                row = found[0]
                now = time.time()
                if row.status == "disabled":
                    error = SecretDisabled(f"secret {name!r} in namespace {ns!r} is disabled")
                elif row.expires_at is not None and row.expires_at <= now:
                    error = SecretExpired(f"secret {name!r} in namespace {ns!r} expired")
                else:
                    keyring = rt.keyring

                    def namespace_key(v: int) -> Any:
                        key = keyring.cached(ns, v)
                        if key is None:
                            raise _KeyMissing(v)
                        return key

                    try:
                        payload = open_secret(stored.blob, namespace_key, ns, name, stored.version, rt.data_keys)
                        value = decode_value(payload)
                    except _KeyMissing as missing:
                        return _NeedKey(missing.version, stored.version)
                    except (IntegrityError, KeyUnavailable, ProviderError) as exc:
                        error = exc
                    else:
                        if audited:
                            yield from rt.audit.append(
                                t,
                                [
                                    Event(
                                        "read",
                                        namespace=ns,
                                        name=name,
                                        secret_version=stored.version,
                                        actor=who,
                                        context=req,
                                    )
                                ],
                            )
                        count, _ = rt.access.pending(ns, name)
                        info = info_of(row, (count + 1, now))
                        return Secret._of(info, stored.version, value)
            failure = _Failure(error, version if stored is None else stored.version)
        if audited:
            yield from self._read_failure_event(t, ns, name, failure, who, req)
        return failure

    def _read_failure_event(
        self, t: Ports, ns: str, name: str, failure: _Failure, who: str | None, req: dict[str, str]
    ) -> Op[None]:
        error = failure.error
        result = "denied" if isinstance(error, (SecretDisabled, SecretExpired)) else "failure"
        yield from self.rt.audit.append(
            t,
            [
                Event(
                    "read",
                    result,
                    namespace=ns,
                    name=name,
                    secret_version=failure.version,
                    actor=who,
                    context=req,
                    detail={"reason": failure_reason(error)},
                )
            ],
        )

    def _audit_read_failure(
        self, io: Ports, ns: str, name: str, failure: _Failure, who: str | None, req: dict[str, str]
    ) -> Op[None]:
        yield io.transact(True, lambda t: self._read_failure_event(t, ns, name, failure, who, req), read=True)

    def try_get(
        self,
        io: Ports,
        ns: str,
        name: str,
        *,
        version: int | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> Op[GetResult]:
        """Like ``get`` but a :class:`GetResult` instead of a read failure."""
        try:
            secret = yield from self.get(io, ns, name, version=version, actor=actor, request=request)
        except READ_FAILURES as exc:
            return GetResult(False, None, failure_reason(exc), str(exc))
        return GetResult(True, secret)

    # --- metadata ------------------------------------------------------------------------------

    def info(self, io: Ports, ns: str, name: str) -> Op[SecretInfo]:
        """A secret's metadata (no value, not counted as a read)."""
        validate_name(name)

        def body(t: Ports) -> Op[SecretRow | SecretNotFound]:
            row: SecretRow | None = yield t.tx.get_secret(ns, name)
            if row is None:
                return (yield from self.missing(t, ns, name))
            return row

        row = yield io.transact(False, body, read=True)
        if isinstance(row, SecretNotFound):
            raise row
        if not self.rt.seals.secret_ok(row):
            raise IntegrityError(f"secret {ns}/{name}: its row was changed through the database")
        return info_of(row, self.rt.access.pending(ns, name))

    def list(
        self,
        io: Ports,
        ns: str | None,
        *,
        category: str | None = None,
        label: Any = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Op[Page[SecretInfo]]:
        """A page of metadata ordered by name (by namespace and name across namespaces)."""
        if type(limit) is not int or not 1 <= limit <= 10_000:
            raise ValueError("limit must be an integer from 1 to 10000")
        if category is not None:
            check_text(category, "category", 128)
        after = _parse_list_cursor(ns, cursor)
        filters = SecretFilter(category, parse_label_filters(label))

        def body(t: Ports) -> Op[builtins.list[SecretRow]]:
            rows: builtins.list[SecretRow] = yield t.tx.list_secrets(ns, filters, after, limit)
            return rows

        # A namespace that does not exist lists as empty (``namespace_exists`` tells them apart).
        rows: builtins.list[SecretRow] = yield io.transact(False, body, read=True)
        seals, access = self.rt.seals, self.rt.access
        # A row changed through the database is left out (diagnose and verify name it).
        items = [info_of(r, access.pending(r.namespace, r.name)) for r in rows if seals.secret_ok(r)]
        next_cursor = None
        if len(rows) == limit:
            last = rows[-1]
            next_cursor = last.name if ns is not None else f"{last.namespace}/{last.name}"
        return Page(items, next_cursor)

    def history(self, io: Ports, ns: str, name: str) -> Op[builtins.list[SecretVersionInfo]]:
        """Every version of a secret, oldest first (no values)."""
        validate_name(name)

        def body(t: Ports) -> Op[tuple[SecretRow | SecretNotFound, builtins.list[StoredVersion]]]:
            row: SecretRow | None = yield t.tx.get_secret(ns, name)
            if row is None:
                return (yield from self.missing(t, ns, name)), []
            versions: builtins.list[StoredVersion] = yield t.tx.list_versions(ns, name)
            return row, versions

        row, versions = yield io.transact(False, body, read=True)
        if isinstance(row, SecretNotFound):
            raise row
        return [
            SecretVersionInfo(v.version, v.created_at, _header_version(v), v.version == row.version) for v in versions
        ]

    # --- delete, disable, enable -----------------------------------------------------------------

    def delete(
        self, io: Ports, ns: str, name: str, *, actor: str | None = None, request: Mapping[str, str] | None = None
    ) -> Op[int]:
        """Delete a secret and every version; the number of versions removed.

        Also acknowledges a secret whose row was deleted through the database (the audit
        log still records it): 0 versions, and a put may then make it again.
        """
        validate_name(name)
        who, req = self.rt.who(actor, request)

        def body(t: Ports) -> Op[int | SecretNotFound]:
            malformed = False
            try:
                row: SecretRow | None = yield t.tx.get_secret(ns, name)
            except MalformedRow:
                row, malformed = None, True
            last: StateEvent | None = yield t.tx.last_state(ns, name)
            if row is None and not malformed and (last is None or last.action in DELETIONS):
                yield from self.rt.audit.append(
                    t,
                    [
                        Event(
                            "delete",
                            "failure",
                            namespace=ns,
                            name=name,
                            actor=who,
                            context=req,
                            detail={"reason": "not_found"},
                        )
                    ],
                )
                return (yield from self.missing(t, ns, name))
            count = yield t.tx.delete_secret(ns, name)
            row_version = max(row.row_version if row else 0, last.row_version if last else 0) + 1
            # The event records the highest version either the row or the audit log knows of:
            # a row rolled back through the database must not lower it (the next put starts above it).
            recorded = last.secret_version if last is not None else None
            secret_version = max(row.version if row else 0, recorded or 0) or None
            detail: dict[str, Any] = {"versions": count}
            if malformed:
                detail["malformed"] = True
            if row is None and not malformed:
                detail["row_missing"] = True
            if row is not None and recorded is not None and row.version < recorded:
                detail["stored_version"] = row.version  # the row was behind the log: rolled back
            yield from self.rt.audit.append(
                t,
                [
                    Event(
                        "delete",
                        namespace=ns,
                        name=name,
                        secret_version=secret_version,
                        actor=who,
                        context=req,
                        detail=detail,
                        row_version=row_version,
                    )
                ],
            )
            return int(count)

        count = yield io.transact(True, body)
        if isinstance(count, SecretNotFound):
            raise count
        assert isinstance(count, int)
        return count

    def set_status(
        self,
        io: Ports,
        ns: str,
        name: str,
        status: str,
        action: str,
        actor: str | None,
        request: Mapping[str, str] | None,
    ) -> Op[SecretInfo]:
        """Disable or enable a secret."""
        validate_name(name)
        who, req = self.rt.who(actor, request)

        def body(t: Ports) -> Op[SecretInfo | SecretNotFound]:
            row: SecretRow | None = yield t.tx.get_secret(ns, name)
            if row is None:
                yield from self.rt.audit.append(
                    t,
                    [
                        Event(
                            action,
                            "failure",
                            namespace=ns,
                            name=name,
                            actor=who,
                            context=req,
                            detail={"reason": "not_found"},
                        )
                    ],
                )
                return (yield from self.missing(t, ns, name))
            last: StateEvent | None = yield t.tx.last_state(ns, name)
            self.trust(row, last)
            expected = row.row_version
            row.status = status
            row.updated_at = max(time.time(), row.updated_at)
            row.row_version += 1
            self.rt.seals.seal_secret(row)
            yield t.tx.update_secret(row, expected, None)
            yield from self.rt.audit.append(
                t,
                [
                    Event(
                        action,
                        namespace=ns,
                        name=name,
                        secret_version=row.version,
                        actor=who,
                        context=req,
                        row_version=row.row_version,
                        state=row.seal,
                    )
                ],
            )
            return info_of(row, self.rt.access.pending(ns, name))

        info = yield io.transact(True, body)
        if isinstance(info, SecretNotFound):
            raise info
        assert isinstance(info, SecretInfo)
        return info

    def cleanup_expired(self, io: Ports, retention: Any, actor: str | None) -> Op[int]:
        """Delete secrets that expired more than ``retention`` ago, in batches; the count.

        A secret renewed by a concurrent put while the batch runs is left alone, and so is
        one whose row does not match its seal or its audit record (an expiry set through
        the database never makes cleanup delete a secret).
        """
        seconds = seconds_of(retention, "retention", allow_zero=True)
        who, req = self.rt.who(actor, None)
        cutoff = time.time() - seconds
        size = self.rt.settings.batch_size
        total = 0
        after: tuple[float, str, str] | None = None
        while True:

            def listing(t: Ports, after: tuple[float, str, str] | None = after) -> Op[list[SecretRow]]:
                rows: list[SecretRow] = yield t.tx.expired_secrets(cutoff, size, after=after)
                return rows

            listed: list[SecretRow] = yield io.transact(False, listing, read=True)
            if listed:
                last = listed[-1]
                # A row left alone (renewed, or changed through the database) is never listed twice.
                after = (last.expires_at or 0.0, last.namespace, last.name)
            # Held in (namespace, name) order, the lock order every writer keeps.
            keys = sorted({(r.namespace, r.name) for r in listed})

            def body(t: Ports, keys: list[tuple[str, str]] = keys) -> Op[int]:
                deleted = 0
                for ns, name in keys:
                    try:
                        current: SecretRow | None = yield t.tx.get_secret(ns, name)
                    except MalformedRow:
                        continue
                    if current is None or current.expires_at is None or current.expires_at >= cutoff:
                        continue
                    last: StateEvent | None = yield t.tx.last_state(ns, name)
                    try:
                        self.trust(current, last)
                    except IntegrityError:
                        continue  # diagnose and verify report it; cleanup never deletes it
                    count = yield t.tx.delete_secret(ns, name)
                    deleted += 1
                    yield from self.rt.audit.append(
                        t,
                        [
                            Event(
                                "expire",
                                namespace=ns,
                                name=name,
                                secret_version=current.version,
                                actor=who,
                                context=req,
                                detail={"versions": count, "expired_at": current.expires_at},
                                row_version=current.row_version + 1,
                            )
                        ],
                    )
                return deleted

            deleted: int = yield io.transact(True, body)
            total += deleted
            if len(listed) < size:
                return total


def _parse_list_cursor(ns: str | None, cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    if ns is not None:
        validate_name(cursor)  # a cursor is the last name of the page before
        return (ns, cursor)
    namespace, sep, name = cursor.partition("/")
    if not sep:
        raise ValueError("a cursor across namespaces looks like NAMESPACE/NAME")
    validate_name(name)
    return (namespace, name)


def _header_version(version: StoredVersion) -> int:
    try:
        return version.namespace_key_version
    except IntegrityError:
        return 0
