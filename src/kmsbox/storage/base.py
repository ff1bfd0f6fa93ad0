"""The storage backend protocol and the rows it stores.

A backend keeps five things for a store: secret rows (with their current envelope),
older secret versions, namespace keys (one state row per namespace, one row per key
version with a wrap per KEK), audit events in several hash chains, and job
checkpoints. Every group of writes happens inside ``backend.transaction()``.

The protocol is written in the store's terms. What a backend must guarantee:

- **Atomic transactions.** Everything done inside ``transaction()`` commits together
  or not at all; ``read()`` sees committed data only.
- **Holds.** Inside a write transaction, a secret read with :meth:`Transaction.get_secret`
  and a namespace state read with :meth:`Transaction.namespace_state` are *held* until
  the transaction ends: no other transaction changes that secret, and no other
  transaction changes that namespace's key state (``change=True``: nobody else may
  even use it). A backend whose write transactions run one at a time holds
  everything already.
- **Lost races are typed.** A concurrent writer that got there first makes the
  loser raise :class:`~kmsbox.errors.ConflictError` (the store retries the whole
  transaction); a deadlock or serialization failure of the engine is a ConflictError
  too. No other error may mean "try again".
- **Lock order.** The store takes holds in one fixed order, so that two transactions
  never wait on each other: namespace states (by namespace), then secrets (by
  namespace and name), then access counters, then audit chains (by chain number,
  always last, in :meth:`Transaction.append_audit`). A backend must not take locks
  in another order behind the store's back.
- **Rows come back as written, or as MalformedRow.** A value changed through the
  database to something kmsbox never writes is a :class:`MalformedRow`, never a
  TypeError further on.

The memory backend (pure Python) and the SQL backends (SQLite, PostgreSQL through
:mod:`kmsbox.storage.sql`) implement it; so can a third party's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kmsbox import format as fmt
from kmsbox.errors import IntegrityError
from kmsbox.kek import WrappedKey
from kmsbox.limits import check_text

__all__ = [
    "KEY_STATUSES",
    "SECRET_STATUSES",
    "AuditFilter",
    "AuditPosition",
    "AuditRow",
    "ChainHead",
    "JobRow",
    "MalformedRow",
    "NamespaceKeyRow",
    "NamespaceState",
    "SecretFilter",
    "SecretRow",
    "StateEvent",
    "StorageBackend",
    "StoredVersion",
    "Transaction",
    "first_micros",
]


#: The statuses kmsbox writes on a secret row and on a namespace-key row; a stored row
#: with any other is malformed.
SECRET_STATUSES = ("active", "disabled")
KEY_STATUSES = ("active", "rotating", "retired", "compromised")


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


@dataclass(slots=True)
class SecretRow:
    """A secret's metadata (no value).

    ``row_version`` counts every change of the row, across deletes and re-creations
    of the name; ``seal`` is the MAC that authenticates every field but the access
    counts (``b""`` for a row not sealed yet, from before schema 3). ``access_count``
    and ``last_accessed_at`` are totals over every process's flushed counters.
    """

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
    row_version: int = 1
    version_created_at: float = 0.0
    seal: bytes = b""
    access_count: int = 0
    last_accessed_at: float | None = None


@dataclass(slots=True)
class StoredVersion:
    """One version of a secret: its stored envelope.

    The namespace-key version under it is read from the envelope's own header (which
    the AEAD authenticates), never from a copy in another column.
    """

    namespace: str
    name: str
    version: int
    blob: bytes
    created_at: float

    @property
    def namespace_key_version(self) -> int:
        """The namespace-key version the envelope's header names (IntegrityError if malformed)."""
        return fmt.secret_namespace_key_version(self.blob)

    def __repr__(self) -> str:
        return (
            f"StoredVersion(namespace={self.namespace!r}, name={self.name!r}, version={self.version}, "
            f"blob=<{len(self.blob)} bytes>)"
        )


@dataclass(slots=True)
class NamespaceKeyRow:
    """A version of a namespace key and its wraps (one per KEK)."""

    namespace: str
    version: int
    status: str
    created_at: float
    updated_at: float
    wraps: list[WrappedKey] = field(default_factory=list)


@dataclass(slots=True)
class NamespaceState:
    """A namespace's key state: it exists, and ``seal`` authenticates the list of its
    key versions with their statuses and times. ``generation`` counts key-state
    changes (each one is audited with the seal it produced)."""

    namespace: str
    generation: int
    created_at: float
    seal: bytes


#: Where an event stands in the store-wide order of ``audit list``: (time in
#: microseconds, chain, sequence number in the chain).
AuditPosition = tuple[int, int, int]


@dataclass(slots=True)
class AuditRow:
    """One audit event; ``mac`` chains it to the event before it in its chain.

    ``at`` (microseconds) grows strictly within a chain. ``row_version`` and ``state``
    are set on events that change a secret (the row version and seal it left) or a
    namespace's key state (its generation and seal; ``name`` is None): ``verify``
    checks the store against them. ``record`` is the MAC input format: 1 for events
    written before schema 3, 2 after.
    """

    chain: int
    seq: int
    at: int
    time: float
    namespace: str | None
    name: str | None
    secret_version: int | None
    action: str
    result: str
    actor: str | None
    context: dict[str, str]
    detail: dict[str, Any]
    key_version: int
    mac: bytes
    record: int = 2
    row_version: int | None = None
    state: bytes | None = None
    #: Read back with values no kmsbox wrote (changed through the database); the
    #: other fields are then placeholders, and ``verify`` reports the event.
    malformed: bool = False

    @property
    def position(self) -> AuditPosition:
        """The event's place in the store-wide order."""
        return (self.at, self.chain, self.seq)


@dataclass(slots=True)
class ChainHead:
    """The last event of one audit chain (``seq`` 0 and empty ``mac`` for a new chain);
    ``seal`` authenticates the head itself, so that a chain cut back together with
    its head row is found."""

    chain: int
    seq: int
    at: int
    mac: bytes
    seal: bytes = b""


@dataclass(slots=True)
class StateEvent:
    """The last state-changing event of a secret or a namespace (for ``verify``)."""

    namespace: str
    name: str | None
    row_version: int
    action: str
    state: bytes | None
    secret_version: int | None
    position: AuditPosition


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


@dataclass(frozen=True)
class SecretFilter:
    """Filters for listing secrets: a category, and labels that must all match."""

    category: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class JobRow:
    """The checkpoint of a resumable long job."""

    job_id: str
    kind: str
    state: str
    updated_at: float


def first_micros(seconds: float) -> int:
    """The first whole microsecond at or after ``seconds`` (how an audit time filter on
    seconds becomes one on events' ``at``)."""
    micros = math.floor(seconds * 1_000_000) - 1
    while micros / 1_000_000 < seconds:
        micros += 1
    return micros


#: ``seal(head) -> (events, new head)``: the events to append after ``head``, with their
#: sequence numbers, times and MACs filled in, and the head they leave.
SealEvents = Callable[[ChainHead], tuple[list[AuditRow], ChainHead]]


@runtime_checkable
class Transaction(Protocol):
    """Operations inside one transaction (see the module docstring for the guarantees)."""

    # --- namespaces and their keys -------------------------------------------------------

    def namespace_state(self, namespace: str, *, change: bool = False) -> NamespaceState | None:
        """The namespace's key state, or None if the namespace does not exist.

        In a write transaction it is held until the transaction ends: shared (others may
        use the same keys) or, with ``change``, exclusively (to change the key state).
        """
        ...

    def namespace_keys(self, namespace: str) -> list[NamespaceKeyRow]:
        """Every key version of a namespace with its wraps, oldest first."""
        ...

    def save_namespace_keys(self, state: NamespaceState, upsert: list[NamespaceKeyRow], delete: list[int]) -> None:
        """Write a namespace's new key state: insert or replace the ``upsert`` rows (each
        with its complete set of wraps), delete the ``delete`` versions, store ``state``.
        Rows and state are stored exactly as given (times included); the deletes come
        before the upserts.

        The caller holds the state with ``change=True``; for a namespace that does not
        exist yet (``namespace_state`` found none in this transaction) it is created, and
        a concurrent creator, even one that committed after that read, makes this a
        ConflictError: never an overwrite of the other creator's keys.
        """
        ...

    def namespaces(self, after: str | None, limit: int) -> list[str]:
        """A page of namespace names in order, after ``after``."""
        ...

    # --- secrets ---------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> SecretRow | None:
        """A secret's row (held until the end of a write transaction)."""
        ...

    def read_secret(
        self, namespace: str, name: str, version: int | None
    ) -> tuple[SecretRow, StoredVersion | None] | None:
        """A secret's row and one version (the current one when ``version`` is None;
        None in the pair when that version has no envelope)."""
        ...

    def create_secret(self, row: SecretRow, current: StoredVersion, *, keys_seal: bytes) -> bool:
        """Create a secret with its first version if the name is free, the audit log
        records no state of the name at or beyond ``row.row_version`` (so no version
        number is ever used twice), and the namespace's key state is still the one sealed
        by ``keys_seal`` (held until the end of the transaction). Otherwise write nothing
        and return False.

        ``current`` is version ``row.version``, created at ``row.version_created_at``
        (the row's time is the one stored). The audit log is read as committed when the
        call starts: a state of the name that a concurrent writer records is seen only if
        the caller held the name first (``get_secret`` in this transaction, before reading
        :meth:`last_state`), as the store does before it creates a name it has seen."""
        ...

    def update_secret(self, row: SecretRow, expected_row_version: int, current: StoredVersion | None) -> None:
        """Compare-and-set on ``row_version`` (ConflictError if it moved on, or if the
        secret is gone); read counts are not part of it and are kept.

        With ``current`` (the new version ``row.version``, its time stored as the row's
        ``version_created_at``), the previous current version moves to the history in the
        same write. Without it the row's ``version`` and ``version_created_at`` stay as
        stored, whatever ``row`` says.
        """
        ...

    def delete_secret(self, namespace: str, name: str) -> int:
        """Delete a secret, its versions and its access counts; the number of versions removed."""
        ...

    def delete_version(self, namespace: str, name: str, version: int) -> bool:
        """Delete one older version (repair of an unrecoverable one); True if it existed.
        The current version lives with its row and is not one (False)."""
        ...

    def list_versions(self, namespace: str, name: str) -> list[StoredVersion]:
        """Every stored version of a secret, oldest first."""
        ...

    def list_secrets(
        self, namespace: str | None, filters: SecretFilter, after: tuple[str, str] | None, limit: int
    ) -> list[SecretRow]:
        """A page of secrets ordered by (namespace, name) after ``after``; in one
        namespace, or in every namespace when ``namespace`` is None. Filters apply before
        ``limit``, so a page is short only at the end."""
        ...

    def expired_secrets(
        self, before: float, limit: int, *, after: tuple[float, str, str] | None = None
    ) -> list[SecretRow]:
        """Up to ``limit`` secrets whose expiry is before ``before``, ordered by (expiry,
        namespace, name) after ``after`` (rows that do not decode are passed over)."""
        ...

    def versions(
        self, namespace: str, after: tuple[Any, Any] | None, limit: int, *, key_version: int | None = None
    ) -> list[StoredVersion]:
        """A batch of a namespace's versions ordered by (name, version) after ``after``;
        only those whose envelope header names ``key_version`` when it is given.

        Here and in :meth:`replace_envelope` and :meth:`versions_per_key`, "the header
        names" means the 4-byte key-version field at ``format.SECRET_KEY_VERSION_AT``,
        read without checking the rest of the header (the AEAD authenticates it on use);
        an envelope too short to hold it names 0.

        ``after`` may also be a :class:`MalformedRow`'s ``position``, to resume past it."""
        ...

    def replace_envelope(self, namespace: str, name: str, version: int, blob: bytes, expected_key_version: int) -> bool:
        """Replace a version's envelope if its header still names ``expected_key_version``."""
        ...

    def versions_per_key(self, namespace: str) -> dict[int, int]:
        """How many versions each namespace-key version wraps, by envelope header (a
        header that does not parse counts under 0)."""
        ...

    # --- read bookkeeping ------------------------------------------------------------------

    def add_access(self, counter: int, counts: list[tuple[str, str, int, float]]) -> None:
        """Add ``(namespace, name, reads, last read)`` to this process's ``counter``
        (rows of another counter are never touched; ``counts`` is in key order). The
        last read kept is the latest one, whatever order they arrive in."""
        ...

    def fold_access(self, counter: int) -> None:
        """Move ``counter``'s counts into the shared totals (when a store closes).
        Counter 0 holds the totals: folding it changes nothing."""
        ...

    # --- audit -----------------------------------------------------------------------------

    def append_audit(self, chain: int, seal: SealEvents) -> ChainHead:
        """Append events to ``chain``: hold its head until the transaction ends, call
        ``seal(head)`` and store the events and head it returns (the new head).

        A new chain's head is ``ChainHead(chain, 0, 0, b"")``. ``seal`` may be called more
        than once (a backend may try a head it remembers first); only what the call given
        the real head returned is stored. An exception from ``seal`` propagates and
        stores none of its events (a new chain may keep its empty head)."""
        ...

    def audit_heads(self) -> list[ChainHead]:
        """The head of every chain, by chain number."""
        ...

    def audit_events(self, filters: AuditFilter, after: AuditPosition | None, limit: int) -> list[AuditRow]:
        """A page of events in store-wide order after ``after``. An event altered
        through the database comes back with ``malformed`` set (its position and MAC kept);
        a value the driver cannot read at all (text that is not UTF-8 on SQLite) makes the
        page a :class:`MalformedRow`."""
        ...

    def audit_events_at(self, positions: list[AuditPosition]) -> list[AuditRow]:
        """The events at these positions (those that exist, in any order)."""
        ...

    def last_state(self, namespace: str, name: str | None) -> StateEvent | None:
        """The newest state-changing event of a secret (or, with ``name`` None, of the
        namespace's key state): the highest ``row_version`` recorded."""
        ...

    def state_events(self, after: tuple[str, str, int] | None, limit: int) -> list[StateEvent]:
        """State-changing events of secrets ordered by (namespace, name, row_version),
        after ``after`` (for ``verify``)."""
        ...

    # --- jobs ------------------------------------------------------------------------------

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
        """A write transaction: commits on success, rolls back on any exception.

        One transaction at a time per thread: starting one inside another is a
        RuntimeError. After ``close()``, a StorageError."""
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
