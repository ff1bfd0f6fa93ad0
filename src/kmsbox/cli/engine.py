"""Standalone engine commands: encrypt and decrypt stdin to stdout."""

from __future__ import annotations

import os
import sys

import click

from kmsbox.cli.main import Settings, pass_settings
from kmsbox.cli.output import emit_json
from kmsbox.engine import Envelope
from kmsbox.store.config import KEK_ENV

__all__ = ["register"]


def _context(items: tuple[str, ...]) -> dict[str, str]:
    context: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"context {item!r} must look like key=value")
        context[key] = value
    return context


def _envelope(settings: Settings) -> Envelope:
    keks = settings.keks or [k.strip() for k in os.environ.get(KEK_ENV, "").split(",") if k.strip()]
    if not keks:
        raise ValueError(f"no KEK: pass --kek or set {KEK_ENV}")
    return Envelope(list(keks))


@click.command("encrypt")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE", help="Associated data; repeatable.")
@pass_settings
def encrypt_cmd(settings: Settings, context: tuple[str, ...]) -> None:
    """Encrypt stdin to stdout with the standalone envelope engine."""
    envelope = _envelope(settings)
    blob = envelope.encrypt(sys.stdin.buffer.read(), _context(context))
    if settings.as_json:
        emit_json({"envelope": blob.hex(), "encoding": "hex"})
    else:
        sys.stdout.buffer.write(blob)


@click.command("decrypt")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE", help="The associated data used to encrypt.")
@pass_settings
def decrypt_cmd(settings: Settings, context: tuple[str, ...]) -> None:
    """Decrypt stdin (the raw envelope) to stdout."""
    envelope = _envelope(settings)
    plaintext = envelope.decrypt(sys.stdin.buffer.read(), _context(context))
    if settings.as_json:
        # Bytes in, bytes out: hex, as `kmsbox --json get` shows a bytes value.
        emit_json({"value": plaintext.hex(), "encoding": "hex"})
    else:
        sys.stdout.buffer.write(plaintext)


def register(cli: click.Group) -> None:
    """Add encrypt and decrypt."""
    cli.add_command(encrypt_cmd)
    cli.add_command(decrypt_cmd)
