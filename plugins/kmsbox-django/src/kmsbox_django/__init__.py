"""kmsbox-django: encrypted Django model fields, each value bound to its table, column and row.

    class Person(models.Model):
        ssn = EncryptedTextField()
        email = EncryptedTextField()
        email_index = BlindIndexField(source="email", normalize="email")

    Person.objects.filter(email_index=blind("a@b.c"))

Add ``"kmsbox_django"`` to INSTALLED_APPS. The field classes load on first use, so that
importing this package does not need Django settings. See docs/orm.md.
"""

from __future__ import annotations

from typing import Any

from kmsbox_orm import (
    Blind,
    DjangoCryptographyFormat,
    FernetFieldsFormat,
    Sealed,
    SqlalchemyUtilsFormat,
    ValueTooLarge,
    WrongValueType,
    blind,
)

from kmsbox.plugins import load_lazily

__all__ = [
    "EncryptedTextField",
    "EncryptedBinaryField",
    "EncryptedJSONField",
    "BlindIndexField",
    "blind",
    "Blind",
    "Sealed",
    "rewrite_field",
    "scan_field",
    "get_config",
    "reset_config",
    "FernetFieldsFormat",
    "DjangoCryptographyFormat",
    "SqlalchemyUtilsFormat",
    "ValueTooLarge",
    "WrongValueType",
]

_HOMES = {
    "EncryptedTextField": "kmsbox_django.fields",
    "EncryptedBinaryField": "kmsbox_django.fields",
    "EncryptedJSONField": "kmsbox_django.fields",
    "BlindIndexField": "kmsbox_django.fields",
    "rewrite_field": "kmsbox_django.jobs",
    "scan_field": "kmsbox_django.jobs",
    "get_config": "kmsbox_django.conf",
    "reset_config": "kmsbox_django.conf",
}


def __getattr__(name: str) -> Any:
    return load_lazily(__name__, _HOMES, name)
