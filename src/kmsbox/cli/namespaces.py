"""``kmsbox init`` (make a store, and namespaces, on purpose) and ``kmsbox namespaces``."""

from __future__ import annotations

from typing import Any

import click

from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.output import emit_json
from kmsbox.errors import ConfigError
from kmsbox.store.names import validate_namespace

__all__ = ["register"]


def _where(store: Any) -> str:
    described: dict[str, str] = store.backend.describe()
    return f"{described.get('backend', 'store')} {described.get('location', '')}".strip()


@click.command("init")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="Also make this namespace (its first key); repeatable.",
)
@pass_settings
def init_cmd(settings: Settings, namespaces: tuple[str, ...]) -> None:
    """Create the store (and namespaces) if they do not exist yet; otherwise change nothing."""
    wanted = list(dict.fromkeys(validate_namespace(ns) for ns in namespaces))
    try:
        with open_cli_store(settings) as store:
            made = [ns for ns in wanted if store.create_namespace(ns)]
            where, created = _where(store), False
    except ConfigError:
        # Opened again allowing creation: an error that was not "no store here" (a KEK
        # that cannot open it, a bad setting) happens again and is what is reported.
        with open_cli_store(settings, create=True) as store:
            made = [ns for ns in wanted if store.create_namespace(ns)]
            where, created = _where(store), True
    if settings.as_json:
        emit_json({"created": created, "store": where, "namespaces_created": made})
        return
    click.echo(f"created the store: {where}" if created else f"the store already exists: {where}")
    for ns in wanted:
        click.echo(f"created namespace {ns}" if ns in made else f"namespace {ns} already exists")


@click.command("namespaces")
@pass_settings
def namespaces_cmd(settings: Settings) -> None:
    """List every namespace (one per line; `kmsbox status NS` shows its keys)."""
    with open_cli_store(settings) as store:
        names = store.namespaces()
    if settings.as_json:
        emit_json({"namespaces": names})
        return
    for name in names:
        click.echo(name)


def register(cli: click.Group) -> None:
    """Add init and namespaces."""
    cli.add_command(init_cmd)
    cli.add_command(namespaces_cmd)
