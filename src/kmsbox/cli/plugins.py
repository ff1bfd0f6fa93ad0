"""``kmsbox plugins``: what is loaded and which schemes each serves."""

from __future__ import annotations

import click

from kmsbox.cli.main import Settings, pass_settings
from kmsbox.cli.output import emit_json, table
from kmsbox.plugins import plugin_summary

__all__ = ["register"]


@click.command("plugins")
@pass_settings
def plugins_cmd(settings: Settings) -> None:
    """List loaded plugins with the KEK schemes, storage schemes and fakes they serve."""
    rows = plugin_summary()
    if settings.as_json:
        emit_json(rows)
        return
    table(
        "kmsbox plugins",
        ["plugin", "distribution", "KEK schemes", "storage schemes", "fakes", "hooks"],
        [
            [
                r["name"],
                r["distribution"] or "(built in)",
                ", ".join(r["kek_schemes"]),
                ", ".join(r["storage_schemes"]),
                ", ".join(r["fake_servers"]),
                ", ".join(r["hooks"]),
            ]
            for r in rows
        ],
    )


def register(cli: click.Group) -> None:
    """Add the plugins command."""
    cli.add_command(plugins_cmd)
