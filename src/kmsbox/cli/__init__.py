"""The kmsbox command line."""

from kmsbox.cli.main import cli, get_cli, main

__all__ = ["cli", "get_cli", "main"]
