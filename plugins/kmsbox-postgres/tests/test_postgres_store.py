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
            ((chain,),) = conn.execute(
                f'SELECT chain FROM "{schema}".kmsbox_audit_events WHERE name = %s AND action = %s',
                ("bystander", "create"),
            ).fetchall()
            conn.execute(
                f'UPDATE "{schema}".kmsbox_audit_events SET context = %s WHERE chain = %s AND seq = 1', ("nope", chain)
            )
        with pytest.raises(IntegrityError, match="'victim' in namespace 'ns' is malformed"):
            store.get("victim", namespace="ns")
        assert store.get("bystander", namespace="ns").value == "w"
        assert store.audit_events(AuditFilter(name="victim"))[0][-1].result == "failure"
        assert [(i.code, i.secret) for i in store.diagnose("ns").issues] == [("secret_malformed", "victim")]
        verification = store.verify_audit()
        assert verification.problems[0].startswith(f"chain {chain}: event 1 was altered")
        store.delete("victim", namespace="ns")
        with pytest.raises(SecretNotFound):
            store.get("victim", namespace="ns")


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

        def list_then_renew(tx: SqlTransaction, before: float, limit: int, *, after: object = None) -> list[object]:
            rows = listing(tx, before, limit, after=after)  # type: ignore[arg-type]
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
        expired = [e.name for e in cleaner.iter_audit_events(AuditFilter(action="expire"))]
        assert expired == ["stale"]
