"""Encrypted columns through the ORM on real SQLite and PostgreSQL: round trips, row binding, bad input."""

from __future__ import annotations

import os
import uuid
from typing import Any

import kmsbox_sqlalchemy as ks
import pytest
from sa_models import Base, Card, Grant, User
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

import kmsbox
from kmsbox.testing.counting import CountingKek


@pytest.fixture
def config(kek: str, engine: Engine) -> ks.EncryptionConfig:
    config = ks.configure(kek, engine=engine)
    Base.metadata.create_all(engine)
    config.create_tables()
    config.ensure_index_keys(Base.metadata)
    return config


def _raw(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def test_values_round_trip_and_null_stays_null(config: ks.EncryptionConfig, engine: Engine) -> None:
    with Session(engine) as session:
        session.add(User(name="a", api_key="sk-live-1", email="a@example.com", avatar=b"\x00\xff", prefs={"k": [1, 2]}))
        session.add(User(name="b"))
        session.commit()
    with Session(engine) as session:
        a, b = session.scalars(select(User).order_by(User.id)).all()
        assert (a.api_key, a.email, a.avatar, a.prefs) == ("sk-live-1", "a@example.com", b"\x00\xff", {"k": [1, 2]})
        assert (b.api_key, b.email, b.avatar, b.prefs, b.email_index) == (None, None, None, None, None)
    rows = _raw(engine, "SELECT api_key, prefs FROM users ORDER BY id")
    assert rows[1] == (None, None)
    stored = bytes(rows[0][0])
    assert stored.startswith(b"KB\x01\x01") and b"sk-live-1" not in stored


def test_value_is_bound_to_its_row_column_and_table(config: ks.EncryptionConfig, engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all([User(name="a", api_key="key-a", email="a@x"), User(name="b", api_key="key-b", email="b@x")])
        session.add(Card(number="4111", note="n"))
        session.commit()
    # Another row's ciphertext, copied over with SQL.
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET api_key = (SELECT api_key FROM users WHERE name = 'a') WHERE name = 'b'"))
    with Session(engine) as session:
        with pytest.raises(kmsbox.IntegrityError):
            session.scalars(select(User).where(User.name == "b")).one()
        assert session.scalars(select(User).where(User.name == "a")).one().api_key == "key-a"
    # Another column of the same row.
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET api_key = email WHERE name = 'a'"))
    with Session(engine) as session, pytest.raises(kmsbox.IntegrityError):
        session.scalars(select(User).where(User.name == "a")).one()
    # Another table (the same column name, the same stored form).
    with engine.begin() as conn:
        conn.execute(text("UPDATE cards SET note = (SELECT email FROM users WHERE name = 'b')"))
    with Session(engine) as session, pytest.raises(kmsbox.IntegrityError):
        session.scalars(select(Card)).one()


def test_tampered_value_fails_and_row_is_left_as_it_was(config: ks.EncryptionConfig, engine: Engine) -> None:
    with Session(engine) as session:
        session.add(User(name="a", api_key="secret"))
        session.commit()
    stored = bytes(_raw(engine, "SELECT api_key FROM users")[0][0])
    tampered = stored[:-1] + bytes([stored[-1] ^ 1])
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET api_key = :v"), {"v": tampered})
    for blob in (tampered, stored[:20], b"not a ciphertext"):
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET api_key = :v"), {"v": blob})
        with Session(engine) as session, pytest.raises(kmsbox.IntegrityError) as info:
            session.scalars(select(User)).one()
        assert "secret" not in str(info.value)
        assert bytes(_raw(engine, "SELECT api_key FROM users")[0][0]) == blob


def test_application_assigned_and_composite_keys(config: ks.EncryptionConfig, engine: Engine) -> None:
    card_id = uuid.uuid4()
    with Session(engine) as session:
        user = User(name="u")
        session.add(user)
        session.flush()
        session.add_all([Card(id=card_id, number="4111 1111"), Card(number="5500", note=None)])
        session.add_all(
            [
                Grant(user_id=user.id, scope="read", token="t-read"),
                Grant(user_id=user.id, scope="write", token="t-write"),
            ]
        )
        session.commit()
    with Session(engine) as session:
        assert session.get(Card, card_id).number == "4111 1111"  # type: ignore[union-attr]
        assert {g.scope: g.token for g in session.scalars(select(Grant))} == {"read": "t-read", "write": "t-write"}
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE grants SET token = (SELECT token FROM grants WHERE scope = 'read') WHERE scope = 'write'")
        )
    with Session(engine) as session, pytest.raises(kmsbox.IntegrityError):
        session.scalars(select(Grant).where(Grant.scope == "write")).one()


def test_update_expire_and_refresh(config: ks.EncryptionConfig, engine: Engine) -> None:
    with Session(engine) as session:
        user = User(name="a", api_key="one", prefs={"a": 1})
        session.add(user)
        session.commit()  # expires: the next access reloads and decrypts
        assert user.api_key == "one"
        user.api_key = "two"
        user.prefs = {"a": 2}
        session.commit()
        assert (user.api_key, user.prefs) == ("two", {"a": 2})
        session.expire(user, ["api_key"])
        assert user.api_key == "two"
        session.refresh(user)
        assert user.prefs == {"a": 2}
        assert not session.dirty
    with Session(engine) as session:
        assert session.scalars(select(User)).one().api_key == "two"


def test_changing_the_primary_key_rebinds_the_values(config: ks.EncryptionConfig, engine: Engine) -> None:
    with Session(engine) as session:
        card = Card(number="4111")
        session.add(card)
        session.commit()
        new_id = uuid.uuid4()
        card.id = new_id
        session.commit()
    with Session(engine) as session:
        assert session.get(Card, new_id).number == "4111"  # type: ignore[union-attr]


def test_too_large_wrong_type_and_unbound_writes_are_refused(config: ks.EncryptionConfig, engine: Engine) -> None:
    with Session(engine) as session:
        session.add(User(name="a", api_key="ok"))
        session.commit()
    cases: list[tuple[str, Any, type[Exception]]] = [
        ("api_key", "x" * 1025, ks.ValueTooLarge),
        ("api_key", 42, ks.WrongValueType),
        ("avatar", "not bytes", ks.WrongValueType),
        ("prefs", {"x": float("nan")}, ks.WrongValueType),
        ("prefs", {"x": object()}, ks.WrongValueType),
    ]
    for attribute, value, error in cases:
        with Session(engine) as session:
            user = session.scalars(select(User)).one()
            setattr(user, attribute, value)
            with pytest.raises(error) as info:
                session.commit()
            assert isinstance(info.value, kmsbox.KmsboxError)
            assert "xxxx" not in str(info.value)
            session.rollback()
        with Session(engine) as session:
            assert session.scalars(select(User)).one().api_key == "ok"
    with Session(engine) as session:
        session.add(User(name="big", api_key="y" * 2000))
        with pytest.raises(ks.ValueTooLarge):
            session.commit()
    assert _raw(engine, "SELECT count(*) FROM users")[0][0] == 1
    # A plaintext in a Core statement would be stored unbound: refused, row unchanged.
    # (SQLAlchemy wraps an error of a bind processor in StatementError, keeping it as .orig.)
    for statement in (update(User.__table__).values(api_key="plain"), insert(User.__table__).values(api_key="p")):
        with pytest.raises(StatementError) as wrapped, engine.begin() as conn:
            conn.execute(statement)
        assert isinstance(wrapped.value.orig, ks.WrongValueType)
    with pytest.raises(ks.WrongValueType):
        select(User).where(User.api_key == "ok")
    assert select(User).where(User.api_key.is_(None)) is not None
    with Session(engine) as session:
        assert session.scalars(select(User)).one().api_key == "ok"


def test_a_missing_kek_version_is_key_unavailable(kek: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = os.urandom(32).hex(), os.urandom(32).hex()
    monkeypatch.setenv("ORM_ROTATING_KEK", f"v1:{old}")
    ks.configure("env://ORM_ROTATING_KEK", engine=engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Card(number="4111"))
        session.commit()
    monkeypatch.setenv("ORM_ROTATING_KEK", f"v2:{new}")
    ks.configure("env://ORM_ROTATING_KEK", engine=engine)
    with Session(engine) as session, pytest.raises(kmsbox.KeyUnavailable):
        session.scalars(select(Card)).one()
    monkeypatch.setenv("ORM_ROTATING_KEK", f"v2:{new},v1:{old}")
    ks.configure("env://ORM_ROTATING_KEK", engine=engine)
    with Session(engine) as session:
        assert session.scalars(select(Card)).one().number == "4111"


def test_reading_many_rows_costs_kms_calls_per_data_key_not_per_row(kek: str, engine: Engine) -> None:
    writer = ks.configure(kek, engine=engine)
    Base.metadata.create_all(engine)
    writer.create_tables()
    writer.ensure_index_keys(Base.metadata)
    with Session(engine) as session:
        session.add_all(Card(number=f"card-{i}", note=f"note-{i}") for i in range(2000))
        session.commit()
    counting = CountingKek(kmsbox.open_kek(kek))
    ks.configure(counting, engine=engine)  # a fresh process: a cold data-key cache
    with Session(engine) as session:
        cards = session.scalars(select(Card)).all()
    assert len(cards) == 2000 and {c.number for c in cards} == {f"card-{i}" for i in range(2000)}
    assert counting.total == 1


def test_values_selected_without_their_row_stay_sealed(config: ks.EncryptionConfig, engine: Engine) -> None:
    with Session(engine) as session:
        session.add(User(name="a", api_key="k"))
        session.commit()
        sealed = session.scalars(select(User.api_key)).one()
    assert isinstance(sealed, ks.Sealed) and "k" not in repr(sealed).replace("bytes", "")
