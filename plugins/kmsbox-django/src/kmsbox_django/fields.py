"""Encrypted model fields and the blind-index field.

A value is sealed in ``pre_save``, where the row is known, and bound to the model's
table, the field's column and the row's primary key; it is opened in ``post_init``, when
an instance is built from a database row (queries, ``refresh_from_db``, deferred loads).

**Keys the database generates.** On ``save()`` of a new row whose key the database
assigns (an ``AutoField``), the key is unknown in ``pre_save``: the row is inserted with
an empty placeholder and, in ``post_save``, the values are sealed for the new key and
written with an UPDATE of that row. A model with encrypted fields saves new rows in a
transaction (its ``save_base`` is wrapped in ``transaction.atomic``), so the INSERT and
that UPDATE commit together even in autocommit mode. ``bulk_create`` sends no signals, so it needs keys assigned up front
(a ``UUIDField(default=uuid4)``); without them it is refused. ``bulk_update`` and
``QuerySet.update()`` with a plaintext are refused too (they would store unbound values).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db import models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.lookups import In
from django.db.models.signals import class_prepared, post_init, post_save, pre_save
from kmsbox_orm.blind import DEFAULT_INDEX_LENGTH, Blind, BlindIndexSpec
from kmsbox_orm.codecs import DEFAULT_MAX_BYTES, CodecKind, ValueCodec
from kmsbox_orm.column import EncryptedColumn, Sealed, StoredAs
from kmsbox_orm.context import row_id
from kmsbox_orm.errors import WrongValueType
from kmsbox_orm.legacy import LegacyFormat

from kmsbox_django.conf import get_config

__all__ = [
    "BlindIndexField",
    "EncryptedBinaryField",
    "EncryptedField",
    "EncryptedJSONField",
    "EncryptedTextField",
    "blind_index_names",
]

_SAVING = "_kmsbox_saving"
_PENDING = "_kmsbox_pending"


def _row_of(instance: models.Model) -> str | None:
    pk = instance.pk
    if pk is None:
        return None
    key = tuple(pk) if isinstance(pk, tuple) else (pk,)
    return None if any(part is None for part in key) else row_id(key)


class EncryptedField(models.Field):  # type: ignore[type-arg]  # its value type depends on the subclass
    """Base of the encrypted fields: ``max_bytes`` bounds the plaintext, ``stored_as`` is
    ``binary`` (a binary column, the default) or ``text`` (base64 in a text column),
    ``legacy`` reads values still in a format migrated from (not recorded in migrations)."""

    kind: CodecKind = "text"
    description = "An encrypted value bound to its row"
    empty_strings_allowed = False

    def __init__(
        self,
        *args: Any,
        max_bytes: int = DEFAULT_MAX_BYTES,
        stored_as: StoredAs = "binary",
        legacy: LegacyFormat | None = None,
        **kwargs: Any,
    ) -> None:
        for option in ("primary_key", "unique", "db_index"):
            if kwargs.get(option):
                raise ValueError(f"{type(self).__name__} cannot be {option} (equal values encrypt differently)")
        if stored_as not in ("binary", "text"):
            raise ValueError("stored_as must be 'binary' or 'text'")
        if legacy is not None and not isinstance(legacy, LegacyFormat):
            raise ValueError("legacy must be a kmsbox_orm legacy format (FernetFieldsFormat, ...)")
        self.codec = ValueCodec(self.kind, max_bytes)
        self.max_bytes = max_bytes
        self.stored_as = stored_as
        self.legacy = legacy
        self._columns: dict[int, EncryptedColumn] = {}
        kwargs.setdefault("editable", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        """Record max_bytes and stored_as; never the legacy format (it holds keys)."""
        name, path, args, kwargs = super().deconstruct()
        if self.max_bytes != DEFAULT_MAX_BYTES:
            kwargs["max_bytes"] = self.max_bytes
        if self.stored_as != "binary":
            kwargs["stored_as"] = self.stored_as
        return name, path, args, kwargs

    def get_internal_type(self) -> str:
        """A binary column, or a text one for ``stored_as="text"``."""
        return "TextField" if self.stored_as == "text" else "BinaryField"

    def encrypted_column(self) -> EncryptedColumn:
        """The ORM-neutral description of this field's column."""
        config = get_config()
        column = self._columns.get(id(config.encryption))
        if column is None or column.encryption is not config.encryption:
            column = EncryptedColumn(
                self.model._meta.db_table, self.column, self.codec, config.encryption, self.stored_as, self.legacy
            )
            self._columns = {id(config.encryption): column}
        return column

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        """Seal the instance's value for its row (the instance keeps the plaintext)."""
        value = getattr(model_instance, self.attname)
        if value is None or isinstance(value, Sealed):
            return value
        column = self.encrypted_column()
        data = column.codec.encode(value)  # type and size errors before any SQL
        row = _row_of(model_instance)
        if row is not None:
            return column.seal_plaintext(data, row)
        if not getattr(model_instance, _SAVING, False):
            raise ValueError(
                f"{type(model_instance).__name__}: rows whose primary key the database generates get their "
                "encrypted values in save(); bulk_create needs primary keys set first (for example a UUIDField default)"
            )
        model_instance.__dict__.setdefault(_PENDING, {})[self.attname] = value
        return Sealed("" if self.stored_as == "text" else b"")

    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        """Sealed values go to the database; a plaintext here would be stored unbound."""
        if value is None:
            return None
        if isinstance(value, Sealed):
            # The driver's binary type (the DB-API Binary), as Django's own BinaryField passes it.
            return value.stored if isinstance(value.stored, str) else connection.Database.Binary(value.stored)  # type: ignore[attr-defined]
        raise WrongValueType(
            "an encrypted field is sealed with its row's key in save(): set it on the instance and save, "
            "not in QuerySet.update(), bulk_update() or a filter"
        )

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        """Wrap the stored value; post_init opens it with the row's key."""
        if value is None:
            return None
        return Sealed(value if isinstance(value, str) else bytes(value))

    def to_python(self, value: Any) -> Any:
        """Values are already Python values (a form's text stays text)."""
        return value

    def get_lookup(self, lookup_name: str) -> Any:
        """Only ``isnull``: equal values encrypt differently (use a BlindIndexField)."""
        if lookup_name != "isnull":
            return None
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name: str) -> Any:
        """No transforms."""
        return None

    def open_instance(self, instance: models.Model) -> None:
        """Decrypt this field's sealed value on ``instance`` in place."""
        value = instance.__dict__.get(self.attname)
        if isinstance(value, Sealed):
            row = _row_of(instance)
            if row is None:
                return
            instance.__dict__[self.attname] = self.encrypted_column().open(value.stored, row)


class EncryptedTextField(EncryptedField):
    """Encrypted text (str)."""

    kind = "text"


class EncryptedBinaryField(EncryptedField):
    """Encrypted bytes."""

    kind = "bytes"


class EncryptedJSONField(EncryptedField):
    """An encrypted JSON value (None is SQL NULL)."""

    kind = "json"


class BlindIndexField(models.BinaryField):  # type: ignore[type-arg]
    """An HMAC of the encrypted field ``source``'s normalised value, for equality lookups:
    ``Person.objects.filter(email_index=blind("a@b.c"))``. ``length`` (1-32) HMAC bytes are
    kept; ``normalize`` is ``nfc``, ``exact``, ``casefold`` or ``email``; ``index_name``
    names its key (default ``"<db_table>.<source column>"``)."""

    description = "A blind index of an encrypted field"

    def __init__(
        self,
        *args: Any,
        source: str,
        length: int = DEFAULT_INDEX_LENGTH,
        normalize: str = "nfc",
        index_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        BlindIndexSpec(index_name or "check", length=length, normalize=normalize)  # validate early
        self.source = source
        self.length = length
        self.normalize = normalize
        self.index_name = index_name
        kwargs.setdefault("null", True)
        kwargs["editable"] = False
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        """Record the source, length, normalizer and name."""
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("editable", None)
        kwargs["source"] = self.source
        if self.length != DEFAULT_INDEX_LENGTH:
            kwargs["length"] = self.length
        if self.normalize != "nfc":
            kwargs["normalize"] = self.normalize
        if self.index_name:
            kwargs["index_name"] = self.index_name
        return name, path, args, kwargs

    def source_field(self) -> EncryptedField:
        """The encrypted field this index is computed from."""
        field = self.model._meta.get_field(self.source)
        if not isinstance(field, EncryptedField):
            raise ValueError(f"BlindIndexField source {self.source!r} is not an encrypted field")
        return field

    def spec(self) -> BlindIndexSpec:
        """The ORM-neutral description of this index."""
        name = self.index_name or f"{self.model._meta.db_table}.{self.source_field().column}"
        return BlindIndexSpec(name, length=self.length, normalize=self.normalize)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        """Recompute from the source field's plaintext."""
        source = self.source_field()
        value = getattr(model_instance, source.attname)
        if isinstance(value, Sealed):
            return getattr(model_instance, self.attname)
        digest = self.spec().digest(get_config().keyring, source.codec, value)
        setattr(model_instance, self.attname, digest)
        return digest

    def digests(self, value: Any) -> list[bytes]:
        """The stored values a lookup of ``value`` matches (every readable index-key version)."""
        if not isinstance(value, Blind):
            raise WrongValueType("compare a blind index with blind(value)")
        return self.spec().digests(get_config().keyring, self.source_field().codec, value)

    def get_lookup(self, lookup_name: str) -> Any:
        """``exact`` and ``in`` take blind(value); ``isnull`` as usual; nothing else."""
        if lookup_name in ("exact", "in"):
            return BlindExact if lookup_name == "exact" else BlindIn
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        return None


class BlindIn(In):  # type: ignore[type-arg]
    """``index__in=[blind(a), blind(b)]``: every readable version of every value."""

    lookup_name = "in"

    def get_prep_lookup(self) -> Any:
        """Expand the blind values into digests."""
        field: BlindIndexField = self.lhs.output_field
        values = list(self.rhs) if isinstance(self.rhs, (list, tuple, set)) else [self.rhs]
        if not values or not all(isinstance(v, Blind) for v in values):
            raise WrongValueType("compare a blind index with blind(value)")
        self.rhs = [d for v in values for d in field.digests(v)]
        return super().get_prep_lookup()


class BlindExact(BlindIn):
    """``index=blind(a)``: matches every readable index-key version."""

    lookup_name = "exact"


def _encrypted_fields(model: type[models.Model]) -> list[EncryptedField]:
    return [f for f in model._meta.concrete_fields if isinstance(f, EncryptedField)]


def _on_post_init(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    for field in _encrypted_fields(sender):
        field.open_instance(instance)


def _on_pre_save(sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    instance.__dict__[_SAVING] = True
    instance.__dict__.pop(_PENDING, None)


def _on_post_save(sender: type[models.Model], instance: models.Model, using: str = "default", **kwargs: Any) -> None:
    instance.__dict__.pop(_SAVING, None)
    pending: dict[str, Any] = instance.__dict__.pop(_PENDING, {})
    if not pending:
        return
    row = _row_of(instance)
    if row is None:
        raise ValueError(f"{sender.__name__}: the database returned no primary key to bind encrypted values to")
    # Multi-table inheritance: each table's fields are updated through the model that owns them.
    by_model: dict[type[models.Model], dict[str, Sealed]] = {}
    for field in _encrypted_fields(sender):
        if field.attname in pending:
            sealed = field.encrypted_column().seal(pending[field.attname], row)
            by_model.setdefault(field.model, {})[field.attname] = sealed
    for model, values in by_model.items():
        model._base_manager.using(using).filter(pk=instance.pk).update(**values)


def _atomic_save_base(save_base: Callable[..., Any]) -> Callable[..., Any]:
    """``Model.save_base`` run in a transaction, so the INSERT of a placeholder and the UPDATE
    that seals its values (in post_save) commit together even in autocommit mode, where
    Django commits a plain model's INSERT before sending post_save."""

    @functools.wraps(save_base)
    def wrapper(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        if self.pk is not None:
            return save_base(self, *args, **kwargs)
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            return save_base(self, *args, **kwargs)

    wrapper.__kmsbox_atomic__ = True  # type: ignore[attr-defined]
    return wrapper


def _on_class_prepared(sender: type[models.Model], **kwargs: Any) -> None:
    if sender._meta.abstract or not _encrypted_fields(sender):
        return
    uid = f"kmsbox_django:{sender._meta.label}"
    post_init.connect(_on_post_init, sender=sender, weak=False, dispatch_uid=uid)
    pre_save.connect(_on_pre_save, sender=sender, weak=False, dispatch_uid=uid)
    post_save.connect(_on_post_save, sender=sender, weak=False, dispatch_uid=uid)
    if not getattr(sender.save_base, "__kmsbox_atomic__", False):
        sender.save_base = _atomic_save_base(sender.save_base)  # type: ignore[method-assign]


class_prepared.connect(_on_class_prepared, dispatch_uid="kmsbox_django.class_prepared")


def blind_index_names() -> list[str]:
    """The index-key names of every BlindIndexField of every installed model."""
    from django.apps import apps

    names: list[str] = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, BlindIndexField):
                names.append(field.spec().name)
    return list(dict.fromkeys(names))
