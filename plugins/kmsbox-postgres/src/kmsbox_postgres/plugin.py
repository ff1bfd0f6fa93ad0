"""The kmsbox plugin entry point: registers ``postgresql://`` and ``postgres://``."""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_storage_backends"]


def _open(url: str, *, create: bool = True) -> Any:
    # Imported on use so that loading the plugin does not import psycopg.
    from kmsbox_postgres.backend import open_postgres

    return open_postgres(url, create=create)


@hookimpl
def register_storage_backends(register: Any) -> None:
    """Register the PostgreSQL backend under both of libpq's URL schemes."""
    register("postgresql", _open, "PostgreSQL server (psycopg 3)")
    register("postgres", _open, "PostgreSQL server (psycopg 3)")
