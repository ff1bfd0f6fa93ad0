"""Secret commands: put, get, list, history, delete, disable, enable, cleanup."""

from __future__ import annotations

import sys

import click

from kmsbox import NEVER
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.output import emit_json, fmt_time, table
from kmsbox.cli.params import VERSION, parse_duration
from kmsbox.store.service import Expiry

__all__ = ["register"]


def _parse_expiry(text: str | None) -> Expiry:
    # None keeps a secret's current expiry; NEVER removes it.
    if text is None:
        return None
    if text.strip().lower() == "never":
        return NEVER
    return parse_duration(text)


def _parse_labels(items: tuple[str, ...]) -> dict[str, str] | None:
    if not items:
        return None
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} must look like key=value")
        labels[key] = value
    return labels


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
) -> None:
    """Store a secret read from stdin (or a hidden prompt); makes a new version."""
    expiry = _parse_expiry(expires)
    label_map = _parse_labels(labels)
    value = _read_value(binary, allow_empty)
    with open_cli_store(settings) as store:
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
    with open_cli_store(settings) as store:
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


@click.command("list")
@click.argument("namespace")
@click.option("--category")
@click.option("--label", metavar="KEY=VALUE")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--cursor", help="Cursor from the previous page.")
@click.option("--all", "all_pages", is_flag=True, help="Stream every page.")
@pass_settings
def list_cmd(
    settings: Settings,
    namespace: str,
    category: str | None,
    label: str | None,
    limit: int,
    cursor: str | None,
    all_pages: bool,
) -> None:
    """List secrets' metadata (never values)."""
    with open_cli_store(settings) as store:
        if all_pages:
            items = list(store.iter_secrets(namespace=namespace, category=category, label=label))
            next_cursor = None
        else:
            page = store.list(namespace=namespace, category=category, label=label, limit=limit, cursor=cursor)
            items, next_cursor = page.items, page.next_cursor
    if settings.as_json:
        emit_json({"items": [i.to_dict() for i in items], "next_cursor": next_cursor})
        return
    table(
        f"secrets in {namespace}",
        ["name", "version", "status", "category", "expires", "reads", "last read", "labels"],
        [
            [
                i.name,
                i.version,
                i.status,
                i.category,
                fmt_time(i.expires_at),
                i.access_count,
                fmt_time(i.last_accessed_at),
                ",".join(f"{k}={v}" for k, v in sorted(i.labels.items())),
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
    with open_cli_store(settings) as store:
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


def _status_command(action: str) -> click.Command:
    @click.command(action, help=f"{action.capitalize()} a secret.")
    @click.argument("namespace")
    @click.argument("name")
    @pass_settings
    def command(settings: Settings, namespace: str, name: str) -> None:
        with open_cli_store(settings) as store:
            if action == "delete":
                count = store.delete(name, namespace=namespace)
                result = {"namespace": namespace, "name": name, "deleted_versions": count}
            else:
                info = getattr(store, action)(name, namespace=namespace)
                result = {"namespace": namespace, "name": name, "status": info.status}
        if settings.as_json:
            emit_json(result)
        else:
            click.echo(
                f"{action}d {namespace}/{name}"
                if action != "delete"
                else f"deleted {namespace}/{name} ({result['deleted_versions']} versions)"
            )

    return command


@click.command("cleanup")
@click.option(
    "--retention", default="0s", show_default=True, metavar="DURATION", help="Keep expired secrets this long."
)
@pass_settings
def cleanup_cmd(settings: Settings, retention: str) -> None:
    """Delete secrets that expired longer ago than the retention."""
    keep = parse_duration(retention, allow_zero=True)
    with open_cli_store(settings) as store:
        count = store.cleanup_expired(keep)
    if settings.as_json:
        emit_json({"deleted": count})
    else:
        click.echo(f"deleted {count} expired secrets")


def register(cli: click.Group) -> None:
    """Add the secret commands."""
    for command in (put_cmd, get_cmd, list_cmd, history_cmd, cleanup_cmd):
        cli.add_command(command)
    for action in ("delete", "disable", "enable"):
        cli.add_command(_status_command(action))
