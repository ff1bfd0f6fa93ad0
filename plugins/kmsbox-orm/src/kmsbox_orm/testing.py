"""Test helpers shared by the ORM plugins' suites: the PostgreSQL server they test against.

``KMSBOX_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names
it, as for kmsbox-postgres. When it cannot be reached a test skips with the reason, except
under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os

__all__ = ["TEST_URL_ENV", "postgres_test_url", "require_postgres"]

TEST_URL_ENV = "KMSBOX_TEST_POSTGRES_URL"
_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_test_url() -> str:
    """The test server's libpq URL."""
    return os.environ.get(TEST_URL_ENV) or _DEFAULT


def require_postgres() -> str:
    """The URL if the server answers; otherwise skip (fail under CI=true)."""
    import pytest

    url = postgres_test_url()
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to connect (driver missing included) means "not available"
        reason = f"cannot connect to {url.split('@')[-1]}: {' '.join(str(exc).split())}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(f"PostgreSQL not available ({reason}); set {TEST_URL_ENV} to run these tests")
    return url
