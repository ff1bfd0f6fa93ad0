"""``kmsbox sqlalchemy``: rewrite an encrypted column in place, scan it, manage index keys.

Columns are named as ``package.module:Model.attribute``; the module is imported (so its
models are defined) and the database is ``--url`` (or ``$KMSBOX_SQLALCHEMY_URL``), a sync
SQLAlchemy URL. The KEKs are kmsbox's global ``--kek`` options (or ``$KMSBOX_KEK``); they
become the default configuration the models' columns use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from kmsbox_orm.rewrite import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import InstrumentedAttribute

from kmsbox.cli.main import Settings, pass_settings
from kmsbox.cli.output import emit_json, table
from kmsbox_sqlalchemy.config import EncryptionConfig, configure
from kmsbox_sqlalchemy.jobs import rewrite_column, scan_column

__all__ = ["URL_ENV", "sqlalchemy_group"]

URL_ENV = "KMSBOX_SQLALCHEMY_URL"

_url_option = click.option(
    "--url", envvar=URL_ENV, required=True, metavar="URL", help=f"SQLAlchemy database URL (default: ${URL_ENV})."
)


def load_attribute(target: str) -> InstrumentedAttribute[Any]:
    """Import ``package.module:Model.attribute`` (ValueError when it does not name a mapped attribute)."""
    module_name, sep, path = target.partition(":")
    model_name, dot, attribute = path.partition(".")
    if not sep or not dot or not module_name or not model_name or not attribute:
        raise ValueError(f"column {target!r} must look like package.module:Model.attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    value = getattr(getattr(module, model_name, None), attribute, None)
    if not isinstance(value, InstrumentedAttribute):
        raise ValueError(f"{target!r} is not a mapped attribute")
    return value


@contextmanager
def _session(settings: Settings, url: str) -> Iterator[tuple[Engine, EncryptionConfig]]:
    if "+aiosqlite" in url or "+asyncpg" in url:
        raise ValueError("the job runs synchronously: give a sync URL (sqlite:///..., postgresql+psycopg://...)")
    try:
        engine = create_engine(url)
    except Exception as exc:  # SQLAlchemy's ArgumentError and friends: a bad URL is a usage error
        raise ValueError(f"bad database URL: {type(exc).__name__}") from None
    config = configure(settings.keks or None, engine=engine)
    try:
        yield engine, config
    finally:
        config.close()
        engine.dispose()


@contextmanager
def _progress(settings: Settings, label: str) -> Iterator[Callable[[int, int | None], None] | None]:
    if settings.as_json or not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@click.group("sqlalchemy")
def sqlalchemy_group() -> None:
    """Encrypted SQLAlchemy columns: rewrite in place, scan, index keys."""


@sqlalchemy_group.command("rewrite")
@click.argument("column")
@_url_option
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--force", is_flag=True, help="Re-encrypt every value with a fresh data key, not only old ones.")
@click.option("--restart", is_flag=True, help="Ignore an unfinished run's checkpoint and start at the first row.")
@click.option("--dry-run", is_flag=True, help="Count what would change; write nothing.")
@pass_settings
def rewrite_cmd(
    settings: Settings, column: str, url: str, batch_size: int, force: bool, restart: bool, dry_run: bool
) -> None:
    """Re-encrypt COLUMN (package.module:Model.attribute) in place, in committed batches, resumably."""
    attribute = load_attribute(column)
    with _session(settings, url) as (engine, _config), _progress(settings, "rewriting") as progress:
        report = rewrite_column(
            engine,
            attribute,
            force=force,
            batch_size=batch_size,
            resume=not restart,
            dry_run=dry_run,
            progress=progress,
        )
    if settings.as_json:
        emit_json(report.to_dict())
    else:
        verb = "would write" if dry_run else "wrote"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items())) or "nothing to do"
        click.echo(
            f"{report.job}: scanned {report.scanned}, {verb} {report.written if not dry_run else sum(report.reasons.values())} "
            f"({reasons}), unchanged {report.unchanged}, null {report.null}, conflicts {report.conflicts}, "
            f"failed {report.failed}, {report.batches} batches, {report.seconds:.2f}s"
            + (" (resumed)" if report.resumed else "")
        )
        for failure in report.failed_rows:
            click.echo(f"  failed row {failure['row']}: {failure['error']}")
    if report.failed:
        sys.exit(1)


@sqlalchemy_group.command("status")
@click.argument("column")
@_url_option
@pass_settings
def status_cmd(settings: Settings, column: str, url: str) -> None:
    """Count COLUMN's values by state and KEK version, and its index values by version (decrypts nothing)."""
    attribute = load_attribute(column)
    with _session(settings, url) as (engine, _config):
        scan = scan_column(engine, attribute)
    data = scan.to_dict()
    if settings.as_json:
        emit_json(data)
        return
    table(
        scan.job,
        ["rows", "null", "current", "old KEK", "legacy", "malformed", "index missing"],
        [[scan.rows, scan.null, scan.current, scan.old_kek, scan.legacy, scan.malformed, scan.index_missing]],
    )
    if scan.kek_versions:
        table("KEK versions", ["version", "values"], sorted(scan.kek_versions.items()))
    if scan.index_versions:
        table("index-key versions", ["version", "values"], sorted(scan.index_versions.items()))


@sqlalchemy_group.group("index-keys")
def index_keys_group() -> None:
    """Blind-index keys kept (wrapped by the KEK) in kmsbox_orm_index_keys."""


def _show_keys(settings: Settings, config: EncryptionConfig) -> None:
    rows = config.keyring.status()
    if settings.as_json:
        emit_json(rows)
    else:
        table(
            "index keys",
            ["index", "version", "active from", "retired", "writing"],
            [[r["index"], r["version"], r["active_from"], r["retired"], r["writing"]] for r in rows],
        )


@index_keys_group.command("list")
@_url_option
@pass_settings
def keys_list(settings: Settings, url: str) -> None:
    """Every index key version and which one indexes new values."""
    with _session(settings, url) as (_engine, config):
        config.create_tables()
        _show_keys(settings, config)


@index_keys_group.command("create")
@click.argument("base")
@_url_option
@pass_settings
def keys_create(settings: Settings, base: str, url: str) -> None:
    """Create the plugin's tables and the first key of every blind index in BASE (package.module:Base)."""
    module_name, sep, name = base.partition(":")
    if not sep:
        raise ValueError(f"{base!r} must look like package.module:Base")
    metadata = getattr(getattr(importlib.import_module(module_name), name, None), "metadata", None)
    if metadata is None:
        raise ValueError(f"{base!r} has no metadata")
    with _session(settings, url) as (_engine, config):
        config.create_tables()
        created = config.ensure_index_keys(metadata)
        if settings.as_json:
            emit_json({"created": created})
        else:
            click.echo(f"created {len(created)} index key(s){': ' + ', '.join(created) if created else ''}")


@index_keys_group.command("rotate")
@click.argument("name")
@_url_option
@click.option(
    "--grace", type=click.FloatRange(0, 86400 * 30), default=None, help="Seconds before it indexes new values."
)
@pass_settings
def keys_rotate(settings: Settings, name: str, url: str, grace: float | None) -> None:
    """Add a new version of index NAME; run `rewrite` on its column after the grace period."""
    with _session(settings, url) as (_engine, config):
        version = config.keyring.rotate(name, grace=grace)
        if settings.as_json:
            emit_json({"index": name, "version": version})
        else:
            click.echo(f"{name}: added v{version}; it indexes new values after the grace period, then run `rewrite`")


@index_keys_group.command("retire")
@click.argument("name")
@click.argument("version", type=click.IntRange(1, 65535))
@_url_option
@click.option("--yes", is_flag=True, help="Confirm: lookups stop matching values still indexed with it.")
@pass_settings
def keys_retire(settings: Settings, name: str, version: int, url: str, yes: bool) -> None:
    """Retire VERSION of index NAME (check `status` first: no value should still use it)."""
    if not yes:
        raise click.UsageError("retiring an index key makes lookups miss rows still indexed with it: pass --yes")
    with _session(settings, url) as (_engine, config):
        config.keyring.retire(name, version)
        _show_keys(settings, config)


@index_keys_group.command("rewrap")
@_url_option
@pass_settings
def keys_rewrap(settings: Settings, url: str) -> None:
    """Re-seal every index key under the primary KEK (after a KEK rotation or migration)."""
    with _session(settings, url) as (_engine, config):
        count = config.keyring.rewrap()
    if settings.as_json:
        emit_json({"rewrapped": count})
    else:
        click.echo(f"rewrapped {count} index key(s)")
