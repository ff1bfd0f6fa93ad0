"""The rewrite job and the column scan for Django models: re-encrypt a field in place.

>>> report = rewrite_field(Person, "ssn")          # doctest: +SKIP

Rows are read as stored bytes through the ORM (``values_list``: no decryption) and
written with one executemany of a compare-and-set UPDATE per batch, with the checkpoint,
in one transaction; see :mod:`kmsbox_orm.rewrite`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, models, transaction
from kmsbox_orm.column import Sealed
from kmsbox_orm.rewrite import DEFAULT_BATCH_SIZE, ColumnScan, Progress, RewriteJob, RewriteReport, RowChange, StoredRow

from kmsbox_django.conf import get_config
from kmsbox_django.fields import BlindIndexField, EncryptedField
from kmsbox_django.models import RewriteCheckpoint

__all__ = ["DjangoRewriteTarget", "resolve_field", "rewrite_field", "scan_field"]


def _raw(value: Any) -> Any:
    if isinstance(value, Sealed):
        return value.stored
    return bytes(value) if isinstance(value, (bytes, memoryview, bytearray)) else value


class DjangoRewriteTarget:
    """The rows of one encrypted field (and its blind index) of ``model`` on database ``using``."""

    def __init__(
        self, model: type[models.Model], field: EncryptedField, index: BlindIndexField | None, using: str
    ) -> None:
        pk = model._meta.pk
        if pk is None or isinstance(pk, getattr(models, "CompositePrimaryKey", ())):
            raise ValueError(f"{model.__name__}: the Django job walks models with a single-column primary key")
        if field.model is not model:
            raise ValueError(f"{model.__name__}.{field.name} is inherited: rewrite it on {field.model.__name__}")
        self.model = model
        self.field = field
        self.index = index
        self.using = using
        self._pk = pk
        self._job = f"{model._meta.db_table}.{field.column}"
        connection = connections[using]
        quote = connection.ops.quote_name
        table, value_col, pk_col = quote(model._meta.db_table), quote(field.column), quote(pk.column)
        sets, where = [f"{value_col} = %s"], [f"{pk_col} = %s", f"{value_col} = %s"]
        if index is not None:
            index_col = quote(index.column)
            sets.append(f"{index_col} = %s")
            # NULL-safe comparison of the index read (SQLite: IS; PostgreSQL and the standard: IS NOT DISTINCT FROM).
            where.append(
                f"{index_col} IS %s" if connection.vendor == "sqlite" else f"{index_col} IS NOT DISTINCT FROM %s"
            )
        self._sql = f"UPDATE {table} SET {', '.join(sets)} WHERE {' AND '.join(where)}"

    def __repr__(self) -> str:
        return f"DjangoRewriteTarget({self._job!r}, using={self.using!r})"

    @property
    def job_name(self) -> str:
        """``db_table.column``."""
        return self._job

    def count_rows(self) -> int:
        """Rows in the table."""
        return int(self.model._base_manager.using(self.using).count())

    def read_batch(self, after: tuple[Any, ...] | None, limit: int) -> list[StoredRow]:
        """The next ``limit`` rows in key order, as stored."""
        rows = self.model._base_manager.using(self.using).order_by("pk")
        if after is not None:
            rows = rows.filter(pk__gt=after[0])
        names = ["pk", self.field.attname] + ([self.index.attname] if self.index is not None else [])
        out: list[StoredRow] = []
        for row in rows.values_list(*names)[:limit]:
            out.append(StoredRow((row[0],), _raw(row[1]), _raw(row[2]) if self.index is not None else None))
        return out

    def _binary(self, value: Any, connection: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        return connection.Database.Binary(value)

    def write_batch(self, changes: Sequence[RowChange], checkpoint: Callable[[int], bytes | None]) -> int:
        """Compare-and-set every change and store the checkpoint in one transaction."""
        connection = connections[self.using]
        changed = 0
        with transaction.atomic(using=self.using):
            if changes:
                params = []
                for change in changes:
                    pk = self._pk.get_db_prep_value(change.key[0], connection)
                    row = [self._binary(change.new_value, connection)]
                    if self.index is not None:
                        row.append(self._binary(change.new_index, connection))
                    row += [pk, self._binary(change.old_value, connection)]
                    if self.index is not None:
                        row.append(self._binary(change.old_index, connection))
                    params.append(row)
                with connection.cursor() as cursor:
                    cursor.executemany(self._sql, params)
                    changed = cursor.rowcount
            sealed = checkpoint(changed)
            checkpoints = RewriteCheckpoint.objects.using(self.using)
            if sealed is None:
                checkpoints.filter(job=self._job).delete()
            elif not checkpoints.filter(job=self._job).update(sealed=sealed):
                checkpoints.create(job=self._job, sealed=sealed)
        return changed

    def read_checkpoint(self) -> bytes | None:
        """This job's checkpoint, if an unfinished run left one."""
        sealed = (
            RewriteCheckpoint.objects.using(self.using).filter(job=self._job).values_list("sealed", flat=True).first()
        )
        return bytes(sealed) if sealed is not None else None


def resolve_field(label: str) -> tuple[type[models.Model], EncryptedField]:
    """``app_label.Model.field`` (ValueError when it does not name an encrypted field)."""
    from django.apps import apps

    parts = label.split(".")
    if len(parts) != 3:
        raise ValueError(f"field {label!r} must look like app_label.Model.field")
    try:
        model = apps.get_model(parts[0], parts[1])
        field = model._meta.get_field(parts[2])
    except LookupError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # FieldDoesNotExist
        raise ValueError(f"{label!r}: {exc}") from None
    if not isinstance(field, EncryptedField):
        raise ValueError(f"{label!r} is not an encrypted field")
    return model, field


def _index_of(model: type[models.Model], field: EncryptedField) -> BlindIndexField | None:
    return next(
        (f for f in model._meta.concrete_fields if isinstance(f, BlindIndexField) and f.source == field.name), None
    )


def _job(model: type[models.Model], field: EncryptedField | str, using: str | None, **options: Any) -> RewriteJob:
    if isinstance(field, str):
        found = model._meta.get_field(field)
        if not isinstance(found, EncryptedField):
            raise ValueError(f"{model.__name__}.{field} is not an encrypted field")
        field = found
    config = get_config()
    index = _index_of(model, field)
    target = DjangoRewriteTarget(model, field, index, using or "default")
    return RewriteJob(
        field.encrypted_column(),
        target,
        index=index.spec() if index is not None else None,
        keyring=config.keyring if index is not None else None,
        **options,
    )


def rewrite_field(
    model: type[models.Model],
    field: EncryptedField | str,
    *,
    using: str | None = None,
    force: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    resume: bool = True,
    dry_run: bool = False,
    progress: Progress | None = None,
    max_batches: int | None = None,
) -> RewriteReport:
    """Re-encrypt ``model``'s encrypted ``field`` in place and recompute its blind index (see kmsbox_orm.RewriteJob)."""
    job = _job(model, field, using, force=force, batch_size=batch_size)
    return job.run(resume=resume, dry_run=dry_run, progress=progress, max_batches=max_batches)


def scan_field(
    model: type[models.Model],
    field: EncryptedField | str,
    *,
    using: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ColumnScan:
    """Count the field's values by state and KEK version, its index values by version (nothing decrypted)."""
    job = _job(model, field, using, batch_size=batch_size)
    return ColumnScan.run(job.column, job.target, has_index=job.index is not None, batch_size=batch_size)
