"""Migrating sqlalchemy-utils EncryptedType / StringEncryptedType columns in place.

The legacy rows are written by the real sqlalchemy-utils; the application then reads them
through ``Encrypted(..., legacy=SqlalchemyUtilsFormat(...))`` and the rewrite job
re-encrypts them in place.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import kmsbox_sqlalchemy as ks
import pytest
from sqlalchemy import JSON, Column, Engine, Integer, MetaData, String, Table, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy_utils import EncryptedType, StringEncryptedType
from sqlalchemy_utils.types.encrypted.encrypted_type import AesEngine, AesGcmEngine, FernetEngine

import kmsbox

LEGACY_KEY = os.urandom(16).hex()

ENGINES: list[tuple[str, Any, str | None]] = [
    ("aes", AesEngine, "pkcs5"),
    ("aes", AesEngine, None),  # the library's default padding: naive
    ("aes", AesEngine, "oneandzeroes"),
    ("aes", AesEngine, "zeroes"),
    ("aes-gcm", AesGcmEngine, None),
    ("fernet", FernetEngine, None),
]


def _legacy_table(metadata: MetaData, engine_cls: Any, padding: str | None) -> Table:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # EncryptedType warns that its impl will change
        return Table(
            "accounts",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("secret", EncryptedType(String, LEGACY_KEY, engine_cls, padding)),
            Column("motto", StringEncryptedType(String, LEGACY_KEY, engine_cls, padding)),
        )


@pytest.mark.parametrize(("engine_name", "engine_cls", "padding"), ENGINES)
def test_sqlalchemy_utils_columns_read_then_migrate_in_place(
    kek: str, engine: Engine, engine_name: Any, engine_cls: Any, padding: str | None
) -> None:
    legacy_metadata = MetaData()
    legacy = _legacy_table(legacy_metadata, engine_cls, padding)
    legacy_metadata.create_all(engine)
    values = {i: (f"secret-{i}-é", f"motto {i}") for i in range(1, 41)}
    with engine.begin() as conn:
        conn.execute(legacy.insert(), [{"id": i, "secret": s, "motto": m} for i, (s, m) in values.items()])
    fmt = ks.SqlalchemyUtilsFormat(LEGACY_KEY, engine=engine_name, padding=padding or "naive")

    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = "accounts"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        secret: Mapped[str] = mapped_column(ks.Encrypted(String, legacy=fmt))
        motto: Mapped[str] = mapped_column(ks.Encrypted(String, legacy=fmt, stored_as="text"))

    config = ks.configure(kek, engine=engine)
    config.create_tables()
    # The application reads legacy rows before (and while) the job migrates them, and writes new ones.
    with Session(engine) as session:
        assert {a.id: (a.secret, a.motto) for a in session.scalars(select(Account))} == values
        session.get(Account, 1).secret = "changed"  # type: ignore[union-attr]
        session.commit()
    values[1] = ("changed", values[1][1])
    for attribute, legacy_rows in ((Account.secret, 39), (Account.motto, 40)):
        assert ks.scan_column(engine, attribute).legacy == legacy_rows
        report = ks.rewrite_column(engine, attribute, batch_size=15)
        assert report.reasons == {"legacy": legacy_rows} and report.written == legacy_rows and report.failed == 0
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT secret, motto FROM accounts")).all()
    assert all(bytes(s).startswith(b"KB\x01\x01") and m.startswith("kb1:") for s, m in raw)
    with Session(engine) as session:
        assert {a.id: (a.secret, a.motto) for a in session.scalars(select(Account))} == values
    # Once migrated, the legacy key is no longer needed.
    Account.__table__.c.secret.type.legacy = None
    with Session(engine) as session:
        assert session.get(Account, 2).secret == values[2][0]  # type: ignore[union-attr]


def test_a_legacy_value_under_another_key_fails_and_stays(kek: str, engine: Engine) -> None:
    metadata = MetaData()
    legacy = _legacy_table(metadata, AesGcmEngine, None)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(legacy.insert(), [{"id": 1, "secret": "s", "motto": "m"}])

    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = "accounts"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        secret: Mapped[str] = mapped_column(
            ks.Encrypted(String, legacy=ks.SqlalchemyUtilsFormat("wrong", engine="aes-gcm"))
        )

    ks.configure(kek, engine=engine).create_tables()
    with Session(engine) as session, pytest.raises(kmsbox.IntegrityError):
        session.scalars(select(Account)).one()
    report = ks.rewrite_column(engine, Account.secret)
    assert report.failed == 1 and report.written == 0


def test_legacy_json_values_become_json_where_the_library_stored_json(kek: str, engine: Engine) -> None:
    metadata = MetaData()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sqlalchemy_utils import JSONType

        legacy = Table(
            "docs",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("body", EncryptedType(JSONType, LEGACY_KEY, AesGcmEngine)),
        )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(legacy.insert(), [{"id": 1, "body": {"a": [1, 2]}}])

    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "docs"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        body: Mapped[Any] = mapped_column(
            ks.Encrypted(JSON, legacy=ks.SqlalchemyUtilsFormat(LEGACY_KEY, engine="aes-gcm"))
        )

    ks.configure(kek, engine=engine).create_tables()
    report = ks.rewrite_column(engine, Doc.body)
    if engine.dialect.name == "postgresql":
        # On PostgreSQL sqlalchemy-utils encrypts repr(dict) (its JSONType hands the dict through and
        # the engine repr()s non-strings): not JSON, so the job reports the row and leaves it.
        assert report.failed_rows == [{"row": "1", "error": "WrongValueType"}] and report.written == 0
        return
    assert report.written == 1
    with Session(engine) as session:
        assert session.scalars(select(Doc)).one().body == {"a": [1, 2]}
