"""Hook implementations of kmsbox-sqlalchemy: the ``kmsbox sqlalchemy`` commands."""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_commands"]


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``kmsbox sqlalchemy`` (rewrite, status, index keys)."""
    from kmsbox_sqlalchemy.cli import sqlalchemy_group

    cli.add_command(sqlalchemy_group)
