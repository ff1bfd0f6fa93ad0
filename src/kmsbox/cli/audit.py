"""Audit commands: list, verify, checkpoint."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import click

from kmsbox.cli.files import read_text_file, write_text_file
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.output import EXIT_CODES, emit_json, fmt_time, table
from kmsbox.cli.params import CURSOR
from kmsbox.storage.base import AuditFilter
from kmsbox.store.audit import ACTIONS, RESULTS, Checkpoint

__all__ = ["register"]


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} must be ISO 8601, like 2026-11-25T10:00:00+00:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.timestamp()


@click.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("list")
@click.option("--namespace")
@click.option("--name")
@click.option("--action", type=click.Choice(ACTIONS))
@click.option("--result", type=click.Choice(RESULTS))
@click.option("--since", metavar="ISO-TIME")
@click.option("--until", metavar="ISO-TIME")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--cursor", type=CURSOR, default=0, help="Cursor from the previous page.")
@pass_settings
def audit_list(
    settings: Settings,
    namespace: str | None,
    name: str | None,
    action: str | None,
    result: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: int,
) -> None:
    """List audit events, oldest first."""
    filters = AuditFilter(namespace, name, action, result, _when(since), _when(until))
    with open_cli_store(settings) as store:
        events, next_cursor = store.audit_events(filters, after=cursor, limit=limit)
    if settings.as_json:
        emit_json({"events": [e.to_dict() for e in events], "next_cursor": next_cursor})
        return
    table(
        "audit events",
        ["seq", "time", "namespace", "name", "version", "action", "result", "actor", "detail"],
        [
            [
                e.seq,
                fmt_time(e.time),
                e.namespace,
                e.name,
                e.secret_version,
                e.action,
                e.result,
                e.actor,
                json.dumps(e.detail) if e.detail else "",
            ]
            for e in events
        ],
    )
    if next_cursor:
        click.echo(f"more: --cursor {next_cursor}")


@audit_group.command("checkpoint")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the checkpoint to this file.")
@pass_settings
def audit_checkpoint(settings: Settings, output: Path | None) -> None:
    """Print (or save) the head of the chain; keep it outside the database."""
    with open_cli_store(settings) as store:
        checkpoint = store.audit_checkpoint()
    text = json.dumps(checkpoint.to_dict())
    if output is None:
        click.echo(text)
        return
    write_text_file(output, text + "\n")
    if settings.as_json:
        emit_json({"seq": checkpoint.seq, "output": str(output)})
    else:
        click.echo(f"checkpoint at event {checkpoint.seq} written to {output}")


@audit_group.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint saved earlier.",
)
@pass_settings
def audit_verify(settings: Settings, checkpoint_file: Path | None) -> None:
    """Verify the chain; exit 10 if it was tampered with."""
    checkpoint = None
    if checkpoint_file:
        text = read_text_file(checkpoint_file)
        try:
            checkpoint = Checkpoint.from_dict(json.loads(text))
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(f"checkpoint file {checkpoint_file} is not JSON") from None
    with open_cli_store(settings) as store:
        report = store.verify_audit(checkpoint)
    if settings.as_json:
        emit_json(report.to_dict())
    elif report.ok:
        click.echo(f"audit chain intact: {report.events_checked} events, head at {report.head_seq}")
    else:
        click.echo(f"audit chain BROKEN ({len(report.problems)} problems):")
        for problem in report.problems:
            click.echo(f"  - {problem}")
    if not report.ok:
        sys.exit(EXIT_CODES["verify_failed"])


def register(cli: click.Group) -> None:
    """Add the audit group."""
    cli.add_command(audit_group)
