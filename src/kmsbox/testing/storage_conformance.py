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
storage, or None where that is not possible (``memory://``).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kmsbox.errors import ConflictError, StorageError
from kmsbox.kek import WrappedKey
from kmsbox.storage.base import (
    AuditFilter,
    AuditRow,
    JobRow,
    NamespaceKeyRow,
    SecretRow,
    SecretVersionRow,
    StaleAuditHead,
    StorageBackend,
    Transaction,
)

__all__ = ["StorageBackendConformance", "audit_row", "secret_row", "version_row"]

NS = "conformance:one"
OTHER_NS = "conformance:two"
T0 = 1_700_000_000.123456

#: Threads in the concurrency tests and increments (or appends) per thread.
THREADS = 4
PER_THREAD = 15


class _Boom(Exception):
    """Raised inside a transaction to force a rollback."""


def secret_row(namespace: str, name: str, **changes: Any) -> SecretRow:
    """A secret metadata row with test defaults."""
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "version": 1,
        "status": "active",
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(changes)
    return SecretRow(**fields)


def version_row(
    namespace: str, name: str, version: int, namespace_key_version: int = 1, blob: bytes | None = None
) -> SecretVersionRow:
    """A secret version row whose blob names its position (unless given)."""
    data = blob if blob is not None else f"blob:{namespace}/{name}/{version}".encode() + b"\x00\xff"
    return SecretVersionRow(namespace, name, version, data, namespace_key_version, T0 + version)


def audit_row(seq: int, prev_mac: bytes, **changes: Any) -> AuditRow:
    """An audit event chained to ``prev_mac`` (a plain hash stands in for the HMAC)."""
    fields: dict[str, Any] = {
        "seq": seq,
        "time": T0 + seq,
        "namespace": NS,
        "name": "db-password",
        "secret_version": 1,
        "action": "put",
        "result": "success",
        "actor": "tester",
        "context": {"request_id": f"r{seq}"},
        "detail": {"n": seq},
        "audit_key_version": 1,
        "mac": chain_mac(prev_mac, seq),
    }
    fields.update(changes)
    return AuditRow(**fields)


def chain_mac(prev_mac: bytes, seq: int) -> bytes:
    """The test chain's link: a hash of the previous MAC and the sequence number."""
    return hashlib.sha256(prev_mac + seq.to_bytes(8, "big")).digest()


def _wrap(kek: str, version: str = "1", fill: int = 1) -> WrappedKey:
    return WrappedKey(kek, version, bytes([fill]) * 40)


def _retry_on_conflict(attempt: Callable[[], None], limit: int = 2000) -> int:
    """Run ``attempt`` until it does not raise ConflictError; return the number of conflicts."""
    for conflicts in range(limit):
        try:
            attempt()
            return conflicts
        except ConflictError:
            continue
    raise AssertionError(f"still conflicting after {limit} attempts")


class StorageBackendConformance:
    """Tests every storage backend must pass. Provide the ``backend`` fixture (and ``reopen``)."""

    @pytest.fixture
    def reopen(self) -> Callable[[], StorageBackend] | None:
        """A factory of new backends on the same storage as ``backend`` (None when impossible)."""
        return None

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _put(backend: StorageBackend, secret: SecretRow, *versions: SecretVersionRow) -> None:
        with backend.transaction() as tx:
            tx.insert_secret(secret)
            for version in versions:
                tx.insert_version(version)

    @staticmethod
    def _get(backend: StorageBackend, namespace: str, name: str) -> SecretRow | None:
        with backend.read() as tx:
            return tx.get_secret(namespace, name)

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

    def test_new_store_is_empty(self, backend: StorageBackend) -> None:
        with backend.read() as tx:
            assert tx.list_secrets(NS, category=None, label=None, after=None, limit=10) == []
            assert tx.namespaces() == []
            assert tx.namespace_keys(NS) == []
            assert tx.audit_range(0, 10) == []
            assert tx.list_jobs() == []
            assert tx.expired_secrets(T0 * 10, 10) == []

    # --- secrets ---------------------------------------------------------------------------

    def test_insert_and_get_secret_round_trips_every_field(self, backend: StorageBackend) -> None:
        row = secret_row(
            NS,
            "db-password",
            version=3,
            status="disabled",
            updated_at=T0 + 0.5,
            expires_at=T0 + 86_400.25,
            category="database",
            description="primary DB — ünïcode",
            labels={"env": "prod", "team": "core", "odd ?%s'\"": "x%sy?"},
            access_count=7,
            last_accessed_at=T0 + 1.75,
            row_version=5,
        )
        self._put(backend, row)
        assert self._get(backend, NS, "db-password") == row

    def test_optional_fields_round_trip_as_none(self, backend: StorageBackend) -> None:
        row = secret_row(NS, "plain")
        self._put(backend, row)
        got = self._get(backend, NS, "plain")
        assert got == row
        assert got is not None and got.expires_at is None and got.category is None and got.labels == {}

    def test_get_missing_secret_is_none(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "present"))
        with backend.read() as tx:
            assert tx.get_secret(NS, "absent") is None
            assert tx.get_secret(OTHER_NS, "present") is None
            assert tx.get_secret_with_blob(NS, "absent", None) is None

    def test_get_secret_for_update_returns_the_row(self, backend: StorageBackend) -> None:
        row = secret_row(NS, "locked")
        self._put(backend, row)
        with backend.transaction() as tx:
            assert tx.get_secret(NS, "locked", for_update=True) == row
            assert tx.get_secret(NS, "missing", for_update=True) is None

    def test_names_are_case_and_unicode_exact(self, backend: StorageBackend) -> None:
        names = ["Key", "key", "ключ-ü", "a?b", "%s", "x'y"]
        with backend.transaction() as tx:
            for name in names:
                tx.insert_secret(secret_row(NS, name, description=name))
        with backend.read() as tx:
            for name in names:
                got = tx.get_secret(NS, name)
                assert got is not None and got.description == name

    def test_duplicate_insert_secret_is_conflict(self, backend: StorageBackend) -> None:
        original = secret_row(NS, "dup", description="first")
        self._put(backend, original)
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "dup", description="second"))
        assert self._get(backend, NS, "dup") == original

    def test_conflict_rolls_back_the_whole_transaction(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "dup"))
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "written-first"))
            tx.insert_secret(secret_row(NS, "dup"))
        assert self._get(backend, NS, "written-first") is None

    def test_backend_is_usable_after_a_conflict(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "dup"))
        for _ in range(3):
            with pytest.raises(ConflictError), backend.transaction() as tx:
                tx.insert_secret(secret_row(NS, "dup"))
        self._put(backend, secret_row(NS, "after"))
        assert self._get(backend, NS, "after") is not None

    def test_update_secret_compare_and_set(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "cas", row_version=1))
        first = secret_row(NS, "cas", version=2, description="first writer", updated_at=T0 + 1, row_version=2)
        with backend.transaction() as tx:
            tx.update_secret(first, expected_row_version=1)
        stale = secret_row(NS, "cas", version=2, description="second writer", row_version=2)
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.update_secret(stale, expected_row_version=1)
        assert self._get(backend, NS, "cas") == first

    def test_update_of_a_missing_secret_is_conflict(self, backend: StorageBackend) -> None:
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.update_secret(secret_row(NS, "ghost", row_version=2), expected_row_version=1)
        assert self._get(backend, NS, "ghost") is None

    def test_update_can_clear_optional_fields(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "s", expires_at=T0 + 5, category="c", labels={"a": "b"}))
        cleared = secret_row(NS, "s", row_version=2)
        with backend.transaction() as tx:
            tx.update_secret(cleared, expected_row_version=1)
        assert self._get(backend, NS, "s") == cleared

    def test_transaction_reads_its_own_writes(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "mine"))
            tx.insert_version(version_row(NS, "mine", 1))
            assert tx.get_secret(NS, "mine") is not None
            assert [v.version for v in tx.list_versions(NS, "mine")] == [1]

    def test_exception_rolls_back_every_write(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "kept"), version_row(NS, "kept", 1))
        with pytest.raises(_Boom), backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "half"))
            tx.insert_version(version_row(NS, "half", 1))
            tx.update_secret(secret_row(NS, "kept", description="changed", row_version=2), expected_row_version=1)
            tx.insert_version(version_row(NS, "kept", 2))
            tx.record_access(NS, "kept", 5, T0 + 9)
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://A")]))
            head, mac = tx.audit_head()
            tx.append_audit(audit_row(head + 1, mac))
            tx.put_job(JobRow("job-1", "rotate", "{}", T0))
            raise _Boom
        with backend.read() as tx:
            assert tx.get_secret(NS, "half") is None
            assert tx.list_versions(NS, "half") == []
            assert tx.get_secret(NS, "kept") == secret_row(NS, "kept")
            assert [v.version for v in tx.list_versions(NS, "kept")] == [1]
            assert tx.namespace_keys(NS) == []
            assert tx.audit_head() == (0, b"")
            assert tx.audit_range(0, 10) == []
            assert tx.get_job("job-1") is None

    def test_exception_inside_a_read_propagates_unchanged(self, backend: StorageBackend) -> None:
        with pytest.raises(_Boom), backend.read():
            raise _Boom
        assert self._get(backend, NS, "x") is None

    def test_record_access_adds_to_the_counter(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "read-me", access_count=2))
        with backend.transaction() as tx:
            tx.record_access(NS, "read-me", 3, T0 + 10)
        with backend.transaction() as tx:
            tx.record_access(NS, "read-me", 1, T0 + 20)
        got = self._get(backend, NS, "read-me")
        assert got is not None
        assert (got.access_count, got.last_accessed_at) == (6, T0 + 20)
        assert got.row_version == 1

    # --- versions --------------------------------------------------------------------------

    def test_get_secret_with_blob_latest_and_by_version(self, backend: StorageBackend) -> None:
        big = bytes(range(256)) * 4096  # 1 MiB with every byte value
        secret = secret_row(NS, "multi", version=2)
        self._put(backend, secret, version_row(NS, "multi", 1), version_row(NS, "multi", 2, 1, big))
        with backend.read() as tx:
            latest = tx.get_secret_with_blob(NS, "multi", None)
            first = tx.get_secret_with_blob(NS, "multi", 1)
            missing = tx.get_secret_with_blob(NS, "multi", 3)
        assert latest == (secret, version_row(NS, "multi", 2, 1, big))
        assert first == (secret, version_row(NS, "multi", 1))
        assert missing == (secret, None)

    def test_secret_without_versions_has_no_blob(self, backend: StorageBackend) -> None:
        secret = secret_row(NS, "bare")
        self._put(backend, secret)
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "bare", None) == (secret, None)

    def test_empty_blob_round_trips(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "empty"), version_row(NS, "empty", 1, blob=b""))
        with backend.read() as tx:
            got = tx.get_secret_with_blob(NS, "empty", 1)
        assert got is not None and got[1] is not None and got[1].blob == b""

    def test_duplicate_version_is_conflict(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "v"), version_row(NS, "v", 1))
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.insert_version(version_row(NS, "v", 1, blob=b"other"))
        with backend.read() as tx:
            got = tx.get_secret_with_blob(NS, "v", 1)
        assert got is not None and got[1] == version_row(NS, "v", 1)

    def test_list_versions_oldest_first(self, backend: StorageBackend) -> None:
        self._put(
            backend,
            secret_row(NS, "v", version=3),
            version_row(NS, "v", 3, 2),
            version_row(NS, "v", 1),
            version_row(NS, "v", 2),
        )
        self._put(backend, secret_row(NS, "w"), version_row(NS, "w", 1))
        with backend.read() as tx:
            versions = tx.list_versions(NS, "v")
            assert tx.list_versions(NS, "none") == []
        assert [(v.namespace, v.name, v.version, v.namespace_key_version, v.created_at) for v in versions] == [
            (NS, "v", 1, 1, T0 + 1),
            (NS, "v", 2, 1, T0 + 2),
            (NS, "v", 3, 2, T0 + 3),
        ]

    def test_update_version_blob_compare_and_set(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "v"), version_row(NS, "v", 1, 1))
        with backend.transaction() as tx:
            assert tx.update_version_blob(NS, "v", 1, b"rewrapped", 2, expected_namespace_key_version=1) is True
        with backend.transaction() as tx:
            assert tx.update_version_blob(NS, "v", 1, b"stale", 3, expected_namespace_key_version=1) is False
            assert tx.update_version_blob(NS, "v", 9, b"missing", 3, expected_namespace_key_version=2) is False
        with backend.read() as tx:
            got = tx.get_secret_with_blob(NS, "v", 1)
        assert got is not None and got[1] is not None
        assert (got[1].blob, got[1].namespace_key_version) == (b"rewrapped", 2)

    def test_delete_secret_removes_it_and_its_versions(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "gone", version=3), *(version_row(NS, "gone", v) for v in (1, 2, 3)))
        self._put(backend, secret_row(NS, "stays"), version_row(NS, "stays", 1))
        self._put(backend, secret_row(OTHER_NS, "gone"), version_row(OTHER_NS, "gone", 1))
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "gone") == 3
        with backend.transaction() as tx:
            assert tx.delete_secret(NS, "gone") == 0
            assert tx.delete_secret(NS, "never-existed") == 0
        with backend.read() as tx:
            assert tx.get_secret(NS, "gone") is None
            assert tx.list_versions(NS, "gone") == []
            assert tx.versions_in_namespace(NS, None, 100) == [version_row(NS, "stays", 1)]
            assert tx.get_secret(OTHER_NS, "gone") is not None
            assert len(tx.list_versions(OTHER_NS, "gone")) == 1

    def test_secret_for_write_reads_the_active_key_and_the_row(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            assert tx.secret_for_write(NS, "s") == (None, None)
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "rotating", T0, T0, [_wrap("env://K")]))
            tx.insert_namespace_key(NamespaceKeyRow(NS, 2, "active", T0, T0, [_wrap("env://K")]))
            tx.insert_namespace_key(NamespaceKeyRow(OTHER_NS, 5, "active", T0, T0, [_wrap("env://K")]))
            assert tx.secret_for_write(NS, "s") == (2, None)
            tx.insert_secret(secret_row(NS, "s", labels={"k": "v"}), version_row(NS, "s", 1))
            assert tx.secret_for_write(NS, "s") == (2, secret_row(NS, "s", labels={"k": "v"}))
            assert tx.secret_for_write(OTHER_NS, "s") == (5, None)
            assert tx.secret_for_write("conformance:none", "s") == (None, None)

    def test_create_secret_only_when_the_name_is_free_and_the_key_is_active(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "rotating", T0, T0, [_wrap("env://K")]))
            tx.insert_namespace_key(NamespaceKeyRow(NS, 2, "active", T0, T0, [_wrap("env://K")]))
        first = version_row(NS, "s", 1, namespace_key_version=2)
        with backend.transaction() as tx:
            assert tx.create_secret(secret_row(NS, "s"), first, 2) is True
            # Taken: nothing changes.
            assert tx.create_secret(secret_row(NS, "s", description="x"), version_row(NS, "s", 1, 2, b"x"), 2) is False
            # A key version that is not the active one: nothing is written.
            assert tx.create_secret(secret_row(NS, "t"), version_row(NS, "t", 1, 1), 1) is False
            assert tx.create_secret(secret_row(OTHER_NS, "t"), version_row(OTHER_NS, "t", 1, 1), 1) is False
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "s", None) == (secret_row(NS, "s"), first)
            assert tx.get_secret(NS, "t") is None
            assert tx.get_secret(OTHER_NS, "t") is None

    def test_a_version_stored_before_its_row_becomes_current(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_version(version_row(NS, "early", 1))
            tx.insert_secret(secret_row(NS, "early"))
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "early", None) == (secret_row(NS, "early"), version_row(NS, "early", 1))
            assert [v.version for v in tx.list_versions(NS, "early")] == [1]
            assert tx.count_versions_by_key(NS) == {1: 1}

    def test_insert_with_current_stores_the_version(self, backend: StorageBackend) -> None:
        secret, first = secret_row(NS, "one"), version_row(NS, "one", 1)
        with backend.transaction() as tx:
            tx.insert_secret(secret, first)
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "one", None) == (secret, first)
            assert [v.version for v in tx.list_versions(NS, "one")] == [1]
            assert tx.count_versions_by_key(NS) == {1: 1}

    def test_update_with_current_keeps_every_older_version(self, backend: StorageBackend) -> None:
        big = bytes(range(256)) * 4096
        with backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "s"), version_row(NS, "s", 1, blob=big))
        for version in (2, 3):
            with backend.transaction() as tx:
                row = secret_row(NS, "s", version=version, row_version=version, updated_at=T0 + version)
                tx.update_secret(row, version - 1, version_row(NS, "s", version, namespace_key_version=version))
        with backend.read() as tx:
            latest = tx.get_secret_with_blob(NS, "s", None)
            assert latest is not None and latest[1] == version_row(NS, "s", 3, 3)
            assert tx.get_secret_with_blob(NS, "s", 1) == (latest[0], version_row(NS, "s", 1, blob=big))
            assert tx.get_secret_with_blob(NS, "s", 2) == (latest[0], version_row(NS, "s", 2, 2))
            assert [(v.version, v.namespace_key_version) for v in tx.list_versions(NS, "s")] == [(1, 1), (2, 2), (3, 3)]
            assert tx.count_versions_by_key(NS) == {1: 1, 2: 1, 3: 1}
            assert [v.version for v in tx.versions_in_namespace(NS, None, 10)] == [1, 2, 3]

    def test_stale_update_with_current_changes_nothing(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "s"), version_row(NS, "s", 1))
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.update_secret(secret_row(NS, "s", version=2, row_version=3), 2, version_row(NS, "s", 2))
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "s", None) == (secret_row(NS, "s"), version_row(NS, "s", 1))
            assert [v.version for v in tx.list_versions(NS, "s")] == [1]

    def test_current_must_be_the_rows_version(self, backend: StorageBackend) -> None:
        with pytest.raises(ValueError), backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "s"), version_row(NS, "s", 2))
        with pytest.raises(ValueError), backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "s"), version_row(NS, "other", 1))
        with backend.read() as tx:
            assert tx.get_secret(NS, "s") is None

    def test_metadata_update_keeps_the_current_version(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "s"), version_row(NS, "s", 1))
        with backend.transaction() as tx:
            tx.update_secret(secret_row(NS, "s", status="disabled", row_version=2), 1)
        with backend.read() as tx:
            got = tx.get_secret_with_blob(NS, "s", None)
        assert got == (secret_row(NS, "s", status="disabled", row_version=2), version_row(NS, "s", 1))

    def test_setting_an_older_version_current_again(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "s", version=2), version_row(NS, "s", 1), version_row(NS, "s", 2))
        with backend.transaction() as tx:
            tx.update_secret(secret_row(NS, "s", version=1, row_version=2), 1)
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "s", None) == (
                secret_row(NS, "s", version=1, row_version=2),
                version_row(NS, "s", 1),
            )
            assert [v.version for v in tx.list_versions(NS, "s")] == [1, 2]

    def test_delete_version_of_the_current_one(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "s", version=2), version_row(NS, "s", 1), version_row(NS, "s", 2))
        with backend.transaction() as tx:
            assert tx.delete_version(NS, "s", 2) is True
            assert tx.delete_version(NS, "s", 2) is False
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "s", None) == (secret_row(NS, "s", version=2), None)
            assert [v.version for v in tx.list_versions(NS, "s")] == [1]
            assert tx.count_versions_by_key(NS) == {1: 1}
        with backend.transaction() as tx:
            assert tx.delete_version(NS, "s", 1) is True
            assert tx.delete_secret(NS, "s") == 0

    def test_deleted_secret_can_be_created_again(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "again"), version_row(NS, "again", 1))
        with backend.transaction() as tx:
            tx.delete_secret(NS, "again")
        fresh = secret_row(NS, "again", description="new")
        self._put(backend, fresh, version_row(NS, "again", 1, blob=b"new"))
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "again", None) == (fresh, version_row(NS, "again", 1, blob=b"new"))

    # --- listing -------------------------------------------------------------------------------

    @staticmethod
    def _pages(
        backend: StorageBackend,
        namespace: str,
        limit: int,
        category: str | None = None,
        label: tuple[str, str] | None = None,
    ) -> list[list[str]]:
        pages: list[list[str]] = []
        after: str | None = None
        while True:
            with backend.read() as tx:
                page = tx.list_secrets(namespace, category=category, label=label, after=after, limit=limit)
            assert len(page) <= limit
            if not page:
                return pages
            pages.append([row.name for row in page])
            after = page[-1].name
            assert len(pages) < 1000, "pagination does not end"

    def test_list_secrets_pages_by_name(self, backend: StorageBackend) -> None:
        names = [f"s{i:02d}" for i in range(23)]
        with backend.transaction() as tx:
            for name in reversed(names):
                tx.insert_secret(secret_row(NS, name))
            tx.insert_secret(secret_row(OTHER_NS, "s05"))
            tx.insert_secret(secret_row(OTHER_NS, "zz"))
        pages = self._pages(backend, NS, 10)
        assert [len(p) for p in pages] == [10, 10, 3]
        assert [n for p in pages for n in p] == names
        with backend.read() as tx:
            assert [r.name for r in tx.list_secrets(NS, category=None, label=None, after="s20", limit=10)] == [
                "s21",
                "s22",
            ]
            assert tx.list_secrets(NS, category=None, label=None, after="s22", limit=10) == []
            assert tx.list_secrets("conformance:empty", category=None, label=None, after=None, limit=10) == []

    def test_list_secrets_returns_full_rows(self, backend: StorageBackend) -> None:
        row = secret_row(NS, "full", category="c", labels={"k": "v"}, expires_at=T0 + 1, access_count=4)
        self._put(backend, row)
        with backend.read() as tx:
            assert tx.list_secrets(NS, category=None, label=None, after=None, limit=5) == [row]

    def test_list_secrets_category_filter(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            for i in range(12):
                tx.insert_secret(secret_row(NS, f"s{i:02d}", category="db" if i % 2 else "api"))
            tx.insert_secret(secret_row(NS, "uncategorised"))
        pages = self._pages(backend, NS, 4, category="db")
        assert [n for p in pages for n in p] == [f"s{i:02d}" for i in range(1, 12, 2)]
        assert [len(p) for p in pages] == [4, 2]
        assert self._pages(backend, NS, 4, category="none-such") == []

    def test_list_secrets_label_filter_keeps_pages_full(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            for i in range(30):
                labels = {"env": "prod" if i % 3 == 0 else "dev", "i": str(i)}
                tx.insert_secret(secret_row(NS, f"s{i:02d}", labels=labels, category="db" if i % 2 == 0 else None))
        pages = self._pages(backend, NS, 4, label=("env", "prod"))
        assert [len(p) for p in pages] == [4, 4, 2]
        assert [n for p in pages for n in p] == [f"s{i:02d}" for i in range(0, 30, 3)]
        both = self._pages(backend, NS, 3, category="db", label=("env", "prod"))
        assert [n for p in both for n in p] == [f"s{i:02d}" for i in range(0, 30, 6)]
        assert self._pages(backend, NS, 4, label=("env", "staging")) == []
        assert self._pages(backend, NS, 4, label=("missing-key", "prod")) == []

    def test_expired_secrets_in_expiry_order(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_secret(secret_row(NS, "late", expires_at=300.0))
            tx.insert_secret(secret_row(NS, "early", expires_at=100.0))
            tx.insert_secret(secret_row(OTHER_NS, "middle", expires_at=200.0))
            tx.insert_secret(secret_row(NS, "never"))
            tx.insert_secret(secret_row(NS, "future", expires_at=10_000.0))
        with backend.read() as tx:
            assert [r.name for r in tx.expired_secrets(250.0, 10)] == ["early", "middle"]
            assert [r.name for r in tx.expired_secrets(250.0, 1)] == ["early"]
            assert [r.name for r in tx.expired_secrets(300.0, 10)] == ["early", "middle"]
            assert tx.expired_secrets(50.0, 10) == []
            expired = tx.expired_secrets(400.0, 10)
        assert expired[-1] == secret_row(NS, "late", expires_at=300.0)

    def test_namespaces_lists_every_namespace_with_a_key(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            for namespace in ("tenant-b", "tenant-a", "app:production"):
                tx.insert_namespace_key(NamespaceKeyRow(namespace, 1, "active", T0, T0, [_wrap("env://K")]))
            tx.insert_namespace_key(NamespaceKeyRow("tenant-a", 2, "active", T0, T0, [_wrap("env://K")]))
        with backend.read() as tx:
            assert sorted(tx.namespaces()) == ["app:production", "tenant-a", "tenant-b"]

    # --- batches for long jobs -------------------------------------------------------------

    @pytest.fixture
    def versions_store(self, backend: StorageBackend) -> list[SecretVersionRow]:
        """Five secrets with three versions each: v1, v2 under key 1, v3 under key 2; plus noise."""
        rows: list[SecretVersionRow] = []
        with backend.transaction() as tx:
            for name in ("e", "a", "c", "b", "d"):
                tx.insert_secret(secret_row(NS, name, version=3))
                for version in (3, 1, 2):
                    row = version_row(NS, name, version, 2 if version == 3 else 1)
                    tx.insert_version(row)
                    rows.append(row)
            tx.insert_secret(secret_row(OTHER_NS, "a"))
            tx.insert_version(version_row(OTHER_NS, "a", 1, 1))
        return sorted(rows, key=lambda r: (r.name, r.version))

    @staticmethod
    def _batches(
        fetch: Callable[[tuple[str, int] | None], list[SecretVersionRow]], limit: int
    ) -> Iterator[list[SecretVersionRow]]:
        after: tuple[str, int] | None = None
        for _ in range(1000):
            batch = fetch(after)
            assert len(batch) <= limit
            if not batch:
                return
            yield batch
            after = (batch[-1].name, batch[-1].version)
        raise AssertionError("batching does not end")

    def test_versions_under_key_in_batches(
        self, backend: StorageBackend, versions_store: list[SecretVersionRow]
    ) -> None:
        def fetch(after: tuple[str, int] | None) -> list[SecretVersionRow]:
            with backend.read() as tx:
                return tx.versions_under_key(NS, 1, after, 3)

        batches = list(self._batches(fetch, 3))
        assert [len(b) for b in batches] == [3, 3, 3, 1]
        assert [r for b in batches for r in b] == [r for r in versions_store if r.namespace_key_version == 1]
        with backend.read() as tx:
            under_two = tx.versions_under_key(NS, 2, None, 100)
            assert tx.versions_under_key(NS, 7, None, 100) == []
            assert tx.versions_under_key(NS, 1, ("c", 1), 2) == [version_row(NS, "c", 2), version_row(NS, "d", 1)]
        assert under_two == [r for r in versions_store if r.namespace_key_version == 2]

    def test_versions_in_namespace_in_batches(
        self, backend: StorageBackend, versions_store: list[SecretVersionRow]
    ) -> None:
        def fetch(after: tuple[str, int] | None) -> list[SecretVersionRow]:
            with backend.read() as tx:
                return tx.versions_in_namespace(NS, after, 4)

        batches = list(self._batches(fetch, 4))
        assert [len(b) for b in batches] == [4, 4, 4, 3]
        assert [r for b in batches for r in b] == versions_store
        with backend.read() as tx:
            assert tx.versions_in_namespace(OTHER_NS, None, 10) == [version_row(OTHER_NS, "a", 1, 1)]
            assert tx.versions_in_namespace("conformance:empty", None, 10) == []

    def test_batches_survive_rewrites_between_them(
        self, backend: StorageBackend, versions_store: list[SecretVersionRow]
    ) -> None:
        # A rewrap job moves each batch to key 3 and resumes after the last row it handled.
        moved: list[tuple[str, int]] = []
        after: tuple[str, int] | None = None
        while True:
            with backend.transaction() as tx:
                batch = tx.versions_under_key(NS, 1, after, 4)
                for row in batch:
                    assert tx.update_version_blob(NS, row.name, row.version, row.blob + b"!", 3, 1)
            if not batch:
                break
            moved.extend((r.name, r.version) for r in batch)
            after = (batch[-1].name, batch[-1].version)
        assert moved == [(r.name, r.version) for r in versions_store if r.namespace_key_version == 1]
        with backend.read() as tx:
            assert tx.count_versions_by_key(NS) == {2: 5, 3: 10}

    def test_count_versions_by_key(self, backend: StorageBackend, versions_store: list[SecretVersionRow]) -> None:
        with backend.read() as tx:
            assert tx.count_versions_by_key(NS) == {1: 10, 2: 5}
            assert tx.count_versions_by_key(OTHER_NS) == {1: 1}
            assert tx.count_versions_by_key("conformance:empty") == {}

    # --- namespace keys --------------------------------------------------------------------

    def test_namespace_key_with_several_wraps_round_trips(self, backend: StorageBackend) -> None:
        wraps = [_wrap("env://PRIMARY", "1", 1), _wrap("aws-kms://arn:aws:kms:eu-west-1:1:key/escrow", "v7", 2)]
        row = NamespaceKeyRow(NS, 1, "active", T0, T0 + 1, list(wraps))
        with backend.transaction() as tx:
            tx.insert_namespace_key(row)
            tx.insert_namespace_key(NamespaceKeyRow(OTHER_NS, 1, "active", T0, T0, [_wrap("env://OTHER")]))
        with backend.read() as tx:
            keys = tx.namespace_keys(NS)
        assert len(keys) == 1
        got = keys[0]
        assert (got.namespace, got.version, got.status, got.created_at, got.updated_at) == (NS, 1, "active", T0, T0 + 1)
        assert sorted(got.wraps, key=lambda w: w.kek_uri) == sorted(wraps, key=lambda w: w.kek_uri)

    def test_namespace_keys_oldest_first(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            for version in (3, 1, 2):
                tx.insert_namespace_key(
                    NamespaceKeyRow(NS, version, "retired", T0, T0, [_wrap("env://K", str(version))])
                )
        with backend.read() as tx:
            keys = tx.namespace_keys(NS)
        assert [k.version for k in keys] == [1, 2, 3]
        assert [k.wraps for k in keys] == [[_wrap("env://K", str(v))] for v in (1, 2, 3)]

    def test_duplicate_namespace_key_is_conflict(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://A")]))
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://B")]))
        with backend.read() as tx:
            assert [k.wraps for k in tx.namespace_keys(NS)] == [[_wrap("env://A")]]

    def test_set_namespace_key_status(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://A")]))
            tx.insert_namespace_key(NamespaceKeyRow(NS, 2, "active", T0, T0, [_wrap("env://A")]))
        with backend.transaction() as tx:
            tx.set_namespace_key_status(NS, 1, "retired", T0 + 50)
        with backend.read() as tx:
            keys = tx.namespace_keys(NS)
        assert [(k.version, k.status, k.updated_at) for k in keys] == [(1, "retired", T0 + 50), (2, "active", T0)]

    def test_put_wrap_adds_and_replaces_per_kek(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://A", "1", 1)]))
        with backend.transaction() as tx:
            tx.put_wrap(NS, 1, _wrap("env://B", "1", 2), T0 + 1)
        with backend.transaction() as tx:
            tx.put_wrap(NS, 1, _wrap("env://A", "2", 3), T0 + 2)
        with backend.read() as tx:
            (key,) = tx.namespace_keys(NS)
        assert sorted(key.wraps, key=lambda w: w.kek_uri) == [_wrap("env://A", "2", 3), _wrap("env://B", "1", 2)]

    def test_delete_wrap_removes_only_that_kek(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://A"), _wrap("env://B")]))
            tx.insert_namespace_key(NamespaceKeyRow(NS, 2, "active", T0, T0, [_wrap("env://A")]))
        with backend.transaction() as tx:
            tx.delete_wrap(NS, 1, "env://A")
            tx.delete_wrap(NS, 1, "env://never-wrapped")
        with backend.read() as tx:
            keys = tx.namespace_keys(NS)
        assert [k.wraps for k in keys] == [[_wrap("env://B")], [_wrap("env://A")]]

    def test_delete_namespace_key_removes_it_and_its_wraps(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "retired", T0, T0, [_wrap("env://A"), _wrap("env://B")]))
            tx.insert_namespace_key(NamespaceKeyRow(NS, 2, "active", T0, T0, [_wrap("env://A")]))
        with backend.transaction() as tx:
            tx.delete_namespace_key(NS, 1)
        with backend.read() as tx:
            assert [k.version for k in tx.namespace_keys(NS)] == [2]
        # The old wraps are gone too: the same version comes back with only its new wrap.
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://C")]))
        with backend.read() as tx:
            assert [k.wraps for k in tx.namespace_keys(NS)] == [[_wrap("env://C")], [_wrap("env://A")]]

    # --- audit -------------------------------------------------------------------------------

    def test_audit_head_starts_empty(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            assert tx.audit_head() == (0, b"")

    def test_append_audit_round_trips_and_moves_head(self, backend: StorageBackend) -> None:
        first = audit_row(1, b"", context={"ip": "10.0.0.1", "request_id": "ä"}, detail={"nested": [1, "x"], "n": 1})
        second = audit_row(
            2,
            first.mac,
            namespace=None,
            name=None,
            secret_version=None,
            actor=None,
            action="rotate",
            context={},
            detail={},
        )
        with backend.transaction() as tx:
            tx.append_audit(first)
            assert tx.audit_head() == (1, first.mac)
        with backend.transaction() as tx:
            assert tx.audit_head() == (1, first.mac)
            tx.append_audit(second)
        with backend.read() as tx:
            assert tx.audit_head() == (2, second.mac)
            assert tx.audit_range(0, 10) == [first, second]

    def test_duplicate_audit_seq_is_conflict(self, backend: StorageBackend) -> None:
        first = audit_row(1, b"")
        with backend.transaction() as tx:
            tx.append_audit(first)
        with pytest.raises(ConflictError), backend.transaction() as tx:
            tx.append_audit(audit_row(1, b"forged"))
        with backend.read() as tx:
            assert tx.audit_head() == (1, first.mac)
            assert tx.audit_range(0, 10) == [first]

    @pytest.fixture
    def audit_store(self, backend: StorageBackend) -> list[AuditRow]:
        """Twelve chained events over two namespaces, names, actions and results."""
        rows: list[AuditRow] = []
        with backend.transaction() as tx:
            for seq in range(1, 13):
                _, mac = tx.audit_head()
                row = audit_row(
                    seq,
                    mac,
                    time=float(seq * 10),
                    namespace=NS if seq % 2 else OTHER_NS,
                    name=f"n{seq % 3}",
                    action="get" if seq % 4 else "delete",
                    result="denied" if seq in (5, 6) else "success",
                )
                tx.append_audit(row)
                rows.append(row)
        return rows

    def test_audit_range_pages_in_order(self, backend: StorageBackend, audit_store: list[AuditRow]) -> None:
        with backend.read() as tx:
            assert tx.audit_range(0, 5) == audit_store[:5]
            assert tx.audit_range(5, 5) == audit_store[5:10]
            assert tx.audit_range(10, 5) == audit_store[10:]
            assert tx.audit_range(12, 5) == []
        for previous, row in itertools.pairwise(audit_store):
            assert row.mac == chain_mac(previous.mac, row.seq)

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
            (AuditFilter(namespace=NS, action="get", result="success", since=20.0, until=100.0), [3, 7, 9]),
            (AuditFilter(namespace="conformance:none"), []),
        ],
    )
    def test_list_audit_filters(
        self, backend: StorageBackend, audit_store: list[AuditRow], filters: AuditFilter, expected: list[int]
    ) -> None:
        with backend.read() as tx:
            rows = tx.list_audit(filters, 0, 100)
        assert [r.seq for r in rows] == expected
        assert rows == [audit_store[seq - 1] for seq in expected]

    def test_list_audit_cursor_and_limit_apply_after_filtering(
        self, backend: StorageBackend, audit_store: list[AuditRow]
    ) -> None:
        seen: list[int] = []
        after = 0
        while True:
            with backend.read() as tx:
                page = tx.list_audit(AuditFilter(namespace=NS), after, 2)
            if not page:
                break
            assert len(page) <= 2
            seen.extend(r.seq for r in page)
            after = page[-1].seq
        assert seen == [1, 3, 5, 7, 9, 11]
        with backend.read() as tx:
            assert [r.seq for r in tx.list_audit(AuditFilter(name="n0"), 6, 1)] == [9]

    # --- jobs ----------------------------------------------------------------------------------

    def test_jobs_put_get_replace_list_delete(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            assert tx.get_job("rotate-1") is None
            tx.put_job(JobRow("rotate-1", "rotate", '{"after": null}', T0))
            tx.put_job(JobRow("rewrap-2", "rewrap", "{}", T0 + 1))
        with backend.transaction() as tx:
            tx.put_job(JobRow("rotate-1", "rotate", '{"after": ["b", 2]}', T0 + 2))
        with backend.read() as tx:
            assert tx.get_job("rotate-1") == JobRow("rotate-1", "rotate", '{"after": ["b", 2]}', T0 + 2)
            assert sorted(tx.list_jobs(), key=lambda j: j.job_id) == [
                JobRow("rewrap-2", "rewrap", "{}", T0 + 1),
                JobRow("rotate-1", "rotate", '{"after": ["b", 2]}', T0 + 2),
            ]
        with backend.transaction() as tx:
            tx.delete_job("rotate-1")
            tx.delete_job("never-existed")
        with backend.read() as tx:
            assert tx.get_job("rotate-1") is None
            assert [j.job_id for j in tx.list_jobs()] == ["rewrap-2"]

    # --- durability ----------------------------------------------------------------------------

    def _write_everything(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            tx.insert_namespace_key(NamespaceKeyRow(NS, 1, "active", T0, T0, [_wrap("env://A"), _wrap("env://B")]))
            tx.insert_secret(secret_row(NS, "kept", labels={"a": "b"}))
            tx.insert_version(version_row(NS, "kept", 1))
            tx.append_audit(audit_row(1, b""))
            tx.put_job(JobRow("job", "rotate", "{}", T0))

    def _check_everything(self, backend: StorageBackend) -> None:
        with backend.read() as tx:
            assert tx.get_secret_with_blob(NS, "kept", None) == (
                secret_row(NS, "kept", labels={"a": "b"}),
                version_row(NS, "kept", 1),
            )
            assert [len(k.wraps) for k in tx.namespace_keys(NS)] == [2]
            assert tx.audit_head() == (1, audit_row(1, b"").mac)
            assert tx.get_job("job") == JobRow("job", "rotate", "{}", T0)

    def test_reopen_keeps_the_data(self, backend: StorageBackend, reopen: Callable[[], StorageBackend] | None) -> None:
        if reopen is None:
            pytest.skip("this backend cannot be reopened on the same storage")
        self._write_everything(backend)
        version = backend.schema_version()
        backend.close()
        again = reopen()
        assert again.schema_version() == version
        self._check_everything(again)

    def test_second_backend_on_the_same_storage_sees_commits(
        self, backend: StorageBackend, reopen: Callable[[], StorageBackend] | None
    ) -> None:
        if reopen is None:
            pytest.skip("this backend cannot be reopened on the same storage")
        other = reopen()
        self._write_everything(backend)
        self._check_everything(other)
        with other.transaction() as tx:
            tx.update_secret(secret_row(NS, "kept", description="from the other", row_version=2), 1)
        got = self._get(backend, NS, "kept")
        assert got is not None and got.description == "from the other"

    # --- concurrency ---------------------------------------------------------------------------

    def test_concurrent_compare_and_set_increments_lose_no_update(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "counter", access_count=0))

        def increment() -> None:
            with backend.transaction() as tx:
                row = tx.get_secret(NS, "counter")
                assert row is not None
                expected = row.row_version
                row.version += 1
                row.row_version += 1
                tx.update_secret(row, expected)

        def worker() -> int:
            return sum(_retry_on_conflict(increment) for _ in range(PER_THREAD))

        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(worker) for _ in range(THREADS)]
            for future in futures:
                future.result()
        row = self._get(backend, NS, "counter")
        assert row is not None
        assert row.version == 1 + THREADS * PER_THREAD
        assert row.row_version == 1 + THREADS * PER_THREAD

    def test_get_secret_for_update_holds_off_other_writers(self, backend: StorageBackend) -> None:
        self._put(backend, secret_row(NS, "hot", access_count=5))
        locked = threading.Event()

        def update_under_lock() -> None:
            with backend.transaction() as tx:
                row = tx.get_secret(NS, "hot", for_update=True)
                assert row is not None
                locked.set()
                time.sleep(0.2)  # a reader's record_access must wait for this commit
                row.description = "updated"
                row.row_version += 1
                tx.update_secret(row, row.row_version - 1)

        def count_a_read() -> None:
            assert locked.wait(10)
            with backend.transaction() as tx:
                tx.record_access(NS, "hot", 1, T0 + 1)

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(update_under_lock), pool.submit(count_a_read)]
            for future in futures:
                future.result()
        row = self._get(backend, NS, "hot")
        assert row is not None
        assert (row.description, row.access_count) == ("updated", 6)

    def test_concurrent_inserts_of_one_secret_have_one_winner(self, backend: StorageBackend) -> None:
        start = threading.Barrier(THREADS)

        def insert(i: int) -> bool:
            start.wait()
            try:
                self._put(backend, secret_row(NS, "race", description=f"writer {i}"), version_row(NS, "race", 1))
            except ConflictError:
                return False
            return True

        with ThreadPoolExecutor(THREADS) as pool:
            won = list(pool.map(insert, range(THREADS)))
        assert won.count(True) == 1
        row = self._get(backend, NS, "race")
        assert row is not None and row.description == f"writer {won.index(True)}"

    @staticmethod
    def _assert_chain(rows: list[AuditRow]) -> None:
        previous = b""
        for row in rows:
            assert row.mac == chain_mac(previous, row.seq), f"audit chain broken at seq {row.seq}"
            previous = row.mac

    @staticmethod
    def _append(tx: Transaction, **changes: Any) -> int:
        """Append one event as AuditLog does: a remembered head that moved is read again."""
        for _ in range(2):
            seq, mac = tx.audit_head()
            try:
                tx.append_audit(audit_row(seq + 1, mac, **changes))
            except StaleAuditHead:
                continue
            return seq + 1
        raise AssertionError("the head was stale twice in one transaction")

    def test_concurrent_audit_appends_get_contiguous_sequence_numbers(self, backend: StorageBackend) -> None:
        # audit_head locks the head until commit, so appenders queue; one that answered
        # from a remembered head learns it moved, reads it, and still never conflicts.
        def worker(i: int) -> None:
            for _ in range(PER_THREAD):
                with backend.transaction() as tx:
                    self._append(tx, actor=f"thread-{i}")

        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(worker, i) for i in range(THREADS)]:
                future.result()
        with backend.read() as tx:
            rows = tx.audit_range(0, THREADS * PER_THREAD + 10)
            head = tx.audit_head()
        assert [r.seq for r in rows] == list(range(1, THREADS * PER_THREAD + 1))
        self._assert_chain(rows)
        assert head == (rows[-1].seq, rows[-1].mac)
        assert {r.actor for r in rows} == {f"thread-{i}" for i in range(THREADS)}

    def test_a_rolled_back_event_is_not_the_head(self, backend: StorageBackend) -> None:
        with backend.transaction() as tx:
            self._append(tx)
        with pytest.raises(_Boom), backend.transaction() as tx:
            self._append(tx)
            raise _Boom
        with backend.transaction() as tx:
            assert self._append(tx) == 2
        with backend.read() as tx:
            rows = tx.audit_range(0, 10)
        assert [r.seq for r in rows] == [1, 2]
        assert rows[1].mac == chain_mac(rows[0].mac, 2)

    def test_appenders_on_two_connections_keep_one_chain(
        self, backend: StorageBackend, reopen: Callable[[], StorageBackend] | None
    ) -> None:
        if reopen is None:
            pytest.skip("this backend cannot be reopened on the same storage")
        other = reopen()
        try:
            for i in range(8):
                with (backend if i % 3 else other).transaction() as tx:
                    self._append(tx)
            with other.read() as tx:
                rows = tx.audit_range(0, 20)
                assert tx.audit_head() == (8, rows[-1].mac)
        finally:
            other.close()
        assert [r.seq for r in rows] == list(range(1, 9))
        self._assert_chain(rows)
