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

from kmsbox_sqlalchemy import events as _events  # noqa: F401 - registers the mapper events
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
