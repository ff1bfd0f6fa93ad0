"""Output helpers: rich tables for people, JSON for scripts, and the exit codes."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

__all__ = ["EXIT_CODES", "console", "emit_json", "fmt_time", "table"]

console = Console(highlight=False)

#: Exit codes of the kmsbox command (also documented in docs/cli.md).
EXIT_CODES = {
    "ok": 0,
    "error": 1,
    "usage": 2,
    "not_found": 3,
    "denied": 4,
    "integrity": 5,
    "key_unavailable": 6,
    "config": 7,
    "provider": 8,
    "storage": 9,
    "verify_failed": 10,
    # 70 is EX_SOFTWARE (sysexits.h), 130 the shell's 128 + SIGINT: both mean the same elsewhere.
    "internal": 70,
    "interrupted": 130,
}


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def fmt_time(ts: float | None) -> str:
    """A UTC timestamp for tables, or '-'."""
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table."""
    t = Table(title=title)
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*["-" if v is None else str(v) for v in row])
    console.print(t)
