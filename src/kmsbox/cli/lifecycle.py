"""Key lifecycle commands: status, rotation, rewrap, re-encryption, migration,
diagnosis, repair and import. Long jobs show a progress bar (or JSON with --json)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kmsbox.cli.files import read_text_file
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.output import EXIT_CODES, emit_json, table
from kmsbox.cli.params import VERSION, parse_duration
from kmsbox.store.importing import ON_CONFLICT, parse_dotenv, parse_json_secrets
from kmsbox.store.jobs import JobReport

__all__ = ["register"]


@contextmanager
def _progress(settings: Settings, label: str) -> Iterator[Callable[[int, int | None], None] | None]:
    if settings.as_json or not sys.stderr.isatty():
        yield None
        return
    # The bar goes to stderr (the terminal it was checked on): stdout stays the command's result.
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _report(settings: Settings, report: JobReport) -> None:
    if settings.as_json:
        emit_json(report.to_dict())
        return
    verb = "would process" if report.dry_run else "processed"
    extra = f", {report.remaining} remaining" if report.remaining else ""
    click.echo(
        f"{report.job}{' ' + report.namespace if report.namespace else ''}: {verb} {report.processed if not report.dry_run else report.remaining}, skipped {report.skipped}, {report.batches} batches, {report.kek_calls} KEK calls, {report.seconds:.2f}s{extra if not report.dry_run else ''}"
    )
    for key, value in report.details.items():
        if value:
            click.echo(f"  {key}: {value}")


@click.command("status")
@click.argument("namespace", required=False)
@pass_settings
def status_cmd(settings: Settings, namespace: str | None) -> None:
    """Active key versions, secrets per key version, retired/compromised keys, pending work."""
    with open_cli_store(settings) as store:
        data = store.status(namespace)
    if settings.as_json:
        emit_json(data)
        return
    table(
        "KEKs",
        ["uri", "provider", "primary version"],
        [[k["uri"], k.get("provider", ""), k["primary_version"]] for k in data["keks"]],
    )
    rows = []
    for ns, info in data["namespaces"].items():
        for key in info["keys"]:
            rows.append(
                [
                    ns,
                    key["version"],
                    key["status"],
                    key["secret_versions"],
                    ", ".join(f"{w['kek_uri']}#{w['kek_version']}" for w in key["wraps"]),
                ]
            )
    table("namespace keys", ["namespace", "version", "status", "secret versions", "wrapped by"], rows)
    pending = [(ns, p) for ns, info in data["namespaces"].items() for p in info["pending"]]
    if pending:
        table("pending work", ["namespace", "what"], pending)
    else:
        click.echo("no pending work")
    for job in data["jobs"]:
        click.echo(f"unfinished job: {job['job']} (re-run it to resume)")


@click.command("rotate")
@click.argument("namespace")
@click.option("--rewrap/--no-rewrap", default=True, show_default=True, help="Also rewrap existing DEKs to the new key.")
@click.option("--dry-run", is_flag=True)
@pass_settings
def rotate_cmd(settings: Settings, namespace: str, rewrap: bool, dry_run: bool) -> None:
    """Rotate a namespace key (and rewrap its DEKs, no value is re-encrypted)."""
    with open_cli_store(settings) as store:
        version = store.rotate_namespace_key(namespace, dry_run=dry_run)
        if not settings.as_json:
            click.echo(f"{'would rotate' if dry_run else 'rotated'} {namespace} to key version {version}")
        report = None
        if rewrap or dry_run:
            with _progress(settings, "rewrapping DEKs") as progress:
                report = store.rewrap_deks(namespace, dry_run=dry_run, progress=progress)
    if settings.as_json:
        # One JSON document: the new version and the DEK rewrap's report (null with --no-rewrap).
        emit_json(
            {
                "namespace": namespace,
                "new_version": version,
                "dry_run": dry_run,
                "rewrap": report.to_dict() if report else None,
            }
        )
    elif report is not None:
        _report(settings, report)


@click.command("rewrap-deks")
@click.argument("namespace")
@click.option("--dry-run", is_flag=True)
@pass_settings
def rewrap_deks_cmd(settings: Settings, namespace: str, dry_run: bool) -> None:
    """Move DEKs from rotating namespace-key versions to the active one."""
    with open_cli_store(settings) as store, _progress(settings, "rewrapping DEKs") as progress:
        report = store.rewrap_deks(namespace, dry_run=dry_run, progress=progress)
    _report(settings, report)


@click.command("rewrap-namespace-keys")
@click.option("--namespace")
@click.option("--dry-run", is_flag=True)
@pass_settings
def rewrap_ns_cmd(settings: Settings, namespace: str | None, dry_run: bool) -> None:
    """After a KEK rotation: rewrap namespace keys under each KEK's primary version."""
    with open_cli_store(settings) as store, _progress(settings, "rewrapping namespace keys") as progress:
        report = store.rewrap_namespace_keys(namespace, dry_run=dry_run, progress=progress)
    _report(settings, report)


@click.command("reencrypt")
@click.argument("namespace")
@click.option("--dry-run", is_flag=True)
@pass_settings
def reencrypt_cmd(settings: Settings, namespace: str, dry_run: bool) -> None:
    """Give every secret a fresh DEK and ciphertext (suspected leak, compromised key)."""
    with open_cli_store(settings) as store, _progress(settings, "re-encrypting") as progress:
        report = store.reencrypt(namespace, dry_run=dry_run, progress=progress)
    _report(settings, report)


@click.command("compromise")
@click.argument("namespace")
@click.argument("version", type=VERSION)
@click.option("--no-rotate", is_flag=True, help="Do not rotate in a new key if this one was active.")
@click.option("--yes", is_flag=True, help="Confirm.")
@pass_settings
def compromise_cmd(settings: Settings, namespace: str, version: int, no_rotate: bool, yes: bool) -> None:
    """Mark a namespace-key version compromised (then run `kmsbox reencrypt`)."""
    if not yes:
        raise click.UsageError("marking a key compromised cannot be undone: pass --yes")
    with open_cli_store(settings) as store:
        new = store.mark_compromised(namespace, version, rotate=not no_rotate)
    if settings.as_json:
        emit_json({"namespace": namespace, "compromised": version, "new_active_version": new})
    else:
        click.echo(
            f"marked {namespace} v{version} compromised"
            + (f"; rotated in v{new}" if new else "")
            + f"; now run: kmsbox reencrypt {namespace}"
        )


@click.command("cleanup-keys")
@click.option("--older-than", default="0s", show_default=True, metavar="DURATION")
@click.option("--namespace")
@click.option("--dry-run", is_flag=True)
@pass_settings
def cleanup_keys_cmd(settings: Settings, older_than: str, namespace: str | None, dry_run: bool) -> None:
    """Delete retired keys nothing references (refuses keys still in use)."""
    age = parse_duration(older_than, allow_zero=True)
    with open_cli_store(settings) as store:
        report = store.cleanup_retired_keys(age, namespace=namespace, dry_run=dry_run)
    _report(settings, report)


@click.group("kek")
def kek_group() -> None:
    """KEK-level operations across every namespace."""


@kek_group.command("migrate")
@click.option("--to", "to", required=True, metavar="URI", help="The KEK to wrap every namespace key under.")
@click.option("--drop-old", is_flag=True, help="Afterwards, delete wraps under every other KEK.")
@click.option("--dry-run", is_flag=True)
@pass_settings
def kek_migrate(settings: Settings, to: str, drop_old: bool, dry_run: bool) -> None:
    """Move the store to another KEK (any provider) without re-encrypting a secret."""
    with open_cli_store(settings) as store, _progress(settings, "wrapping namespace keys") as progress:
        report = store.migrate_kek(to, drop_old=drop_old, dry_run=dry_run, progress=progress)
    _report(settings, report)
    if not settings.as_json and not dry_run:
        click.echo(f"next: open the store with --kek {to} (first) from now on")


@click.command("diagnose")
@click.argument("namespace", required=False)
@click.option("--keys-only", is_flag=True, help="Skip the per-secret DEK check.")
@pass_settings
def diagnose_cmd(settings: Settings, namespace: str | None, keys_only: bool) -> None:
    """Report key drift (never decrypts a value). Exits 6 if anything is critical."""
    with open_cli_store(settings) as store:
        report = store.diagnose(namespace, check_secrets=not keys_only)
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
    with open_cli_store(settings) as store:
        report = store.repair(namespace, dry_run=not apply, confirm_delete=confirm_delete)
    if settings.as_json:
        emit_json(report.to_dict())
        return
    for line in report.done:
        click.echo(f"done: {line}")
    for line in report.planned if report.dry_run else []:
        click.echo(f"would: {line}")
    for line in report.needs_confirmation:
        click.echo(f"needs --apply --confirm-delete: {line}")
    click.echo(f"remaining issues: {len(report.remaining)}")


@click.command("import")
@click.argument("namespace")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["dotenv", "json"]), help="Default: from the file name (.json or else dotenv)."
)
@click.option("--on-conflict", type=click.Choice(ON_CONFLICT), default="skip", show_default=True)
@click.option("--category")
@pass_settings
def import_cmd(
    settings: Settings, namespace: str, source: Path, fmt: str | None, on_conflict: str, category: str | None
) -> None:
    """Import secrets from a dotenv or JSON file (or - for stdin) into a namespace."""
    text = read_text_file(source)
    kind = fmt or ("json" if source.suffix == ".json" else "dotenv")
    pairs: list[tuple[str, Any]] = parse_json_secrets(text) if kind == "json" else list(parse_dotenv(text))
    with open_cli_store(settings) as store, _progress(settings, "importing") as progress:
        report = store.import_secrets(
            pairs,
            namespace=namespace,
            on_conflict=on_conflict,
            category=category,
            progress=progress,
            source=f"{kind}-file",
        )
    _report(settings, report)


def register(cli: click.Group) -> None:
    """Add the lifecycle commands."""
    for command in (
        status_cmd,
        rotate_cmd,
        rewrap_deks_cmd,
        rewrap_ns_cmd,
        reencrypt_cmd,
        compromise_cmd,
        cleanup_keys_cmd,
        diagnose_cmd,
        repair_cmd,
        import_cmd,
    ):
        cli.add_command(command)
    cli.add_command(kek_group)
