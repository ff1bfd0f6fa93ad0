"""What the management commands (and ``kmsbox django``) do, with their output.

Errors are raised as kmsbox errors or ValueError; a command run by ``manage.py`` turns
them into one ``CommandError`` line with kmsbox's exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError
from kmsbox_orm.rewrite import ColumnScan, RewriteReport
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, KmsboxError, ProviderError, StorageError

__all__ = ["KmsboxCommand", "RowsFailed", "print_report", "print_scan", "progress_bar"]


class RowsFailed(Exception):
    """A rewrite finished but left some rows as they were (the report lists them): exit status 1."""


# The kmsbox command's exit codes (docs/cli.md), so scripts see the same from manage.py.
_EXIT = {IntegrityError: 5, KeyUnavailable: 6, ConfigError: 7, ProviderError: 8, StorageError: 9}


def _exit_code(exc: BaseException) -> int:
    for kind, code in _EXIT.items():
        if isinstance(exc, kind):
            return code
    return 2 if isinstance(exc, ValueError) else 1


class KmsboxCommand(BaseCommand):
    """A management command whose kmsbox errors become one line and kmsbox's exit code."""

    def add_arguments(self, parser: Any) -> None:
        """``--json`` and ``--database``."""
        parser.add_argument("--json", action="store_true", help="Machine-readable JSON output.")
        parser.add_argument("--database", default=None, help="Database alias (default: KMSBOX_ORM['DATABASE']).")

    def execute(self, *args: Any, **options: Any) -> Any:
        """Run; from the command line, map errors to CommandError (from call_command they propagate)."""
        try:
            return super().execute(*args, **options)
        except RowsFailed as exc:
            if getattr(self, "_called_from_command_line", False):
                raise CommandError(str(exc), returncode=1) from None
            raise
        except (KmsboxError, ValueError) as exc:
            if getattr(self, "_called_from_command_line", False):
                raise CommandError(str(exc), returncode=_exit_code(exc)) from None
            raise

    def emit(self, data: Any) -> None:
        """Print JSON on stdout."""
        self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str))


@contextmanager
def progress_bar(enabled: bool, label: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich progress bar on stderr when it is a terminal (and not JSON output)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
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


def print_report(out: TextIO | Any, report: RewriteReport) -> None:
    """One line per report, and one per failed row."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items())) or "nothing to do"
    verb = "would write" if report.dry_run else "wrote"
    written = sum(report.reasons.values()) if report.dry_run else report.written
    out.write(
        f"{report.job}: scanned {report.scanned}, {verb} {written} ({reasons}), unchanged {report.unchanged}, "
        f"null {report.null}, conflicts {report.conflicts}, failed {report.failed}, {report.batches} batches, "
        f"{report.seconds:.2f}s{' (resumed)' if report.resumed else ''}"
    )
    for failure in report.failed_rows:
        out.write(f"  failed row {failure['row']}: {failure['error']}")


def print_scan(out: TextIO | Any, scan: ColumnScan) -> None:
    """The scan as a few lines."""
    out.write(
        f"{scan.job}: rows {scan.rows}, null {scan.null}, current {scan.current}, old KEK {scan.old_kek}, "
        f"legacy {scan.legacy}, malformed {scan.malformed}, index missing {scan.index_missing}"
    )
    for version, count in sorted(scan.kek_versions.items()):
        out.write(f"  KEK version {version}: {count}")
    for index_version, count in sorted(scan.index_versions.items()):
        out.write(f"  index-key version {index_version}: {count}")
