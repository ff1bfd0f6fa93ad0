"""Output helpers: tables for people that never cut a value, JSON for scripts, the exit codes.

A table is drawn only when every cell fits whole on one line of the terminal (at 80
columns too, and in a pipe, where rich assumes 80); otherwise each row is printed as a
block of ``field  value`` lines, so nothing an operator needs to copy (a name, a URI, a
version, a suggested command) is ever cut to ``connec…`` or broken between borders.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import click
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kmsbox.cli.exits import EXIT_CODES

__all__ = [
    "EXIT_CODES",
    "console",
    "emit_json",
    "emit_json_streamed",
    "fmt_time",
    "plural",
    "records",
    "table",
]

console = Console(highlight=False)


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def emit_json_streamed(fields: Mapping[str, Any]) -> None:
    """Print one JSON object, the same text as :func:`emit_json`, without holding it whole:
    an iterator value is written as an array item by item, and a callable value is called
    when its turn comes (a count of what was streamed before it)."""
    keys = sorted(fields)
    click.echo("{")
    for index, key in enumerate(keys):
        value = fields[key]
        end = "," if index < len(keys) - 1 else ""
        if isinstance(value, Iterator):
            click.echo(f"  {json.dumps(key)}: [", nl=False)
            first = True
            for item in value:
                text = json.dumps(item, indent=2, sort_keys=True, default=str)
                click.echo(
                    ("\n" if first else ",\n") + "\n".join("    " + line for line in text.splitlines()), nl=False
                )
                first = False
            click.echo("]" + end if first else "\n  ]" + end)
            continue
        if callable(value):
            value = value()
        text = json.dumps(value, indent=2, sort_keys=True, default=str)
        click.echo(f"  {json.dumps(key)}: " + "\n  ".join(text.splitlines()) + end)
    click.echo("}")


def plural(count: int, noun: str) -> str:
    """``1 chain``, ``3 chains``, ``2 batches``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("ch", "sh", "s", "x")) else f"{count} {noun}s"


def fmt_time(ts: float | None) -> str:
    """A UTC timestamp for tables, or '-'."""
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cells(rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    return [["-" if v is None else str(v) for v in row] for row in rows]


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a table when every cell fits whole on its line, else as one block per row."""
    cells = _cells(rows)
    shown = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for header in columns:
        shown.add_column(Text(header), no_wrap=True)
    for row in cells:
        # Text, not a string: a label or description like "[red]" is data, not rich markup.
        shown.add_row(*(Text(v) for v in row))
    # Measured as drawn with room to spare: nothing is wrapped or cut to fit, since a name,
    # URI or command broken over lines (or cut to "connec…") cannot be copied.
    drawn = io.StringIO()
    Console(width=1_000_000, file=drawn, color_system=None).print(shown)
    needed = max((cell_len(line.rstrip()) for line in drawn.getvalue().splitlines()), default=0)
    if needed > console.width:
        records(title, columns, cells)
        return
    if title:
        click.echo(title)  # above the table, not its title: rich would wrap a title wider than the table
    console.print(shown)


def records(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print each row as a block of ``field  value`` lines (a blank line between blocks).

    Values are written whole and unstyled: a long URI runs on (the terminal wraps it), it is
    never cut or folded with padding in it.
    """
    cells = _cells(rows)
    if title:
        click.echo(f"{title}:" if cells else f"{title}: none")
    pad = max((cell_len(h) for h in headers), default=0)
    for index, row in enumerate(cells):
        if index or title:
            click.echo("")
        for header, value in zip(headers, row, strict=True):
            lines = value.splitlines() or [""]
            click.echo(f"  {header}{' ' * (pad - cell_len(header))}  {lines[0]}".rstrip())
            for more in lines[1:]:
                click.echo(f"  {' ' * pad}  {more}".rstrip())
