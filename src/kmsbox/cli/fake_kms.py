"""``kmsbox fake-kms serve``: run the installed plugins' KMS fakes on loopback."""

from __future__ import annotations

import shlex
import signal
import threading
from types import FrameType
from typing import Any

import click

from kmsbox.cli.main import Settings, pass_settings
from kmsbox.cli.output import emit_json
from kmsbox.cli.params import FiniteFloatRange
from kmsbox.plugins import fake_servers
from kmsbox.testing.fakes import FAULT_KINDS

__all__ = ["register"]

#: Signals that stop ``serve``: Ctrl-C and kill. A shell that backgrounds a job without job control starts it
#: with SIGINT ignored, and Python then installs no Ctrl-C handler: ours are installed explicitly.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(Exception):
    """Raised in the main thread by a stop signal, as KeyboardInterrupt is by Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Raising (rather than setting an Event) is safe wherever the main thread is waiting.
    raise _Stop(signum)


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


def _named_values(items: tuple[str, ...], option: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{option} {item!r} must look like {example}")
        pairs.append((name, value))
    return pairs


def _ports(items: tuple[str, ...]) -> dict[str, int]:
    port_map: dict[str, int] = {}
    for name, port in _named_values(items, "--port", "aws=4566"):
        # ASCII digits, at most five: isdigit() alone also takes other scripts' digits.
        if not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
            raise ValueError(f"--port {name}={port!r} must look like aws=4566")
        port_map[name] = int(port)
    return port_map


def _fault_operations(items: tuple[str, ...], names: list[str]) -> dict[str, list[str]]:
    """``--fault-op`` values by fake: ``aws=Decrypt``, or a bare ``Decrypt`` when one fake runs."""
    targets: dict[str, list[str]] = {}
    for item in items:
        if "=" in item:
            name, operation = _named_values((item,), "--fault-op", "aws=Decrypt")[0]
            if name not in names:
                raise ValueError(f"--fault-op {item!r} names a fake that is not started ({', '.join(names)})")
        elif len(names) == 1 and item:
            name, operation = names[0], item
        else:
            raise ValueError(f"--fault-op {item!r} must name its fake (like aws=Decrypt) when several fakes run")
        targets.setdefault(name, []).append(operation)
    return targets


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
    "--fault-op",
    "fault_ops",
    multiple=True,
    metavar="[NAME=]OPERATION",
    help="Inject faults only into this operation, named as the service names it (aws=Decrypt, vault=decrypt; "
    "repeatable; the NAME= prefix may be left out when one fake runs).",
)
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
    fault_ops: tuple[str, ...],
    ports: tuple[str, ...],
) -> None:
    """Start the fakes, print the settings to export, and serve until Ctrl-C, SIGINT or SIGTERM."""
    registry = fake_servers()
    names = list(dict.fromkeys(only)) or sorted(registry)
    missing = [n for n in names if n not in registry]
    if missing:
        raise ValueError(f"no fake named {', '.join(missing)}; installed: {', '.join(sorted(registry)) or 'none'}")
    if not names:
        raise ValueError("no fakes installed (pip install kmsbox-aws kmsbox-gcp kmsbox-vault)")
    port_map = _ports(ports)
    targets = _fault_operations(fault_ops, names)
    started: list[Any] = []
    # Installed before anything is printed: a script that stops us as soon as it reads the settings must not race us.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
    try:
        for name in names:
            options: dict[str, Any] = {"latency": latency, "fault_rate": fault_rate, "fault_kind": fault_kind}
            if name in port_map:
                options["port"] = port_map[name]
            if name in targets:
                # Only when asked: a third party's older factory need not know the option.
                options["fault_operations"] = tuple(targets[name])
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
        threading.Event().wait()
    except _Stop:
        pass
    finally:
        # A second signal during clean-up gets the previous behaviour (KeyboardInterrupt, or death by SIGTERM).
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for server in started:
            server.stop()


def register(cli: click.Group) -> None:
    """Add the fake-kms group."""
    cli.add_command(fake_group)
