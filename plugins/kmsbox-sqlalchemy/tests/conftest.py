"""Fixtures: a KEK generated per test, and each database the tests run on (a SQLite file,
a fresh PostgreSQL schema), with its sync and asyncio SQLAlchemy URLs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import kmsbox_sqlalchemy as ks
import pytest
from kmsbox_orm.testing import require_postgres
from sa_helpers import Database
from sqlalchemy import Engine


@pytest.fixture
def kek(monkeypatch: pytest.MonkeyPatch) -> str:
    """An env:// KEK with one version (v1), generated for this test."""
    monkeypatch.setenv("KMSBOX_ORM_TEST_KEK", os.urandom(32).hex())
    return "env://KMSBOX_ORM_TEST_KEK"


def _postgres(request: pytest.FixtureRequest) -> Iterator[Database]:
    import psycopg

    url = require_postgres()
    schema = f"kmsbox_orm_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield Database("postgres", sa_url, sa_url, {"options": f"-csearch_path={schema}"})
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path / "app.db"
        yield Database("sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}", {})
    else:
        yield from _postgres(request)


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    """A sync engine on the database."""
    engine = database.engine()
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _fresh_default() -> Iterator[None]:
    yield
    ks.reset_default()
