"""``kmsbox diagnose`` (a read-only report of key drift) and ``kmsbox repair``."""

from __future__ import annotations

import sys

import click

from kmsbox.cli.advice import WrapAdvice, advise_diagnosis, advise_issues
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.namespace_checks import known_namespace
from kmsbox.cli.output import EXIT_CODES, emit_json, table

__all__ = ["register"]


@click.command("diagnose")
@click.argument("namespace", required=False)
@click.option("--keys-only", is_flag=True, help="Skip the per-secret DEK check.")
@pass_settings
def diagnose_cmd(settings: Settings, namespace: str | None, keys_only: bool) -> None:
    """Report key drift (never decrypts a value). Exits 6 if anything is critical."""
    with open_cli_store(settings) as store, known_namespace(store, namespace):
        report = advise_diagnosis(store.diagnose(namespace, check_secrets=not keys_only), WrapAdvice(store))
    if settings.as_json:
        emit_json(report.to_dict())
    elif not report.issues:
        click.echo(
            f"no issues ({report.namespaces_checked} namespaces, {report.secret_versions_checked} secret versions checked)"
        )
    else:
        table(
            "diagnosis",
            ["severity", "code", "namespace", "what", "suggested action"],
            [[i.severity, i.code, i.namespace, i.message, i.action] for i in report.issues],
        )
    if any(i.severity == "critical" for i in report.issues):
        sys.exit(EXIT_CODES["key_unavailable"])


@click.command("repair")
@click.argument("namespace", required=False)
@click.option("--apply", "apply", is_flag=True, help="Carry out the non-destructive steps (default: dry run).")
@click.option("--confirm-delete", is_flag=True, help="Also delete secrets and keys that can never be opened again.")
@pass_settings
def repair_cmd(settings: Settings, namespace: str | None, apply: bool, confirm_delete: bool) -> None:
    """Repair key drift: a dry run unless --apply; deletions need --confirm-delete too."""
    with open_cli_store(settings) as store, known_namespace(store, namespace):
        report = store.repair(namespace, dry_run=not apply, confirm_delete=confirm_delete)
        report.remaining = advise_issues(report.remaining, WrapAdvice(store))
    if settings.as_json:
        emit_json(report.to_dict())
        return
    if report.dry_run:
        click.echo("dry run: nothing was changed")
    for line in report.done:
        click.echo(f"done: {line}")
    for line in report.planned if report.dry_run else []:
        click.echo(f"would: {line}")
    for line in report.needs_confirmation:
        click.echo(f"needs --apply --confirm-delete: {line}")
    click.echo(f"remaining issues: {len(report.remaining)}")
    for issue in report.remaining:
        click.echo(f"  {issue.severity} {issue.code}: {issue.message}; suggested: {issue.action}")


def register(cli: click.Group) -> None:
    """Add diagnose and repair."""
    cli.add_command(diagnose_cmd)
    cli.add_command(repair_cmd)
