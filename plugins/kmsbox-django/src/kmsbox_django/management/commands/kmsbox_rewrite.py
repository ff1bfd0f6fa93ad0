"""``manage.py kmsbox_rewrite app_label.Model.field``: re-encrypt a field in place, resumably."""

from __future__ import annotations

from typing import Any

from kmsbox_orm.rewrite import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE

from kmsbox_django.commands import KmsboxCommand, RowsFailed, print_report, progress_bar
from kmsbox_django.jobs import resolve_field, rewrite_field


def _batch(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size must be 1 to {MAX_BATCH_SIZE}")
    return value


class Command(KmsboxCommand):
    help = "Re-encrypt an encrypted field in place (old KEK versions, legacy formats, old index keys), in committed batches."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("field", help="app_label.Model.field")
        parser.add_argument("--batch-size", type=_batch, default=DEFAULT_BATCH_SIZE)
        parser.add_argument("--force", action="store_true", help="Re-encrypt every value with a fresh data key.")
        parser.add_argument("--restart", action="store_true", help="Ignore an unfinished run's checkpoint.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would change; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        model, field = resolve_field(options["field"])
        with progress_bar(not options["json"], "rewriting") as progress:
            report = rewrite_field(
                model,
                field,
                using=options["database"],
                force=options["force"],
                batch_size=options["batch_size"],
                resume=not options["restart"],
                dry_run=options["dry_run"],
                progress=progress,
            )
        if options["json"]:
            self.emit(report.to_dict())
        else:
            print_report(self.stdout, report)
        if report.failed:
            raise RowsFailed(f"{report.failed} row(s) could not be rewritten (left as they were)")
