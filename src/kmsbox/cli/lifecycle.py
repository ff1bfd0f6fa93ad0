"""Key lifecycle commands (filled in by the lifecycle work)."""

from __future__ import annotations

import click

__all__ = ["register"]


def register(cli: click.Group) -> None:
    """Add lifecycle commands."""
