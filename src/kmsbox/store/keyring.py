"""Namespace keys of a store: created on first write, wrapped by every KEK, verified, cached.

A namespace's key state (its key versions and their statuses) is read with its seal and
checked against the last change the audit log recorded before anything is wrapped
under it; a state changed or rolled back through the database is an IntegrityError,
so no secret is ever sealed under a key the attacker picked. Verified states and
unwrapped keys are kept for the key cache's lifetime: one KEK call per namespace-key
version per cache lifetime, and concurrent misses of one key make one call (single
flight).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kmsbox import format as fmt
from kmsbox._crypto import Aead, random_key
from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, NamespaceNotFound, ProviderError
from kmsbox.kek import KekProvider, WrappedKey
from kmsbox.keys import KeyCache
from kmsbox.storage.base import NamespaceKeyRow, NamespaceState, StateEvent
from kmsbox.store.audit import AuditLog, Event
from kmsbox.store.integrity import Seals
from kmsbox.store.io import Op, Ports

__all__ = [
    "ACTIVE",
    "AUDIT_NAMESPACE",
    "COMPROMISED",
    "KEY_STATUSES",
    "RETIRED",
    "ROTATING",
    "ActiveKey",
    "KeyState",
    "NamespaceKeyring",
]

ACTIVE = "active"
_STATE_READS = 3  # reads of a key state before a mismatch is taken for an edit
ROTATING = "rotating"
RETIRED = "retired"
COMPROMISED = "compromised"
KEY_STATUSES = (ACTIVE, ROTATING, RETIRED, COMPROMISED)

#: The reserved namespace that holds the audit HMAC key (invalid as a user namespace).
AUDIT_NAMESPACE = "!audit"


@dataclass(slots=True)
class KeyState:
    """A namespace's key state, verified against its seal and the audit log."""

    state: NamespaceState
    rows: list[NamespaceKeyRow]
    loaded_at: float

    @property
    def namespace(self) -> str:
        """The namespace."""
        return self.state.namespace

    def active(self) -> NamespaceKeyRow | None:
        """The active key version (the newest if several)."""
        found = [r for r in self.rows if r.status == ACTIVE]
        return found[-1] if found else None

    def row(self, version: int) -> NamespaceKeyRow | None:
        """One key version."""
        return next((r for r in self.rows if r.version == version), None)

    def newest(self) -> int:
        """The highest key version (0 if none)."""
        return max((r.version for r in self.rows), default=0)

    def never_had(self, version: int) -> bool:
        """Whether ``version`` was never a key version of the namespace: every version made
        is a key-state change, so none is above the sealed generation."""
        return version < 1 or version > max(self.state.generation, self.newest())


@dataclass(slots=True)
class ActiveKey:
    """The key new secrets are sealed under: its version, the key, and the seal of the
    key state it was chosen from (a write checks that this state still holds)."""

    version: int
    key: Aead
    state_seal: bytes


class NamespaceKeyring:
    """Creates, verifies, unwraps and caches the namespace keys of one store.

    ``seals`` and ``audit`` are attached once the store has its audit key (which is
    itself a namespace key, of :data:`AUDIT_NAMESPACE`).
    """

    def __init__(self, keks: Sequence[KekProvider], cache: KeyCache[Aead]) -> None:
        if not keks:
            raise ConfigError("a store needs at least one KEK")
        self.keks = list(keks)
        self.cache = cache
        self._by_uri = {k.uri: k for k in self.keks}
        self._states: OrderedDict[str, KeyState] = OrderedDict()
        self.seals: Seals | None = None
        self.audit: AuditLog | None = None
        #: Only while the store seals what an older release stored: unsealed states pass.
        self.trust_unsealed = False

    def __repr__(self) -> str:
        return f"NamespaceKeyring(keks={[k.uri for k in self.keks]!r})"

    @property
    def primary(self) -> KekProvider:
        """The KEK that wraps new namespace keys first."""
        return self.keks[0]

    def kek_for(self, uri: str) -> KekProvider | None:
        """The configured KEK with this URI, if any."""
        return self._by_uri.get(uri)

    # --- KEK calls ---------------------------------------------------------------------------

    def wrap_all(self, io: Ports, namespace: str, version: int, key: bytes) -> Op[list[WrappedKey]]:
        """Wrap a namespace key under every configured KEK."""
        context = fmt.namespace_key_context(namespace, version)
        wraps: list[WrappedKey] = []
        for kek in self.keks:
            wrapped: WrappedKey = yield io.kek(kek).wrap(key, context)
            wraps.append(wrapped)
        return wraps

    def unwrap_bytes(self, io: Ports, row: NamespaceKeyRow) -> Op[bytes]:
        """Unwrap the raw key bytes of ``row`` through the first KEK that can (one KEK call).

        Raises KeyUnavailable when no configured KEK holds a usable wrap, and a transient
        ProviderError at once (another KEK would not know better).
        """
        context = fmt.namespace_key_context(row.namespace, row.version)
        failures: list[str] = []
        wraps = {w.kek_uri: w for w in row.wraps}
        for kek in self.keks:
            wrapped = wraps.get(kek.uri)
            if wrapped is None:
                continue
            try:
                key: bytes = yield io.kek(kek).unwrap(wrapped, context)
                return key
            except KeyUnavailable as exc:
                failures.append(f"{kek.uri}: {exc}")
            except IntegrityError:
                failures.append(f"{kek.uri}: wrap does not authenticate")
            except ProviderError as exc:
                if exc.transient:
                    raise
                failures.append(f"{kek.uri}: {exc}")
        where = f"namespace key {row.namespace!r} version {row.version}"
        if not failures:
            raise KeyUnavailable(
                f"{where} is not wrapped by any configured KEK (wrapped by: {', '.join(wraps) or 'none'})"
            )
        raise KeyUnavailable(f"{where} cannot be unwrapped: {'; '.join(failures)}")

    # --- keys --------------------------------------------------------------------------------

    def cached(self, namespace: str, version: int) -> Aead | None:
        """A namespace key if it is in the cache (what a transaction body may use)."""
        return self.cache.get((namespace, version))

    def key(self, io: Ports, namespace: str, version: int, row: NamespaceKeyRow | None = None) -> Op[Aead]:
        """A namespace-key version: from the cache, else unwrapped once for all concurrent
        callers. KeyUnavailable if the version does not exist (any more) or no KEK can unwrap
        it; IntegrityError if the namespace never had it (the sealed key-state generation
        counts every version ever made), which only an envelope changed through the
        database can name."""
        cached = self.cache.get((namespace, version))
        if cached is not None:
            return cached
        if row is None:
            asked = time.monotonic()
            state = yield from self.state(io, namespace)
            row = None if state is None else state.row(version)
            if row is None and state is not None and state.loaded_at < asked:
                # A cached state older than the envelope (a rotation since): read it again.
                state = yield from self.state(io, namespace, fresh=True)
                row = None if state is None else state.row(version)
            if row is None:
                if state is not None and state.never_had(version):
                    raise IntegrityError(
                        f"namespace {namespace!r} never had key version {version}: an envelope naming it "
                        "was changed through the database"
                    )
                raise KeyUnavailable(f"namespace key {namespace!r} version {version} does not exist")
        found: NamespaceKeyRow = row
        key: Aead = yield io.flight(("namespace-key", namespace, version), lambda: self._unwrap_to_cache(io, found))
        return key

    def _unwrap_to_cache(self, io: Ports, row: NamespaceKeyRow) -> Op[Aead]:
        cached = self.cache.get((row.namespace, row.version))
        if cached is not None:
            return cached
        key = yield from self.unwrap_bytes(io, row)
        return self.cache.put((row.namespace, row.version), Aead(key))

    # --- key states --------------------------------------------------------------------------

    def known(self, namespace: str) -> KeyState | None:
        """A verified key state still within the cache's lifetime, without any call."""
        found = self._states.get(namespace)
        if found is None or time.monotonic() - found.loaded_at >= self.cache.max_age:
            return None
        return found

    def state(self, io: Ports, namespace: str, *, fresh: bool = False) -> Op[KeyState | None]:
        """A namespace's verified key state (None if the namespace does not exist).

        IntegrityError if its key rows were changed, or rolled back, through the database.
        """
        if not fresh:
            found = self.known(namespace)
            if found is not None:
                return found

        def body(t: Ports) -> Op[tuple[NamespaceState, list[NamespaceKeyRow], StateEvent | None] | None]:
            state: NamespaceState | None = yield t.tx.namespace_state(namespace)
            if state is None:
                return None
            rows: list[NamespaceKeyRow] = yield t.tx.namespace_keys(namespace)
            last: StateEvent | None = yield t.tx.last_state(namespace, None)
            return state, rows, last

        for attempt in range(_STATE_READS):
            loaded = yield io.transact(False, body, read=True)
            if loaded is None:
                self._states.pop(namespace, None)
                return None
            try:
                return self.remember(self.check(*loaded))
            except IntegrityError:
                # Reads may run statement by statement (PostgreSQL outside a write
                # transaction): a change committed between them looks like an edit. An edit
                # stays on the next read; a race does not.
                if attempt == _STATE_READS - 1:
                    raise
        raise AssertionError("unreachable")

    def check(self, state: NamespaceState, rows: list[NamespaceKeyRow], last: StateEvent | None) -> KeyState:
        """Verify a key state read from storage (IntegrityError if it cannot be trusted)."""
        ns = state.namespace
        if self.seals is not None and not (self.trust_unsealed and not state.seal):
            if not self.seals.key_state_ok(state, rows):
                raise IntegrityError(f"the key rows of namespace {ns!r} were changed through the database")
            if last is None and state.generation > 0:
                raise IntegrityError(f"the key rows of namespace {ns!r} changed with no audit record of it")
            if last is not None and (last.row_version != state.generation or last.state != state.seal):
                raise IntegrityError(
                    f"the key rows of namespace {ns!r} were rolled back through the database "
                    f"(generation {state.generation}, the audit log records {last.row_version})"
                )
        return KeyState(state, rows, time.monotonic())

    def remember(self, state: KeyState) -> KeyState:
        """Keep a verified state (the least recently loaded leave first when full)."""
        self._states[state.namespace] = state
        self._states.move_to_end(state.namespace)
        while len(self._states) > self.cache.max_entries:
            self._states.popitem(last=False)
        return state

    def forget(self, namespace: str) -> None:
        """Drop a namespace's cached state (it changed)."""
        self._states.pop(namespace, None)

    def active_cached(self, namespace: str) -> ActiveKey | None:
        """The active key from the caches alone (the put's fast path), or None."""
        state = self.known(namespace)
        if state is None:
            return None
        row = state.active()
        if row is None:
            return None
        key = self.cache.get((namespace, row.version))
        return None if key is None else ActiveKey(row.version, key, state.state.seal)

    def active(
        self,
        io: Ports,
        namespace: str,
        *,
        create: bool,
        fresh: bool = False,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> Op[ActiveKey]:
        """The key new secrets of ``namespace`` are sealed under; with ``create``, a new
        namespace gets its first key (NamespaceNotFound otherwise). KeyUnavailable when the
        namespace has no active key (every version compromised and none rotated in)."""
        if not fresh:
            found = self.active_cached(namespace)
            if found is not None:
                return found
        state = yield from self.state(io, namespace, fresh=fresh)
        if state is None:
            if not create:
                raise NamespaceNotFound(f"namespace {namespace!r} does not exist")
            state = yield from self.create(io, namespace, actor=actor, request=request)
        row = state.active()
        if row is None and not state.rows and create:
            # Every key was deleted (repair of keys no KEK can open): the namespace starts
            # over with a new key, numbered after every version it ever had.
            state = yield from self.create(io, namespace, actor=actor, request=request, after=state)
            row = state.active()
        if row is None:
            raise KeyUnavailable(f"namespace {namespace!r} has no active key: rotate one in")
        key = yield from self.key(io, namespace, row.version, row)
        return ActiveKey(row.version, key, state.state.seal)

    def create(
        self,
        io: Ports,
        namespace: str,
        *,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
        after: KeyState | None = None,
    ) -> Op[KeyState]:
        """Make a namespace with its first key (or, ``after`` a state whose keys were all
        deleted, give it a new one). The KEK calls happen before the transaction; a
        concurrent creator wins and this key is discarded."""
        assert self.seals is not None and self.audit is not None
        seals, audit = self.seals, self.audit
        # Key-state generations count every key ever made: the next one is a fresh version number.
        version = 1 if after is None else after.state.generation + 1
        key = random_key()
        wraps = yield from self.wrap_all(io, namespace, version, key)
        now = time.time()

        def body(t: Ports) -> Op[bool]:
            existing: NamespaceState | None = yield t.tx.namespace_state(namespace, change=True)
            if after is None and existing is not None:
                return False
            if after is not None:
                rows: list[NamespaceKeyRow] = yield t.tx.namespace_keys(namespace)
                if existing is None or existing.seal != after.state.seal or rows:
                    return False  # changed meanwhile: whatever it is now wins
            created = existing.created_at if existing is not None else now
            generation = version
            row = NamespaceKeyRow(namespace, version, ACTIVE, now, now, wraps)
            state = NamespaceState(
                namespace, generation, created, seals.key_state(namespace, generation, created, [row])
            )
            yield t.tx.save_namespace_keys(state, [row], [])
            yield from audit.append(
                t,
                [
                    Event(
                        "create",
                        namespace=namespace,
                        actor=actor,
                        context=request or {},
                        detail={"namespace_key_version": version},
                        row_version=generation,
                        state=state.seal,
                    )
                ],
            )
            return True

        made: bool = yield io.transact(True, body)
        if made:
            self.cache.put((namespace, version), Aead(key))
        state = yield from self.state(io, namespace, fresh=True)
        if state is None:
            raise KeyUnavailable(f"namespace {namespace!r} was deleted while it was being created")
        return state
