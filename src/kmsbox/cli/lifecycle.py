"""Key lifecycle commands: status, rotation, rewrap, re-encryption, compromise, key
cleanup and KEK migration. Long jobs show a progress bar (or JSON with --json).

Every command on a namespace refuses one that does not exist, with the close names;
only ``rotate --create`` makes one.
"""

from __future__ import annotations

from typing import Any

import click

from kmsbox.cli.advice import WrapAdvice, advise_status
from kmsbox.cli.jobs import progress_bar, show_report
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.namespace_checks import known_namespace, namespace_exists, unknown_namespace
from kmsbox.cli.output import emit_json, table
from kmsbox.cli.params import VERSION, parse_duration
from kmsbox.store.jobs import JobReport
from kmsbox.store.keyring import ACTIVE, ROTATING
from kmsbox.store.names import validate_namespace

__all__ = ["register", "would_rewrap_after_rotation"]


@click.command("status")
@click.argument("namespace", required=False)
@pass_settings
def status_cmd(settings: Settings, namespace: str | None) -> None:
    """Active key versions, secrets per key version, retired/compromised keys, pending work."""
    with open_cli_store(settings) as store, known_namespace(store, namespace):
        data = advise_status(store.status(namespace), WrapAdvice(store))
    if settings.as_json:
        emit_json(data)
        return
    table(
        "KEKs",
        ["uri", "provider", "primary version"],
        [[k["uri"], k.get("provider", ""), k["primary_version"]] for k in data["keks"]],
    )
    rows: list[list[Any]] = []
    for ns, info in data["namespaces"].items():
        for key in info.get("keys", []):
            wraps = [f"{w['kek_uri']}#{w['kek_version']}" for w in key["wraps"]] or ["(none)"]
            # One line per wrap: a URI is never squeezed next to another one.
            rows.append([ns, key["version"], key["status"], key["secret_versions"], wraps[0]])
            rows += [["", "", "", "", more] for more in wraps[1:]]
    table("namespace keys", ["namespace", "version", "status", "secret versions", "wrapped by"], rows)
    pending = [(ns, p) for ns, info in data["namespaces"].items() for p in info["pending"]]
    if pending:
        table("pending work", ["namespace", "what to do"], pending)
    else:
        click.echo("no pending work")
    for job in data["jobs"]:
        click.echo(f"unfinished job: {job['job']} ({_resume_hint(job)})")


def _resume_hint(job: dict[str, Any]) -> str:
    kind, _, namespace = str(job["job"]).partition(":")
    if kind == job.get("kind") == "reencrypt" and namespace:
        return f"resume it: kmsbox reencrypt {namespace}"
    return "run the same command again to resume it"


def would_rewrap_after_rotation(store: Any, namespace: str) -> int:
    """How many DEKs the rewrap after a rotation would move: those under the active version
    (it turns ``rotating``) and under versions already rotating."""
    keys = store.status(namespace)["namespaces"][namespace]["keys"]
    return sum(int(k["secret_versions"]) for k in keys if k["status"] in (ACTIVE, ROTATING))


@click.command("rotate")
@click.argument("namespace")
@click.option("--rewrap/--no-rewrap", default=True, show_default=True, help="Also rewrap existing DEKs to the new key.")
@click.option("--create", is_flag=True, help="Make the namespace (its first key) if it does not exist.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@pass_settings
def rotate_cmd(settings: Settings, namespace: str, rewrap: bool, create: bool, dry_run: bool) -> None:
    """Rotate a namespace key (and rewrap its DEKs; no value is re-encrypted)."""
    ns = validate_namespace(namespace)
    with open_cli_store(settings, create=create and not dry_run) as store:
        if not namespace_exists(store, ns):
            if not create:
                raise unknown_namespace(store, ns, create="--create")
            version = store.rotate_namespace_key(ns, dry_run=dry_run, create=True)
            if settings.as_json:
                emit_json(
                    {"namespace": ns, "new_version": version, "dry_run": dry_run, "created": True, "rewrap": None}
                )
            else:
                click.echo(f"{'would create' if dry_run else 'created'} namespace {ns} with key version {version}")
            return
        with known_namespace(store, ns):
            version = store.rotate_namespace_key(ns, dry_run=dry_run)
            report: JobReport | None = None
            if dry_run and rewrap:
                report = JobReport("rewrap-deks", ns, dry_run=True, remaining=would_rewrap_after_rotation(store, ns))
            if not settings.as_json:
                unchanged = "; nothing was changed" if dry_run and not rewrap else ""
                click.echo(f"{'would rotate' if dry_run else 'rotated'} {ns} to key version {version}{unchanged}")
            if rewrap and not dry_run:
                with progress_bar(settings, "rewrapping DEKs") as progress:
                    report = store.rewrap_deks(ns, progress=progress)
    if settings.as_json:
        # One JSON document: the new version and the DEK rewrap's report (null with --no-rewrap).
        emit_json(
            {
                "namespace": ns,
                "new_version": version,
                "dry_run": dry_run,
                "created": False,
                "rewrap": report.to_dict() if report else None,
            }
        )
    elif report is not None:
        show_report(settings, report)
    elif not dry_run:
        click.echo(f"next: kmsbox rewrap-deks {ns} (moves the DEKs to key version {version})")


@click.command("rewrap-deks")
@click.argument("namespace")
@click.option("--dry-run", is_flag=True, help="Count what would be rewrapped; change nothing.")
@pass_settings
def rewrap_deks_cmd(settings: Settings, namespace: str, dry_run: bool) -> None:
    """Move DEKs from rotating namespace-key versions to the active one."""
    with (
        open_cli_store(settings) as store,
        known_namespace(store, namespace),
        progress_bar(settings, "rewrapping DEKs") as progress,
    ):
        report = store.rewrap_deks(namespace, dry_run=dry_run, progress=progress)
    show_report(settings, report)


@click.command("rewrap-namespace-keys")
@click.option("--namespace")
@click.option("--dry-run", is_flag=True, help="Count what would be rewrapped; change nothing.")
@pass_settings
def rewrap_ns_cmd(settings: Settings, namespace: str | None, dry_run: bool) -> None:
    """After a KEK rotation: rewrap namespace keys under each KEK's primary version."""
    with (
        open_cli_store(settings) as store,
        known_namespace(store, namespace),
        progress_bar(settings, "rewrapping namespace keys") as progress,
    ):
        report = store.rewrap_namespace_keys(namespace, dry_run=dry_run, progress=progress)
    show_report(settings, report)


@click.command("reencrypt")
@click.argument("namespace")
@click.option("--dry-run", is_flag=True, help="Count what would be re-encrypted; change nothing.")
@pass_settings
def reencrypt_cmd(settings: Settings, namespace: str, dry_run: bool) -> None:
    """Give every secret a fresh DEK and ciphertext (suspected leak, compromised key)."""
    with (
        open_cli_store(settings) as store,
        known_namespace(store, namespace),
        progress_bar(settings, "re-encrypting") as progress,
    ):
        report = store.reencrypt(namespace, dry_run=dry_run, progress=progress)
    show_report(settings, report)


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
    with open_cli_store(settings) as store, known_namespace(store, namespace):
        new = store.mark_compromised(namespace, version, rotate=not no_rotate)
    if settings.as_json:
        emit_json({"namespace": namespace, "compromised": version, "new_active_version": new})
    else:
        click.echo(
            f"marked {namespace} v{version} compromised"
            + (f"; rotated in v{new}" if new else "")
            + f"; next: kmsbox reencrypt {namespace}"
        )


@click.command("cleanup-keys")
@click.option("--older-than", default="0s", show_default=True, metavar="DURATION")
@click.option("--namespace")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@pass_settings
def cleanup_keys_cmd(settings: Settings, older_than: str, namespace: str | None, dry_run: bool) -> None:
    """Delete retired keys nothing references (refuses keys still in use)."""
    age = parse_duration(older_than, allow_zero=True)
    with open_cli_store(settings) as store, known_namespace(store, namespace):
        report = store.cleanup_retired_keys(age, namespace=namespace, dry_run=dry_run)
    show_report(settings, report)


@click.group("kek")
def kek_group() -> None:
    """KEK-level operations across every namespace."""


@kek_group.command("migrate")
@click.option("--to", "to", required=True, metavar="URI", help="The KEK to wrap every namespace key under.")
@click.option("--drop-old", is_flag=True, help="Afterwards, delete wraps under every other KEK.")
@click.option("--dry-run", is_flag=True, help="Count what would be wrapped; change nothing.")
@pass_settings
def kek_migrate(settings: Settings, to: str, drop_old: bool, dry_run: bool) -> None:
    """Move the store to another KEK (any provider) without re-encrypting a secret."""
    with open_cli_store(settings) as store, progress_bar(settings, "wrapping namespace keys") as progress:
        configured = [k.uri for k in store.keks]
        report = store.migrate_kek(to, drop_old=drop_old, dry_run=dry_run, progress=progress)
    show_report(settings, report)
    if settings.as_json or dry_run:
        return
    target = str(report.details.get("to", to))
    others = [uri for uri in configured if uri != target]
    if drop_old:
        click.echo(
            f"next: configure {target} alone (remove {', '.join(others) or 'the old KEK'} from --kek, KMSBOX_KEK "
            f"or [store] kek), then check: kmsbox --kek {target} diagnose"
        )
    else:
        click.echo(
            f"next: check the store opens with the new KEK alone: kmsbox --kek {target} status; then configure "
            f"{target} first and the old KEK second, and run: kmsbox kek migrate --to {target} --drop-old"
        )


def register(cli: click.Group) -> None:
    """Add the key lifecycle commands."""
    for command in (
        status_cmd,
        rotate_cmd,
        rewrap_deks_cmd,
        rewrap_ns_cmd,
        reencrypt_cmd,
        compromise_cmd,
        cleanup_keys_cmd,
    ):
        cli.add_command(command)
    cli.add_command(kek_group)
