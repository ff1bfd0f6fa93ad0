"""The append-only, tamper-evident audit log of a store, in several hash chains.

Events are spread over ``chains`` chains (each thread or task of a process keeps to a
home chain), so that no single chain head serialises the store: transactions of
different processes append in parallel. Within a chain, each event's MAC is
HMAC-SHA256, under the audit key (wrapped by the KEK), of the previous event's MAC and
this event's canonical bytes, and each chain's head row is sealed; so changing,
dropping, inserting or reordering events through the database breaks a chain, a chain
cut back shows at its head, and a saved checkpoint (every head at once) also reveals a
chain cut back together with its head. ``audit list`` orders all events by
(time in microseconds, chain, sequence number): times grow strictly within a chain, so
the order is total and stable. Events never hold values.

An event that changes a secret or a namespace's keys records the row version (or key
generation) and the seal it left; ``verify`` checks every secret and namespace against
the last one recorded, which finds a row rolled back to an older, validly sealed state.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsbox import format as fmt
from kmsbox._crypto import HmacSha256, constant_time_equal
from kmsbox.errors import IntegrityError
from kmsbox.limits import MAX_COUNT
from kmsbox.storage.base import (
    AuditFilter,
    AuditPosition,
    AuditRow,
    ChainHead,
    MalformedRow,
    SecretFilter,
    StateEvent,
)
from kmsbox.store.integrity import Seals
from kmsbox.store.io import Op, Ports
from kmsbox.store.sinks import SinkSet, read_records

__all__ = [
    "ACTIONS",
    "DELETIONS",
    "RESULTS",
    "AuditEvent",
    "AuditLog",
    "AuditVerification",
    "ChainPoint",
    "Checkpoint",
    "Event",
]

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
    "upgrade",
)
RESULTS = ("success", "failure", "denied")
#: Actions after which a secret no longer exists.
DELETIONS = frozenset(("delete", "expire", "repair"))
#: Actions that store a new version of a secret (the event's ``secret_version``).
_WRITES = frozenset(("create", "update", "import"))
_ACTION_SET = frozenset(ACTIONS)
_RESULT_SET = frozenset(RESULTS)
_BATCH = 500
_MAX_PROBLEMS = 100
_CURSOR = re.compile(r"^(\d{1,20})-(\d{1,10})-(\d{1,20})$")
#: The namespace and name of the store's own state events (its schema marker).
STORE_NAMESPACE = "!audit"
SCHEMA_MARKER = "!schema"


@dataclass(slots=True)
class Event:
    """An event to record (its position and MAC are given when it is appended)."""

    action: str
    result: str = "success"
    namespace: str | None = None
    name: str | None = None
    secret_version: int | None = None
    actor: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)
    #: For a change of a secret (or, with ``name`` None, of a namespace's keys): the row
    #: version (key generation) it left and that row's seal (None once deleted).
    row_version: int | None = None
    state: bytes | None = None


@dataclass(frozen=True)
class AuditEvent:
    """One event as returned by ``audit list``. ``cursor`` is its place in the store-wide
    order (pass it as ``after`` to list what follows)."""

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

    @property
    def cursor(self) -> str:
        """The event's position as an opaque cursor."""
        return _cursor((self.at, self.chain, self.seq))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "cursor": self.cursor,
            "chain": self.chain,
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
class ChainPoint:
    """One chain's head in a checkpoint."""

    chain: int
    seq: int
    mac: str


@dataclass(frozen=True)
class Checkpoint:
    """Every chain's head at one moment; keep it outside the database. ``verify`` with it
    finds any chain cut back past it."""

    heads: tuple[ChainPoint, ...]
    taken_at: float = 0.0

    @property
    def events(self) -> int:
        """How many events the chains held."""
        return sum(h.seq for h in self.heads)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "kmsbox_checkpoint": 2,
            "taken_at": self.taken_at,
            "chains": [{"chain": h.chain, "seq": h.seq, "mac": h.mac} for h in self.heads],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Parse a checkpoint (also the single-chain form of earlier releases); ValueError if malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("a checkpoint is a JSON object")
        if "chains" not in data:
            # Before schema 3 there was one chain: it is chain 0 now.
            return cls((_point(0, data.get("seq"), data.get("mac")),))
        chains = data["chains"]
        if not isinstance(chains, list) or len(chains) > 100_000:
            raise ValueError("checkpoint 'chains' must be a list of {chain, seq, mac}")
        heads: list[ChainPoint] = []
        for item in chains:
            if not isinstance(item, Mapping):
                raise ValueError("checkpoint 'chains' must be a list of {chain, seq, mac}")
            heads.append(_point(item.get("chain"), item.get("seq"), item.get("mac")))
        if len({h.chain for h in heads}) != len(heads):
            raise ValueError("a checkpoint names a chain twice")
        taken = data.get("taken_at", 0.0)
        if type(taken) not in (int, float) or not 0 <= taken < 1e12:
            raise ValueError("checkpoint 'taken_at' must be seconds since the epoch")
        return cls(tuple(heads), float(taken))


def _point(chain: Any, seq: Any, mac: Any) -> ChainPoint:
    if type(chain) is not int or not 0 <= chain < 2**31:
        raise ValueError("checkpoint 'chain' must be a chain number")
    if type(seq) is not int or not 0 <= seq <= MAX_COUNT:
        raise ValueError(f"checkpoint 'seq' must be an integer from 0 to {MAX_COUNT}")
    if type(mac) is not str:
        raise ValueError("checkpoint 'mac' must be a hex string")
    try:
        bytes.fromhex(mac)
    except ValueError:
        raise ValueError("checkpoint 'mac' is not hex") from None
    return ChainPoint(chain, seq, mac)


@dataclass
class AuditVerification:
    """The result of ``verify``: ``ok`` and every problem found (at most 100 listed)."""

    ok: bool
    events_checked: int
    chains: int
    problems: list[str] = field(default_factory=list)
    secrets_checked: int = 0
    namespaces_checked: int = 0
    records_checked: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "chains": self.chains,
            "secrets_checked": self.secrets_checked,
            "namespaces_checked": self.namespaces_checked,
            "records_checked": self.records_checked,
            "problems": self.problems,
        }


def _cursor(position: AuditPosition) -> str:
    return f"{position[0]}-{position[1]}-{position[2]}"


def parse_cursor(after: str | int | None) -> AuditPosition | None:
    """A listing cursor: None or 0 for the start, else one returned by a listing."""
    if after is None or (type(after) is int and after == 0):
        return None
    if type(after) is str:
        match = _CURSOR.match(after)
        if match:
            at, chain, seq = int(match[1]), int(match[2]), int(match[3])
            # What a 64-bit column can hold (and a chain number kmsbox makes).
            if at < 2**63 and chain < 2**31 and seq < 2**63:
                return (at, chain, seq)
    raise ValueError("audit cursor must be one returned by an earlier listing (or 0 for the start)")


def _legacy_input(row: AuditRow) -> bytes:
    """The MAC input of an event written before schema 3 (one chain, JSON record)."""
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
            row.key_version,
        ]
    )


def _record_input(row: AuditRow) -> bytes:
    return fmt.encode_record(
        b"event",
        (
            row.chain,
            row.seq,
            row.at,
            row.namespace,
            row.name,
            row.secret_version,
            row.action,
            row.result,
            row.actor,
            row.context,
            row.detail,
            row.key_version,
            row.row_version,
            None if row.state is None else row.state.hex(),
        ),
    )


def _mac_input(row: AuditRow) -> bytes | None:
    """An event's MAC input, or None if what was read back cannot be one."""
    try:
        return _legacy_input(row) if row.record == 1 else _record_input(row)
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError):
        return None


def public_event(row: AuditRow) -> AuditEvent:
    """The public form of a stored event."""
    return AuditEvent(
        row.chain,
        row.seq,
        row.at,
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
    """Appends, lists and verifies the event chains of one store."""

    def __init__(
        self, key: bytes, seals: Seals, *, chains: int = 32, key_version: int = 1, sinks: SinkSet | None = None
    ) -> None:
        if type(chains) is not int or not 1 <= chains <= 4096:
            raise ValueError("the number of audit chains must be an integer from 1 to 4096")
        self._mac = HmacSha256(key)
        self._seals = seals
        self._key_version = key_version
        self.chains = chains
        self.sinks = sinks or SinkSet([])
        self._home = threading.local()
        self._broken: set[int] = set()
        #: Events appended by this process (for checkpoints every N events).
        self.appended = 0

    def __repr__(self) -> str:
        return f"AuditLog(chains={self.chains}, key=***)"

    # --- appending ---------------------------------------------------------------------------

    def _home_chain(self) -> int:
        home: int | None = getattr(self._home, "chain", None)
        if home is None:
            home = self._home.chain = hash((os.getpid(), threading.get_ident())) % self.chains
        # Tasks of one event loop share a thread: spread them too.
        if asyncio._get_running_loop() is not None:
            task = asyncio.current_task()
            if task is not None:
                home = (home + id(task) // 64) % self.chains
        return home

    def append(self, io: Ports, events: list[Event]) -> Op[None]:
        """Inside a transaction body: append ``events`` to a chain (so they commit or roll
        back with the change) and hand copies to the sinks.

        ValueError for an unknown action or result. A chain whose head no longer
        authenticates (changed through the database) is left for ``verify`` to report and
        the next one is used.
        """
        for event in events:
            if event.action not in _ACTION_SET:
                raise ValueError(f"unknown audit action {event.action!r}")
            if event.result not in _RESULT_SET:
                raise ValueError(f"unknown audit result {event.result!r}")
        chain = self._home_chain()
        sealed: list[tuple[AuditRow, bytes]] = []
        for _ in range(self.chains):
            if chain not in self._broken:
                try:
                    yield io.tx.append_audit(chain, lambda head: self._seal(events, head, sealed))
                    break
                except IntegrityError:
                    self._broken.add(chain)
            chain = (chain + 1) % self.chains
        else:
            raise IntegrityError("no audit chain head authenticates: run kmsbox audit verify")
        self.appended += len(sealed)
        if self.sinks:
            records = [self.record(row, prev) for row, prev in sealed]
            yield io.blocking(self.sinks.emit, records)
            io.on_abort(lambda: self.sinks.abort(records))

    def _seal(
        self, events: list[Event], head: ChainHead, out: list[tuple[AuditRow, bytes]]
    ) -> tuple[list[AuditRow], ChainHead]:
        """Give each event its position and MAC after ``head``; the new head."""
        if not self._seals.head_ok(head):
            raise IntegrityError(f"the head of audit chain {head.chain} was changed through the database")
        out.clear()
        seq, at, prev = head.seq, head.at, head.mac
        now = int(time.time() * 1_000_000)
        for event in events:
            seq += 1
            at = max(now, at + 1)  # strictly growing within the chain, whatever the clock does
            row = AuditRow(
                head.chain,
                seq,
                at,
                at / 1_000_000,
                event.namespace,
                event.name,
                event.secret_version,
                event.action,
                event.result,
                event.actor,
                dict(event.context) if event.context else {},
                dict(event.detail) if event.detail else {},
                self._key_version,
                b"",
                2,
                event.row_version,
                event.state,
            )
            row.mac = self._mac.digest(prev + _record_input(row))
            out.append((row, prev))
            prev = row.mac
        new = ChainHead(head.chain, seq, at, prev)
        new.seal = self._seals.head(new)
        return [row for row, _ in out], new

    def record(self, row: AuditRow, prev: bytes = b"") -> dict[str, Any]:
        """The JSON-ready copy of an event a sink receives: everything, with its position,
        the MAC before it and its own MAC, so the copy can be checked on its own."""
        return {
            "kmsbox_audit": 2,
            "chain": row.chain,
            "seq": row.seq,
            "at": row.at,
            "time": row.time,
            "namespace": row.namespace,
            "name": row.name,
            "secret_version": row.secret_version,
            "action": row.action,
            "result": row.result,
            "actor": row.actor,
            "context": row.context,
            "detail": row.detail,
            "key_version": row.key_version,
            "row_version": row.row_version,
            "state": None if row.state is None else row.state.hex(),
            "prev": prev.hex(),
            "mac": row.mac.hex(),
        }

    # --- listing -----------------------------------------------------------------------------

    def events(
        self, io: Ports, filters: AuditFilter | None, after: str | int | None, limit: int
    ) -> Op[tuple[list[AuditEvent], str | None]]:
        """A page of events after cursor ``after``; returns (events, next cursor or None).

        ValueError for a cursor or limit out of range; MalformedRow if an event on the
        page was altered through the database (``verify`` reports every one).
        """
        position = parse_cursor(after)
        if type(limit) is not int or not 1 <= limit <= 10_000:
            raise ValueError("limit must be an integer from 1 to 10000")
        chosen = filters or AuditFilter()

        def body(t: Ports) -> Op[list[AuditRow]]:
            rows: list[AuditRow] = yield t.tx.audit_events(chosen, position, limit)
            return rows

        rows: list[AuditRow] = yield io.transact(False, body, read=True)
        for row in rows:
            if row.malformed:
                raise MalformedRow(
                    f"audit event {row.chain}:{row.seq} is malformed; audit verify reports every altered event"
                )
        next_cursor = _cursor(rows[-1].position) if len(rows) == limit else None
        return [public_event(r) for r in rows], next_cursor

    def checkpoint(self, io: Ports) -> Op[Checkpoint]:
        """Every chain's head, read at one moment."""

        def body(t: Ports) -> Op[list[ChainHead]]:
            heads: list[ChainHead] = yield t.tx.audit_heads()
            return heads

        heads: list[ChainHead] = yield io.transact(False, body, read=True)
        return Checkpoint(tuple(ChainPoint(h.chain, h.seq, h.mac.hex()) for h in heads), time.time())

    # --- verification --------------------------------------------------------------------------

    def verify(
        self, io: Ports, checkpoint: Checkpoint | None = None, *, cross_check: bool = True
    ) -> Op[AuditVerification]:
        """Recompute every chain from its first event and report every break found: an
        altered, dropped, inserted or reordered event, a chain cut back past its head or
        past ``checkpoint``. With ``cross_check``, also compare every secret and
        namespace with the state its last recorded change left (a rollback through the
        database)."""
        problems: list[str] = []

        def note(problem: str) -> None:
            if len(problems) < _MAX_PROBLEMS:
                problems.append(problem)

        state: dict[int, tuple[int, bytes, int]] = {}  # chain -> (last seq, last mac, last at)
        expected = {p.chain: p for p in checkpoint.heads} if checkpoint is not None else {}
        seen_checkpoint: set[int] = {c for c, p in expected.items() if p.seq == 0}
        checked = 0
        after: AuditPosition | None = None
        while True:
            rows = yield from self._page(io, after)
            if rows is None:  # a value the driver cannot read at all
                note(
                    f"audit events after {_cursor(after) if after else 'the start'} cannot be read: the log was altered"
                )
                break
            for row in rows:
                checked += 1
                last_seq, last_mac, _ = state.get(row.chain, (0, b"", -1))
                if row.seq != last_seq + 1:
                    if row.seq <= last_seq:
                        note(f"chain {row.chain}: event {row.seq} is out of order or repeated")
                    else:
                        note(f"chain {row.chain}: events {last_seq + 1}..{row.seq - 1} are missing (or reordered)")
                mac_input = None if row.malformed else _mac_input(row)
                if mac_input is None:
                    note(f"chain {row.chain}: event {row.seq} was altered: it holds values kmsbox never writes")
                elif row.record == 1 and row.chain != 0:
                    note(f"chain {row.chain}: event {row.seq} claims an old record format only chain 0 has")
                elif not constant_time_equal(self._mac.digest(last_mac + mac_input), row.mac):
                    note(f"chain {row.chain}: event {row.seq} was altered, moved or does not follow its predecessor")
                elif row.record == 2 and row.time != row.at / 1_000_000:
                    note(f"chain {row.chain}: event {row.seq} was altered: its time is not the one it was sealed with")
                point = expected.get(row.chain)
                if point is not None and row.seq == point.seq:
                    seen_checkpoint.add(row.chain)
                    if not constant_time_equal(row.mac, bytes.fromhex(point.mac)):
                        note(f"chain {row.chain}: event {row.seq} differs from the checkpoint")
                state[row.chain] = (row.seq, row.mac, row.at)
            if len(rows) < _BATCH:
                break
            after = rows[-1].position
        heads = yield from self._heads(io)
        head_chains = {h.chain for h in heads}
        for head in heads:
            last_seq, last_mac, _ = state.get(head.chain, (0, b"", -1))
            if not self._seals.head_ok(head):
                note(f"chain {head.chain}: its head row was changed through the database")
            elif (head.seq, head.mac) != (last_seq, last_mac):
                if head.seq > last_seq:
                    note(f"chain {head.chain}: events {last_seq + 1}..{head.seq} after the last one stored are gone")
                else:
                    note(f"chain {head.chain}: the events after {head.seq} do not end where its head says")
        for chain in sorted(set(state) - head_chains):
            note(f"chain {chain}: it has events but no head row (the head was deleted)")
        for chain, point in sorted(expected.items()):
            if chain not in seen_checkpoint:
                note(f"chain {chain}: event {point.seq} from the checkpoint is gone: the chain was cut back")
        report = AuditVerification(False, checked, len(set(state) | head_chains), problems)
        if cross_check:
            yield from self._cross_check(io, report, note)
        report.ok = not problems
        return report

    def _page(self, io: Ports, after: AuditPosition | None) -> Op[list[AuditRow] | None]:
        def body(t: Ports) -> Op[list[AuditRow]]:
            rows: list[AuditRow] = yield t.tx.audit_events(AuditFilter(), after, _BATCH)
            return rows

        try:
            rows: list[AuditRow] = yield io.transact(False, body, read=True)
        except MalformedRow:
            return None
        return rows

    def _heads(self, io: Ports) -> Op[list[ChainHead]]:
        def body(t: Ports) -> Op[list[ChainHead]]:
            heads: list[ChainHead] = yield t.tx.audit_heads()
            return heads

        heads: list[ChainHead] = yield io.transact(False, body, read=True)
        return heads

    def _cross_check(self, io: Ports, report: AuditVerification, note: Any) -> Op[None]:
        """Every secret against the last state its changes recorded (a merge of two walks in
        (namespace, name) order), and every namespace's keys against theirs."""

        def marker_body(t: Ports) -> Op[StateEvent | None]:
            marker: StateEvent | None = yield t.tx.last_state(STORE_NAMESPACE, SCHEMA_MARKER)
            return marker

        # Every open writes the marker once the rows are sealed; only an erasure removes it
        # (and then no open seals anything until it is back).
        if (yield io.transact(False, marker_body, read=True)) is None:
            note("the audit log's schema marker is gone: events were erased through the database")
        try:
            yield from self._cross_check_secrets(io, report, note)
        except MalformedRow:
            # An event that records a state does not decode: the chain walk has named it.
            note("the states the audit log records cannot all be read, so secrets were not all compared with them")
        yield from self._cross_check_namespaces(io, report, note)

    def _cross_check_secrets(self, io: Ports, report: AuditVerification, note: Any) -> Op[None]:
        repaired = yield from _repaired_versions(io)
        secrets = _SecretWalk()
        states = _StateWalk()
        kept: list[tuple[str, str, set[int]]] = []  # versions to look for, checked in batches
        secret = yield from secrets.next(io)
        recorded = yield from states.next(io)
        while secret is not None or recorded is not None:
            key_s = None if secret is None else (secret.namespace, secret.name)
            key_r = None if recorded is None else (recorded.namespace, recorded.name)
            if key_s is not None and (key_r is None or key_s < key_r):
                assert secret is not None
                report.secrets_checked += 1
                if not self._seals.secret_ok(secret):
                    note(f"secret {key_s[0]}/{key_s[1]}: its row was changed through the database")
                secret = yield from secrets.next(io)
                continue
            assert recorded is not None and key_r is not None
            if recorded.namespace == STORE_NAMESPACE:  # the store's own schema marker
                recorded = yield from states.next(io)
                continue
            if key_s == key_r:
                assert secret is not None
                report.secrets_checked += 1
                where = f"secret {recorded.namespace}/{recorded.name}"
                if not self._seals.secret_ok(secret):
                    note(f"{where}: its row was changed through the database")
                elif recorded.action in DELETIONS:
                    note(f"{where}: it was deleted, but a row of it is back in the database")
                elif recorded.row_version != secret.row_version or recorded.state != secret.seal:
                    note(
                        f"{where}: the database holds row version {secret.row_version}, "
                        f"the audit log records {recorded.row_version}: it was rolled back"
                    )
                else:
                    held = (secret.namespace, secret.name)
                    written = states.written - repaired.get(held, set())
                    if written:
                        kept.append((*held, written))
                    if len(kept) >= _BATCH:
                        yield from _check_versions(io, kept, note)
                        kept = []
                secret = yield from secrets.next(io)
            elif recorded.action not in DELETIONS:
                note(
                    f"secret {recorded.namespace}/{recorded.name}: the audit log records it, but its row is gone "
                    "from the database"
                )
            recorded = yield from states.next(io)
        yield from _check_versions(io, kept, note)

    def _cross_check_namespaces(self, io: Ports, report: AuditVerification, note: Any) -> Op[None]:
        after: str | None = None
        while True:

            def page_body(t: Ports, after: str | None = after) -> Op[list[str]]:
                names: list[str] = yield t.tx.namespaces(after, _BATCH)
                return names

            names: list[str] = yield io.transact(False, page_body, read=True)
            for ns in names:
                if ns == STORE_NAMESPACE:
                    continue

                def body(t: Ports, ns: str = ns) -> Op[tuple[Any, Any, StateEvent | None]]:
                    found = yield t.tx.namespace_state(ns)
                    rows = yield t.tx.namespace_keys(ns)
                    last: StateEvent | None = yield t.tx.last_state(ns, None)
                    return found, rows, last

                try:
                    found, rows, last = yield io.transact(False, body, read=True)
                except MalformedRow as exc:
                    note(f"namespace {ns!r}: its key rows cannot be read ({exc})")
                    continue
                if found is None:
                    continue
                report.namespaces_checked += 1
                if not self._seals.key_state_ok(found, rows):
                    note(f"namespace {ns!r}: its key rows were changed through the database")
                elif last is None and found.generation > 0:
                    note(f"namespace {ns!r}: the audit log records no change of its keys, yet they changed")
                elif last is not None and (last.row_version != found.generation or last.state != found.seal):
                    note(
                        f"namespace {ns!r}: its keys are at generation {found.generation}, the audit log records "
                        f"{last.row_version}: they were rolled back"
                    )
            if len(names) < _BATCH:
                return
            after = names[-1]

    def verify_against(self, io: Ports, lines: Iterable[str]) -> Op[AuditVerification]:
        """Check a sink's JSON-lines copy against the database: each copied event must be
        there, unchanged, unless the copy says its transaction was aborted. Finds events
        erased or altered in the database since they were copied. ValueError for a line
        that is not a record kmsbox writes."""
        problems: list[str] = []
        aborted: set[tuple[int, int, int, str]] = set()
        batch: list[tuple[int, dict[str, Any]]] = []
        report = AuditVerification(False, 0, 0, problems)
        chains: set[int] = set()

        # One pass, memory flat: a record missing or different in the database is kept as a
        # suspect (at most 100) until the end of the copy, where an abort line may excuse it.
        suspects: list[tuple[tuple[int, int, int, str], str]] = []

        def check(batch: list[tuple[int, dict[str, Any]]]) -> Op[None]:
            positions = [(r["at"], r["chain"], r["seq"]) for _, r in batch]

            def body(t: Ports) -> Op[list[AuditRow]]:
                rows: list[AuditRow] = yield t.tx.audit_events_at(positions)
                return rows

            rows: list[AuditRow] = yield io.transact(False, body, read=True)
            stored = {r.position: r for r in rows}
            for line, record in batch:
                report.records_checked += 1
                chains.add(record["chain"])
                position = (record["at"], record["chain"], record["seq"])
                row = stored.get(position)
                key = (*position, record["mac"])
                where = f"line {line}: event {record['chain']}:{record['seq']}"
                if row is None:
                    if len(suspects) < _MAX_PROBLEMS:
                        suspects.append((key, f"{where} is in the copy but not in the database: it was erased"))
                elif row.mac.hex() != record["mac"]:
                    if len(suspects) < _MAX_PROBLEMS:
                        suspects.append((key, f"{where} differs from the copy: it was altered"))
                else:
                    report.events_checked += 1

        for item in _copied(lines):
            if item[1].get("abort"):
                record = item[1]
                aborted.add((record["at"], record["chain"], record["seq"], record["mac"]))
                continue
            batch.append(item)
            if len(batch) == 200:
                yield from check(batch)
                batch = []
        if batch:
            yield from check(batch)
        problems += [problem for key, problem in suspects if key not in aborted]
        report.chains = len(chains)
        report.ok = not problems
        return report


def _copied(lines: Iterable[str]) -> Iterable[tuple[int, dict[str, Any]]]:
    """The records of a copy, checked for the fields ``verify_against`` reads."""
    for line, record in read_records(lines):
        for key in ("chain", "seq", "at"):
            value = record.get(key)
            if type(value) is not int or not 0 <= value < 2**63:
                raise ValueError(f"line {line} of the audit copy has no valid {key!r}")
        mac = record.get("mac")
        if type(mac) is not str or len(mac) > 128:
            raise ValueError(f"line {line} of the audit copy has no valid 'mac'")
        yield line, record


class _SecretWalk:
    """Every secret row in (namespace, name) order, a page at a time."""

    def __init__(self) -> None:
        self._page: list[Any] = []
        self._after: tuple[str, str] | None = None
        self._done = False

    def next(self, io: Ports) -> Op[Any]:
        while not self._page and not self._done:
            after = self._after

            def body(t: Ports, after: Any = after) -> Op[list[Any]]:
                rows: list[Any] = yield t.tx.list_secrets(None, SecretFilter(), after, _BATCH)
                return rows

            try:
                page: list[Any] = yield io.transact(False, body, read=True)
            except MalformedRow:
                self._done = True  # diagnose names malformed rows; the chain walk has checked the log
                break
            self._done = len(page) < _BATCH
            if page:
                self._after = (page[-1].namespace, page[-1].name)
            self._page = page[::-1]
        return self._page.pop() if self._page else None


class _StateWalk:
    """The last recorded state of each secret, in (namespace, name) order."""

    def __init__(self) -> None:
        self._page: list[StateEvent] = []
        self._after: tuple[str, str, int] | None = None
        self._done = False
        self._pending: StateEvent | None = None
        self.written: set[int] = set()

    def _raw(self, io: Ports) -> Op[StateEvent | None]:
        while not self._page and not self._done:
            after = self._after

            def body(t: Ports, after: Any = after) -> Op[list[StateEvent]]:
                rows: list[StateEvent] = yield t.tx.state_events(after, _BATCH)
                return rows

            page: list[StateEvent] = yield io.transact(False, body, read=True)
            self._done = len(page) < _BATCH
            if page:
                last = page[-1]
                assert last.name is not None
                self._after = (last.namespace, last.name, last.row_version)
            self._page = page[::-1]
        return self._page.pop() if self._page else None

    def next(self, io: Ports) -> Op[StateEvent | None]:
        """The next secret's last recorded state; ``written`` is then the versions its
        recorded writes stored since its last deletion."""
        current = self._pending
        if current is None:
            current = yield from self._raw(io)
            if current is None:
                return None
        written: set[int] = set()
        while True:
            if current.action in DELETIONS:
                written.clear()
            elif current.action in _WRITES and current.secret_version is not None:
                written.add(current.secret_version)
            following = yield from self._raw(io)
            if following is None or (following.namespace, following.name) != (current.namespace, current.name):
                self._pending = following
                self.written = written
                return current
            current = following


def _repaired_versions(io: Ports) -> Op[dict[tuple[str, str], set[int]]]:
    """The single versions ``repair`` deleted (as unrecoverable), per secret."""
    found: dict[tuple[str, str], set[int]] = {}
    after: AuditPosition | None = None
    while True:

        def body(t: Ports, after: AuditPosition | None = after) -> Op[list[AuditRow]]:
            rows: list[AuditRow] = yield t.tx.audit_events(AuditFilter(action="repair"), after, _BATCH)
            return rows

        try:
            rows: list[AuditRow] = yield io.transact(False, body, read=True)
        except MalformedRow:
            return found  # the chain walk reports the event that does not decode
        for row in rows:
            detail = row.detail
            if (
                not row.malformed
                and row.result == "success"
                and row.namespace is not None
                and row.name is not None
                and row.secret_version is not None
                and detail.get("whole_secret") is False
            ):
                found.setdefault((row.namespace, row.name), set()).add(row.secret_version)
        if len(rows) < _BATCH:
            return found
        after = rows[-1].position


def _check_versions(io: Ports, kept: list[tuple[str, str, set[int]]], note: Any) -> Op[None]:
    """Report the versions the audit log records as stored that are gone from the database
    (an older version's row deleted through it)."""
    if not kept:
        return

    def body(t: Ports) -> Op[list[set[int] | None]]:
        stored: list[set[int] | None] = []
        for ns, name, _ in kept:
            try:
                versions: list[Any] = yield t.tx.list_versions(ns, name)
            except MalformedRow:
                stored.append(None)  # diagnose names the row that does not decode
                continue
            stored.append({v.version for v in versions})
        return stored

    stored: list[set[int] | None] = yield io.transact(False, body, read=True)
    for (ns, name, written), held in zip(kept, stored, strict=True):
        if held is None:
            continue
        gone = sorted(written - held)
        if gone:
            shown = ", ".join(str(v) for v in gone)
            what = (
                f"version {shown} the audit log records is"
                if len(gone) == 1
                else f"versions {shown} the audit log records are"
            )
            note(f"secret {ns}/{name}: {what} gone from the database")
