"""``kmsbox import``: secrets from a dotenv or JSON file (or stdin) into a namespace.

Values never go on the command line, and no message names one. A dry run checks every
item as the import would (name, size, whether it already exists) and reports what the
real run would import, skip and refuse, without writing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kmsbox.cli.files import read_text_file
from kmsbox.cli.jobs import progress_bar, show_report
from kmsbox.cli.main import Settings, open_cli_store, pass_settings
from kmsbox.cli.namespace_checks import check_new_namespace, namespace_exists
from kmsbox.cli.params import parse_labels
from kmsbox.errors import IntegrityError, SecretNotFound
from kmsbox.store.importing import ON_CONFLICT, ON_ERROR, parse_dotenv, parse_json_secrets
from kmsbox.store.jobs import ItemFailure, JobReport
from kmsbox.store.names import validate_name, validate_namespace
from kmsbox.store.values import check_labels, check_optional_text, encode_value

__all__ = ["plan_import", "register"]


def _exists(store: Any, namespace: str, name: str, known: bool) -> bool:
    if not known:
        return False
    try:
        store.info(name, namespace=namespace)
    except SecretNotFound:
        return False
    except IntegrityError:
        return True  # a row is there (changed through the database): it counts as existing
    return True


def plan_import(store: Any, pairs: list[tuple[str, Any]], namespace: str, on_conflict: str, on_error: str) -> JobReport:
    """What ``import_secrets(pairs, namespace=...)`` would do, as a dry-run report: the same
    checks, in the same order, with the same errors, and nothing written."""
    report = JobReport("import", namespace, dry_run=True)
    known = namespace_exists(store, namespace)
    for index, (name, value) in enumerate(pairs, start=1):
        try:
            validate_name(name)
            encode_value(value, store.max_value_size)
        except (ValueError, TypeError) as exc:
            error = ValueError(f"import item {index}: {exc}")
            if on_error == "stop":
                raise error from None
            report.failures.append(ItemFailure(index, namespace, name if isinstance(name, str) else None, error))
            continue
        if not _exists(store, namespace, name, known):
            report.remaining += 1
        elif on_conflict == "skip":
            report.skipped += 1
        elif on_conflict == "fail":
            raise ValueError(f"secret {name!r} already exists in {namespace!r}")
        else:
            report.remaining += 1
    return report.finish()


@click.command("import")
@click.argument("namespace")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["dotenv", "json"]), help="Default: from the file name (.json or else dotenv)."
)
@click.option("--on-conflict", type=click.Choice(ON_CONFLICT), default="skip", show_default=True)
@click.option(
    "--on-error",
    type=click.Choice(ON_ERROR),
    default="stop",
    show_default=True,
    help="stop at the first bad item, or skip it and report it.",
)
@click.option("--category")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label for every imported secret; repeatable."
)
@click.option(
    "--create",
    is_flag=True,
    help="Make the namespace if it does not exist yet (needed when its name is close to an existing one).",
)
@click.option("--dry-run", is_flag=True, help="Check every item and say what would be imported; write nothing.")
@pass_settings
def import_cmd(
    settings: Settings,
    namespace: str,
    source: Path,
    fmt: str | None,
    on_conflict: str,
    on_error: str,
    category: str | None,
    labels: tuple[str, ...],
    create: bool,
    dry_run: bool,
) -> None:
    """Import secrets from a dotenv or JSON file (or - for stdin) into a namespace."""
    ns = validate_namespace(namespace)
    # Checked here as the import checks them: a dry run never reaches the store's checks.
    label_map = check_labels(parse_labels(labels)) or None
    check_optional_text(category, "category", 128)
    text = read_text_file(source)
    kind = fmt or ("json" if source.suffix == ".json" else "dotenv")
    pairs: list[tuple[str, Any]] = parse_json_secrets(text) if kind == "json" else list(parse_dotenv(text))
    with open_cli_store(settings, create=not dry_run) as store:
        check_new_namespace(store, ns, create=create)
        if dry_run:
            report = plan_import(store, pairs, ns, on_conflict, on_error)
        else:
            with progress_bar(settings, "importing") as progress:
                report = store.import_secrets(
                    pairs,
                    namespace=ns,
                    on_conflict=on_conflict,
                    on_error=on_error,
                    category=category,
                    labels=label_map,
                    progress=progress,
                    source=f"{kind}-file",
                )
    show_report(settings, report)


def register(cli: click.Group) -> None:
    """Add import."""
    cli.add_command(import_cmd)
