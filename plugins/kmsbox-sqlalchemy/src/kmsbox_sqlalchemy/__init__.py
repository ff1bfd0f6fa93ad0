"""kmsbox-sqlalchemy: encrypted SQLAlchemy columns, each value bound to its table, column and row.

>>> import kmsbox_sqlalchemy as ks                                        # doctest: +SKIP
>>> ks.configure(kek="env://KMSBOX_KEK", engine=engine)                  # doctest: +SKIP
>>> class User(Base):                                                     # doctest: +SKIP
...     __tablename__ = "users"
...     id: Mapped[int] = mapped_column(primary_key=True)
...     api_key: Mapped[str] = mapped_column(ks.Encrypted(String))
...     email: Mapped[str] = mapped_column(ks.Encrypted(String))
...     email_index: Mapped[bytes | None] = mapped_column(ks.BlindIndex("email", normalize="email"))
>>> session.scalars(select(User).where(User.email_index == ks.blind("a@b.c")))   # doctest: +SKIP

See docs/orm.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kmsbox.plugins import load_lazily

if TYPE_CHECKING:
    from kmsbox_orm import (
        Blind,
        DjangoCryptographyFormat,
        FernetFieldsFormat,
        RewriteReport,
        Sealed,
        SqlalchemyUtilsFormat,
        ValueTooLarge,
        WrongValueType,
        blind,
    )
    from kmsbox_orm.rewrite import ColumnScan

    from kmsbox_sqlalchemy.config import EncryptionConfig, configure, get_default, reset_default
    from kmsbox_sqlalchemy.jobs import rewrite_column, scan_column
    from kmsbox_sqlalchemy.schema import create_tables, metadata
    from kmsbox_sqlalchemy.types import BlindIndex, Encrypted

__all__ = [
    "Encrypted",
    "BlindIndex",
    "blind",
    "Blind",
    "Sealed",
    "configure",
    "get_default",
    "reset_default",
    "EncryptionConfig",
    "create_tables",
    "metadata",
    "rewrite_column",
    "scan_column",
    "RewriteReport",
    "ColumnScan",
    "SqlalchemyUtilsFormat",
    "FernetFieldsFormat",
    "DjangoCryptographyFormat",
    "ValueTooLarge",
    "WrongValueType",
]

# Loaded on first use, so that loading the plugin (every kmsbox process does, for its
# commands) does not import SQLAlchemy: it would more than double the heap a full garbage
# collection walks, in services that never use it.
_HOMES = {
    "Blind": "kmsbox_orm",
    "DjangoCryptographyFormat": "kmsbox_orm",
    "FernetFieldsFormat": "kmsbox_orm",
    "RewriteReport": "kmsbox_orm",
    "Sealed": "kmsbox_orm",
    "SqlalchemyUtilsFormat": "kmsbox_orm",
    "ValueTooLarge": "kmsbox_orm",
    "WrongValueType": "kmsbox_orm",
    "blind": "kmsbox_orm",
    "ColumnScan": "kmsbox_orm.rewrite",
    "EncryptionConfig": "kmsbox_sqlalchemy.config",
    "configure": "kmsbox_sqlalchemy.config",
    "get_default": "kmsbox_sqlalchemy.config",
    "reset_default": "kmsbox_sqlalchemy.config",
    "rewrite_column": "kmsbox_sqlalchemy.jobs",
    "scan_column": "kmsbox_sqlalchemy.jobs",
    "create_tables": "kmsbox_sqlalchemy.schema",
    "metadata": "kmsbox_sqlalchemy.schema",
    "BlindIndex": "kmsbox_sqlalchemy.types",
    "Encrypted": "kmsbox_sqlalchemy.types",
}


def __getattr__(name: str) -> Any:
    return load_lazily(__name__, _HOMES, name)
