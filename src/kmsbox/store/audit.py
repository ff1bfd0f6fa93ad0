"""The append-only, tamper-evident audit log of a store.

Each event's MAC is HMAC-SHA256, under an audit key wrapped by the KEK, of the
previous event's MAC and this event's canonical bytes; so changing, dropping or
reordering events through the database alone breaks the chain, and a saved
checkpoint (the head) also reveals a truncated tail. Events never hold values.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsbox import format as fmt
from kmsbox._crypto import HmacSha256, constant_time_equal
from kmsbox.errors import StorageError
from kmsbox.limits import MAX_COUNT, check_count
from kmsbox.storage.base import AuditFilter, AuditRow, MalformedRow, StaleAuditHead, StorageBackend, Transaction

__all__ = ["ACTIONS", "RESULTS", "AuditEvent", "AuditLog", "AuditVerification", "Checkpoint"]

ACTIONS = (
    "create",
    "update",
    "read",
    "delete",
    "disable",
    "enable",
    "expire",
    "rotate",
    "rewrap",
    "reencrypt",
    "repair",
    "migrate",
    "retire",
    "compromise",
    "import",
    "diagnose",
)
RESULTS = ("success", "failure", "denied")
_ACTION_SET = frozenset(ACTIONS)
_RESULT_SET = frozenset(RESULTS)
_BATCH = 500


@dataclass(frozen=True)
class AuditEvent:
    """One event as returned by ``audit list``."""

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "seq": self.seq,
            "time": self.time,
            "namespace": self.namespace,
            "name": self.name,
            "secret_version": self.secret_version,
            "action": self.action,
            "result": self.result,
            "actor": self.actor,
            "context": dict(self.context),
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain at some moment; keep it outside the database."""

    seq: int
    mac: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"seq": self.seq, "mac": self.mac}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Parse a checkpoint; ValueError if malformed."""
        try:
            seq, mac = data["seq"], data["mac"]
        except (KeyError, TypeError):
            raise ValueError("checkpoint needs 'seq' and 'mac'") from None
        if type(seq) is not int or not 0 <= seq <= MAX_COUNT or type(mac) is not str:
            raise ValueError(f"checkpoint 'seq' must be an integer from 0 to {MAX_COUNT} and 'mac' a hex string")
        try:
            bytes.fromhex(mac)
        except ValueError:
            raise ValueError("checkpoint 'mac' is not hex") from None
        return cls(seq, mac)


@dataclass
class AuditVerification:
    """The result of verifying the chain: ``ok`` and what was found."""

    ok: bool
    events_checked: int
    head_seq: int
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "head_seq": self.head_seq,
            "problems": self.problems,
        }


def _mac_input(row: AuditRow) -> bytes:
    return fmt.encode_audit_record(
        [
            row.seq,
            repr(float(row.time)),
            row.namespace,
            row.name,
            row.secret_version,
            row.action,
            row.result,
            row.actor,
            row.context,
            row.detail,
            row.audit_key_version,
        ]
    )


def _event(row: AuditRow) -> AuditEvent:
    return AuditEvent(
        row.seq,
        row.time,
        row.namespace,
        row.name,
        row.secret_version,
        row.action,
        row.result,
        row.actor,
        row.context,
        row.detail,
    )


class AuditLog:
    """Appends and verifies the event chain of one store."""

    def __init__(self, backend: StorageBackend, key: bytes, key_version: int = 1) -> None:
        self._backend = backend
        self._mac = HmacSha256(key)
        self._key_version = key_version

    def __repr__(self) -> str:
        return "AuditLog(key=***)"

    def append(
        self,
        tx: Transaction,
        *,
        action: str,
        result: str,
        namespace: str | None = None,
        name: str | None = None,
        secret_version: int | None = None,
        actor: str | None = None,
        context: Mapping[str, str] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append an event inside ``tx`` (so it commits or rolls back with the change)."""
        if action not in _ACTION_SET:
            raise ValueError(f"unknown audit action {action!r}")
        if result not in _RESULT_SET:
            raise ValueError(f"unknown audit result {result!r}")
        row = AuditRow(
            0,
            time.time(),
            namespace,
            name,
            secret_version,
            action,
            result,
            actor,
            dict(context) if context else {},
            dict(detail) if detail else {},
            self._key_version,
            b"",
        )
        for _ in range(2):  # a remembered head that moved on is read again, once
            seq, prev_mac = tx.audit_head()
            row.seq = seq + 1
            row.mac = self._mac.digest(prev_mac + _mac_input(row))
            try:
                tx.append_audit(row)
            except StaleAuditHead:
                continue
            return row.seq
        raise StorageError("the audit chain head kept moving inside one transaction")

    def events(
        self, filters: AuditFilter | None = None, *, after: int = 0, limit: int = 100
    ) -> tuple[list[AuditEvent], int | None]:
        """A page of events after cursor ``after``; returns (events, next cursor or None).

        ValueError for a cursor or limit out of range."""
        check_count(after, "audit cursor", lowest=0)
        if type(limit) is not int or not 1 <= limit <= 10_000:
            raise ValueError("limit must be an integer from 1 to 10000")
        with self._backend.read() as tx:
            rows = tx.list_audit(filters or AuditFilter(), after, limit)
        next_cursor = rows[-1].seq if len(rows) == limit else None
        return [_event(r) for r in rows], next_cursor

    def iter_events(self, filters: AuditFilter | None = None) -> Iterator[AuditEvent]:
        """Every matching event, streamed in batches."""
        after: int | None = 0
        while after is not None:
            events, after = self.events(filters, after=after, limit=_BATCH)
            yield from events

    def checkpoint(self) -> Checkpoint:
        """The current head of the chain."""
        with self._backend.read() as tx:
            seq, mac = tx.audit_head()
        return Checkpoint(seq, mac.hex())

    def verify(self, checkpoint: Checkpoint | None = None) -> AuditVerification:
        """Recompute the chain from the first event; report every break found.

        With a ``checkpoint`` from earlier, also detect a tail cut back past it.
        """
        problems: list[str] = []
        prev_mac = b""
        expected_seq = 1
        checked = 0
        checkpoint_seen = checkpoint is None or checkpoint.seq == 0
        after = 0
        while True:
            try:
                with self._backend.read() as tx:
                    rows = tx.audit_range(after, _BATCH)
            except MalformedRow as exc:  # a value the driver cannot read at all
                problems.append(f"events after {after} cannot be read ({exc}): the log was altered")
                break
            for row in rows:
                if row.seq != expected_seq:
                    problems.append(f"events {expected_seq}..{row.seq - 1} are missing (or reordered)")
                mac_input = None if row.malformed else _readable_mac_input(row)
                if mac_input is None:
                    problems.append(f"event {row.seq} was altered: it holds values kmsbox never writes")
                elif not constant_time_equal(self._mac.digest(prev_mac + mac_input), row.mac):
                    problems.append(f"event {row.seq} was altered, moved or does not follow its predecessor")
                if checkpoint is not None and row.seq == checkpoint.seq:
                    checkpoint_seen = True
                    if not constant_time_equal(row.mac, bytes.fromhex(checkpoint.mac)):
                        problems.append(f"event {row.seq} differs from the checkpoint")
                prev_mac = row.mac
                expected_seq = row.seq + 1
                checked += 1
                if len(problems) >= 100:
                    break
            if len(rows) < _BATCH or len(problems) >= 100:
                break
            after = rows[-1].seq
        head_seq = expected_seq - 1
        if not checkpoint_seen and checkpoint is not None:
            problems.append(f"event {checkpoint.seq} from the checkpoint is gone: the log was truncated")
        return AuditVerification(not problems, checked, head_seq, problems)


def _readable_mac_input(row: AuditRow) -> bytes | None:
    """An event's MAC input, or None if what was read back cannot be one (a lone surrogate)."""
    try:
        return _mac_input(row)
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError):
        return None
