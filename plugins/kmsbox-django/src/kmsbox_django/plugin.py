"""Hook implementations of kmsbox-django: the ``kmsbox django`` commands."""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_commands"]


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``kmsbox django`` (rewrite, status, index-keys)."""
    from kmsbox_django.cli import django_group

    cli.add_command(django_group)
