"""``kmsbox django --settings mysite.settings rewrite|status|index-keys ...``: the management commands from kmsbox.

Django is set up from ``--settings`` (or ``$DJANGO_SETTINGS_MODULE``); kmsbox's global
``--kek`` options, when given, replace ``KMSBOX_ORM['KEK']``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from kmsbox.cli.main import Settings, pass_settings

__all__ = ["django_group"]


def _setup(settings: Settings, django_settings: str | None, pythonpath: str | None) -> None:
    if pythonpath:
        sys.path.insert(0, pythonpath)
    if django_settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = django_settings
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise ValueError("no Django settings: pass --settings or set DJANGO_SETTINGS_MODULE")
    import django

    try:
        django.setup()
    except ImportError as exc:
        raise ValueError(f"cannot import the Django settings: {exc}") from None
    from kmsbox_django.conf import reset_config

    reset_config(settings.keks or None)


def _call(settings: Settings, name: str, *args: Any, **options: Any) -> None:
    # Django is set up here, not in the group, so that `kmsbox django COMMAND --help` needs no settings.
    where = click.get_current_context().meta.get("kmsbox_django", {})
    _setup(settings, where.get("settings"), where.get("pythonpath"))
    from django.core.management import call_command

    call_command(name, *args, json=settings.as_json, **options)


@click.group("django")
@click.option("--settings", "django_settings", metavar="MODULE", help="Django settings module.")
@click.option("--pythonpath", metavar="DIR", help="A directory to add to the import path.")
@click.pass_context
def django_group(ctx: click.Context, django_settings: str | None, pythonpath: str | None) -> None:
    """Encrypted Django fields: rewrite in place, scan, index keys."""
    ctx.meta["kmsbox_django"] = {"settings": django_settings, "pythonpath": pythonpath}


@django_group.command("rewrite")
@click.argument("field")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--force", is_flag=True, help="Re-encrypt every value with a fresh data key.")
@click.option("--restart", is_flag=True, help="Ignore an unfinished run's checkpoint.")
@click.option("--dry-run", is_flag=True, help="Count what would change; write nothing.")
@click.option("--database", default=None, help="Database alias.")
@pass_settings
def rewrite_cmd(
    settings: Settings,
    field: str,
    batch_size: int,
    force: bool,
    restart: bool,
    dry_run: bool,
    database: str | None,
) -> None:
    """Re-encrypt FIELD (app_label.Model.field) in place, in committed batches, resumably."""
    options = {"batch_size": batch_size, "force": force, "restart": restart, "dry_run": dry_run, "database": database}
    from kmsbox_django.commands import RowsFailed

    try:
        _call(settings, "kmsbox_rewrite", field, **options)
    except RowsFailed as exc:
        click.echo(f"kmsbox: error: {exc}", err=True)
        sys.exit(1)  # the report is printed; rows left as they were make the exit status 1


@django_group.command("status")
@click.argument("field")
@click.option("--database", default=None, help="Database alias.")
@pass_settings
def status_cmd(settings: Settings, field: str, database: str | None) -> None:
    """Count FIELD's values by state and KEK version, and its index values by version."""
    _call(settings, "kmsbox_status", field, database=database)


@django_group.command("index-keys")
@click.argument("action", type=click.Choice(["list", "create", "rotate", "retire", "rewrap"]))
@click.argument("name", required=False)
@click.argument("version", required=False, type=click.IntRange(1, 65535))
@click.option("--grace", type=click.FloatRange(0, 86400 * 30), default=None)
@click.option("--yes", is_flag=True)
@pass_settings
def index_keys_cmd(
    settings: Settings, action: str, name: str | None, version: int | None, grace: float | None, yes: bool
) -> None:
    """Blind-index keys: list, create, rotate NAME, retire NAME VERSION --yes, rewrap."""
    args = [action] + ([name] if name else []) + ([str(version)] if version else [])
    _call(settings, "kmsbox_index_keys", *args, grace=grace, yes=yes)
