"""The kmsbox-postgres pytest plugin (``pytest11`` entry point).

Fixtures:

- ``postgres_server_url``: the server's URL, from ``KMSBOX_TEST_POSTGRES_URL``
  (default ``postgresql://postgres@127.0.0.1:5432/test``), checked once per session.
- ``postgres_url``: the same URL with ``?schema=<fresh unique schema>`` for one test;
  the schema is dropped afterwards.

When the server cannot be reached the test is skipped with the reason, except
under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

__all__ = ["DEFAULT_TEST_URL", "TEST_URL_ENV", "postgres_server_url", "postgres_url", "with_query"]

TEST_URL_ENV = "KMSBOX_TEST_POSTGRES_URL"
DEFAULT_TEST_URL = "postgresql://postgres@127.0.0.1:5432/test"


def with_query(url: str, extra: str) -> str:
    """``url`` with ``extra`` (``key=value``) appended to its query string."""
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(f"PostgreSQL not available ({reason}); set {TEST_URL_ENV} to run these tests")


@pytest.fixture(scope="session")
def _kmsbox_postgres_server() -> tuple[str, str | None]:
    """(url, None) when the server answers, else (url, reason) -- checked once."""
    url = os.environ.get(TEST_URL_ENV) or DEFAULT_TEST_URL
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency of this package
        return url, f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        host = url.split("@")[-1]
        return url, f"cannot connect to {host}: {' '.join(str(exc).split())}"
    return url, None


@pytest.fixture
def postgres_server_url(_kmsbox_postgres_server: tuple[str, str | None]) -> str:
    """The test server's URL (skips, or fails under CI=true, when it is unreachable)."""
    url, reason = _kmsbox_postgres_server
    if reason is not None:
        _unavailable(reason)
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A ``postgresql://...?schema=kmsbox_test_<random>`` URL; the schema is dropped after the test."""
    import psycopg

    schema = f"kmsbox_test_{uuid.uuid4().hex[:16]}"
    yield with_query(postgres_server_url, f"schema={schema}")
    with psycopg.connect(postgres_server_url, connect_timeout=5, autocommit=True) as conn:
        # Do not hang the suite on a connection a test forgot to close.
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
