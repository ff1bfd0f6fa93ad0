"""Test models: the plugin's fields, and legacy fields writing the tables migrated from."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from kmsbox_django.fields import BlindIndexField, EncryptedBinaryField, EncryptedJSONField, EncryptedTextField
from kmsbox_orm import DjangoCryptographyFormat, FernetFieldsFormat

from testapp.legacy_fields import FernetTextField, encrypt


class Person(models.Model):
    """A database-generated key."""

    name = models.CharField(max_length=50, default="")
    ssn = EncryptedTextField(max_bytes=64, null=True)
    email = EncryptedTextField(null=True)
    email_index = BlindIndexField(source="email", normalize="email", db_index=True)
    photo = EncryptedBinaryField(null=True)
    prefs = EncryptedJSONField(null=True)


class Employee(Person):
    """Multi-table inheritance: the child's own table and the parent's share the key."""

    badge = EncryptedTextField(null=True)


class Token(models.Model):
    """A key the application assigns."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    secret = EncryptedTextField()


class FernetNote(models.Model):
    """Written by django-fernet-fields."""

    body = FernetTextField(null=True)

    class Meta:
        db_table = "legacy_fernet_notes"


class FernetNoteMigrated(models.Model):
    """The same table read by the plugin, with the legacy format to read rows not yet migrated."""

    body = EncryptedTextField(
        null=True, legacy=FernetFieldsFormat(getattr(settings, "FERNET_KEYS", [settings.SECRET_KEY]))
    )

    class Meta:
        db_table = "legacy_fernet_notes"
        managed = False


class CryptoNote(models.Model):
    """Written by django-cryptography."""

    body = encrypt(models.TextField(null=True))
    data = encrypt(models.JSONField(null=True))

    class Meta:
        db_table = "legacy_crypto_notes"


class CryptoNoteMigrated(models.Model):
    """The same table read by the plugin."""

    body = EncryptedTextField(null=True, legacy=DjangoCryptographyFormat(settings.SECRET_KEY))
    data = EncryptedJSONField(null=True, legacy=DjangoCryptographyFormat(settings.SECRET_KEY))

    class Meta:
        db_table = "legacy_crypto_notes"
        managed = False
