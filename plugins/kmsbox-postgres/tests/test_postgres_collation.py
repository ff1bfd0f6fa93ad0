"""A store in a database whose default collation is linguistic (ICU en-US, as many servers
are set up with en_US.UTF-8): its key columns compare byte by byte (schema 4), so verify's
merge of two walks, listing cursors and lock orders sorted in Python agree with the database.

Under en-US, "A/c" sorts between "a/b" and "a1" and "B1" before "x_y"; Python's str order
puts every capital first. Before schema 4, verify reported present secrets as gone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from kmsbox_postgres.testing import with_query

import kmsbox
from kmsbox.storage.sql import SCHEMA_VERSION

NAMES = ["B1", "a1", "a-b", "ab", "a.c", "Z", "z", "x_y", "xy", "a/b", "A/c"]
NAMESPACES = ["A", "b", "a-b", "ab", "B:c", "a:d"]
KEY_COLUMNS = {
    ("kmsbox_secrets", "namespace"),
    ("kmsbox_secrets", "name"),
    ("kmsbox_secret_history", "namespace"),
    ("kmsbox_secret_history", "name"),
    ("kmsbox_secret_access", "namespace"),
    ("kmsbox_secret_access", "name"),
    ("kmsbox_namespaces", "namespace"),
    ("kmsbox_namespace_keys", "namespace"),
    ("kmsbox_namespace_key_wraps", "namespace"),
    ("kmsbox_namespace_key_wraps", "kek_uri"),
    ("kmsbox_audit_events", "namespace"),
    ("kmsbox_audit_events", "name"),
    ("kmsbox_jobs", "job_id"),
}


@pytest.fixture
def icu_server_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database whose default collation is ICU's en-US; dropped after the test."""
    database = f"kmsbox_icu_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True, connect_timeout=5) as admin:
        try:
            admin.execute(
                f"CREATE DATABASE {database} LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0"
            )
        except psycopg.errors.FeatureNotSupported as exc:  # a server built without ICU
            pytest.skip(f"the server cannot make an ICU database: {exc}")
    base = postgres_server_url.split("?", 1)[0].rsplit("/", 1)[0]
    try:
        yield f"{base}/{database}"
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _fill(store: kmsbox.SecretStore) -> set[tuple[str, str]]:
    for name in NAMES:
        store.put(name, "v", namespace="ns")
    for ns in NAMESPACES:
        store.put("k", "v", namespace=ns)
    for name in ("B1", "a/b", "z"):  # deleted: the audit log records them, no row is left
        store.delete(name, namespace="ns")
    return {("ns", n) for n in NAMES if n not in ("B1", "a/b", "z")} | {(ns, "k") for ns in NAMESPACES}


def _listed(store: kmsbox.SecretStore, **where: object) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = store.list(limit=2, cursor=cursor, **where)  # type: ignore[arg-type]
        out += [(i.namespace, i.name) for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return out


def _collations(url: str, schema: str) -> dict[tuple[str, str], str | None]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE table_schema = %s AND data_type = 'text'",
            (schema,),
        ).fetchall()
    return {(t, c): coll for t, c, coll in rows}


def test_verify_and_listings_agree_with_the_database_under_a_linguistic_collation(
    icu_server_url: str, kmsbox_local_kek: str
) -> None:
    with kmsbox.open_store(with_query(icu_server_url, "schema=store"), kek=kmsbox_local_kek) as store:
        present = _fill(store)
        report = store.verify_audit()
        assert report.ok, report.problems
        assert store.diagnose().issues == []
        assert _listed(store, all_namespaces=True) == sorted(present)
        assert _listed(store, namespace="ns") == sorted(k for k in present if k[0] == "ns")
    collations = _collations(icu_server_url, "store")
    assert {column: collations[column] for column in KEY_COLUMNS} == dict.fromkeys(KEY_COLUMNS, "C")


def test_a_schema_3_store_in_such_a_database_gets_the_byte_order_on_upgrade(
    icu_server_url: str, kmsbox_local_kek: str
) -> None:
    url = with_query(icu_server_url, "schema=old")
    with kmsbox.open_store(url, kek=kmsbox_local_kek) as store:
        present = _fill(store)
    # What schema 3 left: key columns in the database's collation.
    with psycopg.connect(icu_server_url, autocommit=True, connect_timeout=5) as conn:
        for table, column in sorted(KEY_COLUMNS):
            conn.execute(f'ALTER TABLE old.{table} ALTER COLUMN {column} TYPE TEXT COLLATE "default"')
        conn.execute("UPDATE old.kmsbox_meta SET value = '3' WHERE key = 'schema_version'")
    assert set(_collations(icu_server_url, "old").values()) == {None}
    with kmsbox.open_store(url, kek=kmsbox_local_kek) as store:
        assert store.backend.schema_version() == SCHEMA_VERSION == 4
        report = store.verify_audit()
        assert report.ok, report.problems
        assert _listed(store, all_namespaces=True) == sorted(present)
        # The upgrade to 4 sealed nothing again: the schema marker still records schema 3.
        markers = [e for e in store.iter_audit_events() if e.action == "upgrade"]
        assert [e.detail["schema"] for e in markers] == [SCHEMA_VERSION]
    collations = _collations(icu_server_url, "old")
    assert {column: collations[column] for column in KEY_COLUMNS} == dict.fromkeys(KEY_COLUMNS, "C")
