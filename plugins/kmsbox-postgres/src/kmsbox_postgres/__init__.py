"""kmsbox-postgres: the PostgreSQL storage backend of kmsbox (psycopg 3).

The names below are imported on first use, so that loading the plugin (which
every ``kmsbox`` start does) does not import psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kmsbox_postgres.backend import POSTGRES_DIALECT, PostgresEngine, open_postgres

__all__ = ["POSTGRES_DIALECT", "PostgresEngine", "open_postgres"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kmsbox_postgres import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'kmsbox_postgres' has no attribute {name!r}")
