"""What every part of the store shares: its backend, keys, audit log and the
write-with-retry, actor and namespace plumbing. The service, lifecycle,
diagnosis and import mixins all build on :class:`StoreCore`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from kmsbox._crypto import Aead
from kmsbox.errors import (
    ConflictError,
    IntegrityError,
    KeyUnavailable,
    ProviderError,
    SecretDisabled,
    SecretExpired,
    SecretNotFound,
    StorageError,
)
from kmsbox.keys import seal_secret
from kmsbox.storage.base import MalformedRow, NamespaceKeyRow, SecretRow, SecretVersionRow, StorageBackend, Transaction
from kmsbox.store.context import check_actor, check_merged, check_request, current_actor, current_request
from kmsbox.store.keyring import AUDIT_NAMESPACE, NamespaceKeyring
from kmsbox.store.names import validate_namespace

if TYPE_CHECKING:
    from kmsbox.store.audit import AuditLog

__all__ = ["StoreCore", "drop_passed_expiry", "failure_reason"]

T = TypeVar("T")
_WRITE_RETRIES = 20


def failure_reason(error: BaseException) -> str:
    """The ``reason`` an audit event and a ``GetResult`` give for a failure."""
    if isinstance(error, SecretNotFound):
        return "not_found"
    if isinstance(error, SecretExpired):
        return "expired"
    if isinstance(error, SecretDisabled):
        return "disabled"
    if isinstance(error, KeyUnavailable):
        return "key_unavailable"
    if isinstance(error, IntegrityError):
        return "integrity"
    if isinstance(error, ProviderError):
        return "provider_error"
    if isinstance(error, ConflictError):
        return "conflict"
    return type(error).__name__


def drop_passed_expiry(row: SecretRow, now: float) -> None:
    """An expiry that has passed went with the value it expired: a new version written
    over it without an expiry of its own starts without one."""
    if row.expires_at is not None and row.expires_at <= now:
        row.expires_at = None


class StoreCore:
    """Shared state and plumbing of a :class:`~kmsbox.store.service.SecretStore`."""

    backend: StorageBackend
    keyring: NamespaceKeyring
    audit: AuditLog
    batch_size: int
    max_value_size: int

    def _who(self, actor: str | None, request: Mapping[str, str] | None) -> tuple[str | None, dict[str, str]]:
        """The actor and request context for an audit event: per call, else per block
        (ValueError for an actor or context an event cannot hold)."""
        merged = dict(current_request())
        if request is not None:
            merged.update(check_request(request))
            check_merged(merged)
        return (current_actor() if actor is None else check_actor(actor)), merged

    def _write(self, op: Callable[[Transaction], T]) -> T:
        """Run ``op`` in a write transaction, retrying when a concurrent writer won."""
        delay = 0.001
        for attempt in range(_WRITE_RETRIES):
            try:
                with self.backend.transaction() as tx:
                    return op(tx)
            except ConflictError:
                if attempt == _WRITE_RETRIES - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        raise AssertionError("unreachable")

    def _audit_write_failure(
        self, ns: str, name: str | None, action: str | None, who: str | None, req: dict[str, str], error: Exception
    ) -> None:
        """Record a write that failed (its own transaction rolled back, nothing written).

        ``action`` None means a put: ``create`` or ``update`` by whether the secret exists.
        """

        def op(tx: Transaction) -> None:
            chosen = action
            if chosen is None:
                try:
                    chosen = "create" if name is None or tx.get_secret(ns, name) is None else "update"
                except MalformedRow:
                    chosen = "update"
            self.audit.append(
                tx,
                action=chosen,
                result="failure",
                namespace=ns,
                name=name,
                actor=who,
                context=req,
                detail={"reason": failure_reason(error)},
            )

        # The write has failed either way; if even its failure cannot be recorded (the
        # store is down), the caller gets the write's own error, which says more.
        with contextlib.suppress(StorageError, ConflictError):
            self._write(op)

    def _write_version(
        self,
        tx: Transaction,
        existing: SecretRow | None,
        fresh: SecretRow,
        payload: bytes,
        namespace_key: tuple[int, Aead],
        now: float,
    ) -> tuple[SecretRow, str]:
        """Seal ``payload`` as the next version of a secret inside ``tx``.

        ``existing`` is the locked current row (its metadata already updated by the
        caller) or None, when ``fresh`` (version 1) is inserted. Returns the row
        written and the audit action, ``create`` or ``update``.
        """
        nk_version, nk = namespace_key
        row = fresh if existing is None else existing
        version = 1 if existing is None else existing.version + 1
        blob = seal_secret(nk, nk_version, row.namespace, row.name, version, payload)
        current = SecretVersionRow(row.namespace, row.name, version, blob, nk_version, now)
        if existing is None:
            tx.insert_secret(row, current)
            return row, "create"
        expected = row.row_version
        row.version, row.updated_at, row.row_version = version, now, row.row_version + 1
        tx.update_secret(row, expected, current)
        return row, "update"

    def _create(self, tx: Transaction, fresh: SecretRow, payload: bytes, now: float) -> int | None:
        """Insert ``fresh`` as version 1 in one statement, sealed under the namespace key
        last seen active; the key version used, or None (the name is taken, the key moved
        on or is not cached) and nothing written."""
        guess = self.keyring.last_active(fresh.namespace)
        if guess is None:
            return None
        nk_version, nk = guess
        blob = seal_secret(nk, nk_version, fresh.namespace, fresh.name, 1, payload)
        current = SecretVersionRow(fresh.namespace, fresh.name, 1, blob, nk_version, now)
        return nk_version if tx.create_secret(fresh, current, nk_version) else None

    def namespaces(self) -> list[str]:
        """Every namespace that has a key."""
        with self.backend.read() as tx:
            return [n for n in tx.namespaces() if n != AUDIT_NAMESPACE]

    def _targets(self, namespace: str | None, *, include_audit: bool = False) -> list[str]:
        """One namespace, or every namespace (and the audit key's, if asked)."""
        if namespace is not None:
            return [validate_namespace(namespace)]
        names = self.namespaces()
        return ([AUDIT_NAMESPACE] if include_audit else []) + names

    def _keys(self, namespace: str) -> list[NamespaceKeyRow]:
        """Every namespace-key version of a namespace, with wraps."""
        with self.backend.read() as tx:
            return tx.namespace_keys(namespace)
