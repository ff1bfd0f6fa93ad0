"""The storage backend protocol and the rows it stores.

A backend stores secret rows, secret versions, namespace-key rows (with one wrap
per KEK), audit events and job checkpoints. Every group of writes happens inside
``backend.transaction()``; compare-and-set on a secret's ``row_version`` makes
concurrent writers fail with :class:`~kmsbox.errors.ConflictError` instead of
losing an update.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kmsbox.errors import ConflictError, IntegrityError
from kmsbox.kek import WrappedKey
from kmsbox.limits import check_text

__all__ = [
    "AuditFilter",
    "AuditRow",
    "JobRow",
    "MalformedRow",
    "NamespaceKeyRow",
    "SecretRow",
    "SecretVersionRow",
    "StaleAuditHead",
    "StorageBackend",
    "Transaction",
]


class MalformedRow(IntegrityError):
    """A stored row holds values no kmsbox wrote: a wrong type, an unknown status or
    broken JSON, changed through the database.

    ``namespace``, ``name`` and ``version`` say whose row it is where they could be
    read (None otherwise), so diagnosis can name it; ``position`` is the row's
    (name, version) exactly as stored, for a walk in that order to resume after it.
    """

    def __init__(
        self,
        message: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        version: int | None = None,
        position: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.namespace = namespace
        self.name = name
        self.version = version
        self.position = position


class StaleAuditHead(ConflictError):
    """The chain head given by ``audit_head`` was a cached one and has moved on: read it again."""


@dataclass
class SecretRow:
    """A secret's metadata and its latest version number (no value)."""

    namespace: str
    name: str
    version: int
    status: str
    created_at: float
    updated_at: float
    expires_at: float | None = None
    category: str | None = None
    description: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    access_count: int = 0
    last_accessed_at: float | None = None
    row_version: int = 1


@dataclass
class SecretVersionRow:
    """One version of a secret: the stored envelope and the namespace-key version under it."""

    namespace: str
    name: str
    version: int
    blob: bytes
    namespace_key_version: int
    created_at: float

    def __repr__(self) -> str:
        return (
            f"SecretVersionRow(namespace={self.namespace!r}, name={self.name!r}, version={self.version}, "
            f"namespace_key_version={self.namespace_key_version}, blob=<{len(self.blob)} bytes>)"
        )


@dataclass
class NamespaceKeyRow:
    """A version of a namespace key and its wraps (one per KEK)."""

    namespace: str
    version: int
    status: str
    created_at: float
    updated_at: float
    wraps: list[WrappedKey] = field(default_factory=list)


@dataclass
class AuditRow:
    """One audit event; ``mac`` chains it to the event before it."""

    seq: int
    time: float
    namespace: str | None
    name: str | None
    secret_version: int | None
    action: str
    result: str
    actor: str | None
    context: dict[str, str]
    detail: dict[str, Any]
    audit_key_version: int
    mac: bytes
    #: Read back with values no kmsbox wrote (changed through the database); the
    #: other fields are then placeholders, and ``verify`` reports the event.
    malformed: bool = False


@dataclass
class AuditFilter:
    """Filters for listing audit events (all optional). ``since`` and ``until`` are
    seconds since the epoch; a value of the wrong kind is a ValueError."""

    namespace: str | None = None
    name: str | None = None
    action: str | None = None
    result: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        for label in ("namespace", "name", "action", "result"):
            value = getattr(self, label)
            if value is not None:
                check_text(value, f"audit filter {label}", 255)
        for label in ("since", "until"):
            value = getattr(self, label)
            if value is None:
                continue
            # A datetime or text here would otherwise just match nothing.
            seconds = float(value) if type(value) is float or (type(value) is int and abs(value) < 2**53) else math.nan
            if not math.isfinite(seconds):
                raise ValueError(f"audit filter {label} must be a finite number of seconds since the epoch")
            setattr(self, label, seconds)


@dataclass
class JobRow:
    """The checkpoint of a resumable long job."""

    job_id: str
    kind: str
    state: str
    updated_at: float


@runtime_checkable
class Transaction(Protocol):
    """Operations inside one transaction. Rows read are consistent with rows written."""

    # secrets
    def get_secret(self, namespace: str, name: str, *, for_update: bool = False) -> SecretRow | None:
        """The secret's metadata row, locked for update when asked."""
        ...

    def secret_for_write(self, namespace: str, name: str) -> tuple[int | None, SecretRow | None]:
        """``(active_namespace_key_version(namespace), get_secret(..., for_update=True))``."""
        ...

    def create_secret(self, row: SecretRow, current: SecretVersionRow, active_key_version: int) -> bool:
        """Insert a new secret and its first version if the name is free and
        ``active_key_version`` is the namespace's active key version; else change nothing
        and return False."""
        ...

    def get_secret_with_blob(
        self, namespace: str, name: str, version: int | None
    ) -> tuple[SecretRow, SecretVersionRow | None] | None:
        """The metadata row and one version (the latest when ``version`` is None)."""
        ...

    def insert_secret(self, row: SecretRow, current: SecretVersionRow | None = None) -> None:
        """Insert a new secret, and ``current`` (its version ``row.version``) with it when
        given; ConflictError if it exists."""
        ...

    def update_secret(self, row: SecretRow, expected_row_version: int, current: SecretVersionRow | None = None) -> None:
        """Compare-and-set update; ConflictError if ``row_version`` moved on. ``current``,
        when given, is the new version ``row.version``, stored in the same write."""
        ...

    def delete_secret(self, namespace: str, name: str) -> int:
        """Delete a secret and all its versions; return the number of versions removed."""
        ...

    def delete_version(self, namespace: str, name: str, version: int) -> bool:
        """Delete one version; True if it existed."""
        ...

    def insert_version(self, row: SecretVersionRow) -> None:
        """Insert one version; ConflictError if it exists."""
        ...

    def list_versions(self, namespace: str, name: str) -> list[SecretVersionRow]:
        """Every version of a secret, oldest first."""
        ...

    def update_version_blob(
        self,
        namespace: str,
        name: str,
        version: int,
        blob: bytes,
        namespace_key_version: int,
        expected_namespace_key_version: int,
    ) -> bool:
        """Replace a version's blob if it is still under the expected namespace-key version."""
        ...

    def record_access(self, namespace: str, name: str, count: int, at: float) -> None:
        """Add ``count`` reads to the access counter and set the last access time."""
        ...

    def list_secrets(
        self, namespace: str, *, category: str | None, label: tuple[str, str] | None, after: str | None, limit: int
    ) -> list[SecretRow]:
        """A page of secrets ordered by name, after ``after``."""
        ...

    def expired_secrets(self, before: float, limit: int) -> list[SecretRow]:
        """Secrets whose expiry is before ``before`` (a batch of up to ``limit``; rows
        that do not decode are passed over, not counted)."""
        ...

    def namespaces(self) -> list[str]:
        """Every namespace that has a key (every namespace with a secret has one)."""
        ...

    def versions_under_key(
        self, namespace: str, namespace_key_version: int, after: tuple[str, int] | None, limit: int
    ) -> list[SecretVersionRow]:
        """A batch of versions whose DEK is wrapped by a namespace-key version."""
        ...

    def versions_in_namespace(
        self, namespace: str, after: tuple[Any, Any] | None, limit: int
    ) -> list[SecretVersionRow]:
        """A batch of all versions of a namespace, ordered by (name, version).

        ``after`` may also be a :class:`MalformedRow`'s ``position``, to resume past it."""
        ...

    def count_versions_by_key(self, namespace: str) -> dict[int, int]:
        """Number of secret versions per namespace-key version."""
        ...

    # namespace keys
    def namespace_keys(self, namespace: str) -> list[NamespaceKeyRow]:
        """Every namespace-key version of a namespace, with wraps, oldest first."""
        ...

    def insert_namespace_key(self, row: NamespaceKeyRow) -> None:
        """Insert a namespace-key version and its wraps; ConflictError if it exists."""
        ...

    def active_namespace_key_version(self, namespace: str) -> int | None:
        """The active namespace-key version (the newest if several), or None."""
        ...

    def set_namespace_key_status(self, namespace: str, version: int, status: str, at: float) -> None:
        """Change a namespace-key version's status."""
        ...

    def put_wrap(self, namespace: str, version: int, wrapped: WrappedKey, at: float) -> None:
        """Insert or replace the wrap of a namespace-key version under one KEK."""
        ...

    def delete_wrap(self, namespace: str, version: int, kek_uri: str) -> None:
        """Remove the wrap under one KEK."""
        ...

    def delete_namespace_key(self, namespace: str, version: int) -> None:
        """Delete a namespace-key version and its wraps."""
        ...

    # audit
    def audit_head(self) -> tuple[int, bytes]:
        """The last event's sequence number and MAC, locking the chain head until commit.

        A backend whose write transactions are serialised may answer from the head it
        last committed; ``append_audit`` then raises :class:`StaleAuditHead` if another
        writer has moved the head since, and the next ``audit_head`` reads it.
        """
        ...

    def append_audit(self, row: AuditRow) -> None:
        """Insert an event and move the chain head to it (ConflictError if ``row.seq`` exists)."""
        ...

    def list_audit(self, filters: AuditFilter, after_seq: int, limit: int) -> list[AuditRow]:
        """A page of events in sequence order after ``after_seq``
        (:class:`MalformedRow` if one of them was altered through the database)."""
        ...

    def audit_range(self, after_seq: int, limit: int) -> list[AuditRow]:
        """Events in sequence order, unfiltered (for verify); one altered through the
        database comes back with ``malformed`` set, its ``seq`` and ``mac`` kept."""
        ...

    # jobs and settings
    def get_job(self, job_id: str) -> JobRow | None:
        """A job checkpoint."""
        ...

    def put_job(self, row: JobRow) -> None:
        """Insert or replace a job checkpoint."""
        ...

    def delete_job(self, job_id: str) -> None:
        """Forget a finished job."""
        ...

    def list_jobs(self) -> list[JobRow]:
        """Unfinished jobs."""
        ...


@runtime_checkable
class StorageBackend(Protocol):
    """A store's persistence: opened from a URL, migrated on open."""

    url: str

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction: commits on success, rolls back on any exception."""
        ...

    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction."""
        ...

    def schema_version(self) -> int:
        """The applied schema version."""
        ...

    def describe(self) -> dict[str, str]:
        """Backend kind and location, with any password removed."""
        ...

    def close(self) -> None:
        """Close connections."""
        ...
