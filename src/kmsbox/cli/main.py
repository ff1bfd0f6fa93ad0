"""The ``kmsbox`` click group, its global options and error handling.

Every kmsbox error becomes one line on stderr and a documented exit code; plugins
add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click

from kmsbox.cli.exits import EXIT_CODES, exit_code_for
from kmsbox.errors import KmsboxError

__all__ = [
    "DEBUG_ENV",
    "KmsboxGroup",
    "Settings",
    "cli",
    "fail_internal",
    "get_cli",
    "main",
    "open_cli_store",
    "pass_settings",
]


@dataclass
class Settings:
    """Global options of one invocation."""

    store: str | None = None
    keks: list[str] = field(default_factory=list)
    config: str | None = None
    as_json: bool = False
    no_read_audit: bool = False


pass_settings = click.make_pass_decorator(Settings, ensure=True)


@contextmanager
def open_cli_store(settings: Settings, *, create: bool = False) -> Iterator[Any]:
    """Open the store named by the global options (or the environment/config).

    Only commands that write pass ``create``: any other command on a store that does not
    exist (a typo in the URL or path) is a configuration error, and no file is made.
    """
    from kmsbox.store.config import open_store

    store = open_store(
        settings.store,
        settings.keks or None,
        config_file=settings.config,
        audit_reads=False if settings.no_read_audit else None,
        create=create,
    )
    try:
        yield store
    finally:
        store.close()


DEBUG_ENV = "KMSBOX_DEBUG"


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _is_click_own(exc: BaseException) -> bool:
    # click turns these into its own messages and exit codes (a closed pipe included).
    return isinstance(exc, (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort)) or (
        isinstance(exc, OSError) and exc.errno == errno.EPIPE
    )


def fail_internal(exc: BaseException) -> NoReturn:
    """Exit with one line naming only the exception's type: its message might carry a value."""
    click.echo(
        f"kmsbox: error: internal error ({type(exc).__name__}); set {DEBUG_ENV}=1 to see the traceback",
        err=True,
    )
    sys.exit(EXIT_CODES["internal"])


class KmsboxGroup(click.Group):
    """A group that turns every error into one line and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; map kmsbox errors, bad input, interrupts and bugs to exit codes."""
        try:
            return super().invoke(ctx)
        except KmsboxError as exc:
            click.echo(f"kmsbox: error: {exc}", err=True)
            sys.exit(exit_code_for(exc))
        except ValueError as exc:
            click.echo(f"kmsbox: error: {exc}", err=True)
            sys.exit(EXIT_CODES["usage"])
        except KeyboardInterrupt:
            click.echo("kmsbox: error: interrupted", err=True)
            sys.exit(EXIT_CODES["interrupted"])
        except Exception as exc:
            if _is_click_own(exc) or _debugging():
                raise
            fail_internal(exc)


@click.group(cls=KmsboxGroup)
@click.option("--store", "store", metavar="URL", help="Storage URL (default: $KMSBOX_STORE or kmsbox.toml).")
@click.option(
    "--kek", "keks", metavar="URI", multiple=True, help="KEK URI; repeat for escrow KEKs (default: $KMSBOX_KEK)."
)
@click.option("--config", "config", metavar="FILE", help="Config file (default: ./kmsbox.toml or $KMSBOX_CONFIG).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option("--no-read-audit", is_flag=True, help="Do not record successful reads in the audit log.")
@click.version_option(package_name="kmsbox")
@click.pass_context
def cli(
    ctx: click.Context, store: str | None, keks: tuple[str, ...], config: str | None, as_json: bool, no_read_audit: bool
) -> None:
    """kmsbox: envelope encryption and a secret store over pluggable KMS providers."""
    ctx.obj = Settings(store, list(keks), config, as_json, no_read_audit)


_loaded = False


def get_cli() -> click.Group:
    """The group with every built-in and plugin command loaded (once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        _load_commands()
    return cli


def _load_commands() -> None:
    from kmsbox.cli import (
        audit,
        demo,
        diagnosis,
        engine,
        fake_kms,
        importing,
        keys,
        lifecycle,
        namespaces,
        plugins,
        secrets,
    )

    for module in (namespaces, secrets, audit, keys, engine, plugins, demo, fake_kms, lifecycle, diagnosis, importing):
        module.register(cli)
    from kmsbox.plugins import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=cli)
    _accept_json_after(cli)


def _json_after_command(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Settings).as_json = True


def _accept_json_after(group: click.Group) -> None:
    """Let ``--json`` also follow the command (``kmsbox list NS --json``), the way
    scripts tend to write it; plugin commands included, unless one has its own."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_json_after(command)
        elif not any("--json" in param.opts for param in command.params if isinstance(param, click.Option)):
            command.params.append(
                click.Option(
                    ["--json"],
                    is_flag=True,
                    expose_value=False,
                    callback=_json_after_command,
                    help="Machine-readable JSON output (the same as kmsbox --json COMMAND).",
                )
            )


def main() -> None:
    """Console-script entry point."""
    try:
        group = get_cli()
    except KmsboxError as exc:
        click.echo(f"kmsbox: error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except Exception as exc:
        # A plugin's register_commands hook is outside our control: still one line.
        if _debugging():
            raise
        fail_internal(exc)
    group(prog_name="kmsbox")
