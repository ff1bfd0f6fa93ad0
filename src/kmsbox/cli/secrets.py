"""Secret commands: put, get, info, list, history, delete, disable, enable, cleanup."""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from kmsbox import NEVER
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.namespace_checks import check_new_namespace, namespace_exists, reads_of, unknown_namespace
from kmsbox.cli.output import emit_json, emit_json_streamed, fmt_time, plural, records, table
from kmsbox.cli.params import VERSION, parse_duration, parse_labels
from kmsbox.errors import IntegrityError
from kmsbox.store.models import SecretInfo
from kmsbox.store.names import validate_namespace
from kmsbox.store.values import Expiry

__all__ = ["register"]


def _parse_expiry(text: str | None) -> Expiry:
    # None keeps a secret's current expiry; NEVER removes it.
    if text is None:
        return None
    if text.strip().lower() == "never":
        return NEVER
    return parse_duration(text)


def _read_value(binary: bool, allow_empty: bool) -> str | bytes:
    # The value comes from stdin or a hidden prompt, never from the command line.
    if sys.stdin.isatty():
        text: str = click.prompt("Value", hide_input=True, confirmation_prompt=True)
        return text.encode() if binary else text
    data = sys.stdin.buffer.read()
    value: str | bytes
    if binary:
        value = data
    else:
        try:
            decoded: str | None = data.decode("utf-8")
        except UnicodeDecodeError:
            decoded = None
        if decoded is None:
            # Raised outside the handler: the codec's error holds the whole value.
            raise ValueError("value on stdin is not UTF-8 text: use --binary")
        # One trailing newline (from echo or a heredoc) is not part of the value; --binary keeps it.
        value = decoded[:-1] if decoded.endswith("\n") else decoded
    # An empty stdin is far more often a mistake (</dev/null, a failed pipe) than a wish.
    if not value and not allow_empty:
        raise ValueError("the value on stdin is empty: pipe the value in, or pass --allow-empty to store an empty one")
    return value


_CREATE_HELP = "Make the namespace if it does not exist yet (needed when its name is close to an existing one)."


@click.command("put")
@click.argument("namespace")
@click.argument("name")
@click.option(
    "--expires",
    metavar="DURATION|never",
    help="Expire after 90s, 15m, 12h, 30d, 2w (at most 1000 years); 'never' removes an expiry. Default: keep it.",
)
@click.option("--category", help="A category to filter by.")
@click.option("--description", help="A description (not secret).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label; repeatable.")
@click.option("--binary", is_flag=True, help="Store stdin as bytes, exactly.")
@click.option("--allow-empty", is_flag=True, help="Accept an empty value on stdin (refused by default).")
@click.option("--create", is_flag=True, help=_CREATE_HELP)
@pass_settings
def put_cmd(
    settings: Settings,
    namespace: str,
    name: str,
    expires: str | None,
    category: str | None,
    description: str | None,
    labels: tuple[str, ...],
    binary: bool,
    allow_empty: bool,
    create: bool,
) -> None:
    """Store a secret read from stdin (or a hidden prompt); makes a new version."""
    expiry = _parse_expiry(expires)
    label_map = parse_labels(labels)
    validate_namespace(namespace)
    value = _read_value(binary, allow_empty)
    with open_cli_store(settings, create=True) as store:
        check_new_namespace(store, namespace, create=create)
        info = store.put(
            name,
            value,
            namespace=namespace,
            expires=expiry,
            category=category,
            description=description,
            labels=label_map,
        )
    if settings.as_json:
        emit_json(info.to_dict())
    else:
        click.echo(f"stored {namespace}/{name} version {info.version}")


@click.command("get")
@click.argument("namespace")
@click.argument("name")
@click.option("--version", type=VERSION, help="A specific version (default: latest).")
@pass_settings
def get_cmd(settings: Settings, namespace: str, name: str, version: int | None) -> None:
    """Print a secret's value on stdout (exactly, for bytes)."""
    with open_cli_store(settings) as store, reads_of(store, namespace):
        secret = store.get(name, namespace=namespace, version=version)
    if settings.as_json:
        value = secret.value
        emit_json(
            {
                **secret.info.to_dict(),
                "version": secret.version,
                "value": value if isinstance(value, str) else value.hex(),
                "encoding": "utf-8" if isinstance(value, str) else "hex",
            }
        )
    elif isinstance(secret.value, bytes):
        sys.stdout.buffer.write(secret.value)
        sys.stdout.buffer.flush()
    else:
        click.echo(secret.value)


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@click.command("info")
@click.argument("namespace")
@click.argument("name")
@pass_settings
def info_cmd(settings: Settings, namespace: str, name: str) -> None:
    """Show a secret's metadata without reading its value (not counted as a read)."""
    with open_cli_store(settings) as store, reads_of(store, namespace):
        info = store.info(name, namespace=namespace)
    if settings.as_json:
        emit_json(info.to_dict())
        return
    records(
        None,
        [
            *("namespace", "name", "version", "status", "category", "description", "labels"),
            *("created", "updated", "expires", "reads", "last read"),
        ],
        [
            [
                info.namespace,
                info.name,
                info.version,
                info.status,
                info.category,
                info.description,
                _labels_text(info.labels),
                fmt_time(info.created_at),
                fmt_time(info.updated_at),
                fmt_time(info.expires_at),
                info.access_count,
                fmt_time(info.last_accessed_at),
            ]
        ],
    )


@click.command("list")
@click.argument("namespace", required=False)
@click.option("--all-namespaces", "-A", "everywhere", is_flag=True, help="Search every namespace.")
@click.option("--category")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only secrets with this label; repeat: all must match.",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--cursor", help="The cursor printed by the previous page (more: --cursor ...).")
@click.option("--all", "all_pages", is_flag=True, help="Every page (streamed: a table per page).")
@pass_settings
def list_cmd(
    settings: Settings,
    namespace: str | None,
    everywhere: bool,
    category: str | None,
    labels: tuple[str, ...],
    limit: int,
    cursor: str | None,
    all_pages: bool,
) -> None:
    """List secrets' metadata (never values), in a namespace or across all of them."""
    if (namespace is None) == (not everywhere):
        raise click.UsageError("give a NAMESPACE, or --all-namespaces to search every namespace (not both)")
    where: dict[str, Any] = {"all_namespaces": True} if everywhere else {"namespace": namespace}
    filters: dict[str, Any] = {"category": category, "label": list(labels) or None, **where}
    with open_cli_store(settings) as store:
        if namespace is not None:
            namespace = validate_namespace(namespace)
        page = store.list(limit=limit, cursor=cursor, **filters)
        if namespace is not None and not page.items and cursor is None and not namespace_exists(store, namespace):
            raise unknown_namespace(store, namespace)
        if not all_pages:
            _show_page(settings, everywhere, namespace, page.items, page.next_cursor)
            return

        def pages() -> Iterator[list[SecretInfo]]:
            current = page
            while True:
                yield current.items
                if current.next_cursor is None:
                    return
                current = store.list(limit=limit, cursor=current.next_cursor, **filters)

        if settings.as_json:
            emit_json_streamed({"items": (i.to_dict() for items in pages() for i in items), "next_cursor": None})
            return
        for items in pages():
            _show_page(settings, everywhere, namespace, items, None)


def _show_page(
    settings: Settings, everywhere: bool, namespace: str | None, items: list[SecretInfo], next_cursor: str | None
) -> None:
    if settings.as_json:
        emit_json({"items": [i.to_dict() for i in items], "next_cursor": next_cursor})
        return
    columns = ["name", "version", "status", "category", "expires", "reads", "last read", "labels"]
    table(
        "secrets in every namespace" if everywhere else f"secrets in {namespace}",
        (["namespace"] if everywhere else []) + columns,
        [
            ([i.namespace] if everywhere else [])
            + [
                i.name,
                i.version,
                i.status,
                i.category,
                fmt_time(i.expires_at),
                i.access_count,
                fmt_time(i.last_accessed_at),
                _labels_text(i.labels),
            ]
            for i in items
        ],
    )
    if next_cursor:
        click.echo(f"more: --cursor {next_cursor}")


@click.command("history")
@click.argument("namespace")
@click.argument("name")
@pass_settings
def history_cmd(settings: Settings, namespace: str, name: str) -> None:
    """Show the versions of a secret."""
    with open_cli_store(settings) as store, reads_of(store, namespace):
        versions = store.history(name, namespace=namespace)
    if settings.as_json:
        emit_json(
            [
                {
                    "version": v.version,
                    "created_at": v.created_at,
                    "namespace_key_version": v.namespace_key_version,
                    "current": v.current,
                }
                for v in versions
            ]
        )
        return
    table(
        f"{namespace}/{name}",
        ["version", "created", "namespace key", "current"],
        [[v.version, fmt_time(v.created_at), v.namespace_key_version, "yes" if v.current else ""] for v in versions],
    )


@click.command("delete")
@click.argument("namespace")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm without a prompt (needed when stdin is not a terminal).")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@pass_settings
def delete_cmd(settings: Settings, namespace: str, name: str, yes: bool, dry_run: bool) -> None:
    """Delete a secret and every one of its versions (asks first on a terminal)."""
    ask = not (yes or dry_run)
    if ask and not sys.stdin.isatty():
        raise click.UsageError(f"deleting {namespace}/{name} removes every version of it: pass --yes to confirm")
    with open_cli_store(settings) as store, reads_of(store, namespace):
        versions = _version_count(store, namespace, name) if dry_run or ask else None
        if dry_run:
            result: dict[str, Any] = {
                "namespace": namespace,
                "name": name,
                "dry_run": True,
                "would_delete_versions": versions,
            }
        else:
            if ask:
                # The prompt goes to stderr: stdout stays the command's result (JSON included).
                click.confirm(f"Delete {namespace}/{name} and {_all_versions(versions)}?", abort=True, err=True)
            count = store.delete(name, namespace=namespace)
            result = {"namespace": namespace, "name": name, "deleted_versions": count}
    if settings.as_json:
        emit_json(result)
    elif dry_run:
        click.echo(f"would delete {namespace}/{name} ({_all_versions(versions)}); nothing was deleted")
    else:
        click.echo(f"deleted {namespace}/{name} ({plural(result['deleted_versions'], 'version')})")


def _version_count(store: Any, namespace: str, name: str) -> int | None:
    """How many versions a delete removes; None when its row cannot be read (changed
    through the database), which a delete still removes."""
    try:
        return len(store.history(name, namespace=namespace))
    except IntegrityError:
        return None


def _all_versions(count: int | None) -> str:
    if count is None:
        return "every version of it (its row cannot be read, so they cannot be counted)"
    return f"all {plural(count, 'version')}" if count != 1 else "its 1 version"


def _status_command(action: str) -> click.Command:
    @click.command(action, help=f"{action.capitalize()} a secret.")
    @click.argument("namespace")
    @click.argument("name")
    @pass_settings
    def command(settings: Settings, namespace: str, name: str) -> None:
        with open_cli_store(settings) as store, reads_of(store, namespace):
            info = getattr(store, action)(name, namespace=namespace)
        if settings.as_json:
            emit_json({"namespace": namespace, "name": name, "status": info.status})
        else:
            click.echo(f"{action}d {namespace}/{name}")

    return command


@click.command("cleanup")
@click.option(
    "--retention", default="0s", show_default=True, metavar="DURATION", help="Keep expired secrets this long."
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@pass_settings
def cleanup_cmd(settings: Settings, retention: str, dry_run: bool) -> None:
    """Delete secrets that expired longer ago than the retention."""
    keep = parse_duration(retention, allow_zero=True)
    with open_cli_store(settings) as store:
        if dry_run:
            _show_expired(settings, expired_secrets(store, keep))
            return
        count = store.cleanup_expired(keep)
    if settings.as_json:
        emit_json({"deleted": count})
    else:
        click.echo(f"deleted {plural(count, 'expired secret')}")


def _show_expired(settings: Settings, doomed: Iterator[dict[str, Any]]) -> None:
    counted = 0

    def counting() -> Iterator[dict[str, Any]]:
        nonlocal counted
        for item in doomed:
            counted += 1
            yield item

    if settings.as_json:
        emit_json_streamed({"dry_run": True, "secrets": counting(), "would_delete": lambda: counted})
        return
    for item in counting():
        click.echo(f"would delete {item['namespace']}/{item['name']} (expired {fmt_time(item['expires_at'])})")
    click.echo(f"would delete {plural(counted, 'expired secret')}; nothing was deleted")


def expired_secrets(store: Any, retention: _dt.timedelta) -> Iterator[dict[str, Any]]:
    """What ``cleanup_expired(retention)`` would delete now: secrets that expired longer ago
    than ``retention``, read page by page."""
    cutoff = time.time() - retention.total_seconds()
    for info in store.iter_secrets(all_namespaces=True):
        if info.expires_at is not None and info.expires_at < cutoff:
            yield {"namespace": info.namespace, "name": info.name, "expires_at": info.expires_at}


def register(cli: click.Group) -> None:
    """Add the secret commands."""
    for command in (put_cmd, get_cmd, info_cmd, list_cmd, history_cmd, delete_cmd, cleanup_cmd):
        cli.add_command(command)
    for action in ("disable", "enable"):
        cli.add_command(_status_command(action))
