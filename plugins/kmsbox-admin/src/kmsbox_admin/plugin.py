"""Hook implementations of the kmsbox-admin plugin: the ``kmsbox admin`` commands."""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_commands"]


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``kmsbox admin serve`` and ``kmsbox admin token``."""
    from kmsbox_admin.cli import admin_group

    cli.add_command(admin_group)
