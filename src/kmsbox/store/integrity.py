"""The seals: MACs that authenticate what the database cannot be trusted with.

Everything that decides access or key choice is stored in plain columns (so the
database can index and filter it) and sealed here under keys derived from the store's
audit key, which the KEK wraps. Someone with only database access can neither change
a sealed row nor make one: a secret row (status, expiry, current version, metadata and
its row version), a namespace's key state (its key versions with their statuses), an
audit chain's head, and a job's checkpoint (where a resumed job starts). A *replayed*
old row still carries a valid seal: the audit log records the seal every change left,
and ``verify`` (and every put, and every load of a namespace's keys) compares the store
with it.

Which fields are sealed, and why, is specified in ``docs/format.md``.
"""

from __future__ import annotations

from kmsbox import format as fmt
from kmsbox._crypto import HmacSha256, constant_time_equal, derive_key
from kmsbox.storage.base import ChainHead, NamespaceKeyRow, NamespaceState, SecretRow

__all__ = ["SECRET_SEAL_SIZE", "Seals"]

#: Bytes of a secret row's seal (HMAC-SHA256 truncated; it is on every row).
SECRET_SEAL_SIZE = 16


class Seals:
    """Seals and checks rows under keys derived from the store's audit key."""

    __slots__ = ("_head", "_job", "_keys", "_secret", "_verified")

    def __init__(self, audit_key: bytes) -> None:
        self._secret = HmacSha256(derive_key(audit_key, "kmsbox seal v1: secret row"))
        # Seals already checked (or made) here, each with the exact fields it covers: a row
        # whose seal is in it with equal fields has a valid seal (the MAC is a function of
        # the fields), so reads of a hot secret skip the HMAC. Bounded; cleared when full.
        self._verified: dict[bytes, tuple[object, ...]] = {}
        self._keys = HmacSha256(derive_key(audit_key, "kmsbox seal v1: namespace key state"))
        self._head = HmacSha256(derive_key(audit_key, "kmsbox seal v1: audit chain head"))
        self._job = HmacSha256(derive_key(audit_key, "kmsbox seal v1: job checkpoint"))

    def __repr__(self) -> str:
        return "Seals(keys=***)"

    # --- secret rows -----------------------------------------------------------------------

    def secret(self, row: SecretRow) -> bytes:
        """The seal of a secret row: every field but the read counts."""
        return self._secret.digest(fmt.encode_record(b"secret", _secret_fields(row)))[:SECRET_SEAL_SIZE]

    def seal_secret(self, row: SecretRow) -> SecretRow:
        """Set ``row.seal`` and return the row."""
        row.seal = self.secret(row)
        self._remember(row.seal, _cache_key(row))
        return row

    def secret_ok(self, row: SecretRow) -> bool:
        """Whether the row is exactly as kmsbox sealed it."""
        key = _cache_key(row)
        if self._verified.get(row.seal) == key:
            return True
        try:
            expected = self.secret(row)
        except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
            return False
        if len(row.seal) == SECRET_SEAL_SIZE and constant_time_equal(expected, row.seal):
            self._remember(row.seal, key)
            return True
        return False

    def _remember(self, seal: bytes, key: tuple[object, ...]) -> None:
        if len(self._verified) >= _VERIFIED_LIMIT:
            self._verified.clear()
        self._verified[seal] = key

    # --- namespace key states --------------------------------------------------------------

    def key_state(self, namespace: str, generation: int, created_at: float, rows: list[NamespaceKeyRow]) -> bytes:
        """The seal of a namespace's key state: its key versions, statuses and times."""
        versions = [[r.version, r.status, repr(r.created_at), repr(r.updated_at)] for r in sorted(rows, key=_version)]
        return self._keys.digest(fmt.encode_record(b"keys", (namespace, generation, created_at, versions)))

    def key_state_ok(self, state: NamespaceState, rows: list[NamespaceKeyRow]) -> bool:
        """Whether the stored key state and key rows are exactly as kmsbox sealed them."""
        try:
            expected = self.key_state(state.namespace, state.generation, state.created_at, rows)
        except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
            return False
        return constant_time_equal(expected, state.seal)

    # --- audit chain heads -----------------------------------------------------------------

    def head(self, head: ChainHead) -> bytes:
        """The seal of a chain head."""
        return self._head.digest(fmt.encode_record(b"head", (head.chain, head.seq, head.at, head.mac.hex())))

    def head_ok(self, head: ChainHead) -> bool:
        """Whether a chain head is one kmsbox wrote (a new, empty chain has no seal)."""
        if head.seq == 0 and head.mac == b"" and not head.seal:
            return True
        return constant_time_equal(self.head(head), head.seal)

    # --- job checkpoints ------------------------------------------------------------------------

    def job(self, job_id: str, kind: str, fields: tuple[object, ...]) -> bytes:
        """The seal of a job checkpoint: the job, its kind and every field it resumes from."""
        return self._job.digest(fmt.encode_record(b"job", (job_id, kind, fields)))

    def job_ok(self, job_id: str, kind: str, fields: tuple[object, ...], seal: bytes) -> bool:
        """Whether a job checkpoint is one kmsbox wrote for this job."""
        try:
            expected = self.job(job_id, kind, fields)
        except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
            return False
        return constant_time_equal(expected, seal)


def _version(row: NamespaceKeyRow) -> int:
    return row.version


_VERIFIED_LIMIT = 16384


def _secret_fields(row: SecretRow) -> tuple[object, ...]:
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
        row.labels,
        row.row_version,
        row.version_created_at,
    )


def _cache_key(row: SecretRow) -> tuple[object, ...]:
    # The sealed fields, hashable and compared exactly (types included: 1 is not 1.0).
    labels = tuple(sorted(row.labels.items())) if row.labels else ()
    return (
        row.namespace, row.name, row.version, row.status, row.created_at, row.updated_at, row.expires_at,
        row.category, row.description, labels, row.row_version, row.version_created_at,
        type(row.created_at), type(row.updated_at), type(row.expires_at), type(row.version_created_at),
    )  # fmt: skip
