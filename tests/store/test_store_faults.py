"""Bad input and faults: corrupted and moved rows, audit tampering, fail-closed opening, config, KEK calls."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmsbox
from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, PluginError
from kmsbox.kek import open_kek
from kmsbox.keys import KeyCache
from kmsbox.retry import RetryPolicy
from kmsbox.storage import open_storage
from kmsbox.storage.base import AuditFilter
from kmsbox.store.audit import Checkpoint
from kmsbox.store.names import MAX_NAME, MAX_NAMESPACE, NAME_PATTERN, NAMESPACE_PATTERN
from kmsbox.store.service import SecretStore
from kmsbox.testing.counting import CountingKek
from kmsbox.testing.fake_kek import FakeKek
from kmsbox.testing.tamper import read_blob, write_blob

Opener = Callable[..., SecretStore]


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _sql(path: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with closing(_db(path)) as conn:
        return conn.execute(statement, params).fetchall()


def _blob(path: Path, namespace: str, name: str, version: int) -> bytes:
    return read_blob(path, namespace, name, version)


def _set_blob(path: Path, namespace: str, name: str, version: int, blob: bytes) -> None:
    write_blob(path, namespace, name, version, blob)


def _table_counts(path: Path) -> dict[str, int]:
    tables = ("kmsbox_secrets", "kmsbox_secret_history", "kmsbox_namespace_keys", "kmsbox_audit_events")
    return {t: int(_sql(path, f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables}  # type: ignore[call-overload]


# --- corrupted and moved ciphertexts ---------------------------------------------------------


@pytest.mark.parametrize("where", ["first", "header", "middle", "last"])
def test_corrupted_row_fails_with_integrity_error_and_is_audited(
    open_test_store: Opener, db_path: Path, where: str
) -> None:
    store = open_test_store()
    for name in ("victim", "neighbour"):
        store.put(name, f"value of {name}", namespace="app:prod")
    blob = bytearray(_blob(db_path, "app:prod", "victim", 1))
    index = {"first": 0, "header": 5, "middle": len(blob) // 2, "last": len(blob) - 1}[where]
    blob[index] ^= 0x40
    _set_blob(db_path, "app:prod", "victim", 1, bytes(blob))

    with pytest.raises(IntegrityError) as caught:
        store.get("victim", namespace="app:prod")
    assert "value of" not in str(caught.value)
    assert store.get("neighbour", namespace="app:prod").value == "value of neighbour"
    result = store.try_get("victim", namespace="app:prod")
    assert (result.ok, result.reason) == (False, "integrity")
    failures = store.audit_events(AuditFilter(namespace="app:prod", name="victim", action="read"))[0]
    assert [(e.result, e.secret_version, e.detail["reason"]) for e in failures] == [
        ("failure", 1, "integrity"),
        ("failure", 1, "integrity"),
    ]
    assert store.verify_audit().ok


def test_byte_flipped_in_the_database_file_fails_with_integrity_error(
    open_test_store: Opener, db_path: Path, sqlite_url: str
) -> None:
    store = open_test_store()
    store.put("victim", b"A" * 200, namespace="ns")
    store.put("neighbour", b"B" * 200, namespace="ns")
    blob = _blob(db_path, "ns", "victim", 1)
    store.close()
    with closing(_db(db_path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
    data = bytearray(db_path.read_bytes())
    at = data.find(blob)
    assert at > 0 and data.find(blob, at + 1) == -1
    data[at + len(blob) // 2] ^= 0x01
    db_path.write_bytes(bytes(data))
    store = open_test_store(sqlite_url)
    with pytest.raises(IntegrityError):
        store.get("victim", namespace="ns")
    assert store.get("neighbour", namespace="ns").value == b"B" * 200
    (event,) = store.audit_events(AuditFilter(name="victim", action="read"))[0]
    assert (event.result, event.detail["reason"]) == ("failure", "integrity")


@pytest.mark.parametrize("change", ["truncated", "extended", "empty", "garbage"])
def test_malformed_blob_fails_with_integrity_error(open_test_store: Opener, db_path: Path, change: str) -> None:
    store = open_test_store()
    store.put("s", b"payload", namespace="ns")
    blob = _blob(db_path, "ns", "s", 1)
    replaced = {
        "truncated": blob[:-1],
        "extended": blob + b"\x00",
        "empty": b"",
        "garbage": os.urandom(len(blob)),
    }[change]
    _set_blob(db_path, "ns", "s", 1, replaced)
    with pytest.raises(IntegrityError):
        store.get("s", namespace="ns")


def test_failed_read_is_audited_when_read_audit_is_off(open_test_store: Opener, db_path: Path) -> None:
    store = open_test_store(audit_reads=False)
    store.put("s", "v", namespace="ns")
    blob = bytearray(_blob(db_path, "ns", "s", 1))
    blob[-3] ^= 1
    _set_blob(db_path, "ns", "s", 1, bytes(blob))
    with pytest.raises(IntegrityError):
        store.get("s", namespace="ns")
    events = store.audit_events(AuditFilter(action="read"))[0]
    assert [(e.name, e.result, e.detail["reason"]) for e in events] == [("s", "failure", "integrity")]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (("ns", "a", 1), ("ns", "b", 1)),  # another name
        (("ns", "a", 1), ("ns", "a", 2)),  # another version of the same secret
        (("ns", "a", 1), ("other", "a", 1)),  # the same name in another namespace
    ],
    ids=["other-row", "other-version", "other-namespace"],
)
def test_ciphertext_moved_to_another_row_fails_to_decrypt(
    open_test_store: Opener, db_path: Path, source: tuple[str, str, int], target: tuple[str, str, int]
) -> None:
    store = open_test_store()
    store.put("a", "alpha-1", namespace="ns")
    store.put("a", "alpha-2", namespace="ns")
    store.put("b", "bravo-1", namespace="ns")
    store.put("a", "other-1", namespace="other")
    # Read both first, so their data keys are cached: a moved blob must still fail.
    store.get(source[1], namespace=source[0], version=source[2])
    store.get(target[1], namespace=target[0], version=target[2])
    _set_blob(db_path, *target, _blob(db_path, *source))
    t_ns, t_name, t_version = target
    with pytest.raises(IntegrityError):
        store.get(t_name, namespace=t_ns, version=t_version)
    # The source row still reads.
    s_ns, s_name, s_version = source
    assert store.get(s_name, namespace=s_ns, version=s_version).value == "alpha-1"


def test_tampered_namespace_key_wrap_is_key_unavailable(open_test_store: Opener, db_path: Path) -> None:
    store = open_test_store()
    store.put("s", "v", namespace="tenant-1")
    store.put("s", "v", namespace="tenant-2")
    store.close()
    (wrap,) = _sql(db_path, "SELECT ciphertext FROM kmsbox_namespace_key_wraps WHERE namespace = 'tenant-1'")
    assert isinstance(wrap[0], bytes)
    flipped = bytearray(wrap[0])
    flipped[-1] ^= 1
    _sql(
        db_path, "UPDATE kmsbox_namespace_key_wraps SET ciphertext = ? WHERE namespace = 'tenant-1'", (bytes(flipped),)
    )
    store = open_test_store()  # a cold key cache: the namespace key must be unwrapped
    with pytest.raises(KeyUnavailable):
        store.get("s", namespace="tenant-1")
    assert store.try_get("s", namespace="tenant-1").reason == "key_unavailable"
    assert store.get("s", namespace="tenant-2").value == "v"
    events = store.audit_events(AuditFilter(namespace="tenant-1", action="read"))[0]
    assert {(e.result, e.detail["reason"]) for e in events} == {("failure", "key_unavailable")}


# --- the audit log against someone with only database access ---------------------------------


@pytest.fixture
def audited(open_test_store: Opener, db_path: Path) -> SecretStore:
    store = open_test_store()
    for i in range(5):
        store.put(f"s{i}", f"v{i}", namespace="ns", actor="alice")
        store.get(f"s{i}", namespace="ns")
    assert store.verify_audit().ok
    return store


_TAMPERING = {
    "actor": "UPDATE kmsbox_audit_events SET actor = 'mallory' WHERE seq = 3",
    "result": "UPDATE kmsbox_audit_events SET result = 'denied' WHERE seq = 4",
    "time": "UPDATE kmsbox_audit_events SET time = time - 3600 WHERE seq = 2",
    "detail": "UPDATE kmsbox_audit_events SET detail = '{}' WHERE seq = 1",
    "name": "UPDATE kmsbox_audit_events SET name = 's9' WHERE seq = 5",
    "namespace": "UPDATE kmsbox_audit_events SET namespace = 'other' WHERE seq = 5",
    "version": "UPDATE kmsbox_audit_events SET secret_version = 7 WHERE seq = 1",
    "action": "UPDATE kmsbox_audit_events SET action = 'read' WHERE seq = 1",
    "context": 'UPDATE kmsbox_audit_events SET context = \'{"ip": "1.2.3.4"}\' WHERE seq = 6',
    "mac": "UPDATE kmsbox_audit_events SET mac = X'00' WHERE seq = 7",
    "mac-of-another-event": "UPDATE kmsbox_audit_events SET mac = (SELECT mac FROM kmsbox_audit_events WHERE seq = 2) "
    "WHERE seq = 3",
    "delete-middle": "DELETE FROM kmsbox_audit_events WHERE seq = 4",
    "delete-first": "DELETE FROM kmsbox_audit_events WHERE seq = 1",
    "delete-range": "DELETE FROM kmsbox_audit_events WHERE seq BETWEEN 3 AND 6",
}


@pytest.mark.parametrize("statement", list(_TAMPERING.values()), ids=list(_TAMPERING))
def test_audit_tampering_through_the_database_is_found(
    audited: SecretStore, db_path: Path, open_test_store: Opener, statement: str
) -> None:
    checkpoint = audited.audit_checkpoint()
    _sql(db_path, statement)
    for store in (audited, open_test_store()):  # the same store, and one opened afterwards
        report = store.verify_audit()
        assert not report.ok
        assert report.problems
        assert not store.verify_audit(checkpoint).ok


def test_reordered_audit_events_are_found(audited: SecretStore, db_path: Path) -> None:
    with closing(_db(db_path)) as conn:
        conn.execute("BEGIN")
        conn.execute("UPDATE kmsbox_audit_events SET seq = -1 WHERE seq = 3")
        conn.execute("UPDATE kmsbox_audit_events SET seq = 3 WHERE seq = 4")
        conn.execute("UPDATE kmsbox_audit_events SET seq = 4 WHERE seq = -1")
        conn.execute("COMMIT")
    report = audited.verify_audit()
    assert not report.ok
    assert any("event 3" in p for p in report.problems)


def test_forged_audit_event_is_found(audited: SecretStore, db_path: Path) -> None:
    chain, head, at = _sql(db_path, "SELECT chain, seq, at FROM kmsbox_audit_chains ORDER BY seq DESC LIMIT 1")[0]
    assert isinstance(head, int) and isinstance(at, int)
    _sql(
        db_path,
        "INSERT INTO kmsbox_audit_events (chain, seq, at, time, namespace, name, secret_version, action, result, "
        "actor, context, detail, key_version, mac, record) "
        "VALUES (?, ?, ?, ?, 'ns', 's0', 1, 'read', 'success', 'x', '{}', '{}', 1, ?, 2)",
        (chain, head + 1, at + 1, (at + 1) / 1e6, os.urandom(32)),
    )
    report = audited.verify_audit()
    assert not report.ok
    assert any(f"event {head + 1}" in p for p in report.problems)


@pytest.mark.parametrize("cut", [1, 3, "all"])
def test_checkpoint_detects_a_truncated_tail(
    audited: SecretStore, db_path: Path, open_test_store: Opener, cut: int | str
) -> None:
    # Exported (to JSON) and read back, as an operator keeps it outside the database.
    checkpoint = Checkpoint.from_dict(json.loads(json.dumps(audited.audit_checkpoint().to_dict())))
    assert audited.verify_audit(checkpoint).ok
    audited.close()
    head = max(checkpoint.heads, key=lambda h: h.seq)
    keep = 0 if cut == "all" else head.seq - int(cut)
    # Cut the chain back and its head row with it (what an attacker would do to hide it).
    _sql(db_path, "DELETE FROM kmsbox_audit_events WHERE chain = ? AND seq > ?", (head.chain, keep))
    last = _sql(
        db_path, "SELECT seq, at, mac FROM kmsbox_audit_events WHERE chain = ? ORDER BY seq DESC LIMIT 1", (head.chain,)
    )
    seq, at, mac = last[0] if last else (0, 0, b"")
    _sql(db_path, "UPDATE kmsbox_audit_chains SET seq = ?, at = ?, mac = ? WHERE chain = ?", (seq, at, mac, head.chain))
    store = open_test_store()
    report = store.verify_audit(checkpoint)
    assert not report.ok
    assert any("cut back" in p for p in report.problems)
    # New events appended after the cut do not hide it either.
    if cut == "all":
        # The record of the namespace's keys went with the cut: no write builds on them now.
        with pytest.raises(IntegrityError):
            store.put("after-the-cut", "v", namespace="ns")
    else:
        store.put("after-the-cut", "v", namespace="ns")
    assert not store.verify_audit(checkpoint).ok


def test_checkpoint_parsing_rejects_malformed_input() -> None:
    for bad in (
        {},
        {"seq": 1},
        {"seq": -1, "mac": "00"},
        {"seq": 1, "mac": "zz"},
        {"seq": "1", "mac": "00"},
        None,
        {"chains": None},
        {"chains": [{"chain": 1, "seq": 1}]},
        {"chains": [{"chain": 1, "seq": 1, "mac": "00"}, {"chain": 1, "seq": 2, "mac": "00"}]},
        {"chains": [{"chain": 2**40, "seq": 1, "mac": "00"}]},
        {"chains": [], "taken_at": "yesterday"},
    ):
        with pytest.raises(ValueError):
            Checkpoint.from_dict(bad)  # type: ignore[arg-type]


# --- names and namespaces ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def memory_store() -> Iterator[SecretStore]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KMSBOX_FAULTS_KEK", os.urandom(32).hex())
        with kmsbox.open_store("memory://", kek="env://KMSBOX_FAULTS_KEK") as store:
            yield store


def _is_valid(pattern: str, limit: int) -> Callable[[str], bool]:
    import re

    compiled = re.compile(pattern)
    return lambda text: 0 < len(text) <= limit and compiled.fullmatch(text) is not None


_any_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from("aZ09._-/: \n\x00é!@#\\'\""), max_size=40),
    st.builds(lambda n: "a" * n, st.integers(256, 400)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_any_text.filter(lambda t: not _is_valid(NAME_PATTERN, MAX_NAME)(t)))
def test_any_invalid_name_is_a_value_error_and_stores_nothing(memory_store: SecretStore, name: str) -> None:
    with pytest.raises(ValueError):
        memory_store.put(name, "v", namespace="names")
    with pytest.raises(ValueError):
        memory_store.get(name, namespace="names")
    assert memory_store.list(namespace="names").items == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_any_text.filter(lambda t: not _is_valid(NAMESPACE_PATTERN, MAX_NAMESPACE)(t)))
def test_any_invalid_namespace_is_a_value_error_and_stores_nothing(memory_store: SecretStore, namespace: str) -> None:
    before = memory_store.namespaces()
    with pytest.raises(ValueError):
        memory_store.put("name", "v", namespace=namespace)
    with pytest.raises(ValueError):
        memory_store.list(namespace=namespace)
    assert memory_store.namespaces() == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.from_regex(NAMESPACE_PATTERN, fullmatch=True).filter(lambda t: len(t) <= MAX_NAMESPACE),
    st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda t: len(t) <= MAX_NAME),
    st.one_of(st.text(max_size=50), st.binary(max_size=50)),
)
def test_any_valid_name_and_namespace_round_trip(
    memory_store: SecretStore, namespace: str, name: str, value: str | bytes
) -> None:
    memory_store.put(name, value, namespace=namespace)
    got = memory_store.get(name, namespace=namespace).value
    assert type(got) is type(value) and got == value


# --- KEK calls -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_namespace_key_is_unwrapped_once_per_cache_lifetime(kek_uri: str, sqlite_url: str) -> None:
    writer = CountingKek(open_kek(kek_uri))
    with kmsbox.open_store(sqlite_url, kek=writer) as store:
        for i in range(50):
            store.put(f"s{i}", f"v{i}", namespace="tenant-123")
            assert store.get(f"s{i}", namespace="tenant-123").value == f"v{i}"
    # Wraps: the audit key and the namespace key. The new namespace key is cached when it is made, so the
    # only unwrap is the audit key's, at open.
    assert (writer.wraps, writer.unwraps) == (2, 1)

    clock = FakeClock()
    reader = CountingKek(open_kek(kek_uri))
    with kmsbox.open_store(sqlite_url, kek=reader, cache=KeyCache(max_age=60, clock=clock)) as store:
        assert reader.unwraps == 1  # the audit key, at open
        for _ in range(3):
            for i in range(1, 50):
                assert store.get(f"s{i}", namespace="tenant-123").value == f"v{i}"
            store.put("s0", "again", namespace="tenant-123")
        assert (reader.wraps, reader.unwraps) == (0, 2)
        clock.now += 61  # the cache lifetime ends: the next read unwraps again, once
        for i in range(50):
            store.get(f"s{i}", namespace="tenant-123")
        assert reader.unwraps == 3


def test_reads_across_ten_namespaces_cost_one_unwrap_each(kek_uri: str, sqlite_url: str) -> None:
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        for n in range(10):
            for i in range(20):
                store.put(f"s{i}", "v", namespace=f"tenant-{n}")
    reader = CountingKek(open_kek(kek_uri))
    with kmsbox.open_store(sqlite_url, kek=reader, audit_reads=False) as store:
        for n in range(10):
            for i in range(20):
                store.get(f"s{i}", namespace=f"tenant-{n}")
    assert reader.unwraps == 1 + 10


def test_first_write_creates_the_namespace_key_and_reads_do_not(open_test_store: Opener, db_path: Path) -> None:
    store = open_test_store()
    before = _sql(db_path, "SELECT COUNT(*) FROM kmsbox_namespace_keys")[0][0]
    assert store.try_get("x", namespace="fresh").reason == "namespace_not_found"
    assert store.list(namespace="fresh").items == []
    assert _sql(db_path, "SELECT COUNT(*) FROM kmsbox_namespace_keys")[0][0] == before
    store.put("x", "v", namespace="fresh")
    rows = _sql(db_path, "SELECT version, status FROM kmsbox_namespace_keys WHERE namespace = 'fresh'")
    assert rows == [(1, "active")]
    assert "fresh" in store.namespaces()


# --- opening fails closed --------------------------------------------------------------------


def test_open_store_from_arguments(open_test_store: Opener, kek_uri: str, sqlite_url: str) -> None:
    store = kmsbox.open_store(sqlite_url, kek=kek_uri)
    with store:
        store.put("k", "v", namespace="n")
    assert store.backend.describe()["backend"] == "sqlite"


def test_open_store_from_environment(
    monkeypatch: pytest.MonkeyPatch, kek_uri: str, sqlite_url: str, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMSBOX_STORE", sqlite_url)
    monkeypatch.setenv("KMSBOX_KEK", kek_uri)
    with kmsbox.open_store() as store:
        store.put("k", "from-env", namespace="n")
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        assert store.get("k", namespace="n").value == "from-env"


def test_open_store_from_kmsbox_toml_in_the_working_folder(
    monkeypatch: pytest.MonkeyPatch, kek_uri: str, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KMSBOX_STORE", raising=False)
    monkeypatch.delenv("KMSBOX_KEK", raising=False)
    monkeypatch.delenv("KMSBOX_CONFIG", raising=False)
    (tmp_path / "kmsbox.toml").write_text(
        f'[store]\nurl = "sqlite:///secrets.db"\nkek = ["{kek_uri}"]\naudit_reads = false\nmax_value_size = 16\n'
        "[cache]\nmax_age = 10\nmax_entries = 8\ndata_keys = 0\n",
        encoding="utf-8",
    )
    with kmsbox.open_store() as store:
        assert store.audit_reads is False
        assert store.max_value_size == 16
        assert store.key_cache.max_age == 10
        assert store.data_key_cache is None
        store.put("k", "0123456789abcdef", namespace="n")
        with pytest.raises(ValueError, match="limit is 16"):
            store.put("k", "0123456789abcdefg", namespace="n")
        store.get("k", namespace="n")
        assert store.audit_events(AuditFilter(action="read"))[0] == []
    assert (tmp_path / "secrets.db").is_file()


def test_config_file_named_by_kmsbox_config_and_precedence(
    monkeypatch: pytest.MonkeyPatch, kek_uri: str, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "elsewhere.toml"
    config.write_text(f'[store]\nurl = "sqlite:///from-file.db"\nkek = "{kek_uri}"\n', encoding="utf-8")
    monkeypatch.setenv("KMSBOX_CONFIG", str(config))
    monkeypatch.delenv("KMSBOX_STORE", raising=False)
    monkeypatch.delenv("KMSBOX_KEK", raising=False)
    with kmsbox.open_store() as store:
        store.put("k", "v", namespace="n")
    assert (tmp_path / "from-file.db").is_file()
    # The environment beats the file; arguments beat both.
    monkeypatch.setenv("KMSBOX_STORE", "sqlite:///from-env.db")
    with kmsbox.open_store():
        pass
    assert (tmp_path / "from-env.db").is_file()
    with kmsbox.open_store("sqlite:///from-args.db"):
        pass
    assert (tmp_path / "from-args.db").is_file()
    monkeypatch.setenv("KMSBOX_KEK", "env://KMSBOX_UNSET_VARIABLE")
    with pytest.raises(ConfigError, match="KMSBOX_UNSET_VARIABLE"):
        kmsbox.open_store()
    with kmsbox.open_store(kek=kek_uri):
        pass


def test_kek_list_in_the_environment_gives_escrow_copies(
    monkeypatch: pytest.MonkeyPatch, kek_uri: str, sqlite_url: str
) -> None:
    monkeypatch.setenv("KMSBOX_ESCROW_KEY", os.urandom(32).hex())
    monkeypatch.setenv("KMSBOX_KEK", f"{kek_uri}, env://KMSBOX_ESCROW_KEY")
    with kmsbox.open_store(sqlite_url) as store:
        assert [k.uri for k in store.keks] == [kek_uri, "env://KMSBOX_ESCROW_KEY"]
        store.put("k", "v", namespace="n")
    # Either KEK alone opens the store and reads the secret.
    monkeypatch.delenv("KMSBOX_KEK")
    for only in (kek_uri, "env://KMSBOX_ESCROW_KEY"):
        with kmsbox.open_store(sqlite_url, kek=only) as store:
            assert store.get("k", namespace="n").value == "v"


@pytest.fixture
def escrow_only(monkeypatch: pytest.MonkeyPatch, kek_uri: str, sqlite_url: str) -> str:
    """A store whose audit key both KEKs wrap, with secret ``k`` in ``only-primary``,
    a namespace wrapped by the primary alone; returns the escrow KEK's URI."""
    monkeypatch.setenv("KMSBOX_ESCROW_KEY", os.urandom(32).hex())
    with kmsbox.open_store(sqlite_url, kek=[kek_uri, "env://KMSBOX_ESCROW_KEY"]):
        pass
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        store.put("k", "v", namespace="only-primary")
    return "env://KMSBOX_ESCROW_KEY"


def test_namespace_key_without_a_wrap_for_the_configured_kek_is_key_unavailable(
    escrow_only: str, sqlite_url: str
) -> None:
    with kmsbox.open_store(sqlite_url, kek=escrow_only) as store:
        with pytest.raises(KeyUnavailable):
            store.get("k", namespace="only-primary")
        assert store.try_get("k", namespace="only-primary").reason == "key_unavailable"


def test_a_put_the_kek_cannot_serve_is_audited_and_writes_nothing(
    escrow_only: str, kek_uri: str, sqlite_url: str
) -> None:
    with kmsbox.open_store(sqlite_url, kek=escrow_only) as store:
        for name in ("k", "new"):
            with pytest.raises(KeyUnavailable):
                store.put(name, "w", namespace="only-primary", actor="deployer")
        failures = store.audit_events(AuditFilter(namespace="only-primary", result="failure"))[0]
        assert [(e.action, e.name, e.actor, e.detail) for e in failures] == [
            ("update", "k", "deployer", {"reason": "key_unavailable"}),
            ("create", "new", "deployer", {"reason": "key_unavailable"}),
        ]
        assert store.verify_audit().ok
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        assert [v.version for v in store.history("k", namespace="only-primary")] == [1]
        assert not store.try_get("new", namespace="only-primary").ok


def test_a_kms_outage_fails_puts_and_gets_with_an_audited_provider_error() -> None:
    from kmsbox.errors import ProviderError

    kek = FakeKek()
    kek.retry = RetryPolicy(max_attempts=1)
    with SecretStore(open_storage("memory://"), [kek]) as store:
        store.put("s", "v", namespace="ns")
        store.key_cache.clear()  # the next read must ask the KMS again
        assert store.data_key_cache is not None
        store.data_key_cache.clear()
        kek.faults.configure(rate=1.0, kind="unavailable")
        with pytest.raises(ProviderError):
            store.put("t", "v", namespace="fresh")  # a new namespace needs a wrap
        with pytest.raises(ProviderError):
            store.get("s", namespace="ns")
        result = store.try_get("s", namespace="ns")
        assert (result.ok, result.reason) == (False, "provider_error")
        events = store.audit_events(AuditFilter(result="failure"))[0]
        assert [(e.action, e.namespace, e.secret_version, e.detail["reason"]) for e in events] == [
            ("create", "fresh", None, "provider_error"),
            ("read", "ns", 1, "provider_error"),
            ("read", "ns", 1, "provider_error"),
        ]
        with pytest.raises(ProviderError):
            store.import_secrets({"u": "v"}, namespace="imported")
        assert store.audit_events(AuditFilter(action="import"))[0][-1].detail == {"reason": "provider_error"}
        kek.faults.configure(rate=0.0)
        assert store.get("s", namespace="ns").value == "v"
        assert store.verify_audit().ok


def test_a_store_missing_a_table_does_not_open(open_test_store: Opener, sqlite_url: str, db_path: Path) -> None:
    open_test_store().close()
    _sql(db_path, "DROP TABLE kmsbox_secret_history")
    with pytest.raises(ConfigError, match="no table kmsbox_secret_history"):
        open_test_store()


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("[store\nurl = 1", "not valid TOML"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\ncolour = "blue"\n', "unknown"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\nsize = 1\n', "unknown"),
        ('[store]\nurl = 5\nkek = "env://K"\n', "url"),
        ('[store]\nurl = ""\nkek = "env://K"\n', "url"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = 5\n', "kek"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = ["env://K", 5]\n', "kek"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = []\n', "KEK"),
        ('[store]\nurl = "sqlite:///x.db"\n', "KEK"),
        ('[store]\nkek = "env://K"\n', "URL"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\naudit_reads = "yes"\n', "audit_reads"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\nmax_value_size = 0\n', "max_value_size"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\nmax_value_size = "1MB"\n', "max_value_size"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\nmax_value_size = true\n', "max_value_size"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\nmax_age = -1\n', "max_age"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\nmax_entries = 0.5\n', "max_entries"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\nmax_uses = 2.5\n', "max_uses"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\ndata_keys = -1\n', "data_keys"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\ndata_keys = 1.5\n', "data_keys"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\nmax_age = "soon"\n', "max_age"),
        ('store = "sqlite:///x.db"\n', "table"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "env://K"\n[cache]\nmax_entries = 1e9\n', "max_entries"),
        ('[store]\nurl = "nothing-here"\nkek = "env://K"\n', "scheme"),
        ('[store]\nurl = "sqlite:///x.db"\nkek = "not-a-uri"\n', "scheme"),
    ],
)
def test_bad_kmsbox_toml_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, match: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("KMSBOX_STORE", "KMSBOX_KEK", "KMSBOX_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("K", os.urandom(32).hex())
    (tmp_path / "kmsbox.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        kmsbox.open_store()
    assert not (tmp_path / "x.db").exists()


def test_missing_named_config_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KMSBOX_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        kmsbox.open_store("memory://", kek="env://K")


def test_no_settings_at_all_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("KMSBOX_STORE", "KMSBOX_KEK", "KMSBOX_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="no store URL"):
        kmsbox.open_store()
    with pytest.raises(ConfigError, match="no KEK"):
        kmsbox.open_store("memory://")


@pytest.mark.parametrize(
    "raw",
    ["", "not-hex", "00" * 16, "zz" * 32, "00" * 33, "v1:" + "00" * 31, "v1:" + "11" * 32 + ",v1:" + "22" * 32],
    ids=["empty", "words", "short", "non-hex", "long", "short-versioned", "duplicate-version"],
)
def test_unusable_kek_variable_is_a_config_error_that_does_not_echo_it(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, db_path: Path, raw: str
) -> None:
    monkeypatch.setenv("KMSBOX_BAD_KEY", raw)
    with pytest.raises(ConfigError) as caught:
        kmsbox.open_store(sqlite_url, kek="env://KMSBOX_BAD_KEY")
    if len(raw) >= 8:
        assert raw not in str(caught.value)
    assert not db_path.exists()  # nothing was opened or created


def test_unset_kek_variable_and_unknown_scheme_fail_closed(
    monkeypatch: pytest.MonkeyPatch, kek_uri: str, sqlite_url: str
) -> None:
    monkeypatch.delenv("KMSBOX_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="KMSBOX_NOT_SET"):
        kmsbox.open_store(sqlite_url, kek="env://KMSBOX_NOT_SET")
    with pytest.raises(PluginError, match="no-such-kms"):
        kmsbox.open_store(sqlite_url, kek="no-such-kms://key")
    with pytest.raises(PluginError, match="nosuchdb"):
        kmsbox.open_store("nosuchdb://x", kek=kek_uri)


def test_same_kek_twice_is_a_config_error(kek_uri: str) -> None:
    with pytest.raises(ConfigError, match="twice"):
        kmsbox.open_store("memory://", kek=[kek_uri, kek_uri])


def test_wrong_kek_is_a_config_error_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, kek_uri: str, sqlite_url: str, db_path: Path
) -> None:
    with kmsbox.open_store(sqlite_url, kek=kek_uri) as store:
        store.put("k", "v", namespace="n")
    before = _table_counts(db_path)
    # Same URI, another key (store made with key A, opened with key B).
    monkeypatch.setenv("KMSBOX_MASTER_KEY", os.urandom(32).hex())
    with pytest.raises(ConfigError, match="cannot be opened"):
        kmsbox.open_store(sqlite_url, kek=kek_uri)
    # Another URI altogether.
    monkeypatch.setenv("KMSBOX_OTHER_KEY", os.urandom(32).hex())
    with pytest.raises(ConfigError, match="not wrapped by any configured KEK"):
        kmsbox.open_store(sqlite_url, kek="env://KMSBOX_OTHER_KEY")
    assert _table_counts(db_path) == before


def test_store_with_a_tampered_audit_key_does_not_open(open_test_store: Opener, sqlite_url: str, db_path: Path) -> None:
    open_test_store().close()
    _sql(
        db_path, "UPDATE kmsbox_namespace_key_wraps SET ciphertext = ? WHERE namespace = '!audit'", (b"KB" + bytes(40),)
    )
    with pytest.raises(ConfigError):
        open_test_store()


def test_schema_newer_than_the_code_is_a_config_error(open_test_store: Opener, db_path: Path) -> None:
    open_test_store().close()
    _sql(db_path, "UPDATE kmsbox_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match="schema version 999"):
        open_test_store()
    assert _sql(db_path, "SELECT value FROM kmsbox_meta WHERE key = 'schema_version'") == [("999",)]


@pytest.mark.parametrize("recorded", ["abc", "", "2.5", "-1", "0", " 2", "\uff12"])
def test_an_unreadable_schema_version_is_a_config_error_that_changes_nothing(
    open_test_store: Opener, db_path: Path, recorded: str
) -> None:
    store = open_test_store()
    store.put("s", "v", namespace="ns")
    store.close()
    _sql(db_path, "UPDATE kmsbox_meta SET value = ? WHERE key = 'schema_version'", (recorded,))
    before = _table_counts(db_path)
    with pytest.raises(ConfigError, match="unreadable schema version"):
        open_test_store()
    assert _table_counts(db_path) == before
    assert _sql(db_path, "SELECT value FROM kmsbox_meta WHERE key = 'schema_version'") == [(recorded,)]


@pytest.mark.parametrize("kind", ["garbage-file", "directory", "missing-folder", "bad-url", "empty-path"])
def test_unreadable_store_is_a_config_error(kek_uri: str, tmp_path: Path, kind: str) -> None:
    if kind == "garbage-file":
        path = tmp_path / "garbage.db"
        path.write_bytes(os.urandom(4096))
        url = f"sqlite:///{path}"
    elif kind == "directory":
        (tmp_path / "a-folder.db").mkdir()
        url = f"sqlite:///{tmp_path / 'a-folder.db'}"
    elif kind == "missing-folder":
        url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}"
    elif kind == "bad-url":
        url = "sqlite://host/path.db"
    else:
        url = "sqlite:///"
    with pytest.raises(ConfigError):
        kmsbox.open_store(url, kek=kek_uri)


def test_memory_url_with_a_path_is_a_config_error(kek_uri: str) -> None:
    with pytest.raises(ConfigError):
        kmsbox.open_store("memory://somewhere", kek=kek_uri)


def test_closed_store_refuses_work(kek_uri: str) -> None:
    store = kmsbox.open_store("memory://", kek=kek_uri)
    store.put("k", "v", namespace="n")
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(kmsbox.StorageError):
        store.get("k", namespace="n")


def test_reads_reuse_data_keys_but_still_check_every_value(open_test_store: Opener, db_path: Path) -> None:
    store = open_test_store()
    store.put("s", "first", namespace="ns")
    assert store.get("s", namespace="ns").value == "first"
    assert store.data_key_cache is not None
    hits = store.data_key_cache.stats.hits
    assert store.get("s", namespace="ns").value == "first"
    assert store.data_key_cache.stats.hits == hits + 1
    # A flipped bit in the value ciphertext still fails with the data key cached.
    blob = _blob(db_path, "ns", "s", 1)
    _set_blob(db_path, "ns", "s", 1, blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        store.get("s", namespace="ns")
    # A new version gets a new data key; the cache is bounded by its size.
    store.put("s", "second", namespace="ns")
    assert store.get("s", namespace="ns").value == "second"
    assert len(store.data_key_cache) <= store.data_key_cache.max_entries


def test_data_key_cache_can_be_turned_off(kek_uri: str, sqlite_url: str) -> None:
    with SecretStore(open_storage(sqlite_url), [open_kek(kek_uri)], data_key_cache_size=0) as store:
        store.put("s", "v", namespace="ns")
        assert store.data_key_cache is None
        assert store.get("s", namespace="ns").value == "v"


def test_a_cached_data_key_never_outlives_its_namespace_key() -> None:
    # Once the namespace key leaves its cache and the KEK can no longer unwrap it, a
    # read fails even for a version whose DEK is still in the data-key cache.
    kek = FakeKek()
    with SecretStore(open_storage("memory://"), [kek]) as store:
        store.put("s", "v", namespace="ns")
        assert store.get("s", namespace="ns").value == "v"
        assert store.data_key_cache is not None and len(store.data_key_cache) == 1
        first = kek.primary_version()
        kek.rotate()
        kek.destroy_version(first)
        store.key_cache.clear()  # the namespace key's cache lifetime is over
        with pytest.raises(KeyUnavailable):
            store.get("s", namespace="ns")


@pytest.mark.parametrize(
    ("column", "value"),
    [("blob", None), ("version_created_at", "soon"), ("version", "one"), ("seal", "text")],
)
def test_a_malformed_stored_row_is_an_integrity_error_and_is_audited(
    open_test_store: Opener, db_path: Path, column: str, value: object
) -> None:
    store = open_test_store()
    store.put("victim", "v", namespace="ns")
    store.put("bystander", "w", namespace="ns")
    _sql(db_path, f"UPDATE kmsbox_secrets SET {column} = ? WHERE name = 'victim'", (value,))
    with pytest.raises(IntegrityError):
        store.get("victim", namespace="ns")
    assert store.try_get("victim", namespace="ns").reason == "integrity"
    assert store.get("bystander", namespace="ns").value == "w"
    failures = store.audit_events(AuditFilter(name="victim", result="failure"))[0]
    assert [e.detail["reason"] for e in failures] == ["integrity", "integrity"]


def test_an_sqlite_file_of_another_application_is_not_taken_over(kek_uri: str, db_path: Path) -> None:
    _sql(db_path, "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    with pytest.raises(ConfigError, match="another application"):
        kmsbox.open_store(f"sqlite:///{db_path}", kek=kek_uri)
    assert [r[0] for r in _sql(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users"]
