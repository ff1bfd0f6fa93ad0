"""How the CLI shows a long job: a progress bar on a terminal, then its report in words.

A dry run's report says what the real run "would" do, with the same count the real run
then reports as done, and says that nothing was changed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kmsbox.cli.main import Settings
from kmsbox.cli.output import emit_json, plural
from kmsbox.store.jobs import JobReport

__all__ = ["progress_bar", "show_report"]

#: Per job: what it works on, what the report says it did, and what a dry run says it would do.
_WORDS: dict[str, tuple[str, str, str]] = {
    "rewrap-deks": ("DEK", "rewrapped", "would rewrap"),
    "rewrap-namespace-keys": ("namespace-key wrap", "rewrapped", "would rewrap"),
    "reencrypt": ("secret version", "re-encrypted", "would re-encrypt"),
    "cleanup-retired-keys": ("key version", "deleted", "would delete"),
    "kek-migrate": ("namespace-key version", "wrapped", "would wrap"),
    "import": ("secret", "imported", "would import"),
}

#: How a detail's name reads in a report.
_DETAIL_NAMES = {
    "retired": "retired key versions",
    "deleted": "deleted",
    "would_delete": "would delete",
    "refused": "kept (still used)",
    "dropped_wraps": "dropped wraps",
    "would_drop": "would drop the other wraps",
    "to": "to",
    "unavailable": "could not be opened",
}


@contextmanager
def progress_bar(settings: Settings, label: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress callback drawing a bar on stderr when it is a terminal (never with --json)."""
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


def _detail(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_detail(v) for v in value)
    if isinstance(value, dict) and "namespace" in value and "version" in value:
        refs = f" ({value['references']} secret versions use it)" if "references" in value else ""
        return f"{value['namespace']} v{value['version']}{refs}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def report_lines(report: JobReport) -> list[str]:
    """The report in words: one summary line, then its details and the items passed over."""
    noun, done, would = _WORDS.get(report.job, ("item", "processed", "would process"))
    where = f" {report.namespace}" if report.namespace else ""
    if report.dry_run:
        summary = f"{report.job}{where} (dry run): {would} {plural(report.remaining, noun)}"
        if report.skipped:
            summary += f", would skip {report.skipped}"
        summary += "; nothing was changed"
    else:
        summary = (
            f"{report.job}{where}: {done} {plural(report.processed, noun)}, skipped {report.skipped}, "
            f"{plural(report.batches, 'batch')}, {plural(report.kek_calls, 'KEK call')}, {report.seconds:.2f}s"
        )
        if report.remaining:
            summary += f"; {report.remaining} remaining (run it again to resume)"
    lines = [summary]
    for key, value in report.details.items():
        if value or key == "dropped_wraps":
            lines.append(f"  {_DETAIL_NAMES.get(key, key.replace('_', ' '))}: {_detail(value)}")
    if report.failures:
        verb = "would fail" if report.dry_run else "failed"
        lines.append(f"  {verb}: {plural(len(report.failures), 'item')}")
        for failure in report.failures:
            whose = "/".join(p for p in (failure.namespace, failure.name) if p)
            lines.append(f"    item {failure.item}{' ' + whose if whose else ''}: {failure.reason}: {failure.error}")
    return lines


def show_report(settings: Settings, report: JobReport) -> None:
    """Print a job's report: JSON with --json, else in words."""
    if settings.as_json:
        emit_json(report.to_dict())
        return
    for line in report_lines(report):
        click.echo(line)
