"""The plugin's two tables: index keys (sealed by the KEK) and rewrite-job checkpoints."""

from __future__ import annotations

from django.db import models


class IndexKey(models.Model):
    """One version of a blind index's HMAC key, sealed with the engine (see kmsbox_orm.index_keys)."""

    name: models.CharField[str, str] = models.CharField(max_length=200)
    version: models.IntegerField[int, int] = models.IntegerField()
    active_from: models.BigIntegerField[int, int] = models.BigIntegerField()
    retired: models.BooleanField[bool, bool] = models.BooleanField(default=False)
    sealed_key: models.BinaryField[bytes, bytes] = models.BinaryField()

    class Meta:
        db_table = "kmsbox_orm_index_keys"
        constraints = (models.UniqueConstraint(fields=["name", "version"], name="kmsbox_orm_index_key_version"),)

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class RewriteCheckpoint(models.Model):
    """The sealed checkpoint of an unfinished rewrite job."""

    job: models.CharField[str, str] = models.CharField(max_length=400, primary_key=True)
    sealed: models.BinaryField[bytes, bytes] = models.BinaryField()

    class Meta:
        db_table = "kmsbox_orm_checkpoints"

    def __str__(self) -> str:
        return str(self.job)
