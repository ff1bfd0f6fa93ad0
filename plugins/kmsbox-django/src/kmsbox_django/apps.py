"""The Django app: its two tables, and the index keys created after ``migrate``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class KmsboxDjangoConfig(AppConfig):
    """``kmsbox_django`` in INSTALLED_APPS."""

    name = "kmsbox_django"
    label = "kmsbox_django"
    verbose_name = "kmsbox encrypted fields"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the post-migrate hook and the field signals."""
        from kmsbox_django import fields  # noqa: F401 - connects class_prepared for encrypted models

        post_migrate.connect(_create_index_keys, sender=self, dispatch_uid="kmsbox_django.index_keys")


def _create_index_keys(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """Create the first index key of every blind index (each in its own committed transaction)."""
    from kmsbox_django.conf import get_config, orm_settings
    from kmsbox_django.fields import blind_index_names

    if not orm_settings().get("CREATE_INDEX_KEYS_ON_MIGRATE", True) or using != get_config().database:
        return
    names = blind_index_names()
    if names:
        get_config().keyring.ensure(names)
