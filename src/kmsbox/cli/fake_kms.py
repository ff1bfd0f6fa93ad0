"""``kmsbox fake-kms serve``: run the installed plugins' KMS fakes on loopback."""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
from typing import Any

import click

from kmsbox.cli.main import Settings, pass_settings
from kmsbox.cli.output import emit_json
from kmsbox.cli.params import FiniteFloatRange
from kmsbox.plugins import fake_servers
from kmsbox.testing.fakes import FAULT_KINDS

__all__ = ["register"]


@click.group("fake-kms")
def fake_group() -> None:
    """Local fakes of AWS KMS, Cloud KMS and Vault transit (from installed plugins)."""


@fake_group.command("list")
@pass_settings
def fake_list(settings: Settings) -> None:
    """List the fakes that installed plugins provide."""
    rows = {name: reg.description for name, reg in sorted(fake_servers().items())}
    if settings.as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no fakes installed (pip install kmsbox-aws kmsbox-gcp kmsbox-vault)")
    for name, description in rows.items():
        click.echo(f"{name}\t{description}")


@fake_group.command("serve")
@click.option("--only", "only", multiple=True, metavar="NAME", help="Start only these fakes (repeatable).")
@click.option(
    "--latency", type=FiniteFloatRange(0, 60), default=0.0, show_default=True, help="Seconds added to every call."
)
@click.option(
    "--fault-rate", type=FiniteFloatRange(0, 1), default=0.0, show_default=True, help="Fraction of calls that fail."
)
@click.option("--fault-kind", type=click.Choice(FAULT_KINDS), default="unavailable", show_default=True)
@click.option(
    "--port", "ports", multiple=True, metavar="NAME=PORT", help="Fixed port for a fake (default: a free one)."
)
@pass_settings
def fake_serve(
    settings: Settings,
    only: tuple[str, ...],
    latency: float,
    fault_rate: float,
    fault_kind: str,
    ports: tuple[str, ...],
) -> None:
    """Start the fakes, print the settings to export, and serve until interrupted."""
    registry = fake_servers()
    names = list(only) or sorted(registry)
    missing = [n for n in names if n not in registry]
    if missing:
        raise ValueError(f"no fake named {', '.join(missing)}; installed: {', '.join(sorted(registry)) or 'none'}")
    if not names:
        raise ValueError("no fakes installed (pip install kmsbox-aws kmsbox-gcp kmsbox-vault)")
    port_map: dict[str, int] = {}
    for item in ports:
        name, sep, port = item.partition("=")
        # ASCII digits, at most five: isdigit() alone also takes other scripts' digits.
        if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
            raise ValueError(f"--port {item!r} must look like aws=4566")
        port_map[name] = int(port)
    started: list[Any] = []
    try:
        for name in names:
            options: dict[str, Any] = {"latency": latency, "fault_rate": fault_rate, "fault_kind": fault_kind}
            if name in port_map:
                options["port"] = port_map[name]
            started.append(registry[name].factory(**options))
        summary = {server.name: {"kek_uri": server.kek_uri, "env": server.env()} for server in started}
        if settings.as_json:
            emit_json(summary)
        else:
            for name, info in summary.items():
                click.echo(f"# {name}: KEK URI {info['kek_uri']}")
                for key, value in info["env"].items():
                    click.echo(f"export {key}={shlex.quote(value)}")
            click.echo("# serving; press Ctrl-C to stop", err=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        for server in started:
            server.stop()


def register(cli: click.Group) -> None:
    """Add the fake-kms group."""
    cli.add_command(fake_group)
