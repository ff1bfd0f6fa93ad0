"""``manage.py kmsbox_status app_label.Model.field``: how a field's stored values stand (decrypts nothing)."""

from __future__ import annotations

from typing import Any

from kmsbox_django.commands import KmsboxCommand, print_scan
from kmsbox_django.jobs import resolve_field, scan_field


class Command(KmsboxCommand):
    help = "Count a field's values by state and KEK version, and its index values by index-key version."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("field", help="app_label.Model.field")

    def handle(self, *args: Any, **options: Any) -> None:
        model, field = resolve_field(options["field"])
        scan = scan_field(model, field, using=options["database"])
        if options["json"]:
            self.emit(scan.to_dict())
        else:
            print_scan(self.stdout, scan)
