"""Audit commands: list, verify (against a checkpoint and a sink's copy), checkpoint."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from kmsbox.cli.files import FileProblem, file_problem, read_text_file, writing
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.output import EXIT_CODES, emit_json, fmt_time, plural, table
from kmsbox.limits import MAX_COUNT
from kmsbox.storage.base import AuditFilter
from kmsbox.store.audit import ACTIONS, RESULTS, AuditVerification, Checkpoint, parse_cursor
from kmsbox.store.service import write_checkpoint

__all__ = ["register"]


def _audit_cursor(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A cursor printed by an earlier ``audit list`` (or 0 for the start), checked at parse
    time: a malformed one is a usage error before the store is opened."""
    if value is None:
        return None
    try:
        position = parse_cursor(0 if value == "0" else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    # Each part is bounded the way the store writes it, so that no backend is handed a
    # number it cannot bind (a 20-digit time would overflow a 64-bit column).
    if position is not None and not (position[0] <= MAX_COUNT and position[1] < 2**31 and position[2] <= MAX_COUNT):
        raise click.BadParameter("audit cursor is out of range: use one printed by an earlier listing", ctx, param)
    return value


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
@click.option("--cursor", callback=_audit_cursor, help="The cursor printed by the previous page (more: --cursor ...).")
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
    cursor: str | None,
) -> None:
    """List audit events, oldest first."""
    filters = AuditFilter(namespace, name, action, result, _when(since), _when(until))
    with open_cli_store(settings) as store:
        events, next_cursor = store.audit_events(filters, after=None if cursor == "0" else cursor, limit=limit)
    if settings.as_json:
        emit_json({"events": [e.to_dict() for e in events], "next_cursor": next_cursor})
        return
    table(
        "audit events",
        ["time", "event", "namespace", "name", "version", "action", "result", "actor", "detail"],
        [
            [
                fmt_time(e.time),
                f"{e.chain}:{e.seq}",
                e.namespace,
                e.name,
                e.secret_version,
                e.action,
                e.result,
                e.actor,
                json.dumps(e.detail, sort_keys=True) if e.detail else "",
            ]
            for e in events
        ],
    )
    if next_cursor:
        click.echo(f"more: --cursor {next_cursor}")


@audit_group.command("checkpoint")
@click.option(
    "--to",
    "--output",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the checkpoint to this file (atomically, mode 0600). --output is the same.",
)
@pass_settings
def audit_checkpoint(settings: Settings, target: Path | None) -> None:
    """Print (or save) every audit chain's head; keep it outside the database."""
    with open_cli_store(settings) as store:
        checkpoint = store.audit_checkpoint()
    if target is None:
        click.echo(json.dumps(checkpoint.to_dict(), indent=2, sort_keys=True))
        return
    with writing(target):
        write_checkpoint(target, checkpoint)
    if settings.as_json:
        emit_json({"output": str(target), "chains": len(checkpoint.heads), "events": checkpoint.events})
    else:
        click.echo(f"checkpoint of {len(checkpoint.heads)} chains ({checkpoint.events} events) written to {target}")


def _checkpoint_from(path: Path) -> Checkpoint:
    text = read_text_file(path)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"checkpoint file {path} is not JSON") from None
    try:
        return Checkpoint.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"checkpoint file {path}: {exc}") from None


def _copy_lines(paths: tuple[Path, ...]) -> Iterator[str]:
    """The lines of a sink's copy (rotated files in the order given), read as they are checked."""
    for path in paths:
        problem: FileProblem | None = None
        try:
            with path.open(encoding="utf-8") as handle:
                yield from handle
        except (OSError, UnicodeDecodeError) as exc:
            problem = file_problem("read", path, exc)
        if problem is not None:
            # Raised outside the handler: a decode error holds the file's bytes.
            raise problem


def _say(what: str, report: AuditVerification, summary: str) -> None:
    if report.ok:
        click.echo(f"{what} intact: {summary}")
        return
    click.echo(f"{what} BROKEN ({len(report.problems)} problems):")
    for problem in report.problems:
        click.echo(f"  - {problem}")


@audit_group.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint saved earlier (kmsbox audit checkpoint --to FILE).",
)
@click.option(
    "--against",
    "copies",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A sink's JSON-lines copy of the log; repeat for rotated files, oldest first.",
)
@pass_settings
def audit_verify(settings: Settings, checkpoint_file: Path | None, copies: tuple[Path, ...]) -> None:
    """Verify every audit chain, every secret against its last recorded change, and (with
    --against) a sink's copy; exit 10 if anything was tampered with."""
    checkpoint = _checkpoint_from(checkpoint_file) if checkpoint_file else None
    with open_cli_store(settings) as store:
        report = store.verify_audit(checkpoint)
        copy = store.verify_audit_copy(_copy_lines(copies)) if copies else None
    ok = report.ok and (copy is None or copy.ok)
    if settings.as_json:
        document = report.to_dict()
        if copy is not None:
            document["ok"] = ok
            document["copy"] = {**copy.to_dict(), "files": [str(p) for p in copies]}
        emit_json(document)
    else:
        _say(
            "audit log",
            report,
            f"{plural(report.events_checked, 'event')} in {plural(report.chains, 'chain')}; "
            f"{plural(report.secrets_checked, 'secret')} and {plural(report.namespaces_checked, 'namespace')} "
            "match their last recorded change",
        )
        if copy is not None:
            _say(
                f"audit copy {', '.join(str(p) for p in copies)}",
                copy,
                f"{plural(copy.records_checked, 'copied event')} all in the database, unchanged",
            )
    if not ok:
        sys.exit(EXIT_CODES["verify_failed"])


def register(cli: click.Group) -> None:
    """Add the audit group."""
    cli.add_command(audit_group)
