"""kmsbox-orm: the ORM-neutral half of kmsbox's encrypted columns.

Used by ``kmsbox-sqlalchemy`` and ``kmsbox-django``; see ``docs/orm.md``.
"""

from kmsbox_orm.blind import DEFAULT_INDEX_LENGTH, Blind, BlindIndexSpec, blind
from kmsbox_orm.codecs import DEFAULT_MAX_BYTES, ValueCodec, codec_for
from kmsbox_orm.column import EncryptedColumn, Sealed
from kmsbox_orm.context import row_id, value_context
from kmsbox_orm.encryption import ColumnEncryption
from kmsbox_orm.errors import ValueTooLarge, WrongValueType
from kmsbox_orm.index_keys import IndexKeyRecord, IndexKeyring, IndexKeyStore
from kmsbox_orm.legacy import DjangoCryptographyFormat, FernetFieldsFormat, LegacyFormat, SqlalchemyUtilsFormat
from kmsbox_orm.rewrite import ColumnScan, RewriteJob, RewriteReport, RewriteTarget, RowChange, StoredRow

__all__ = [
    "ColumnEncryption",
    "EncryptedColumn",
    "Sealed",
    "ValueCodec",
    "codec_for",
    "DEFAULT_MAX_BYTES",
    "row_id",
    "value_context",
    "Blind",
    "blind",
    "BlindIndexSpec",
    "DEFAULT_INDEX_LENGTH",
    "IndexKeyring",
    "IndexKeyStore",
    "IndexKeyRecord",
    "LegacyFormat",
    "SqlalchemyUtilsFormat",
    "FernetFieldsFormat",
    "DjangoCryptographyFormat",
    "RewriteJob",
    "RewriteReport",
    "RewriteTarget",
    "RowChange",
    "StoredRow",
    "ColumnScan",
    "ValueTooLarge",
    "WrongValueType",
]
