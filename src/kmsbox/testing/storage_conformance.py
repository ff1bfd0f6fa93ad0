"""Conformance suite for storage backends: ours and any third party's.

Use it from a test module::

    import pytest
    from kmsbox.storage import open_storage
    from kmsbox.testing.storage_conformance import StorageBackendConformance

    class TestMyBackend(StorageBackendConformance):
        @pytest.fixture
        def backend(self):
            backend = open_storage("my-db://...")   # a fresh, empty store per test
            yield backend
            backend.close()

        @pytest.fixture
        def reopen(self):                           # optional: None skips the reopen tests
            opened = []
            def open_again():
                opened.append(open_storage("my-db://..."))   # the same storage as ``backend``
                return opened[-1]
            yield open_again
            for b in opened:
                b.close()

``backend`` must be an opened, empty :class:`~kmsbox.storage.base.StorageBackend`
that the fixture closes afterwards (``close()`` must be idempotent: some tests
close it themselves). ``reopen`` returns a factory of new backends on the same
storage, or None where that is not possible (``memory://``). The concurrency tests run
once with threads on ``backend`` and once with a second backend from ``reopen``; without
``reopen``, override the ``peer`` fixture to return ``backend`` (as the memory tests do),
or the second runs are skipped.

The suite writes rows only through the protocol: the envelopes are real (sealed under a
namespace key generated at run time, so their headers name a key version), the seals
and audit MACs are stand-ins (a plain hash), since a backend stores them without
checking. A backend built on :class:`kmsbox.storage.sql.SqlBackend` can also run
:class:`SqlBackendConformance`, which changes rows through the database, as someone with
only database access could, and checks that they come back as
:class:`~kmsbox.storage.base.MalformedRow`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kmsbox._crypto import Aead
from kmsbox.errors import ConfigError, ConflictError, IntegrityError, StorageError
from kmsbox.kek import WrappedKey
from kmsbox.keys import open_secret, seal_secret
from kmsbox.storage.base import (
    AuditFilter,
    AuditPosition,
    AuditRow,
    ChainHead,
    JobRow,
    MalformedRow,
    NamespaceKeyRow,
    NamespaceState,
    SecretFilter,
    SecretRow,
    StateEvent,
    StorageBackend,
    StoredVersion,
    Transaction,
)

__all__ = [
    "RawSql",
    "Sealer",
    "SqlBackendConformance",
    "StorageBackendConformance",
    "key_row",
    "namespace_state",
    "secret_row",
    "stored_version",
]

NS = "conformance:one"
OTHER_NS = "conformance:two"
T0 = 1_700_000_000.123456

#: Threads in the concurrency tests, and compare-and-set increments (or appends) per thread.
THREADS = 4
PER_THREAD = 10
#: How long a holder keeps its hold while another writer tries (seconds).
HOLD = 0.4

# The namespace key the suite's envelopes are sealed under: made at run time, never stored.
_NAMESPACE_KEY = Aead(os.urandom(32))


class _Boom(Exception):
    """Raised inside a transaction to force a rollback."""


# --- rows ----------------------------------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def secret_row(namespace: str, name: str, **changes: Any) -> SecretRow:
    """A secret row with test defaults (version 1, row version 1, a stand-in seal)."""
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "version": 1,
        "status": "active",
        "created_at": T0,
        "updated_at": T0,
        "row_version": 1,
        "seal": _digest("secret", namespace, name, 1)[:16],
    }
    fields.update(changes)
    # The current version's creation time, as stored_version() gives it.
    fields.setdefault("version_created_at", T0 + fields["version"])
    return SecretRow(**fields)


def stored_version(
    namespace: str,
    name: str,
    version: int,
    key_version: int = 1,
    *,
    value: bytes | None = None,
    created_at: float | None = None,
) -> StoredVersion:
    """A real envelope of ``value`` (by default one naming its position), sealed under the
    suite's namespace key as version ``key_version``; created at ``T0 + version`` unless given."""
    plain = value if value is not None else f"value of {namespace}/{name} v{version}".encode()
    blob = seal_secret(_NAMESPACE_KEY, key_version, namespace, name, version, plain)
    return StoredVersion(namespace, name, version, blob, T0 + version if created_at is None else created_at)


def opened(stored: StoredVersion) -> bytes:
    """The value in a stored envelope (IntegrityError if it was changed or moved)."""
    return open_secret(stored.blob, lambda _: _NAMESPACE_KEY, stored.namespace, stored.name, stored.version)


def namespace_state(namespace: str, generation: int = 1, *, tag: str = "") -> NamespaceState:
    """A namespace's key state with a stand-in seal (``tag`` makes two states differ)."""
    return NamespaceState(namespace, generation, T0, _digest("keys", namespace, generation, tag))


def key_row(
    namespace: str, version: int, status: str = "active", keks: Sequence[str] = ("env://A",)
) -> NamespaceKeyRow:
    """A namespace-key version wrapped by each of ``keks`` (random stand-in ciphertexts)."""
    wraps = [WrappedKey(kek, str(version), os.urandom(40)) for kek in keks]
    return NamespaceKeyRow(namespace, version, status, T0 + version, T0 + version + 0.5, wraps)


def _by_kek(wraps: list[WrappedKey]) -> list[WrappedKey]:
    return sorted(wraps, key=lambda w: w.kek_uri)


def _same_keys(got: list[NamespaceKeyRow], expected: list[NamespaceKeyRow]) -> bool:
    """Key rows equal, wraps compared as sets (their order is not part of the protocol)."""

    def norm(rows: list[NamespaceKeyRow]) -> list[NamespaceKeyRow]:
        return [dataclasses.replace(r, wraps=_by_kek(r.wraps)) for r in rows]

    return norm(got) == norm(expected)


def _link(prev: bytes, row: AuditRow) -> bytes:
    """The test chain's MAC: a hash of the previous MAC and the event (stands in for the HMAC)."""
    return _digest(
        prev,
        row.chain,
        row.seq,
        row.at,
        row.namespace,
        row.name,
        row.action,
        row.result,
        row.row_version,
        row.state,
        sorted(row.context.items()),
    )


class Sealer:
    """A ``seal`` callback for :meth:`~kmsbox.storage.base.Transaction.append_audit`.

    Each of ``specs`` (AuditRow fields to set) becomes an event after the head it is
    given: sequence numbers follow the head's, times (microseconds) grow strictly from
    ``at`` (or from the head's), and each MAC links to the one before. It records every
    head it was given (a backend may call it more than once) and the events it returned.
    """

    def __init__(self, *specs: Mapping[str, Any], at: int | None = None) -> None:
        self.specs = specs or ({},)
        self.at = at
        self.heads: list[ChainHead] = []
        self.events: list[AuditRow] = []

    def __call__(self, head: ChainHead) -> tuple[list[AuditRow], ChainHead]:
        self.heads.append(dataclasses.replace(head))
        seq, at, prev = head.seq, head.at, head.mac
        events: list[AuditRow] = []
        for index, spec in enumerate(self.specs):
            seq += 1
            at = max(at + 1, (self.at + index) if self.at is not None else 0)
            fields: dict[str, Any] = {
                "chain": head.chain,
                "seq": seq,
                "at": at,
                "time": at / 1_000_000,
                "namespace": NS,
                "name": "db-password",
                "secret_version": 1,
                "action": "get",
                "result": "success",
                "actor": "tester",
                "context": {"request_id": f"r{head.chain}.{seq}"},
                "detail": {"n": seq},
                "key_version": 1,
                "mac": b"",
            }
            fields.update(spec)
            row = AuditRow(**fields)
            row.mac = _link(prev, row)
            events.append(row)
            prev = row.mac
        new = ChainHead(head.chain, seq, at, prev, _digest("head", head.chain, seq, prev)[:16])
        self.events = events
        return [dataclasses.replace(e) for e in events], new


def _retry(attempt: Callable[[], Any], limit: int = 5000) -> Any:
    """Run ``attempt`` until it does not raise ConflictError (the only error that means
    "try again"); anything else fails the test."""
    for _ in range(limit):
        try:
            return attempt()
        except ConflictError:
            time.sleep(0.001)
    raise AssertionError(f"still conflicting after {limit} attempts")


class StorageBackendConformance:
    """Tests every storage backend must pass. Provide the ``backend`` fixture (and ``reopen``)."""

    @pytest.fixture
    def reopen(self) -> Callable[[], StorageBackend] | None:
        """A factory of new backends on the same storage as ``backend`` (None when impossible)."""
        return None

    @pytest.fixture(params=["threads on one backend", "two backends"])
    def peer(
        self, request: pytest.FixtureRequest, backend: StorageBackend, reopen: Callable[[], StorageBackend] | None
    ) -> StorageBackend:
        """What a concurrent writer uses: ``backend`` itself from another thread, or a
        second backend on the same storage."""
        if request.param == "threads on one backend":
            return backend
        if reopen is None:
            pytest.skip("this backend cannot be opened twice on the same storage")
        return reopen()

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _namespace(backend: StorageBackend, namespace: str = NS) -> NamespaceState:
        """The namespace's key state, created with key version 1 if it does not exist yet."""
        with backend.transaction() as tx:
            state = tx.namespace_state(namespace, change=True)
            if state is None:
                state = namespace_state(namespace)
                tx.save_namespace_keys(state, [key_row(namespace, 1)], [])
        return state

    def _create(self, backend: StorageBackend, row: SecretRow, current: StoredVersion | None = None) -> SecretRow:
        """Create a secret (and its namespace if needed); returns the row."""
        state = self._namespace(backend, row.namespace)
        first = current or stored_version(row.namespace, row.name, row.version)
        with backend.transaction() as tx:
            assert tx.create_secret(row, first, keys_seal=state.seal) is True
        return row

    @staticmethod
    def _new_version(backend: StorageBackend, namespace: str, name: str, key_version: int = 1) -> SecretRow:
        """Give a secret its next version (under ``key_version``) by compare-and-set."""
        with backend.transaction() as tx:
            row = tx.get_secret(namespace, name)
            assert row is not None
            expected = row.row_version
            row.version += 1
            row.row_version += 1
            row.updated_at = row.version_created_at = T0 + row.version
            row.seal = _digest("secret", namespace, name, row.row_version)[:16]
            tx.update_secret(row, expected, stored_version(namespace, name, row.version, key_version))
        return row

    @staticmethod
    def _get(backend: StorageBackend, namespace: str, name: str) -> SecretRow | None:
        with backend.read() as tx:
            return tx.get_secret(namespace, name)

    @staticmethod
    def _append(backend: StorageBackend, chain: int, *specs: Mapping[str, Any], at: int | None = None) -> Sealer:
        sealer = Sealer(*specs, at=at)
        with backend.transaction() as tx:
            tx.append_audit(chain, sealer)
        return sealer

    @staticmethod
    def _events(backend: StorageBackend, filters: AuditFilter | None = None, limit: int = 1000) -> list[AuditRow]:
        with backend.read() as tx:
            return tx.audit_events(filters or AuditFilter(), None, limit)

    @staticmethod
    def _assert_chains(events: list[AuditRow]) -> None:
        """Every chain's events number 1, 2, 3... and each MAC links to the one before."""
        chains: dict[int, list[AuditRow]] = {}
        for event in events:
            chains.setdefault(event.chain, []).append(event)
        for chain, rows in chains.items():
            rows.sort(key=lambda r: r.seq)
            assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), f"chain {chain} has gaps"
            prev = b""
            for row in rows:
                assert row.mac == _link(prev, row), f"chain {chain} is broken at seq {row.seq}"
                prev = row.mac

    # --- protocol and lifecycle -----------------------------------------------------------

    def test_backend_satisfies_protocol(self, backend: StorageBackend) -> None:
        assert isinstance(backend, StorageBackend)
        assert isinstance(backend.url, str) and backend.url
        with backend.transaction() as tx:
            assert isinstance(tx, Transaction)
        with backend.read() as tx:
            assert isinstance(tx, Transaction)

    def test_schema_version_is_positive_and_stable(self, backend: StorageBackend) -> None:
        version = backend.schema_version()
        assert isinstance(version, int) and version >= 1
        assert backend.schema_version() == version

    def test_describe_names_backend_and_location(self, backend: StorageBackend) -> None:
        described = backend.describe()
        assert isinstance(described.get("backend"), str) and described["backend"]
        assert isinstance(described.get("location"), str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in described.items())

    def test_use_after_close_is_storage_error_and_close_is_idempotent(self, backend: StorageBackend) -> None:
        backend.close()
        backend.close()
        with pytest.raises(StorageError), backend.transaction() as tx:
            tx.get_secret(NS, "x")
        with pytest.raises(StorageError), backend.read() as tx:
            tx.get_secret(NS, "x")

    def test_a_transaction_inside_another_is_a_programming_error(self, backend: StorageBackend) -> None:
        with backend.transaction(), pytest.raises(RuntimeError), backend.read():
            pass
        with backend.read(), pytest.raises(RuntimeError), backend.transaction():
            pass
        # And the backend is still usable afterwards.
        self._create(backend, secret_row(NS, "after"))
        assert self._get(backend, NS, "after") is not None

    def test_new_store_is_empty(self, backend: StorageBackend) -> None:
        with backend.read() as tx:
            assert tx.namespace_state(NS) is None
            assert tx.namespace_keys(NS) == []
            assert tx.namespaces(None, 10) == []
            assert tx.get_secret(NS, "x") is None
            assert tx.read_secret(NS, "x", None) is None
            assert tx.list_versions(NS, "x") == []
            assert tx.list_secrets(NS, SecretFilter(), None, 10) == []
            assert tx.list_secrets(None, SecretFilter(), None, 10) == []
            assert tx.expired_secrets(T0 * 10, 10) == []
            assert tx.versions(NS, None, 10) == []
            assert tx.versions(NS, None, 10, key_version=1) == []
            assert tx.versions_per_key(NS) == {}
            assert tx.audit_heads() == []
            assert tx.audit_events(AuditFilter(), None, 10) == []
            assert tx.audit_events_at([(1, 0, 1)]) == []
            assert tx.last_state(NS, "x") is None
            assert tx.last_state(NS, None) is None
            assert tx.state_events(None, 10) == []
            assert tx.list_jobs() == []
            assert tx.get_job("job") is None

    # --- namespaces and their keys ---------------------------------------------------------

    def test_save_namespace_keys_creates_the_namespace_with_every_wrap(self, backend: StorageBackend) -> None:
        state = namespace_state(NS)
        key = key_row(NS, 1, keks=("env://PRIMARY", "aws-kms://arn:aws:kms:eu-west-1:1:key/escrow", "hcvault://v"))
        other = key_row(OTHER_NS, 1, keks=("env://OTHER",))
        with backend.transaction() as tx:
            assert tx.namespace_state(NS, change=True) is None
            tx.save_namespace_keys(state, [key], [])
            tx.save_namespace_keys(namespace_state(OTHER_NS), [other], [])
        with backend.read() as tx:
            assert tx.namespace_state(NS) == state
            assert _same_keys(tx.namespace_keys(NS), [key])
            assert _same_keys(tx.namespace_keys(OTHER_NS), [other])
        with backend.transaction() as tx:
            assert tx.namespace_state(NS) == state
            assert tx.namespace_state(NS, change=True) == state

    def test_namespace_keys_come_oldest_first(self, backend: StorageBackend) -> None:
        rows = [key_row(NS, v, "retired" if v < 3 else "active") for v in (3, 1, 2)]
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS), rows, [])
        with backend.read() as tx:
            keys = tx.namespace_keys(NS)
        assert [k.version for k in keys] == [1, 2, 3]
        assert _same_keys(keys, sorted(rows, key=lambda r: r.version))

    def test_every_key_status_round_trips(self, backend: StorageBackend) -> None:
        rows = [key_row(NS, v, status) for v, status in enumerate(("active", "rotating", "retired", "compromised"), 1)]
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS), rows, [])
        with backend.read() as tx:
            assert [k.status for k in tx.namespace_keys(NS)] == ["active", "rotating", "retired", "compromised"]

    def test_a_key_version_without_wraps_round_trips(self, backend: StorageBackend) -> None:
        bare = NamespaceKeyRow(NS, 1, "retired", T0, T0 + 1, [])
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS), [bare], [])
        with backend.read() as tx:
            assert tx.namespace_keys(NS) == [bare]

    def test_save_namespace_keys_replaces_an_upserted_row_and_its_whole_set_of_wraps(
        self, backend: StorageBackend
    ) -> None:
        first = key_row(NS, 1, keks=("env://A", "env://B"))
        second = key_row(NS, 2, keks=("env://A",))
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS), [first, second], [])
        replaced = NamespaceKeyRow(NS, 1, "rotating", T0 + 7, T0 + 8, [WrappedKey("env://C", "3", os.urandom(40))])
        changed = namespace_state(NS, 2)
        with backend.transaction() as tx:
            tx.save_namespace_keys(changed, [replaced], [])
        with backend.read() as tx:
            assert tx.namespace_state(NS) == changed
            assert _same_keys(tx.namespace_keys(NS), [replaced, second])

    def test_save_namespace_keys_stores_the_state_as_given(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS), [key_row(NS, 1)], [])
        later = NamespaceState(NS, 5, T0 - 100.25, _digest("a later seal"))
        with backend.transaction() as tx:
            tx.save_namespace_keys(later, [], [])
        with backend.read() as tx:
            assert tx.namespace_state(NS) == later
            assert [k.version for k in tx.namespace_keys(NS)] == [1]

    def test_save_namespace_keys_deletes_versions_with_their_wraps(self, backend: StorageBackend) -> None:
        rows = [key_row(NS, v, keks=("env://A", "env://B")) for v in (1, 2, 3)]
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS), rows, [])
            tx.save_namespace_keys(namespace_state(OTHER_NS), [key_row(OTHER_NS, 1)], [])
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS, 2), [], [1, 3, 99])
        with backend.read() as tx:
            assert _same_keys(tx.namespace_keys(NS), [rows[1]])
            assert [k.version for k in tx.namespace_keys(OTHER_NS)] == [1]
        # A deleted version written again has only its new wraps.
        again = key_row(NS, 1, keks=("env://C",))
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS, 3), [again], [])
        with backend.read() as tx:
            assert _same_keys(tx.namespace_keys(NS), [again, rows[1]])

    def test_delete_and_upsert_of_one_version_in_one_save_leaves_the_new_row(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS), [key_row(NS, 1, keks=("env://A", "env://B"))], [])
        fresh = key_row(NS, 1, "active", keks=("env://C",))
        with backend.transaction() as tx:
            tx.save_namespace_keys(namespace_state(NS, 2), [fresh], [1])
        with backend.read() as tx:
            assert _same_keys(tx.namespace_keys(NS), [fresh])

    def test_namespaces_page_in_order(self, backend: StorageBackend) -> None:
        names = [f"tenant-{i:02d}" for i in range(12)]
        with backend.transaction() as tx:
            for ns in reversed(names):
                tx.save_namespace_keys(namespace_state(ns), [key_row(ns, 1)], [])
        pages: list[list[str]] = []
        after: str | None = None
        while True:
            with backend.read() as tx:
                page = tx.namespaces(after, 5)
            if not page:
                break
            pages.append(page)
            after = page[-1]
            assert len(pages) < 100, "paging does not end"
        assert pages == [names[:5], names[5:10], names[10:]]
        with backend.read() as tx:
            assert tx.namespaces("tenant-03", 2) == ["tenant-04", "tenant-05"]
            assert tx.namespaces("tenant-11", 5) == []
            assert tx.namespaces("tenant-035", 1) == ["tenant-04"]

    def test_concurrent_creators_of_a_namespace_leave_one_consistent_winner(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        start = threading.Barrier(THREADS)
        candidates = [
            (namespace_state(NS, tag=str(i)), key_row(NS, 1, keks=(f"env://CREATOR{i}",))) for i in range(THREADS)
        ]

        def create(i: int) -> str:
            start.wait(10)
            state, row = candidates[i]
            try:
                with (backend if i % 2 else peer).transaction() as tx:
                    if tx.namespace_state(NS, change=True) is not None:
                        return "saw the winner"
                    tx.save_namespace_keys(state, [row], [])
            except ConflictError:
                return "conflict"
            return "created"

        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = list(pool.map(create, range(THREADS)))
        assert outcomes.count("created") == 1, outcomes
        state, row = candidates[outcomes.index("created")]
        with backend.read() as tx:
            assert tx.namespace_state(NS) == state
            assert _same_keys(tx.namespace_keys(NS), [row])

    def test_a_creator_that_saw_no_namespace_does_not_overwrite_one_committed_meanwhile(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        mine = (namespace_state(NS, tag="mine"), key_row(NS, 1, keks=("env://MINE",)))
        theirs = (namespace_state(NS, tag="theirs"), key_row(NS, 1, keks=("env://THEIRS",)))
        their_outcome: list[str] = []

        def create_theirs() -> None:
            try:
                with peer.transaction() as tx:
                    if tx.namespace_state(NS, change=True) is not None:
                        their_outcome.append("saw mine")
                        return
                    tx.save_namespace_keys(theirs[0], [theirs[1]], [])
                their_outcome.append("created")
            except ConflictError:
                their_outcome.append("conflict")

        thread = threading.Thread(target=create_theirs)
        try:
            with backend.transaction() as tx:
                assert tx.namespace_state(NS, change=True) is None
                thread.start()
                thread.join(HOLD)  # they have committed by now, unless our hold keeps them waiting
                tx.save_namespace_keys(mine[0], [mine[1]], [])
            outcome = "created"
        except ConflictError:
            outcome = "conflict"
        thread.join(30)
        assert not thread.is_alive()
        assert sorted([outcome, *their_outcome]) in (["created", "saw mine"], ["conflict", "created"])
        winner = mine if outcome == "created" else theirs
        with backend.read() as tx:
            assert tx.namespace_state(NS) == winner[0]
            assert _same_keys(tx.namespace_keys(NS), [winner[1]])

    # --- secrets ---------------------------------------------------------------------------

    def test_create_secret_round_trips_every_field(self, backend: StorageBackend) -> None:
        row = secret_row(
            NS,
            "db-password",
            version=3,
            status="disabled",
            created_at=T0 - 0.5,
            updated_at=T0 + 0.25,
            expires_at=T0 + 86_400.000001,
            category="database",
            description="primary DB — ünïcode ✓ 'quoted' \"double\" %s ?",
            labels={"env": "prod", "team": "core", "odd ?%s'\"": "x%sy?", "ü": "ß"},
            row_version=5,
            version_created_at=T0 + 3.75,
            seal=bytes(range(256)),
        )
        current = stored_version(NS, "db-password", 3, key_version=7, created_at=T0 + 3.75)
        self._create(backend, row, current)
        with backend.read() as tx:
            assert tx.get_secret(NS, "db-password") == row
            assert tx.read_secret(NS, "db-password", None) == (row, current)
            assert tx.read_secret(NS, "db-password", 3) == (row, current)
            assert tx.list_versions(NS, "db-password") == [current]
            assert tx.list_secrets(NS, SecretFilter(), None, 10) == [row]
        # The envelope comes back byte for byte: its header names the key version, and it opens.
        assert current.namespace_key_version == 7
        assert opened(current) == f"value of {NS}/db-password v3".encode()

    def test_the_current_version_carries_the_rows_version_and_creation_time(self, backend: StorageBackend) -> None:
        row = secret_row(NS, "s", version=4, version_created_at=T0 + 44.5)
        self._create(backend, row, stored_version(NS, "s", 4, created_at=T0 + 44.5))
        with backend.read() as tx:
            found = tx.read_secret(NS, "s", None)
        assert found is not None and found[1] is not None
        assert (found[1].version, found[1].created_at) == (4, T0 + 44.5)

    def test_optional_fields_round_trip_as_none(self, backend: StorageBackend) -> None:
        row = self._create(backend, secret_row(NS, "plain"))
        got = self._get(backend, NS, "plain")
        assert got == row
        assert got is not None
        assert (got.expires_at, got.category, got.description, got.labels) == (None, None, None, {})
        assert (got.access_count, got.last_accessed_at) == (0, None)

    def test_a_large_value_round_trips(self, backend: StorageBackend) -> None:
        value = bytes(range(256)) * 4096  # 1 MiB with every byte value
        current = stored_version(NS, "big", 1, value=value)
        self._create(backend, secret_row(NS, "big"), current)
        with backend.read() as tx:
            found = tx.read_secret(NS, "big", 1)
        assert found is not None and found[1] is not None
        assert found[1].blob == current.blob
        assert opened(found[1]) == value

    def test_missing_secrets_and_versions_are_none(self, backend: StorageBackend) -> None:
        row = self._create(backend, secret_row(NS, "present"))
        with backend.read() as tx:
            assert tx.get_secret(NS, "absent") is None
            assert tx.get_secret(OTHER_NS, "present") is None
            assert tx.read_secret(NS, "absent", None) is None
            assert tx.read_secret(NS, "absent", 1) is None
            assert tx.read_secret(NS, "present", 2) == (row, None)
            assert tx.list_versions(NS, "absent") == []
        with backend.transaction() as tx:
            assert tx.get_secret(NS, "absent") is None

    def test_names_are_case_and_unicode_exact(self, backend: StorageBackend) -> None:
        names = ["Key", "key", "KEY", "ключ-ü", "a?b", "%s", "x'y", 'q"r', "n" * 200]
        for name in names:
            self._create(backend, secret_row(NS, name, description=f"about {name}"))
        with backend.read() as tx:
            for name in names:
                got = tx.get_secret(NS, name)
                assert got is not None and got.description == f"about {name}"
                found = tx.read_secret(NS, name, None)
                assert found is not None and found[1] is not None
                assert opened(found[1]) == f"value of {NS}/{name} v1".encode()

    def test_create_secret_refuses_a_taken_name(self, backend: StorageBackend) -> None:
        current = stored_version(NS, "taken", 1)
        original = self._create(backend, secret_row(NS, "taken", description="first"), current)
        state = self._namespace(backend)
        with backend.transaction() as tx:
            again = secret_row(NS, "taken", description="second", row_version=9)
            assert tx.create_secret(again, stored_version(NS, "taken", 1, value=b"x"), keys_seal=state.seal) is False
        with backend.read() as tx:
            assert tx.get_secret(NS, "taken") == original
            assert tx.read_secret(NS, "taken", None) == (original, current)
            assert tx.list_versions(NS, "taken") == [current]

    def test_create_secret_refuses_a_keys_seal_that_is_not_the_namespace_states(self, backend: StorageBackend) -> None:
        state = self._namespace(backend)
        with backend.transaction() as tx:
            stale = _digest("an older key state")
            assert tx.create_secret(secret_row(NS, "s"), stored_version(NS, "s", 1), keys_seal=stale) is False
            assert tx.create_secret(secret_row(NS, "t"), stored_version(NS, "t", 1), keys_seal=b"") is False
            missing = secret_row(OTHER_NS, "s")
            assert tx.create_secret(missing, stored_version(OTHER_NS, "s", 1), keys_seal=state.seal) is False
            assert tx.get_secret(NS, "s") is None
        with backend.read() as tx:
            assert tx.get_secret(NS, "s") is None
            assert tx.get_secret(NS, "t") is None
            assert tx.get_secret(OTHER_NS, "s") is None
            assert tx.versions(NS, None, 10) == []
        with backend.transaction() as tx:
            assert tx.create_secret(secret_row(NS, "s"), stored_version(NS, "s", 1), keys_seal=state.seal) is True

    def test_create_secret_refuses_a_row_version_the_audit_log_already_records(self, backend: StorageBackend) -> None:
        state = self._namespace(backend)
        self._append(backend, 0, {"name": "s", "action": "delete", "row_version": 3, "state": None})
        self._append(backend, 1, {"name": "other", "action": "create", "row_version": 10, "state": b"x"})
        self._append(backend, 2, {"name": None, "action": "rotate", "row_version": 20, "state": b"k"})
        with backend.transaction() as tx:
            for row_version in (1, 2, 3):
                row = secret_row(NS, "s", row_version=row_version)
                assert tx.create_secret(row, stored_version(NS, "s", 1), keys_seal=state.seal) is False
            assert tx.get_secret(NS, "s") is None
        with backend.transaction() as tx:
            row = secret_row(NS, "s", version=2, row_version=4)
            assert tx.create_secret(row, stored_version(NS, "s", 2), keys_seal=state.seal) is True
            # A state recorded for another name, or for the namespace's keys, is no obstacle.
            fresh = secret_row(NS, "unrelated", row_version=1)
            assert tx.create_secret(fresh, stored_version(NS, "unrelated", 1), keys_seal=state.seal) is True
        with backend.read() as tx:
            assert tx.get_secret(NS, "s") == row

    def test_update_secret_without_a_new_version_keeps_the_current_one(self, backend: StorageBackend) -> None:
        current = stored_version(NS, "s", 1)
        self._create(backend, secret_row(NS, "s", labels={"a": "b"}), current)
        changed = secret_row(
            NS,
            "s",
            version=1,
            status="disabled",
            updated_at=T0 + 9,
            expires_at=T0 + 99,
            category="c",
            description="d",
            labels={"x": "y", "z": "w"},
            row_version=2,
            seal=b"new seal",
        )
        with backend.transaction() as tx:
            tx.update_secret(changed, 1, None)
        with backend.read() as tx:
            assert tx.read_secret(NS, "s", None) == (changed, current)
            assert tx.list_versions(NS, "s") == [current]

    def test_update_secret_without_a_new_version_keeps_the_stored_version_fields(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s", version_created_at=T0 + 1))
        wrong = secret_row(NS, "s", version=9, version_created_at=T0 + 900, row_version=2, description="meta")
        with backend.transaction() as tx:
            tx.update_secret(wrong, 1, None)
        got = self._get(backend, NS, "s")
        assert got is not None
        assert (got.version, got.version_created_at, got.description, got.row_version) == (1, T0 + 1, "meta", 2)

    def test_update_secret_can_clear_optional_fields(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s", expires_at=T0 + 5, category="c", description="d", labels={"a": "b"}))
        cleared = secret_row(NS, "s", row_version=2)
        with backend.transaction() as tx:
            tx.update_secret(cleared, 1, None)
        assert self._get(backend, NS, "s") == cleared

    def test_update_secret_with_a_new_version_moves_the_old_current_one_to_history(
        self, backend: StorageBackend
    ) -> None:
        first = stored_version(NS, "s", 1, value=bytes(range(256)) * 1024)
        self._create(backend, secret_row(NS, "s"), first)
        second = self._new_version(backend, NS, "s", key_version=2)
        third = self._new_version(backend, NS, "s", key_version=3)
        assert (second.version, third.version, third.row_version) == (2, 3, 3)
        with backend.read() as tx:
            latest = tx.read_secret(NS, "s", None)
            versions = tx.list_versions(NS, "s")
            assert latest == (third, versions[-1])
            assert [v.version for v in versions] == [1, 2, 3]
            assert versions[0] == first
            assert [v.namespace_key_version for v in versions] == [1, 2, 3]
            assert [v.created_at for v in versions] == [T0 + 1, T0 + 2, T0 + 3]
            for v in versions:
                assert tx.read_secret(NS, "s", v.version) == (third, v)
                assert opened(v) == (
                    bytes(range(256)) * 1024 if v.version == 1 else f"value of {NS}/s v{v.version}".encode()
                )

    def test_update_secret_with_a_stale_row_version_is_conflict_and_changes_nothing(
        self, backend: StorageBackend
    ) -> None:
        current = stored_version(NS, "s", 1)
        original = self._create(backend, secret_row(NS, "s"), current)
        stale = secret_row(NS, "s", version=2, row_version=3, description="stale")
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.update_secret(stale, 2, stored_version(NS, "s", 2))
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.update_secret(stale, 2, None)
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.update_secret(secret_row(NS, "ghost", row_version=2), 1, None)
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.update_secret(secret_row(NS, "ghost", version=2, row_version=2), 1, stored_version(NS, "ghost", 2))
        with backend.read() as tx:
            assert tx.read_secret(NS, "s", None) == (original, current)
            assert tx.list_versions(NS, "s") == [current]
            assert tx.get_secret(NS, "ghost") is None
            assert tx.list_versions(NS, "ghost") == []

    def test_delete_secret_removes_its_versions_and_access_counts(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "gone"))
        self._new_version(backend, NS, "gone")
        self._new_version(backend, NS, "gone")
        stays = self._create(backend, secret_row(NS, "stays"))
        self._create(backend, secret_row(OTHER_NS, "gone"))
        with backend.transaction() as tx:
            tx.add_access(3, [(NS, "gone", 5, T0 + 5), (NS, "stays", 2, T0 + 2)])
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "gone") == 3
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "gone") == 0
            assert tx.delete_secret(NS, "never-existed") == 0
        with backend.read() as tx:
            assert tx.get_secret(NS, "gone") is None
            assert tx.read_secret(NS, "gone", 1) is None
            assert tx.list_versions(NS, "gone") == []
            assert [v.name for v in tx.versions(NS, None, 100)] == ["stays"]
            assert tx.versions_per_key(NS) == {1: 1}
            assert tx.get_secret(NS, "stays") == dataclasses.replace(stays, access_count=2, last_accessed_at=T0 + 2)
            assert tx.get_secret(OTHER_NS, "gone") is not None
            assert len(tx.list_versions(OTHER_NS, "gone")) == 1

    def test_a_deleted_secret_comes_back_new_when_created_again(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "again", labels={"old": "yes"}))
        self._new_version(backend, NS, "again")
        with backend.transaction() as tx:
            tx.add_access(1, [(NS, "again", 4, T0 + 4)])
            assert tx.delete_secret(NS, "again") == 2
        fresh = secret_row(NS, "again", version=3, row_version=4, description="new")
        current = stored_version(NS, "again", 3, value=b"new")
        self._create(backend, fresh, current)
        with backend.read() as tx:
            assert tx.read_secret(NS, "again", None) == (fresh, current)
            assert tx.read_secret(NS, "again", 1) == (fresh, None)
            assert tx.list_versions(NS, "again") == [current]

    def test_delete_version_removes_only_an_older_version(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s"))
        self._new_version(backend, NS, "s")
        latest = self._new_version(backend, NS, "s", key_version=2)
        with backend.transaction() as tx:
            assert tx.delete_version(NS, "s", 1) is True
            assert tx.delete_version(NS, "s", 1) is False
            assert tx.delete_version(NS, "s", 9) is False
            assert tx.delete_version(NS, "nobody", 1) is False
            # The current version lives with its row: delete_version leaves it.
            assert tx.delete_version(NS, "s", 3) is False
        with backend.read() as tx:
            assert [v.version for v in tx.list_versions(NS, "s")] == [2, 3]
            assert tx.read_secret(NS, "s", 1) == (latest, None)
            assert tx.versions_per_key(NS) == {1: 1, 2: 1}
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "s") == 2

    # --- listing ---------------------------------------------------------------------------

    def _pages(
        self,
        backend: StorageBackend,
        namespace: str | None,
        limit: int,
        filters: SecretFilter | None = None,
    ) -> list[list[tuple[str, str]]]:
        pages: list[list[tuple[str, str]]] = []
        after: tuple[str, str] | None = None
        while True:
            with backend.read() as tx:
                page = tx.list_secrets(namespace, filters or SecretFilter(), after, limit)
            assert len(page) <= limit
            if not page:
                return pages
            pages.append([(row.namespace, row.name) for row in page])
            after = pages[-1][-1]
            assert len(pages) < 1000, "paging does not end"

    def _many(self, backend: StorageBackend, namespace: str, count: int, **changes: Any) -> list[str]:
        """``count`` secrets s00, s01... created in reverse order; their names in order."""
        self._namespace(backend, namespace)
        names = [f"s{i:02d}" for i in range(count)]
        for name in reversed(names):
            self._create(backend, secret_row(namespace, name, **changes))
        return names

    def test_list_secrets_pages_by_name_in_one_namespace(self, backend: StorageBackend) -> None:
        names = self._many(backend, NS, 23)
        self._create(backend, secret_row(OTHER_NS, "s05"))
        self._create(backend, secret_row(OTHER_NS, "a-first"))
        pages = self._pages(backend, NS, 10)
        assert [len(p) for p in pages] == [10, 10, 3]
        assert [name for p in pages for _, name in p] == names
        assert {ns for p in pages for ns, _ in p} == {NS}
        with backend.read() as tx:
            assert [r.name for r in tx.list_secrets(NS, SecretFilter(), (NS, "s20"), 10)] == ["s21", "s22"]
            assert [r.name for r in tx.list_secrets(NS, SecretFilter(), (NS, "s055"), 2)] == ["s06", "s07"]
            assert tx.list_secrets(NS, SecretFilter(), (NS, "s22"), 10) == []
            assert tx.list_secrets("conformance:empty", SecretFilter(), None, 10) == []

    def test_list_secrets_in_one_namespace_after_a_cursor_of_another(self, backend: StorageBackend) -> None:
        names = self._many(backend, NS, 3)
        with backend.read() as tx:
            # Every secret of NS sorts after ("conformance:a", ...) and before ("conformance:z", ...).
            assert [r.name for r in tx.list_secrets(NS, SecretFilter(), ("conformance:a", "zzz"), 10)] == names
            assert tx.list_secrets(NS, SecretFilter(), ("conformance:z", ""), 10) == []

    def test_list_secrets_across_namespaces_in_namespace_then_name_order(self, backend: StorageBackend) -> None:
        self._many(backend, NS, 4)
        self._many(backend, OTHER_NS, 3)
        self._many(backend, "conformance:a", 2)
        expected = (
            [("conformance:a", f"s{i:02d}") for i in range(2)]
            + [(NS, f"s{i:02d}") for i in range(4)]
            + [(OTHER_NS, f"s{i:02d}") for i in range(3)]
        )
        pages = self._pages(backend, None, 4)
        assert [len(p) for p in pages] == [4, 4, 1]
        assert [key for p in pages for key in p] == expected
        with backend.read() as tx:
            page = tx.list_secrets(None, SecretFilter(), (NS, "s03"), 2)
            assert [(r.namespace, r.name) for r in page] == [(OTHER_NS, "s00"), (OTHER_NS, "s01")]

    def test_list_secrets_returns_full_rows_with_access_totals(self, backend: StorageBackend) -> None:
        row = self._create(
            backend, secret_row(NS, "full", category="c", labels={"k": "v"}, expires_at=T0 + 1, description="d")
        )
        with backend.transaction() as tx:
            tx.add_access(11, [(NS, "full", 4, T0 + 40)])
        with backend.read() as tx:
            listed = tx.list_secrets(NS, SecretFilter(), None, 5)
            everywhere = tx.list_secrets(None, SecretFilter(), None, 5)
        expected = dataclasses.replace(row, access_count=4, last_accessed_at=T0 + 40)
        assert listed == everywhere == [expected]

    def test_list_secrets_category_filter_keeps_pages_full(self, backend: StorageBackend) -> None:
        self._namespace(backend)
        for i in range(12):
            self._create(backend, secret_row(NS, f"s{i:02d}", category="db" if i % 2 else "api"))
        self._create(backend, secret_row(NS, "uncategorised"))
        self._create(backend, secret_row(OTHER_NS, "s99", category="db"))
        pages = self._pages(backend, NS, 4, SecretFilter(category="db"))
        assert [name for p in pages for _, name in p] == [f"s{i:02d}" for i in range(1, 12, 2)]
        assert [len(p) for p in pages] == [4, 2]
        assert self._pages(backend, NS, 4, SecretFilter(category="none-such")) == []
        everywhere = self._pages(backend, None, 10, SecretFilter(category="db"))
        assert [key for p in everywhere for key in p][-1] == (OTHER_NS, "s99")

    def test_list_secrets_label_filters_must_all_match_and_keep_pages_full(self, backend: StorageBackend) -> None:
        self._namespace(backend)
        for i in range(30):
            labels = {"env": "prod" if i % 3 == 0 else "dev", "tier": "gold" if i % 2 == 0 else "silver"}
            self._create(backend, secret_row(NS, f"s{i:02d}", labels=labels, category="db" if i % 5 == 0 else None))
        prod = self._pages(backend, NS, 4, SecretFilter(labels={"env": "prod"}))
        assert [len(p) for p in prod] == [4, 4, 2]
        assert [name for p in prod for _, name in p] == [f"s{i:02d}" for i in range(0, 30, 3)]
        both = self._pages(backend, NS, 2, SecretFilter(labels={"env": "prod", "tier": "gold"}))
        assert [name for p in both for _, name in p] == [f"s{i:02d}" for i in range(0, 30, 6)]
        with_category = self._pages(backend, NS, 2, SecretFilter(category="db", labels={"env": "prod", "tier": "gold"}))
        assert [name for p in with_category for _, name in p] == ["s00"]
        assert self._pages(backend, NS, 4, SecretFilter(labels={"env": "staging"})) == []
        assert self._pages(backend, NS, 4, SecretFilter(labels={"missing-key": "prod"})) == []
        assert self._pages(backend, NS, 4, SecretFilter(labels={"env": "prod", "tier": "bronze"})) == []

    def test_expired_secrets_in_expiry_order(self, backend: StorageBackend) -> None:
        late = self._create(backend, secret_row(NS, "late", expires_at=300.0))
        self._create(backend, secret_row(NS, "early", expires_at=100.0))
        self._create(backend, secret_row(OTHER_NS, "middle", expires_at=200.0))
        self._create(backend, secret_row(NS, "also-middle", expires_at=200.0))
        self._create(backend, secret_row(NS, "never"))
        self._create(backend, secret_row(NS, "future", expires_at=10_000.0))
        with backend.transaction() as tx:
            tx.add_access(2, [(NS, "late", 3, 250.0)])
        with backend.read() as tx:
            assert [r.name for r in tx.expired_secrets(250.0, 10)] == ["early", "also-middle", "middle"]
            assert [r.name for r in tx.expired_secrets(250.0, 2)] == ["early", "also-middle"]
            assert [r.name for r in tx.expired_secrets(200.0, 10)] == ["early"]  # strictly before
            assert tx.expired_secrets(100.0, 10) == []
            expired = tx.expired_secrets(400.0, 10)
        assert [r.name for r in expired] == ["early", "also-middle", "middle", "late"]
        assert expired[-1] == dataclasses.replace(late, access_count=3, last_accessed_at=250.0)

    # --- versions for long jobs --------------------------------------------------------------

    @pytest.fixture
    def versions_store(self, backend: StorageBackend) -> list[StoredVersion]:
        """Five secrets with three versions each (v1, v2 under key 1, v3 under key 2), and a
        secret in another namespace; every version of NS, by (name, version)."""
        for name in ("e", "a", "c", "b", "d"):
            self._create(backend, secret_row(NS, name))
            self._new_version(backend, NS, name, key_version=1)
            self._new_version(backend, NS, name, key_version=2)
        self._create(backend, secret_row(OTHER_NS, "a"), stored_version(OTHER_NS, "a", 1, 1))
        with backend.read() as tx:
            rows = [v for name in "abcde" for v in tx.list_versions(NS, name)]
        assert [(v.name, v.version) for v in rows] == [(n, v) for n in "abcde" for v in (1, 2, 3)]
        return rows

    @staticmethod
    def _batches(
        fetch: Callable[[tuple[Any, Any] | None], list[StoredVersion]], limit: int
    ) -> Iterator[list[StoredVersion]]:
        after: tuple[Any, Any] | None = None
        for _ in range(1000):
            batch = fetch(after)
            assert len(batch) <= limit
            if not batch:
                return
            yield batch
            after = (batch[-1].name, batch[-1].version)
        raise AssertionError("batching does not end")

    def test_versions_come_in_batches_by_name_and_version(
        self, backend: StorageBackend, versions_store: list[StoredVersion]
    ) -> None:
        def fetch(after: tuple[Any, Any] | None) -> list[StoredVersion]:
            with backend.read() as tx:
                return tx.versions(NS, after, 4)

        batches = list(self._batches(fetch, 4))
        assert [len(b) for b in batches] == [4, 4, 4, 3]
        assert [v for b in batches for v in b] == versions_store
        with backend.read() as tx:
            assert tx.versions(NS, ("c", 1), 3) == versions_store[7:10]
            assert tx.versions(NS, ("b", 99), 1) == [versions_store[6]]
            assert tx.versions(NS, ("e", 3), 10) == []
            assert [(v.namespace, v.name) for v in tx.versions(OTHER_NS, None, 10)] == [(OTHER_NS, "a")]
            assert tx.versions("conformance:empty", None, 10) == []

    def test_versions_under_one_key_version_read_the_envelope_header(
        self, backend: StorageBackend, versions_store: list[StoredVersion]
    ) -> None:
        def fetch(after: tuple[Any, Any] | None) -> list[StoredVersion]:
            with backend.read() as tx:
                return tx.versions(NS, after, 3, key_version=1)

        batches = list(self._batches(fetch, 3))
        assert [len(b) for b in batches] == [3, 3, 3, 1]
        assert [v for b in batches for v in b] == [v for v in versions_store if v.namespace_key_version == 1]
        with backend.read() as tx:
            assert tx.versions(NS, None, 100, key_version=2) == [
                v for v in versions_store if v.namespace_key_version == 2
            ]
            assert tx.versions(NS, None, 100, key_version=7) == []
            assert [(v.name, v.version) for v in tx.versions(NS, ("c", 1), 2, key_version=1)] == [("c", 2), ("d", 1)]

    def test_versions_per_key_counts_by_envelope_header(
        self, backend: StorageBackend, versions_store: list[StoredVersion]
    ) -> None:
        with backend.read() as tx:
            assert tx.versions_per_key(NS) == {1: 10, 2: 5}
            assert tx.versions_per_key(OTHER_NS) == {1: 1}
            assert tx.versions_per_key("conformance:empty") == {}

    def test_an_envelope_too_short_for_a_header_counts_under_key_version_0(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "short"), StoredVersion(NS, "short", 1, b"KB\x01", T0))
        self._create(backend, secret_row(NS, "fine"))
        with backend.read() as tx:
            assert tx.versions_per_key(NS) == {0: 1, 1: 1}
            assert [v.name for v in tx.versions(NS, None, 10, key_version=1)] == ["fine"]
            assert [v.name for v in tx.versions(NS, None, 10)] == ["fine", "short"]
            (short,) = tx.list_versions(NS, "short")
        assert short.blob == b"KB\x01"
        with pytest.raises(IntegrityError):
            _ = short.namespace_key_version

    def test_replace_envelope_compares_and_sets_on_the_header(
        self, backend: StorageBackend, versions_store: list[StoredVersion]
    ) -> None:
        rewrapped_old = stored_version(NS, "b", 1, 3)
        rewrapped_current = stored_version(NS, "b", 3, 4)
        with backend.transaction() as tx:
            assert tx.replace_envelope(NS, "b", 1, rewrapped_old.blob, 1) is True
            assert tx.replace_envelope(NS, "b", 3, rewrapped_current.blob, 2) is True
        with backend.transaction() as tx:
            # The header moved on: nothing changes.
            assert tx.replace_envelope(NS, "b", 1, b"stale", 1) is False
            assert tx.replace_envelope(NS, "b", 3, b"stale", 2) is False
            assert tx.replace_envelope(NS, "b", 2, b"wrong key", 2) is False
            assert tx.replace_envelope(NS, "b", 9, b"missing", 1) is False
            assert tx.replace_envelope(NS, "nobody", 1, b"missing", 1) is False
            assert tx.replace_envelope(OTHER_NS, "b", 1, b"missing", 1) is False
        with backend.read() as tx:
            versions = tx.list_versions(NS, "b")
            current = tx.read_secret(NS, "b", None)
        assert [v.blob for v in versions] == [rewrapped_old.blob, versions_store[4].blob, rewrapped_current.blob]
        assert [v.created_at for v in versions] == [T0 + 1, T0 + 2, T0 + 3]  # the version's time is kept
        assert [v.namespace_key_version for v in versions] == [3, 1, 4]
        assert current is not None and current[1] is not None and current[1].blob == rewrapped_current.blob
        assert current[0].row_version == 3  # the row itself is not changed
        assert opened(versions[0]) == opened(versions_store[3])

    def test_batches_survive_rewrites_between_them(
        self, backend: StorageBackend, versions_store: list[StoredVersion]
    ) -> None:
        # A rewrap job moves each batch to key 3 and resumes after the last version it handled.
        moved: list[tuple[str, int]] = []
        after: tuple[Any, Any] | None = None
        while True:
            with backend.transaction() as tx:
                batch = tx.versions(NS, after, 4, key_version=1)
                for v in batch:
                    again = stored_version(NS, v.name, v.version, 3)
                    assert tx.replace_envelope(NS, v.name, v.version, again.blob, 1)
            if not batch:
                break
            moved.extend((v.name, v.version) for v in batch)
            after = (batch[-1].name, batch[-1].version)
        assert moved == [(v.name, v.version) for v in versions_store if v.namespace_key_version == 1]
        with backend.read() as tx:
            assert tx.versions_per_key(NS) == {2: 5, 3: 10}
            assert tx.versions(NS, None, 100, key_version=1) == []

    # --- read bookkeeping ----------------------------------------------------------------------

    def test_access_counts_add_up_over_counters_everywhere_a_row_is_read(self, backend: StorageBackend) -> None:
        row = self._create(backend, secret_row(NS, "read-me", expires_at=50.0))
        self._create(backend, secret_row(NS, "unread"))
        with backend.transaction() as tx:
            tx.add_access(5, [(NS, "read-me", 3, T0 + 10)])
        with backend.transaction() as tx:
            tx.add_access(7, [(NS, "read-me", 2, T0 + 30)])
            tx.add_access(5, [(NS, "read-me", 1, T0 + 20)])
        expected = dataclasses.replace(row, access_count=6, last_accessed_at=T0 + 30)
        with backend.read() as tx:
            assert tx.get_secret(NS, "read-me") == expected
            found = tx.read_secret(NS, "read-me", None)
            assert found is not None and found[0] == expected
            assert tx.list_secrets(NS, SecretFilter(), None, 10)[0] == expected
            assert tx.expired_secrets(100.0, 10) == [expected]
            unread = tx.get_secret(NS, "unread")
            assert unread is not None and (unread.access_count, unread.last_accessed_at) == (0, None)
        with backend.transaction() as tx:
            assert tx.get_secret(NS, "read-me") == expected

    def test_access_counts_are_not_part_of_the_row_version(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s"))
        with backend.transaction() as tx:
            tx.add_access(9, [(NS, "s", 4, T0 + 4)])
        changed = secret_row(NS, "s", row_version=2, description="changed")
        with backend.transaction() as tx:
            tx.update_secret(changed, 1, None)
        row = self._new_version(backend, NS, "s")
        got = self._get(backend, NS, "s")
        assert got is not None
        assert (got.row_version, got.description, got.access_count, got.last_accessed_at) == (3, "changed", 4, T0 + 4)
        assert got == dataclasses.replace(row, access_count=4, last_accessed_at=T0 + 4)

    def test_add_access_keeps_the_latest_read_time(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s"))
        with backend.transaction() as tx:
            tx.add_access(1, [(NS, "s", 1, T0 + 50)])
        with backend.transaction() as tx:
            tx.add_access(1, [(NS, "s", 1, T0 + 10)])  # an older read flushed later
        got = self._get(backend, NS, "s")
        assert got is not None and (got.access_count, got.last_accessed_at) == (2, T0 + 50)

    def test_add_access_takes_many_secrets_in_key_order(self, backend: StorageBackend) -> None:
        names = self._many(backend, NS, 5)
        self._create(backend, secret_row(OTHER_NS, "s00"))
        counts = sorted([(NS, n, i + 1, T0 + i) for i, n in enumerate(names)] + [(OTHER_NS, "s00", 9, T0 + 9)])
        with backend.transaction() as tx:
            tx.add_access(4, counts)
        with backend.read() as tx:
            rows = tx.list_secrets(None, SecretFilter(), None, 10)
        assert [(r.namespace, r.name, r.access_count, r.last_accessed_at) for r in rows] == [
            (ns, n, reads, at) for ns, n, reads, at in counts
        ]

    def test_fold_access_moves_a_counter_into_the_shared_totals(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s"))
        self._create(backend, secret_row(NS, "t"))
        with backend.transaction() as tx:
            tx.add_access(5, [(NS, "s", 3, T0 + 3), (NS, "t", 1, T0 + 1)])
            tx.add_access(6, [(NS, "s", 2, T0 + 8)])
        with backend.transaction() as tx:
            tx.fold_access(5)
        with backend.transaction() as tx:
            tx.fold_access(5)  # nothing left under it
            tx.fold_access(12345)  # a counter that never counted
        with backend.read() as tx:
            s, t = tx.get_secret(NS, "s"), tx.get_secret(NS, "t")
        assert s is not None and t is not None
        assert (s.access_count, s.last_accessed_at, t.access_count, t.last_accessed_at) == (5, T0 + 8, 1, T0 + 1)
        # The folded counter starts again from nothing; the other is still its own.
        with backend.transaction() as tx:
            tx.add_access(5, [(NS, "s", 10, T0 + 2)])
            tx.fold_access(6)
            tx.fold_access(5)
        got = self._get(backend, NS, "s")
        assert got is not None and (got.access_count, got.last_accessed_at) == (15, T0 + 8)

    def test_folding_the_shared_totals_changes_nothing(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s"))
        with backend.transaction() as tx:
            tx.add_access(5, [(NS, "s", 3, T0 + 3)])
            tx.fold_access(5)
        with backend.transaction() as tx:
            tx.fold_access(0)  # counter 0 holds the totals themselves
        got = self._get(backend, NS, "s")
        assert got is not None and (got.access_count, got.last_accessed_at) == (3, T0 + 3)

    # --- audit -------------------------------------------------------------------------------

    def test_a_new_chain_starts_at_seq_0_with_an_empty_mac(self, backend: StorageBackend) -> None:
        sealer = self._append(backend, 3)
        assert len(sealer.heads) >= 1
        assert sealer.heads[-1] == ChainHead(3, 0, 0, b"", b"")

    def test_append_audit_stores_the_events_and_the_new_head(self, backend: StorageBackend) -> None:
        sealer = Sealer(
            {
                "context": {"ip": "10.0.0.1", "request_id": "ä ✓"},
                "detail": {"nested": [1, "x", {"deep": None}], "n": 1.5, "flag": True},
                "row_version": 4,
                "state": bytes(range(32)),
                "secret_version": 3,
            },
            {
                "namespace": None,
                "name": None,
                "secret_version": None,
                "actor": None,
                "action": "rotate",
                "result": "failure",
                "context": {},
                "detail": {},
                "key_version": 2,
            },
            at=1_700_000_000_000_000,
        )
        with backend.transaction() as tx:
            head = tx.append_audit(0, sealer)
            assert tx.audit_heads() == [head]  # its own write, before the commit
        first, second = sealer.events
        assert head == ChainHead(0, 2, second.at, second.mac, head.seal)
        assert head.seal  # the head's seal is stored with it
        with backend.read() as tx:
            assert tx.audit_heads() == [head]
            assert tx.audit_events(AuditFilter(), None, 10) == [first, second]
        assert not first.malformed and first.record == 2
        # The next append starts from that head, seal and all.
        after = self._append(backend, 0)
        assert after.heads[-1] == head
        self._assert_chains(self._events(backend))

    def test_events_of_the_old_record_format_round_trip(self, backend: StorageBackend) -> None:
        sealer = self._append(backend, 0, {"record": 1, "row_version": None, "state": None})
        assert self._events(backend) == sealer.events
        assert self._events(backend)[0].record == 1

    def test_append_audit_many_events_at_once(self, backend: StorageBackend) -> None:
        sealer = self._append(backend, 1, *({"detail": {"i": i}} for i in range(50)))
        with backend.read() as tx:
            assert tx.audit_events(AuditFilter(), None, 100) == sealer.events
            assert [h.seq for h in tx.audit_heads()] == [50]

    def test_a_rolled_back_append_leaves_the_head_as_it_was(self, backend: StorageBackend) -> None:
        kept = self._append(backend, 0)
        with backend.read() as tx:
            (head,) = tx.audit_heads()
        with pytest.raises(_Boom), backend.transaction() as tx:
            tx.append_audit(0, Sealer({"action": "rolled-back"}))
            tx.append_audit(1, Sealer({"action": "rolled-back"}))
            raise _Boom
        with backend.read() as tx:
            assert tx.audit_heads() == [head]
            assert tx.audit_events(AuditFilter(), None, 10) == kept.events
        again = self._append(backend, 0)
        assert again.heads[-1] == head
        self._assert_chains(self._events(backend))
        assert [e.seq for e in self._events(backend)] == [1, 2]

    def test_an_error_in_the_seal_callback_writes_nothing(self, backend: StorageBackend) -> None:
        self._append(backend, 0)

        def refuse(head: ChainHead) -> tuple[list[AuditRow], ChainHead]:
            raise IntegrityError("the head does not authenticate")

        with backend.transaction() as tx:
            before = tx.audit_heads()
            with pytest.raises(IntegrityError):
                tx.append_audit(0, refuse)
            with pytest.raises(IntegrityError):
                tx.append_audit(5, refuse)
            # The store goes on with another chain in the same transaction.
            tx.append_audit(1, Sealer())
        with backend.read() as tx:
            assert [h.chain for h in tx.audit_heads()] in ([0, 1], [0, 1, 5])
            assert tx.audit_heads()[0] == before[0]
            assert [(e.chain, e.seq) for e in tx.audit_events(AuditFilter(), None, 10)] == [(0, 1), (1, 1)]
        assert self._append(backend, 5).heads[-1] == ChainHead(5, 0, 0, b"", b"")

    def test_audit_heads_by_chain_number(self, backend: StorageBackend) -> None:
        for chain in (7, 2, 30, 2):
            self._append(backend, chain)
        with backend.read() as tx:
            heads = tx.audit_heads()
        assert [(h.chain, h.seq) for h in heads] == [(2, 2), (7, 1), (30, 1)]

    def test_audit_events_follow_time_then_chain_then_seq(self, backend: StorageBackend) -> None:
        self._append(backend, 2, {}, {}, at=1_000)  # at 1000 and 1001
        self._append(backend, 1, {}, at=1_000)  # at 1000: chain 1 sorts before chain 2
        self._append(backend, 0, {}, at=5_000)
        self._append(backend, 1, {}, at=900)  # at 1001 (after its chain's last event)
        with backend.read() as tx:
            events = tx.audit_events(AuditFilter(), None, 10)
        assert [e.position for e in events] == [(1000, 1, 1), (1000, 2, 1), (1001, 1, 2), (1001, 2, 2), (5000, 0, 1)]

    @pytest.fixture
    def audit_store(self, backend: StorageBackend) -> list[AuditRow]:
        """Twelve events over three chains: event i at second 10 * i, on chain i % 3,
        alternating namespaces, names n0-n2, every fourth a delete, 5 and 6 denied."""
        events: list[AuditRow] = []
        for i in range(1, 13):
            spec = {
                "namespace": NS if i % 2 else OTHER_NS,
                "name": f"n{i % 3}",
                "action": "get" if i % 4 else "delete",
                "result": "denied" if i in (5, 6) else "success",
                "detail": {"i": i},
            }
            events += self._append(backend, i % 3, spec, at=i * 10_000_000).events
        return events

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            (AuditFilter(), list(range(1, 13))),
            (AuditFilter(namespace=NS), [1, 3, 5, 7, 9, 11]),
            (AuditFilter(name="n0"), [3, 6, 9, 12]),
            (AuditFilter(namespace=OTHER_NS, name="n0"), [6, 12]),
            (AuditFilter(action="delete"), [4, 8, 12]),
            (AuditFilter(result="denied"), [5, 6]),
            (AuditFilter(since=30.0), list(range(3, 13))),
            (AuditFilter(until=30.0), [1, 2]),
            (AuditFilter(since=30.0, until=60.0), [3, 4, 5]),
            (AuditFilter(since=30.5, until=31.0), []),
            (AuditFilter(namespace=NS, action="get", result="success", since=20.0, until=100.0), [3, 7, 9]),
            (AuditFilter(namespace="conformance:none"), []),
            (AuditFilter(name="n'; --"), []),
        ],
    )
    def test_audit_events_filters(
        self, backend: StorageBackend, audit_store: list[AuditRow], filters: AuditFilter, expected: list[int]
    ) -> None:
        with backend.read() as tx:
            rows = tx.audit_events(filters, None, 100)
        assert [r.detail["i"] for r in rows] == expected
        assert rows == [audit_store[i - 1] for i in expected]

    def test_audit_events_cursor_and_limit_apply_after_filtering(
        self, backend: StorageBackend, audit_store: list[AuditRow]
    ) -> None:
        seen: list[int] = []
        after: AuditPosition | None = None
        while True:
            with backend.read() as tx:
                page = tx.audit_events(AuditFilter(namespace=NS), after, 2)
            if not page:
                break
            assert len(page) <= 2
            seen.extend(r.detail["i"] for r in page)
            after = page[-1].position
            assert len(seen) < 100, "paging does not end"
        assert seen == [1, 3, 5, 7, 9, 11]
        with backend.read() as tx:
            assert [r.detail["i"] for r in tx.audit_events(AuditFilter(name="n0"), audit_store[5].position, 1)] == [9]
            # A cursor between events (not an event's own position) works too.
            between = (audit_store[3].at + 1, 0, 0)
            assert [r.detail["i"] for r in tx.audit_events(AuditFilter(), between, 2)] == [5, 6]

    def test_audit_events_at_the_given_positions(self, backend: StorageBackend, audit_store: list[AuditRow]) -> None:
        wanted = [audit_store[7].position, audit_store[0].position, (1, 2, 3), audit_store[11].position]
        with backend.read() as tx:
            found = tx.audit_events_at(wanted)
            assert tx.audit_events_at([]) == []
        assert sorted(found, key=lambda e: e.position) == [audit_store[0], audit_store[7], audit_store[11]]

    def test_audit_events_at_many_positions(self, backend: StorageBackend) -> None:
        sealer = self._append(backend, 0, *({} for _ in range(450)))
        positions = [e.position for e in sealer.events]
        missing = [(p[0], p[1], p[2] + 1000) for p in positions[:50]]
        with backend.read() as tx:
            found = tx.audit_events_at(positions + missing)
        assert sorted(found, key=lambda e: e.position) == sealer.events

    def test_last_state_is_the_highest_row_version_recorded(self, backend: StorageBackend) -> None:
        self._append(backend, 0, {"name": "s", "action": "create", "row_version": 1, "state": b"one"}, at=10)
        self._append(backend, 1, {"name": "s", "action": "update", "row_version": 3, "state": b"three"}, at=20)
        # Recorded later, on another chain, but an older state: it is not the last.
        self._append(backend, 2, {"name": "s", "action": "update", "row_version": 2, "state": b"two"}, at=30)
        # Events that record no state do not count.
        self._append(backend, 0, {"name": "s", "action": "get", "row_version": None, "state": None}, at=40)
        self._append(backend, 1, {"name": None, "action": "rotate", "row_version": 4, "state": b"keys"}, at=50)
        self._append(backend, 2, {"namespace": OTHER_NS, "name": "s", "row_version": 9, "state": b"x"}, at=60)
        with backend.read() as tx:
            last = tx.last_state(NS, "s")
            keys = tx.last_state(NS, None)
            assert tx.last_state(NS, "nobody") is None
            assert tx.last_state("conformance:none", None) is None
            other = tx.last_state(OTHER_NS, "s")
            assert other is not None and other.row_version == 9
            assert tx.last_state(OTHER_NS, None) is None
        assert last == StateEvent(NS, "s", 3, "update", b"three", 1, (20, 1, 1))
        assert keys == StateEvent(NS, None, 4, "rotate", b"keys", 1, (50, 1, 2))

    def test_last_state_of_a_deletion_has_no_state(self, backend: StorageBackend) -> None:
        self._append(
            backend, 0, {"name": "s", "action": "delete", "row_version": 2, "state": None, "secret_version": None}
        )
        with backend.read() as tx:
            last = tx.last_state(NS, "s")
        assert last is not None and (last.action, last.state, last.secret_version, last.row_version) == (
            "delete",
            None,
            None,
            2,
        )

    def test_state_events_of_secrets_in_namespace_name_row_version_order(self, backend: StorageBackend) -> None:
        specs: list[dict[str, Any]] = [
            {"namespace": OTHER_NS, "name": "a", "row_version": 1, "state": b"1"},
            {"namespace": NS, "name": "b", "row_version": 2, "state": b"2"},
            {"namespace": NS, "name": "b", "row_version": 1, "state": b"1"},
            {"namespace": NS, "name": "a", "row_version": 5, "state": b"5"},
            {"namespace": NS, "name": None, "row_version": 3, "state": b"keys"},  # a namespace's: left out
            {"namespace": NS, "name": "c", "row_version": None, "state": None},  # no state: left out
        ]
        for chain, spec in enumerate(specs):
            self._append(backend, chain, spec)
        expected = [(NS, "a", 5), (NS, "b", 1), (NS, "b", 2), (OTHER_NS, "a", 1)]
        seen: list[StateEvent] = []
        after: tuple[str, str, int] | None = None
        while True:
            with backend.read() as tx:
                page = tx.state_events(after, 3)
            if not page:
                break
            seen += page
            last = page[-1]
            assert last.name is not None
            after = (last.namespace, last.name, last.row_version)
        assert [(e.namespace, e.name, e.row_version) for e in seen] == expected
        assert [e.state for e in seen] == [b"5", b"1", b"2", b"1"]
        with backend.read() as tx:
            assert [(e.name, e.row_version) for e in tx.state_events((NS, "b", 1), 1)] == [("b", 2)]

    def test_a_seal_callback_may_only_reseal_the_head(self, backend: StorageBackend) -> None:
        kept = self._append(backend, 0, {}, {})
        with backend.read() as tx:
            (head,) = tx.audit_heads()
        resealed = dataclasses.replace(head, seal=_digest("resealed"))
        with backend.transaction() as tx:
            assert tx.append_audit(0, lambda h: ([], dataclasses.replace(h, seal=resealed.seal))) == resealed
        with backend.read() as tx:
            assert tx.audit_heads() == [resealed]
            assert tx.audit_events(AuditFilter(), None, 10) == kept.events
        assert self._append(backend, 0).heads[-1] == resealed

    def test_rows_read_back_are_the_callers_to_change(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s", labels={"a": "b"}))
        self._new_version(backend, NS, "s")
        self._append(
            backend, 0, {"name": "s", "row_version": 2, "state": b"x", "context": {"k": "v"}, "detail": {"d": [1]}}
        )
        with backend.transaction() as tx:
            tx.put_job(JobRow("job", "rotate", "{}", T0))

        def read_all() -> list[Any]:
            with backend.read() as tx:
                return [
                    tx.get_secret(NS, "s"),
                    tx.read_secret(NS, "s", 1),
                    tx.list_secrets(NS, SecretFilter(), None, 10),
                    tx.list_versions(NS, "s"),
                    tx.namespace_state(NS),
                    tx.namespace_keys(NS),
                    tx.audit_heads(),
                    tx.audit_events(AuditFilter(), None, 10),
                    tx.last_state(NS, "s"),
                    tx.state_events(None, 10),
                    tx.get_job("job"),
                    tx.list_jobs(),
                ]

        before = copy.deepcopy(read_all())  # a copy of its own, in case a backend hands out what it stores
        copies = read_all()
        (secret, (_, old), listed, versions, state, keys, heads, events, last, states, job, jobs) = copies
        secret.labels["a"] = "changed"
        secret.version = 99
        listed[0].labels.clear()
        old.blob = b"changed"
        versions[0].version = 99
        state.generation = 99
        keys[0].wraps.clear()
        keys[0].status = "changed"
        heads[0].seq = 99
        events[0].context["k"] = "changed"
        events[0].detail["d"].append(2)
        events[0].action = "changed"
        last.row_version = 99
        states[0].row_version = 99
        job.state = "changed"
        jobs.clear()
        assert read_all() == before

    def test_rows_written_are_stored_as_they_were_at_the_call(self, backend: StorageBackend) -> None:
        state = namespace_state(NS)
        key = key_row(NS, 1, keks=("env://A", "env://B"))
        row = secret_row(NS, "s", labels={"a": "b"})
        job = JobRow("job", "rotate", "{}", T0)
        sealed: list[AuditRow] = []

        def seal(head: ChainHead) -> tuple[list[AuditRow], ChainHead]:
            events, new = Sealer({"context": {"k": "v"}, "detail": {"d": [1]}})(head)
            sealed[:] = events
            return events, new

        with backend.transaction() as tx:
            tx.save_namespace_keys(state, [key], [])
            assert tx.create_secret(row, stored_version(NS, "s", 1), keys_seal=state.seal)
            tx.append_audit(0, seal)
            tx.put_job(job)
        with backend.read() as tx:
            before = copy.deepcopy(
                (
                    tx.namespace_keys(NS),
                    tx.get_secret(NS, "s"),
                    tx.audit_events(AuditFilter(), None, 10),
                    tx.get_job("job"),
                )
            )
        key.wraps.clear()
        row.labels["a"] = "changed"
        sealed[0].context["k"] = "changed"
        sealed[0].detail["d"].append(2)
        job.state = "changed"
        with backend.read() as tx:
            after = (
                tx.namespace_keys(NS),
                tx.get_secret(NS, "s"),
                tx.audit_events(AuditFilter(), None, 10),
                tx.get_job("job"),
            )
        assert after == before

    # --- jobs ----------------------------------------------------------------------------------

    def test_jobs_put_get_replace_list_delete(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            assert tx.get_job("rotate:one") is None
            tx.put_job(JobRow("rotate:one", "rotate", '{"after": null}', T0))
            tx.put_job(JobRow("rewrap:two", "rewrap", "{}", T0 + 1))
        with backend.transaction() as tx:
            tx.put_job(JobRow("rotate:one", "reencrypt", '{"after": ["b", 2], "ü": "✓"}', T0 + 2))
        with backend.read() as tx:
            assert tx.get_job("rotate:one") == JobRow(
                "rotate:one", "reencrypt", '{"after": ["b", 2], "ü": "✓"}', T0 + 2
            )
            assert tx.list_jobs() == [
                JobRow("rewrap:two", "rewrap", "{}", T0 + 1),
                JobRow("rotate:one", "reencrypt", '{"after": ["b", 2], "ü": "✓"}', T0 + 2),
            ]
        with backend.transaction() as tx:
            tx.delete_job("rotate:one")
            tx.delete_job("never-existed")
        with backend.read() as tx:
            assert tx.get_job("rotate:one") is None
            assert [j.job_id for j in tx.list_jobs()] == ["rewrap:two"]

    # --- atomicity -------------------------------------------------------------------------

    def test_an_exception_rolls_back_every_write(self, backend: StorageBackend) -> None:
        state = self._namespace(backend)
        kept = self._create(backend, secret_row(NS, "kept"))
        self._new_version(backend, NS, "kept")
        with backend.transaction() as tx:
            tx.add_access(8, [(NS, "kept", 2, T0 + 2)])
            tx.put_job(JobRow("job-kept", "rotate", "{}", T0))
        self._append(backend, 0)
        with backend.read() as tx:
            before = (
                tx.namespace_state(NS),
                tx.namespace_keys(NS),
                tx.read_secret(NS, "kept", None),
                tx.list_versions(NS, "kept"),
                tx.audit_heads(),
                tx.audit_events(AuditFilter(), None, 100),
                tx.list_jobs(),
                tx.versions_per_key(NS),
            )
        with pytest.raises(_Boom), backend.transaction() as tx:
            assert tx.create_secret(secret_row(NS, "half"), stored_version(NS, "half", 1), keys_seal=state.seal)
            row = tx.get_secret(NS, "kept")
            assert row is not None
            row.version, row.row_version, row.description = 3, 3, "changed"
            tx.update_secret(row, 2, stored_version(NS, "kept", 3))
            assert tx.replace_envelope(NS, "kept", 1, stored_version(NS, "kept", 1, 5).blob, 1)
            assert tx.delete_version(NS, "kept", 2)
            tx.add_access(8, [(NS, "kept", 5, T0 + 9)])
            tx.fold_access(8)
            tx.save_namespace_keys(namespace_state(NS, 2), [key_row(NS, 2)], [1])
            tx.save_namespace_keys(namespace_state(OTHER_NS), [key_row(OTHER_NS, 1)], [])
            tx.append_audit(0, Sealer({"name": "half", "row_version": 1, "state": b"s"}))
            tx.append_audit(4, Sealer())
            tx.put_job(JobRow("job-new", "rotate", "{}", T0))
            tx.delete_job("job-kept")
            raise _Boom
        with pytest.raises(_Boom), backend.transaction() as tx:
            assert tx.delete_secret(NS, "kept") == 2
            raise _Boom
        with backend.read() as tx:
            after = (
                tx.namespace_state(NS),
                tx.namespace_keys(NS),
                tx.read_secret(NS, "kept", None),
                tx.list_versions(NS, "kept"),
                tx.audit_heads(),
                tx.audit_events(AuditFilter(), None, 100),
                tx.list_jobs(),
                tx.versions_per_key(NS),
            )
            assert tx.get_secret(NS, "half") is None
            assert tx.list_versions(NS, "half") == []
            assert tx.namespace_state(OTHER_NS) is None
            assert tx.last_state(NS, "half") is None
            assert tx.namespaces(None, 10) == [NS]
        assert after == before
        found = before[2]
        assert found is not None and found[0].access_count == 2 and found[0].name == kept.name

    def test_an_exception_inside_a_read_propagates_unchanged(self, backend: StorageBackend) -> None:
        with pytest.raises(_Boom), backend.read():
            raise _Boom
        assert self._get(backend, NS, "x") is None

    def test_a_transaction_sees_its_own_writes(self, backend: StorageBackend) -> None:
        state = namespace_state(NS)
        with backend.transaction() as tx:
            tx.save_namespace_keys(state, [key_row(NS, 1)], [])
            assert tx.namespace_state(NS) == state
            row = secret_row(NS, "mine")
            assert tx.create_secret(row, stored_version(NS, "mine", 1), keys_seal=state.seal)
            assert tx.get_secret(NS, "mine") == row
            assert [v.version for v in tx.list_versions(NS, "mine")] == [1]
            changed = secret_row(NS, "mine", version=2, row_version=2)
            tx.update_secret(changed, 1, stored_version(NS, "mine", 2))
            assert tx.get_secret(NS, "mine") == changed
            assert [v.version for v in tx.versions(NS, None, 10)] == [1, 2]
            tx.add_access(3, [(NS, "mine", 2, T0 + 2)])
            got = tx.get_secret(NS, "mine")
            assert got is not None and got.access_count == 2
            sealer = Sealer({"name": "mine", "row_version": 2, "state": b"x"})
            head = tx.append_audit(0, sealer)
            assert tx.audit_heads() == [head]
            assert tx.audit_events(AuditFilter(), None, 10) == sealer.events
            last = tx.last_state(NS, "mine")
            assert last is not None and last.row_version == 2
            tx.put_job(JobRow("j", "k", "{}", T0))
            assert tx.get_job("j") is not None

    def test_reads_see_committed_data_only(self, backend: StorageBackend, peer: StorageBackend) -> None:
        self._namespace(backend)
        written, looked = threading.Event(), threading.Event()

        def write_then_roll_back() -> None:
            with pytest.raises(_Boom), peer.transaction() as tx:
                state = tx.namespace_state(NS)
                assert state is not None
                tx.create_secret(
                    secret_row(NS, "uncommitted"), stored_version(NS, "uncommitted", 1), keys_seal=state.seal
                )
                tx.append_audit(0, Sealer())
                written.set()
                looked.wait(HOLD)  # a backend whose reads wait for writers keeps the reader out until now
                raise _Boom

        thread = threading.Thread(target=write_then_roll_back)
        thread.start()
        try:
            assert written.wait(10)
            with backend.read() as tx:
                seen = (
                    tx.get_secret(NS, "uncommitted"),
                    tx.audit_heads(),
                    tx.list_secrets(NS, SecretFilter(), None, 5),
                )
            looked.set()
        finally:
            thread.join(30)
        assert seen == (None, [], [])

    def test_a_conflict_rolls_back_the_whole_transaction(self, backend: StorageBackend) -> None:
        state = self._namespace(backend)
        self._create(backend, secret_row(NS, "s"))
        with pytest.raises(ConflictError), backend.transaction() as tx:
            assert tx.create_secret(
                secret_row(NS, "written-first"), stored_version(NS, "written-first", 1), keys_seal=state.seal
            )
            tx.append_audit(0, Sealer())
            tx.update_secret(secret_row(NS, "s", row_version=3), 2, None)
        with backend.read() as tx:
            assert tx.get_secret(NS, "written-first") is None
            assert tx.audit_heads() == []

    def test_the_backend_is_usable_after_conflicts(self, backend: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "s"))
        for _ in range(3):
            with pytest.raises(ConflictError), backend.transaction() as tx:
                tx.update_secret(secret_row(NS, "s", row_version=5), 4, None)
        changed = secret_row(NS, "s", row_version=2, description="after")
        with backend.transaction() as tx:
            tx.update_secret(changed, 1, None)
        assert self._get(backend, NS, "s") == changed

    # --- concurrency -----------------------------------------------------------------------

    def test_compare_and_set_increments_lose_no_update(self, backend: StorageBackend, peer: StorageBackend) -> None:
        self._create(backend, secret_row(NS, "counter"))

        def increment(on: StorageBackend) -> None:
            # Read outside the write (no hold): only the compare-and-set keeps the count right.
            with on.read() as tx:
                row = tx.get_secret(NS, "counter")
            assert row is not None
            expected = row.row_version
            row.version += 1
            row.row_version += 1
            with on.transaction() as tx:
                tx.update_secret(row, expected, stored_version(NS, "counter", row.version))

        def worker(i: int) -> None:
            on = backend if i % 2 else peer
            for _ in range(PER_THREAD):
                _retry(lambda: increment(on))

        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(worker, i) for i in range(THREADS)]:
                future.result()
        total = 1 + THREADS * PER_THREAD
        with backend.read() as tx:
            row = tx.get_secret(NS, "counter")
            versions = tx.list_versions(NS, "counter")
        assert row is not None and (row.version, row.row_version) == (total, total)
        assert [v.version for v in versions] == list(range(1, total + 1))
        assert all(opened(v) == f"value of {NS}/counter v{v.version}".encode() for v in versions)

    def test_a_held_secret_holds_off_another_writer_until_commit(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        self._create(backend, secret_row(NS, "hot", description="original"))
        held = threading.Event()

        def hold_then_change() -> None:
            with backend.transaction() as tx:
                row = tx.get_secret(NS, "hot")
                assert row is not None
                held.set()
                time.sleep(HOLD)
                changed = dataclasses.replace(row, description="changed by the holder", row_version=2)
                tx.update_secret(changed, 1, None)

        def read_to_change() -> SecretRow | None:
            assert held.wait(10)
            with peer.transaction() as tx:
                return tx.get_secret(NS, "hot")

        with ThreadPoolExecutor(2) as pool:
            holder, other = pool.submit(hold_then_change), pool.submit(read_to_change)
            holder.result()
            seen = other.result()
        assert seen is not None
        assert (seen.description, seen.row_version) == ("changed by the holder", 2)

    def test_a_namespace_held_for_change_keeps_a_create_waiting_then_refused(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        old = self._namespace(backend)
        held = threading.Event()
        changed = namespace_state(NS, 2, tag="compromised")

        def change_the_keys() -> None:
            with backend.transaction() as tx:
                assert tx.namespace_state(NS, change=True) == old
                held.set()
                time.sleep(HOLD)
                tx.save_namespace_keys(changed, [key_row(NS, 1, "compromised"), key_row(NS, 2)], [])

        def create_under_the_old_keys() -> bool:
            assert held.wait(10)
            with peer.transaction() as tx:
                return tx.create_secret(secret_row(NS, "s"), stored_version(NS, "s", 1), keys_seal=old.seal)

        with ThreadPoolExecutor(2) as pool:
            changer, creator = pool.submit(change_the_keys), pool.submit(create_under_the_old_keys)
            changer.result()
            created = creator.result()
        assert created is False
        with backend.read() as tx:
            assert tx.get_secret(NS, "s") is None
            assert tx.namespace_state(NS) == changed

    def test_a_create_holds_the_namespace_state_against_a_change(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        state = self._namespace(backend)
        created = threading.Event()

        def create() -> None:
            with backend.transaction() as tx:
                assert tx.create_secret(secret_row(NS, "s"), stored_version(NS, "s", 1), keys_seal=state.seal)
                created.set()
                time.sleep(HOLD)

        def change_the_keys() -> SecretRow | None:
            assert created.wait(10)
            with peer.transaction() as tx:
                assert tx.namespace_state(NS, change=True) is not None
                # Holding the state, a key change sees every secret written under the old keys.
                return tx.get_secret(NS, "s")

        with ThreadPoolExecutor(2) as pool:
            creator, changer = pool.submit(create), pool.submit(change_the_keys)
            creator.result()
            seen = changer.result()
        assert seen is not None and seen.name == "s"

    def test_a_rewrap_committed_while_a_new_version_waits_is_kept_in_the_history(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        first = stored_version(NS, "s", 1, 1)
        self._create(backend, secret_row(NS, "s"), first)
        rewrapped = stored_version(NS, "s", 1, 3)
        replaced = threading.Event()

        def rewrap() -> None:
            with backend.transaction() as tx:
                assert tx.replace_envelope(NS, "s", 1, rewrapped.blob, 1)
                replaced.set()
                time.sleep(HOLD)

        def put_a_new_version() -> None:
            # Compare-and-set on the row version read before: a rewrap does not change it.
            assert replaced.wait(10)
            newer = secret_row(NS, "s", version=2, row_version=2)
            with peer.transaction() as tx:
                tx.update_secret(newer, 1, stored_version(NS, "s", 2, 3))

        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(rewrap), pool.submit(put_a_new_version)]:
                future.result()
        with backend.read() as tx:
            versions = tx.list_versions(NS, "s")
            assert tx.versions(NS, None, 10, key_version=1) == []
        assert [(v.version, v.namespace_key_version) for v in versions] == [(1, 3), (2, 3)]
        assert versions[0].blob == rewrapped.blob

    def test_a_create_after_holding_the_name_sees_a_delete_that_committed_meanwhile(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        # The store's put of a name being deleted: hold the name, read its last state, create after it.
        state = self._namespace(backend)
        self._create(backend, secret_row(NS, "s", row_version=2))
        self._append(backend, 0, {"name": "s", "row_version": 2, "state": b"two"})
        deleting = threading.Event()

        def delete() -> None:
            with backend.transaction() as tx:
                assert tx.delete_secret(NS, "s") == 1
                tx.append_audit(0, Sealer({"name": "s", "action": "delete", "row_version": 3, "state": None}))
                deleting.set()
                time.sleep(HOLD)

        def put_again() -> bool:
            assert deleting.wait(10)
            with peer.transaction() as tx:
                assert tx.get_secret(NS, "s") is None  # after the delete committed
                last = tx.last_state(NS, "s")
                assert last is not None and last.row_version == 3
                row = secret_row(NS, "s", version=2, row_version=last.row_version + 1)
                return tx.create_secret(row, stored_version(NS, "s", 2), keys_seal=state.seal)

        with ThreadPoolExecutor(2) as pool:
            deleter, putter = pool.submit(delete), pool.submit(put_again)
            deleter.result()
            assert putter.result() is True
        got = self._get(backend, NS, "s")
        assert got is not None and (got.version, got.row_version) == (2, 4)

    def test_concurrent_creates_of_one_secret_have_one_winner(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        state = self._namespace(backend)
        start = threading.Barrier(THREADS)

        def create(i: int) -> bool:
            start.wait(10)
            row = secret_row(NS, "race", description=f"writer {i}")
            current = stored_version(NS, "race", 1, value=f"writer {i}".encode())

            def attempt() -> bool:
                with (backend if i % 2 else peer).transaction() as tx:
                    return tx.create_secret(row, current, keys_seal=state.seal)

            won: bool = _retry(attempt)
            return won

        with ThreadPoolExecutor(THREADS) as pool:
            won = list(pool.map(create, range(THREADS)))
        assert won.count(True) == 1
        winner = won.index(True)
        with backend.read() as tx:
            found = tx.read_secret(NS, "race", None)
        assert found is not None and found[1] is not None
        assert found[0].description == f"writer {winner}"
        assert opened(found[1]) == f"writer {winner}".encode()

    def test_concurrent_appends_to_one_chain_get_contiguous_sequence_numbers(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        def worker(i: int) -> None:
            on = backend if i % 2 else peer
            for _ in range(PER_THREAD):

                def append() -> None:
                    with on.transaction() as tx:
                        tx.append_audit(0, Sealer({"actor": f"thread-{i}"}))

                _retry(append)

        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(worker, i) for i in range(THREADS)]:
                future.result()
        events = self._events(backend)
        assert [e.seq for e in events] == list(range(1, THREADS * PER_THREAD + 1))
        self._assert_chains(events)
        with backend.read() as tx:
            (head,) = tx.audit_heads()
        assert (head.chain, head.seq, head.at, head.mac) == (0, events[-1].seq, events[-1].at, events[-1].mac)
        assert {e.actor for e in events} == {f"thread-{i}" for i in range(THREADS)}

    def test_concurrent_appends_to_many_chains_keep_every_chain_whole(
        self, backend: StorageBackend, peer: StorageBackend
    ) -> None:
        def worker(i: int) -> None:
            on = backend if i % 2 else peer
            for n in range(PER_THREAD):

                def append(chain: int = (i + n) % 3) -> None:
                    with on.transaction() as tx:
                        tx.append_audit(chain, Sealer({}, {}))

                _retry(append)

        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(worker, i) for i in range(THREADS)]:
                future.result()
        events = self._events(backend)
        assert len(events) == 2 * THREADS * PER_THREAD
        self._assert_chains(events)
        with backend.read() as tx:
            heads = tx.audit_heads()
        last = {e.chain: e for e in events}
        assert [(h.chain, h.seq, h.mac) for h in heads] == [(c, last[c].seq, last[c].mac) for c in sorted(last)]

    def test_appenders_on_two_backends_keep_one_chain(
        self, backend: StorageBackend, reopen: Callable[[], StorageBackend] | None
    ) -> None:
        if reopen is None:
            pytest.skip("this backend cannot be opened twice on the same storage")
        other = reopen()
        for i in range(8):
            sealer = self._append(backend if i % 3 else other, 0)
            # However often the backend called it, the events stored follow the real head.
            assert sealer.heads[-1].seq == i
        events = self._events(other)
        assert [e.seq for e in events] == list(range(1, 9))
        self._assert_chains(events)

    # --- durability ----------------------------------------------------------------------------

    def _write_everything(self, backend: StorageBackend) -> dict[str, Any]:
        state = namespace_state(NS)
        key = key_row(NS, 1, keks=("env://A", "env://B"))
        row = secret_row(NS, "kept", labels={"a": "b"})
        current = stored_version(NS, "kept", 1)
        with backend.transaction() as tx:
            tx.save_namespace_keys(state, [key], [])
            assert tx.create_secret(row, current, keys_seal=state.seal)
            tx.add_access(3, [(NS, "kept", 2, T0 + 2)])
            head = tx.append_audit(0, Sealer({"name": "kept", "row_version": 1, "state": row.seal}))
            tx.put_job(JobRow("job", "rotate", "{}", T0))
        return {"state": state, "key": key, "row": row, "current": current, "head": head}

    def _check_everything(self, backend: StorageBackend, written: dict[str, Any]) -> None:
        with backend.read() as tx:
            assert tx.namespace_state(NS) == written["state"]
            assert _same_keys(tx.namespace_keys(NS), [written["key"]])
            expected = dataclasses.replace(written["row"], access_count=2, last_accessed_at=T0 + 2)
            assert tx.read_secret(NS, "kept", None) == (expected, written["current"])
            assert tx.audit_heads() == [written["head"]]
            assert len(tx.audit_events(AuditFilter(), None, 10)) == 1
            last = tx.last_state(NS, "kept")
            assert last is not None and last.row_version == 1
            assert tx.get_job("job") == JobRow("job", "rotate", "{}", T0)

    def test_reopen_keeps_the_data(self, backend: StorageBackend, reopen: Callable[[], StorageBackend] | None) -> None:
        if reopen is None:
            pytest.skip("this backend cannot be reopened on the same storage")
        written = self._write_everything(backend)
        version = backend.schema_version()
        backend.close()
        again = reopen()
        assert again.schema_version() == version
        self._check_everything(again, written)

    def test_a_second_backend_on_the_same_storage_sees_commits(
        self, backend: StorageBackend, reopen: Callable[[], StorageBackend] | None
    ) -> None:
        if reopen is None:
            pytest.skip("this backend cannot be opened twice on the same storage")
        other = reopen()
        written = self._write_everything(backend)
        self._check_everything(other, written)
        changed = dataclasses.replace(written["row"], description="from the other", row_version=2)
        with other.transaction() as tx:
            tx.update_secret(changed, 1, None)
        got = self._get(backend, NS, "kept")
        assert got is not None and got.description == "from the other"


#: ``sql(statement, params)``: run one statement (``?`` placeholders) on the database
#: itself, outside kmsbox, and commit it; the rows it returns.
RawSql = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class SqlBackendConformance(StorageBackendConformance):
    """The storage suite plus rows changed through the database, for a backend built on
    :class:`kmsbox.storage.sql.SqlBackend` (its tables are kmsbox's schema).

    Provide ``backend``, ``reopen`` and ``sql``: a :data:`RawSql` on the same database
    (and schema) as ``backend``, with ``?`` placeholders. The changes made here keep each
    column's type, so they work on engines with strict column types too.
    """

    @pytest.fixture
    def sql(self) -> RawSql:
        """Raw SQL on the backend's database (override)."""
        raise NotImplementedError("a test module of an SQL backend provides the sql fixture")

    def _two_secrets(self, backend: StorageBackend) -> tuple[SecretRow, SecretRow]:
        bad = self._create(backend, secret_row(NS, "bad"))
        good = self._create(backend, secret_row(NS, "good"))
        return bad, good

    def _assert_only_bad_is_malformed(self, backend: StorageBackend, good: SecretRow) -> None:
        with backend.read() as tx:
            for read in (
                lambda: tx.get_secret(NS, "bad"),
                lambda: tx.read_secret(NS, "bad", None),
                lambda: tx.read_secret(NS, "bad", 1),
            ):
                with pytest.raises(MalformedRow) as caught:
                    read()
                assert (caught.value.namespace, caught.value.name) == (NS, "bad")
                assert isinstance(caught.value, IntegrityError)
            assert tx.get_secret(NS, "good") == good
        with backend.transaction() as tx, pytest.raises(MalformedRow):
            tx.get_secret(NS, "bad")
        # The malformed secret can still be deleted, which repairs the store.
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "bad") == 1
        with backend.read() as tx:
            assert tx.get_secret(NS, "bad") is None
            assert tx.list_secrets(NS, SecretFilter(), None, 10) == [good]

    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("status", "enabled-by-attacker"),
            ("status", ""),
            ("version", 0),
            ("version", -3),
            ("version", 2**62),
            ("row_version", 0),
            ("created_at", float("inf")),
            ("updated_at", float("-inf")),
            ("version_created_at", float("inf")),
            ("expires_at", float("inf")),
            ("labels", "{not json"),
            ("labels", "[1, 2]"),
            ("labels", '{"env": 3}'),
            ("labels", '{"env": null}'),
            ("labels", "[" * 100_000 + "]" * 100_000),
            ("labels", '{"a": "b"} trailing'),
        ],
    )
    def test_a_secret_row_changed_through_the_database_is_malformed(
        self, backend: StorageBackend, sql: RawSql, column: str, value: Any
    ) -> None:
        _, good = self._two_secrets(backend)
        sql(f"UPDATE kmsbox_secrets SET {column} = ? WHERE namespace = ? AND name = ?", (value, NS, "bad"))
        self._assert_only_bad_is_malformed(backend, good)

    def test_listing_over_a_malformed_secret_row_is_malformed_row(self, backend: StorageBackend, sql: RawSql) -> None:
        self._two_secrets(backend)
        sql("UPDATE kmsbox_secrets SET status = ? WHERE namespace = ? AND name = ?", ("bogus", NS, "bad"))
        with backend.read() as tx, pytest.raises(MalformedRow):
            tx.list_secrets(NS, SecretFilter(), None, 10)
        with backend.read() as tx:
            # A page that does not reach it is fine.
            assert [r.name for r in tx.list_secrets(NS, SecretFilter(), (NS, "bad"), 10)] == ["good"]

    def test_expired_secrets_pass_over_a_malformed_row(self, backend: StorageBackend, sql: RawSql) -> None:
        for i in range(6):
            self._create(backend, secret_row(NS, f"s{i}", expires_at=100.0 + i))
        sql("UPDATE kmsbox_secrets SET status = ? WHERE namespace = ? AND name = ?", ("bogus", NS, "s1"))
        sql("UPDATE kmsbox_secrets SET labels = ? WHERE namespace = ? AND name = ?", ("{", NS, "s2"))
        with backend.read() as tx:
            assert [r.name for r in tx.expired_secrets(1000.0, 2)] == ["s0", "s3"]
            assert [r.name for r in tx.expired_secrets(1000.0, 10)] == ["s0", "s3", "s4", "s5"]

    def test_a_malformed_older_version_names_its_position_and_a_walk_resumes_after_it(
        self, backend: StorageBackend, sql: RawSql
    ) -> None:
        for name in ("a", "b", "c"):
            self._create(backend, secret_row(NS, name))
            self._new_version(backend, NS, name)
        sql(
            "UPDATE kmsbox_secret_history SET created_at = ? WHERE namespace = ? AND name = ? AND version = ?",
            (float("inf"), NS, "b", 1),
        )
        with backend.read() as tx:
            with pytest.raises(MalformedRow) as caught:
                tx.read_secret(NS, "b", 1)
            assert (caught.value.namespace, caught.value.name, caught.value.version) == (NS, "b", 1)
            found = tx.read_secret(NS, "b", 2)  # the current version is still readable
            assert found is not None and found[1] is not None and opened(found[1]) == f"value of {NS}/b v2".encode()
            with pytest.raises(MalformedRow) as walked:
                tx.versions(NS, ("a", 2), 10)
            position = walked.value.position
            assert position is not None and position == ("b", 1)
            rest = tx.versions(NS, position, 10)
        assert [(v.name, v.version) for v in rest] == [("b", 2), ("c", 1), ("c", 2)]
        with backend.transaction() as tx:
            assert tx.delete_version(NS, "b", 1) is True
        with backend.read() as tx:
            assert [(v.name, v.version) for v in tx.versions(NS, None, 10)] == [
                ("a", 1),
                ("a", 2),
                ("b", 2),
                ("c", 1),
                ("c", 2),
            ]

    def test_an_envelope_changed_through_the_database_comes_back_as_stored(
        self, backend: StorageBackend, sql: RawSql
    ) -> None:
        self._create(backend, secret_row(NS, "s"), stored_version(NS, "s", 1, 4))
        self._create(backend, secret_row(NS, "t"))
        sql("UPDATE kmsbox_secrets SET blob = ? WHERE namespace = ? AND name = ?", (b"\x00" * 7, NS, "s"))
        with backend.read() as tx:
            found = tx.read_secret(NS, "s", None)
            assert found is not None and found[1] is not None and found[1].blob == b"\x00" * 7
            with pytest.raises(IntegrityError):
                _ = found[1].namespace_key_version
            assert tx.versions_per_key(NS) == {0: 1, 1: 1}
            assert [v.name for v in tx.versions(NS, None, 10, key_version=4)] == []
        with backend.transaction() as tx:
            assert tx.replace_envelope(NS, "s", 1, b"new", 4) is False

    def test_a_current_version_whose_envelope_was_removed_is_malformed(
        self, backend: StorageBackend, sql: RawSql
    ) -> None:
        # kmsbox always stores the current version's envelope: NULL is a row changed outside it.
        self._create(backend, secret_row(NS, "s"))
        sql("UPDATE kmsbox_secrets SET blob = NULL WHERE namespace = ? AND name = ?", (NS, "s"))
        with backend.read() as tx:
            with pytest.raises(MalformedRow) as caught:
                tx.read_secret(NS, "s", None)
            assert (caught.value.namespace, caught.value.name) == (NS, "s")
            assert tx.list_versions(NS, "s") == []
            with pytest.raises(MalformedRow):
                tx.versions(NS, None, 10)
            assert tx.versions_per_key(NS) == {}
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "s") == 0
            assert tx.get_secret(NS, "s") is None

    @pytest.mark.parametrize(
        ("statement", "params"),
        [
            ("UPDATE kmsbox_namespace_keys SET status = ? WHERE namespace = ?", ("revived",)),
            ("UPDATE kmsbox_namespace_keys SET version = ? WHERE namespace = ?", (0,)),
            ("UPDATE kmsbox_namespace_keys SET created_at = ? WHERE namespace = ?", (float("inf"),)),
        ],
    )
    def test_a_namespace_key_row_changed_through_the_database_is_malformed(
        self, backend: StorageBackend, sql: RawSql, statement: str, params: tuple[Any, ...]
    ) -> None:
        self._namespace(backend, NS)
        self._namespace(backend, OTHER_NS)
        sql(statement, (*params, NS))
        with backend.read() as tx:
            with pytest.raises(MalformedRow) as caught:
                tx.namespace_keys(NS)
            assert caught.value.namespace == NS
            assert [k.version for k in tx.namespace_keys(OTHER_NS)] == [1]

    def test_a_namespace_state_changed_through_the_database_is_malformed(
        self, backend: StorageBackend, sql: RawSql
    ) -> None:
        self._namespace(backend, NS)
        sql("UPDATE kmsbox_namespaces SET generation = ? WHERE namespace = ?", (-1, NS))
        with backend.read() as tx, pytest.raises(MalformedRow) as caught:
            tx.namespace_state(NS)
        assert caught.value.namespace == NS
        with backend.transaction() as tx, pytest.raises(MalformedRow):
            tx.namespace_state(NS, change=True)

    def test_an_audit_event_changed_through_the_database_comes_back_marked_malformed(
        self, backend: StorageBackend, sql: RawSql
    ) -> None:
        sealer = self._append(backend, 0, {}, {}, {})
        second = sealer.events[1]
        sql(
            "UPDATE kmsbox_audit_events SET context = ? WHERE chain = ? AND seq = ?",
            ('{"broken": ', second.chain, second.seq),
        )
        with backend.read() as tx:
            events = tx.audit_events(AuditFilter(), None, 10)
            at = tx.audit_events_at([second.position])
        assert [e.malformed for e in events] == [False, True, False]
        assert (events[1].position, events[1].mac) == (second.position, second.mac)
        assert events[0] == sealer.events[0] and events[2] == sealer.events[2]
        assert len(at) == 1 and at[0].malformed and at[0].mac == second.mac

    @pytest.mark.parametrize(
        ("column", "value"),
        [("detail", "[1]"), ("record", 7), ("secret_version", 2**62), ("time", float("inf"))],
    )
    def test_any_unreadable_audit_field_marks_the_event_malformed(
        self, backend: StorageBackend, sql: RawSql, column: str, value: Any
    ) -> None:
        sealer = self._append(backend, 0)
        sql(f"UPDATE kmsbox_audit_events SET {column} = ?", (value,))
        (event,) = self._events(backend)
        assert event.malformed
        assert (event.position, event.mac) == (sealer.events[0].position, sealer.events[0].mac)

    def test_a_chain_head_changed_through_the_database_is_malformed(self, backend: StorageBackend, sql: RawSql) -> None:
        self._append(backend, 0)
        self._append(backend, 1)
        sql("UPDATE kmsbox_audit_chains SET seq = ? WHERE chain = ?", (-5, 0))
        with backend.read() as tx, pytest.raises(MalformedRow):
            tx.audit_heads()
        with backend.transaction() as tx:
            with pytest.raises(MalformedRow):
                tx.append_audit(0, Sealer())
            # Another chain still takes events.
            tx.append_audit(1, Sealer())
        with backend.read() as tx:
            assert [(e.chain, e.seq) for e in tx.audit_events(AuditFilter(), None, 10)] == [(0, 1), (1, 1), (1, 2)]

    def test_a_state_event_changed_through_the_database_is_malformed(
        self, backend: StorageBackend, sql: RawSql
    ) -> None:
        self._append(backend, 0, {"name": "s", "row_version": 2, "state": b"x", "action": "update"})
        sql("UPDATE kmsbox_audit_events SET secret_version = ? WHERE name = ?", (2**62, "s"))
        with backend.read() as tx:
            with pytest.raises(MalformedRow):
                tx.last_state(NS, "s")
            with pytest.raises(MalformedRow):
                tx.state_events(None, 10)

    def test_a_job_changed_through_the_database_is_malformed(self, backend: StorageBackend, sql: RawSql) -> None:
        with backend.transaction() as tx:
            tx.put_job(JobRow("job", "rotate", "{}", T0))
        sql("UPDATE kmsbox_jobs SET updated_at = ? WHERE job_id = ?", (float("inf"), "job"))
        with backend.read() as tx:
            with pytest.raises(MalformedRow):
                tx.get_job("job")
            with pytest.raises(MalformedRow):
                tx.list_jobs()
        with backend.transaction() as tx:
            tx.delete_job("job")
            assert tx.list_jobs() == []

    def test_a_store_missing_a_table_fails_to_open(
        self, backend: StorageBackend, reopen: Callable[[], StorageBackend], sql: RawSql
    ) -> None:
        backend.close()
        sql("DROP TABLE kmsbox_secret_access", ())
        with pytest.raises(ConfigError, match="kmsbox_secret_access"):
            reopen()

    def test_a_schema_newer_than_the_code_fails_to_open(
        self, backend: StorageBackend, reopen: Callable[[], StorageBackend], sql: RawSql
    ) -> None:
        version = backend.schema_version()
        backend.close()
        sql("UPDATE kmsbox_meta SET value = ? WHERE key = 'schema_version'", (str(version + 1),))
        with pytest.raises(ConfigError, match="newer"):
            reopen()

    @pytest.mark.parametrize("recorded", ["", "three", "-1", "0", "3.0", "٣"])
    def test_an_unreadable_schema_version_fails_to_open_and_changes_nothing(
        self, backend: StorageBackend, reopen: Callable[[], StorageBackend], sql: RawSql, recorded: str
    ) -> None:
        backend.close()
        sql("UPDATE kmsbox_meta SET value = ? WHERE key = 'schema_version'", (recorded,))
        with pytest.raises(ConfigError, match="schema version"):
            reopen()
        assert sql("SELECT value FROM kmsbox_meta WHERE key = 'schema_version'", ()) == [(recorded,)]
