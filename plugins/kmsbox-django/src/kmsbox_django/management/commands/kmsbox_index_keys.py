"""``manage.py kmsbox_index_keys list|create|rotate NAME|retire NAME VERSION --yes|rewrap``."""

from __future__ import annotations

from typing import Any

from kmsbox_django.commands import KmsboxCommand
from kmsbox_django.conf import get_config
from kmsbox_django.fields import blind_index_names


class Command(KmsboxCommand):
    help = "Blind-index keys: list, create missing ones, rotate, retire an old version, rewrap under the primary KEK."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("action", choices=["list", "create", "rotate", "retire", "rewrap"])
        parser.add_argument("name", nargs="?", help="The index name (rotate, retire).")
        parser.add_argument("version", nargs="?", type=int, help="The version to retire.")
        parser.add_argument("--grace", type=float, default=None, help="rotate: seconds before it indexes new values.")
        parser.add_argument("--yes", action="store_true", help="retire: confirm.")

    def handle(self, *args: Any, **options: Any) -> None:
        keyring = get_config().keyring
        action, name = options["action"], options["name"]
        if action in ("rotate", "retire") and not name:
            raise ValueError(f"{action} needs an index name")
        result: Any
        if action == "create":
            result = {"created": keyring.ensure(blind_index_names())}
        elif action == "rotate":
            grace = options["grace"]
            if grace is not None and not 0 <= grace <= 86400 * 30:
                raise ValueError("--grace must be 0 to 2592000 seconds")
            result = {"index": name, "version": keyring.rotate(name, grace=grace)}
        elif action == "retire":
            if options["version"] is None:
                raise ValueError("retire needs the version")
            if not options["yes"]:
                raise ValueError("retiring an index key makes lookups miss rows still indexed with it: pass --yes")
            keyring.retire(name, options["version"])
            result = keyring.status()
        elif action == "rewrap":
            result = {"rewrapped": keyring.rewrap()}
        else:
            result = keyring.status()
        if options["json"]:
            self.emit(result)
        elif isinstance(result, list):
            for row in result:
                self.stdout.write(
                    f"{row['index']} v{row['version']}: active from {row['active_from']}"
                    f"{', retired' if row['retired'] else ''}{', writing' if row['writing'] else ''}"
                )
        else:
            self.stdout.write(", ".join(f"{k}: {v}" for k, v in result.items()))
