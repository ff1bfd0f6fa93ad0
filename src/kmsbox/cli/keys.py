"""Local keyring commands: generate, add-version, remove-version, new-hex."""

from __future__ import annotations

from pathlib import Path

import click

from kmsbox.cli.files import writing
from kmsbox.cli.main import Settings, pass_settings
from kmsbox.cli.output import emit_json
from kmsbox.providers.local import add_keyring_version, generate_hex_key, generate_keyring, remove_keyring_version

__all__ = ["register"]


@click.group("keys")
def keys_group() -> None:
    """Local KEK keyrings (file://) and keys (env://)."""


@keys_group.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing keyring (destroys its keys).")
@pass_settings
def generate(settings: Settings, path: Path, force: bool) -> None:
    """Write a new keyring file (mode 0600) and print its KEK URI."""
    with writing(path):
        uri = generate_keyring(path, overwrite=force)
    if settings.as_json:
        emit_json({"kek_uri": uri})
    else:
        click.echo(uri)


@keys_group.command("add-version")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_settings
def add_version(settings: Settings, path: Path) -> None:
    """Add a new primary version to a keyring (older versions still unwrap)."""
    with writing(path):
        version = add_keyring_version(path)
    if settings.as_json:
        emit_json({"primary_version": version})
    else:
        click.echo(f"added {version} (now primary); run `kmsbox rewrap-namespace-keys` to move namespace keys to it")


@keys_group.command("remove-version")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("version")
@click.option("--yes", is_flag=True, help="Confirm: anything still wrapped by this version becomes unreadable.")
@pass_settings
def remove_version(settings: Settings, path: Path, version: str, yes: bool) -> None:
    """Remove a version from a keyring (check `kmsbox status` first)."""
    if not yes:
        raise click.UsageError("removing a KEK version is destructive: pass --yes after checking `kmsbox status`")
    with writing(path):
        remove_keyring_version(path, version)
    if settings.as_json:
        emit_json({"removed_version": version})
    else:
        click.echo(f"removed {version}")


@keys_group.command("new-hex")
@pass_settings
def new_hex(settings: Settings) -> None:
    """Print a new random key as 64 hex characters (for env:// KEKs)."""
    key = generate_hex_key()
    if settings.as_json:
        emit_json({"key": key})
    else:
        click.echo(key)


def register(cli: click.Group) -> None:
    """Add the keys group."""
    cli.add_command(keys_group)
