"""The whole secret-store suite on PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kmsbox
from kmsbox.store.service import SecretStore
from kmsbox.testing.store_conformance import SecretStoreConformance


class TestStoreOnPostgres(SecretStoreConformance):
    @pytest.fixture
    def store(self, postgres_url: str, kmsbox_local_kek: str) -> Iterator[SecretStore]:
        with kmsbox.open_store(postgres_url, kek=kmsbox_local_kek) as store:
            yield store


# Each worker opens the store, waits for the start signal, then appends versions of one
# shared secret and of its own, reading after each write.
_WORKER = r"""
import json, os, sys, time
import kmsbox

worker, url, go, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
store = kmsbox.open_store(url, kek="env://KMSBOX_PG_TEST_KEK")
while not os.path.exists(go):
    time.sleep(0.005)
written = []
for i in range(count):
    shared = store.put("shared", f"w{worker}-{i}", namespace="app:prod")
    own = store.put(f"own-{worker}", f"w{worker}-{i}", namespace="app:prod")
    assert own.version == i + 1, own
    assert store.get(f"own-{worker}", namespace="app:prod").value == f"w{worker}-{i}"
    assert store.get("shared", namespace="app:prod").version >= shared.version
    written.append(shared.version)
store.close()
print(json.dumps(written))
"""


@pytest.mark.slow
def test_four_processes_put_and_get_without_lost_updates(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("KMSBOX_PG_TEST_KEK", os.urandom(32).hex())
    script = tmp_path / "worker.py"
    script.write_text(_WORKER, encoding="utf-8")
    go = tmp_path / "go"
    count, processes = 20, 4
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(w), postgres_url, str(go), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(processes)
    ]
    time.sleep(0.3)
    go.touch()
    claimed: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "StorageError" not in err, err
        claimed += json.loads(out)
    assert sorted(claimed) == list(range(1, count * processes + 1))
    with kmsbox.open_store(postgres_url, kek="env://KMSBOX_PG_TEST_KEK") as store:
        history = store.history("shared", namespace="app:prod")
        assert [h.version for h in history] == list(range(1, count * processes + 1))
        for w in range(processes):
            assert store.get(f"own-{w}", namespace="app:prod").value == f"w{w}-{count - 1}"
        assert store.verify_audit().ok


@pytest.mark.parametrize(
    ("column", "value"), [("labels", "not json"), ("labels", '{"team": 7}'), ("status", "gone-ish")]
)
def test_a_malformed_row_on_postgres_is_a_typed_error_that_diagnose_and_delete_handle(
    postgres_url: str, postgres_server_url: str, kmsbox_local_kek: str, column: str, value: str
) -> None:
    import psycopg

    from kmsbox.errors import IntegrityError, SecretNotFound
    from kmsbox.storage.base import AuditFilter

    schema = postgres_url.rsplit("schema=", 1)[1]
    with kmsbox.open_store(postgres_url, kek=kmsbox_local_kek) as store:
        store.put("victim", "v", namespace="ns")
        store.put("bystander", "w", namespace="ns")
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'UPDATE "{schema}".kmsbox_secrets SET {column} = %s WHERE name = %s', (value, "victim"))
            conn.execute(f'UPDATE "{schema}".kmsbox_audit_events SET context = %s WHERE seq = 1', ("nope",))
        with pytest.raises(IntegrityError, match="'victim' in namespace 'ns' is malformed"):
            store.get("victim", namespace="ns")
        assert store.get("bystander", namespace="ns").value == "w"
        assert store.audit_events(AuditFilter(name="victim"), after=1)[0][-1].result == "failure"
        assert [(i.code, i.secret) for i in store.diagnose("ns").issues] == [("secret_malformed", "victim")]
        verification = store.verify_audit()
        assert verification.problems[0].startswith("event 1 was altered")
        assert verification.events_checked == verification.head_seq
        store.delete("victim", namespace="ns")
        with pytest.raises(SecretNotFound):
            store.get("victim", namespace="ns")


def test_a_populated_schema_1_store_upgrades_on_postgres_with_every_version_intact(
    postgres_url: str, postgres_server_url: str, kmsbox_local_kek: str
) -> None:
    """Migration 2 on the real server: a store written in the schema-1 layout (every
    version in kmsbox_secret_versions) opens with its envelopes moved, not rewritten."""
    import psycopg
    from kmsbox_postgres.backend import POSTGRES_DIALECT
    from kmsbox_postgres.testing import with_query

    from kmsbox.storage.migrations import MIGRATIONS, SCHEMA_VERSION

    current = postgres_url.rsplit("schema=", 1)[1]
    values: dict[tuple[str, int], str] = {}
    with kmsbox.open_store(postgres_url, kek=kmsbox_local_kek) as store:
        for i in range(12):
            for v in range(1 + i % 3):
                store.put(f"s{i:02d}", f"value {i}.{v}", namespace="app", labels={"n": str(i % 2)})
                values[(f"s{i:02d}", v + 1)] = f"value {i}.{v}"
        store.disable("s03", namespace="app")
    old = f"{current}_v1"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{old}"')
        conn.execute(f'SET search_path TO "{old}"')
        with conn.transaction():
            for statement in MIGRATIONS[0]:
                assert isinstance(statement, str)
                conn.execute(POSTGRES_DIALECT.ddl(statement))
            conn.execute("CREATE TABLE kmsbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT INTO kmsbox_meta VALUES ('schema_version', '1')")
            for table in ("kmsbox_namespace_keys", "kmsbox_namespace_key_wraps", "kmsbox_audit_events"):
                conn.execute(f'INSERT INTO {table} SELECT * FROM "{current}".{table}')
            conn.execute(
                "INSERT INTO kmsbox_secrets SELECT namespace, name, version, status, created_at, updated_at, "
                "expires_at, category, description, labels, access_count, last_accessed_at, row_version "
                f'FROM "{current}".kmsbox_secrets'
            )
            conn.execute(
                "INSERT INTO kmsbox_secret_versions SELECT namespace, name, version, blob, namespace_key_version, "
                f'version_created_at FROM "{current}".kmsbox_secrets WHERE blob IS NOT NULL UNION ALL '
                "SELECT namespace, name, version, blob, namespace_key_version, created_at "
                f'FROM "{current}".kmsbox_secret_history'
            )
        blobs = conn.execute("SELECT namespace, name, version, blob FROM kmsbox_secret_versions").fetchall()
    assert len(blobs) == len(values)
    old_url = with_query(postgres_server_url, f"schema={old}")
    try:
        with kmsbox.open_store(old_url, kek=kmsbox_local_kek) as upgraded:
            assert upgraded.backend.schema_version() == SCHEMA_VERSION
            with psycopg.connect(postgres_server_url, autocommit=True) as conn:
                conn.execute(f'SET search_path TO "{old}"')
                moved = conn.execute(
                    "SELECT namespace, name, version, blob FROM kmsbox_secrets WHERE blob IS NOT NULL "
                    "UNION ALL SELECT namespace, name, version, blob FROM kmsbox_secret_history"
                ).fetchall()
                assert conn.execute("SELECT to_regclass('kmsbox_secret_versions')").fetchone() == (None,)
            assert sorted(moved) == sorted(blobs)  # byte-identical envelopes
            for (name, version), value in values.items():
                if name != "s03":
                    assert upgraded.get(name, namespace="app", version=version).value == value
            assert upgraded.info("s03", namespace="app").status == "disabled"
            assert [v.version for v in upgraded.history("s02", namespace="app")] == [1, 2, 3]
            assert upgraded.verify_audit().ok
            upgraded.put("s01", "newest", namespace="app")
            assert upgraded.get("s01", namespace="app").value == "newest"
            assert upgraded.get("s01", namespace="app", version=2).value == values[("s01", 2)]
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{old}" CASCADE')


def test_cleanup_leaves_a_secret_renewed_after_its_batch_was_listed(
    postgres_url: str, kmsbox_local_kek: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL lists expired secrets without locking them: a put that renews one
    between the listing and the delete must win, not be deleted with the old value."""
    import threading

    from kmsbox.storage.base import AuditFilter
    from kmsbox.storage.sql import SqlTransaction

    with (
        kmsbox.open_store(postgres_url, kek=kmsbox_local_kek) as cleaner,
        kmsbox.open_store(postgres_url, kek=kmsbox_local_kek) as writer,
    ):
        writer.put("renewed", "old", namespace="ns", expires=0.2)
        writer.put("stale", "old", namespace="ns", expires=0.2)
        time.sleep(0.3)
        listing = SqlTransaction.expired_secrets

        def list_then_renew(tx: SqlTransaction, before: float, limit: int) -> list[object]:
            rows = listing(tx, before, limit)
            # Another connection renews one listed secret and commits before the delete.
            renew = threading.Thread(
                target=writer.put, args=("renewed", "new"), kwargs={"namespace": "ns", "expires": 3600}
            )
            renew.start()
            renew.join(timeout=30)
            assert not renew.is_alive()
            return rows  # type: ignore[return-value]

        monkeypatch.setattr(SqlTransaction, "expired_secrets", list_then_renew)
        assert cleaner.cleanup_expired() == 1
        monkeypatch.undo()
        secret = cleaner.get("renewed", namespace="ns")
        assert (secret.value, secret.version) == ("new", 2)
        assert not cleaner.try_get("stale", namespace="ns").ok
        expired = [e.name for e in cleaner.audit.iter_events(AuditFilter(action="expire"))]
        assert expired == ["stale"]
