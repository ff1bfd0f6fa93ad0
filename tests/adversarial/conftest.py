"""Fixtures of the adversarial tests: a store on SQLite or on the real PostgreSQL server, and
the attacker's raw SQL on the very same database (no key, no kmsbox code in between)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from db_attacker import Attacker, PostgresAttacker, SqliteAttacker

KEK_VAR = "KMSBOX_ADVERSARIAL_KEK"


@pytest.fixture
def kek_uri(monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``env://`` KEK whose key is generated for this test."""
    monkeypatch.setenv(KEK_VAR, os.urandom(32).hex())
    return f"env://{KEK_VAR}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path, kek_uri: str) -> Iterator[Attacker]:
    """One store's database, SQLite or PostgreSQL (a fresh schema), seen by the attacker."""
    if request.param == "sqlite":
        path = tmp_path / "secrets.db"
        attacker: Attacker = SqliteAttacker(f"sqlite:///{path}", kek_uri, path)
    else:
        if importlib.util.find_spec("kmsbox_postgres") is None:
            reason = "kmsbox-postgres is not installed"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        url: str = request.getfixturevalue("postgres_url")
        server: str = request.getfixturevalue("postgres_server_url")
        attacker = PostgresAttacker(url, kek_uri, server, url.rsplit("schema=", 1)[1].split("&", 1)[0])
    try:
        yield attacker
    finally:
        attacker.close()


@pytest.fixture
def sqlite_db(tmp_path: Path, kek_uri: str) -> Iterator[SqliteAttacker]:
    """A SQLite store's database only (for attacks on its files)."""
    path = tmp_path / "secrets.db"
    attacker = SqliteAttacker(f"sqlite:///{path}", kek_uri, path)
    try:
        yield attacker
    finally:
        attacker.close()
