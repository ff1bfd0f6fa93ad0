"""The one object a store's parts share: backend, keyring, seals, audit log, caches.

:class:`StoreRuntime` owns everything with state; the parts (secrets, key maintenance,
diagnosis, import, audit) are stateless operations over it, and the sync and async
faces run those same operations. Opening a runtime (:meth:`StoreRuntime.open`) unwraps
the audit key, and on the first open after an upgrade seals what an older release
stored without seals.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kmsbox._crypto import Aead, random_key
from kmsbox.errors import KeyUnavailable
from kmsbox.kek import KekProvider
from kmsbox.keys import KeyCache
from kmsbox.storage.base import (
    AuditRow,
    ChainHead,
    MalformedRow,
    NamespaceKeyRow,
    NamespaceState,
    SecretFilter,
    SecretRow,
    StateEvent,
    StorageBackend,
)
from kmsbox.storage.sql.schema import SCHEMA_VERSION
from kmsbox.store.access import AccessCounter
from kmsbox.store.audit import SCHEMA_MARKER, STORE_NAMESPACE, AuditLog, Event
from kmsbox.store.context import check_actor, check_merged, check_request, current_actor, current_request
from kmsbox.store.integrity import Seals
from kmsbox.store.io import Op, Ports
from kmsbox.store.keyring import ACTIVE, AUDIT_NAMESPACE, NamespaceKeyring
from kmsbox.store.sinks import SinkSet
from kmsbox.store.values import DEFAULT_MAX_VALUE_SIZE

__all__ = ["RecentNames", "StoreRuntime", "StoreSettings"]

_RECENT_NAMES = 16384
#: The first schema whose rows are sealed: the schema marker records it. A store whose
#: marker is older is sealed once, on first use; later schema changes never seal again
#: (that would bless a row an attacker left unsealed).
FIRST_SEALED_SCHEMA = 3
_BATCH = 500


@dataclass
class StoreSettings:
    """How a store behaves (see ``open_store`` and ``kmsbox.toml``)."""

    audit_reads: bool = True
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    batch_size: int = 500
    data_key_cache_size: int = 4096
    audit_chains: int = 32
    checkpoint_file: str | None = None
    checkpoint_every: int = 0


class RecentNames:
    """Names this store has just seen exist: a hint for ``put`` of which path to try
    first (a create, or an update). Never trusted for correctness; bounded."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], None] = {}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._names

    def add(self, namespace: str, name: str) -> None:
        """Remember a name (the whole set is dropped when it is full)."""
        if len(self._names) >= _RECENT_NAMES:
            self._names.clear()
        self._names[(namespace, name)] = None


class StoreRuntime:
    """Everything the parts of one store share."""

    def __init__(
        self,
        backend: StorageBackend,
        keks: Sequence[KekProvider],
        *,
        cache: KeyCache[Aead] | None = None,
        settings: StoreSettings | None = None,
        sinks: SinkSet | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings or StoreSettings()
        self.keyring = NamespaceKeyring(keks, cache or KeyCache(max_age=300.0, max_entries=4096))
        key_cache = self.keyring.cache
        # Unwrapped DEKs of recent reads, each used only while the namespace key that
        # unwrapped it is still the cached one (which is in memory anyway); 0 turns it off.
        self.data_keys: KeyCache[tuple[Aead, Aead]] | None = (
            KeyCache(
                max_age=key_cache.max_age, max_uses=key_cache.max_uses, max_entries=self.settings.data_key_cache_size
            )
            if self.settings.data_key_cache_size
            else None
        )
        self.access = AccessCounter()
        self.recent = RecentNames()
        self.sinks = sinks or SinkSet([])
        self._seals: Seals | None = None
        self._audit: AuditLog | None = None
        self.checkpointed = 0

    @property
    def seals(self) -> Seals:
        """The store's seals (after :meth:`open`)."""
        assert self._seals is not None, "the store is not open"
        return self._seals

    @property
    def audit(self) -> AuditLog:
        """The store's audit log (after :meth:`open`)."""
        assert self._audit is not None, "the store is not open"
        return self._audit

    def who(self, actor: str | None, request: Mapping[str, str] | None) -> tuple[str | None, dict[str, str]]:
        """The actor and request context for an audit event: per call, else per block
        (ValueError for an actor or context an event cannot hold)."""
        merged = dict(current_request())
        if request is not None:
            merged.update(check_request(request))
            check_merged(merged)
        return (current_actor() if actor is None else check_actor(actor)), merged

    # --- opening -------------------------------------------------------------------------------

    def open(self, io: Ports) -> Op[None]:
        """Unwrap the audit key (making it in a new store) and, on the first open after an
        upgrade, seal what the older release stored. Fails closed: a KEK that cannot unwrap
        the audit key stops the open."""
        audit_key = yield from self._audit_key(io)
        self._seals = Seals(audit_key)
        self._audit = AuditLog(audit_key, self._seals, chains=self.settings.audit_chains, sinks=self.sinks)
        self.keyring.seals = self._seals
        self.keyring.audit = self._audit

        def marker_body(t: Ports) -> Op[StateEvent | None]:
            marker: StateEvent | None = yield t.tx.last_state(STORE_NAMESPACE, SCHEMA_MARKER)
            return marker

        marker: StateEvent | None = yield io.transact(False, marker_body, read=True)
        if marker is None:
            # No marker: a new store, one an older release made, or a marker erased through
            # the database. Only in the last case has a sealing release written events, and
            # then nothing is sealed (``verify`` reports the missing marker): trusting the
            # rows as they are would seal whatever the attacker left in them.
            if not (yield from self._written_by_sealing_release(io)):
                yield from self._seal_older_rows(io)
        elif marker.row_version < FIRST_SEALED_SCHEMA:
            yield from self._seal_older_rows(io)
        state = yield from self.keyring.state(io, AUDIT_NAMESPACE, fresh=True)
        if state is None:
            raise KeyUnavailable("the store's audit key is gone")

    def _written_by_sealing_release(self, io: Ports) -> Op[bool]:
        """Whether the audit log holds an event this schema's code wrote (after its marker).

        Before the upgrade to this schema every event is on chain 0 in the old record
        format, and the upgrade writes none before its marker; so the newest event of any
        chain in the current format (or any event on another chain) means the store was
        opened by a release that seals rows. An event that does not decode counts too.
        """

        def body(t: Ports) -> Op[bool]:
            heads: list[ChainHead] = yield t.tx.audit_heads()
            live = [h for h in heads if h.seq > 0]
            if any(h.chain != 0 for h in live):
                return True
            try:
                rows: list[AuditRow] = yield t.tx.audit_events_at([(h.at, h.chain, h.seq) for h in live])
            except MalformedRow:
                return True
            return any(r.malformed or r.record != 1 for r in rows)

        found: bool = yield io.transact(False, body, read=True)
        return found

    def _audit_key(self, io: Ports) -> Op[bytes]:
        def load(t: Ports) -> Op[tuple[NamespaceState | None, list[NamespaceKeyRow]]]:
            state: NamespaceState | None = yield t.tx.namespace_state(AUDIT_NAMESPACE)
            rows: list[NamespaceKeyRow] = yield t.tx.namespace_keys(AUDIT_NAMESPACE)
            return state, rows

        state, rows = yield io.transact(False, load, read=True)
        if state is None or not rows:
            key = random_key()
            wraps = yield from self.keyring.wrap_all(io, AUDIT_NAMESPACE, 1, key)
            seals = Seals(key)
            now = time.time()

            def create(t: Ports) -> Op[None]:
                existing: NamespaceState | None = yield t.tx.namespace_state(AUDIT_NAMESPACE, change=True)
                if existing is not None:
                    return
                row = NamespaceKeyRow(AUDIT_NAMESPACE, 1, ACTIVE, now, now, wraps)
                # Generation 0: the audit key never changes, so its state is never recorded.
                sealed = NamespaceState(AUDIT_NAMESPACE, 0, now, seals.key_state(AUDIT_NAMESPACE, 0, now, [row]))
                yield t.tx.save_namespace_keys(sealed, [row], [])

            yield io.transact(True, create)
            state, rows = yield io.transact(False, load, read=True)
            if state is None or not rows:
                raise KeyUnavailable("the store's audit key could not be created")
        # The audit key authenticates everything else, so it is trusted through the KEK
        # (its wrap is bound to its namespace and version); its row is checked once sealed.
        unwrapped: bytes = yield from self.keyring.unwrap_bytes(io, rows[0])
        self.keyring.cache.put((AUDIT_NAMESPACE, rows[0].version), Aead(unwrapped))
        return unwrapped

    def _seal_older_rows(self, io: Ports) -> Op[None]:
        """Seal every row an older release stored without a seal, then record that it is
        done (from then on an unsealed row is a row changed through the database).

        Trust on first use: the rows are taken as they are at this moment, so run
        ``kmsbox audit verify`` and ``kmsbox diagnose`` before upgrading.
        """
        seals, audit = self.seals, self.audit
        self.keyring.trust_unsealed = True
        try:
            sealed = yield from self._seal_namespaces(io, seals)
            sealed += yield from self._seal_secrets(io, seals)

            def heads_body(t: Ports) -> Op[list[ChainHead]]:
                heads: list[ChainHead] = yield t.tx.audit_heads()
                return heads

            heads: list[ChainHead] = yield io.transact(False, heads_body, read=True)
            for head in heads:
                if head.seal or head.seq == 0:
                    continue

                def seal_head(t: Ports, chain: int = head.chain) -> Op[None]:
                    def reseal(h: ChainHead) -> tuple[list[Any], ChainHead]:
                        if h.seal:
                            return [], h
                        return [], ChainHead(h.chain, h.seq, h.at, h.mac, seals.head(h))

                    yield t.tx.append_audit(chain, reseal)

                yield io.transact(True, seal_head)
                sealed += 1

            def mark(t: Ports) -> Op[None]:
                yield from audit.append(
                    t,
                    [
                        Event(
                            "upgrade",
                            namespace=STORE_NAMESPACE,
                            name=SCHEMA_MARKER,
                            detail={"schema": SCHEMA_VERSION, "sealed": sealed},
                            row_version=FIRST_SEALED_SCHEMA,
                        )
                    ],
                )

            yield io.transact(True, mark)
        finally:
            self.keyring.trust_unsealed = False

    def _seal_namespaces(self, io: Ports, seals: Seals) -> Op[int]:
        sealed = 0
        after: str | None = None
        while True:

            def page_body(t: Ports, after: str | None = after) -> Op[list[str]]:
                names: list[str] = yield t.tx.namespaces(after, _BATCH)
                return names

            names: list[str] = yield io.transact(False, page_body, read=True)
            for ns in names:

                def body(t: Ports, ns: str = ns) -> Op[int]:
                    state: NamespaceState | None = yield t.tx.namespace_state(ns, change=True)
                    if state is None or state.seal:
                        return 0
                    rows: list[NamespaceKeyRow] = yield t.tx.namespace_keys(ns)
                    state.seal = seals.key_state(ns, state.generation, state.created_at, rows)
                    yield t.tx.save_namespace_keys(state, [], [])
                    return 1

                done: int = yield io.transact(True, body)
                sealed += done
            if len(names) < _BATCH:
                return sealed
            after = names[-1]

    def _seal_secrets(self, io: Ports, seals: Seals) -> Op[int]:
        sealed = 0
        after: tuple[str, str] | None = None
        while True:

            def body(t: Ports, after: tuple[str, str] | None = after) -> Op[tuple[int, int, tuple[str, str] | None]]:
                rows: list[SecretRow] = yield t.tx.list_secrets(None, SecretFilter(), after, _BATCH)
                count = 0
                for row in rows:
                    if row.seal:
                        continue
                    held: SecretRow | None = yield t.tx.get_secret(row.namespace, row.name)
                    if held is None or held.seal:
                        continue
                    seals.seal_secret(held)
                    yield t.tx.update_secret(held, held.row_version, None)
                    count += 1
                last = (rows[-1].namespace, rows[-1].name) if rows else None
                return count, len(rows), last

            outcome: tuple[int, int, tuple[str, str] | None] = yield io.transact(True, body)
            count, listed, last = outcome
            sealed += count
            if listed < _BATCH or last is None:
                return sealed
            after = last
