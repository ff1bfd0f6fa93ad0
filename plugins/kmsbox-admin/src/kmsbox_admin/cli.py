"""``kmsbox admin``: ``serve`` the API and console, mint a ``token``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
from pathlib import Path

import click
import uvicorn

from kmsbox.cli.main import Settings, pass_settings
from kmsbox_admin.app import create_app
from kmsbox_admin.operations import StoreOperations
from kmsbox_admin.server import bind_socket, check_bind, make_server
from kmsbox_admin.settings import ACTOR_RE, AdminSettings, config_path, is_loopback, load_admin_settings
from kmsbox_admin.tokens import ROLES, hash_token, mint_token

__all__ = ["admin_group"]


@click.group("admin")
def admin_group() -> None:
    """The admin HTTP API and web console (kmsbox-admin)."""


@admin_group.command("serve")
@click.option("--host", help="Address to listen on (default: [admin] host, else 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: [admin] port, else 8470; 0 picks one).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM certificate (chain).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM private key.")
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    help="Threads of the store's pool for sync KMS clients and SQLite lock waits (default: kmsbox.aio's).",
)
@click.option("--max-jobs", type=click.IntRange(1, 64), default=2, show_default=True, help="Jobs running at once.")
@pass_settings
def serve_cmd(
    settings: Settings,
    host: str | None,
    port: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    threads: int | None,
    max_jobs: int,
) -> None:
    """Serve the admin API and console until interrupted (tokens from [admin] in kmsbox.toml)."""
    path = config_path(settings.config)
    admin = load_admin_settings(path)
    if host is not None:
        admin.host = host
    if port is not None:
        admin.port = port
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_cert is not None and tls_key is not None:
        admin.tls_cert, admin.tls_key = str(tls_cert), str(tls_key)
    check_bind(admin)  # before the store is opened: a refused bind changes nothing
    if not is_loopback(admin.host) and not admin.allowed_hosts:
        click.echo(
            "kmsbox admin: warning: only loopback Host names are accepted; "
            "list the names clients use in [admin] allowed_hosts",
            err=True,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(_Stopped):
        asyncio.run(_serve(settings, admin, path, threads=threads, max_jobs=max_jobs))
    click.echo("kmsbox admin: stopped", err=True)


async def _serve(
    settings: Settings, admin: AdminSettings, path: Path | None, *, threads: int | None, max_jobs: int
) -> None:
    """Open the store on this loop (an error stops here, before anything listens), then serve."""
    operations = await StoreOperations.open(
        settings.store, settings.keks, config_file=path, kek_targets=admin.kek_targets, threads=threads
    )
    try:
        server = make_server(create_app(admin, operations, running_jobs=max_jobs), admin)
        sock = bind_socket(admin.host, admin.port)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"{'https' if admin.tls else 'http'}://{shown}:{bound_port}/"
        if settings.as_json:
            click.echo(json.dumps({"url": url}))
        else:
            click.echo(f"kmsbox admin: serving on {url} (Ctrl-C to stop)")
        await _serve_until_stopped(server, sock)
    finally:
        await operations.close()


async def _serve_until_stopped(server: uvicorn.Server, sock: socket.socket) -> None:
    # uvicorn shuts down on SIGTERM/SIGINT and then raises the signal again for the handler
    # that was there before it: this one, so the store is closed and the exit is 0.
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        await server.serve(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived: the server has shut down (or had not started)."""


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


@admin_group.command("token")
@click.option("--actor", required=True, help="The name audit events record for this token's requests.")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@pass_settings
def token_cmd(settings: Settings, actor: str, role: str) -> None:
    """Mint a token: prints it once, and the [[admin.tokens]] entry (its hash) for kmsbox.toml."""
    if not ACTOR_RE.match(actor):
        raise click.BadParameter("1-128 characters of letters, digits and ._@:+-", param_hint="--actor")
    token = mint_token()
    entry = f'[[admin.tokens]]\nactor = "{actor}"\nrole = "{role}"\nhash = "{hash_token(token)}"\n'
    if settings.as_json:
        click.echo(json.dumps({"actor": actor, "role": role, "token": token, "hash": hash_token(token), "toml": entry}))
        return
    click.echo(f"token for {actor} ({role}); it is shown only this once:\n\n  {token}\n")
    click.echo("add this to kmsbox.toml (only the hash is stored):\n")
    click.echo(entry, nl=False)
