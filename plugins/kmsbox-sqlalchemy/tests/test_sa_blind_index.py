"""Blind indexes: lookups, normalisation, index-key rotation with a re-index, and index keys a database attacker cannot swap."""

from __future__ import annotations

import kmsbox_sqlalchemy as ks
import pytest
from sa_models import Base, User
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

import kmsbox


@pytest.fixture
def config(kek: str, engine: Engine) -> ks.EncryptionConfig:
    config = ks.configure(kek, engine=engine, index_grace=0)
    Base.metadata.create_all(engine)
    config.create_tables()
    assert config.ensure_index_keys(Base.metadata) == ["users.email"]
    assert config.ensure_index_keys(Base.metadata) == []
    return config


def _add(engine: Engine, *emails: str | None) -> None:
    with Session(engine) as session:
        session.add_all(User(name=str(e), email=e) for e in emails)
        session.commit()


def _find(engine: Engine, email: str) -> list[str | None]:
    with Session(engine) as session:
        return sorted(
            u.email for u in session.scalars(select(User).where(User.email_index == ks.blind(email))) if u.email
        )


def test_lookup_by_blind_index_with_normalisation(config: ks.EncryptionConfig, engine: Engine) -> None:
    _add(engine, "Alice@Example.com", "bob@example.com", None)
    assert _find(engine, "  alice@example.COM") == ["Alice@Example.com"]
    assert _find(engine, "carol@example.com") == []
    with Session(engine) as session:
        found = session.scalars(
            select(User).where(User.email_index.in_([ks.blind("bob@example.com"), ks.blind("ALICE@example.com")]))
        ).all()
        assert sorted(u.name for u in found) == ["Alice@Example.com", "bob@example.com"]
        assert session.scalars(select(User).where(User.email_index.is_(None))).one().email is None
        user = session.scalars(select(User).where(User.email_index == ks.blind("bob@example.com"))).one()
        user.email = "robert@example.com"
        session.commit()
    assert _find(engine, "bob@example.com") == []
    assert _find(engine, "Robert@example.com") == ["robert@example.com"]
    # The index column holds a 2-byte version and 16 bytes of HMAC, never the value.
    stored = [bytes(r[0]) for r in _raw_index(engine)]
    assert {len(s) for s in stored} == {18} and all(b"example" not in s for s in stored)
    with pytest.raises(ks.WrongValueType):
        select(User).where(User.email_index > ks.blind("x"))


def _raw_index(engine: Engine) -> list[tuple[bytes]]:
    with engine.connect() as conn:
        return [(r[0],) for r in conn.execute(text("SELECT email_index FROM users WHERE email_index IS NOT NULL"))]


def test_index_key_rotation_keeps_lookups_correct_while_reindexing(config: ks.EncryptionConfig, engine: Engine) -> None:
    emails = [f"user{i}@example.com" for i in range(300)]
    _add(engine, *emails)
    assert config.keyring.rotate("users.email") == 2
    _add(engine, "new@example.com")  # indexed with v2 (grace 0)
    # Half re-indexed: v1 and v2 rows side by side; every lookup still finds its row.
    report = ks.rewrite_column(engine, User.email, batch_size=50, max_batches=3)
    assert report.reasons == {"index": 150} and report.written == 150 and not report.finished
    assert ks.scan_column(engine, User.email).index_versions == {1: 150, 2: 151}
    for email in (emails[0], emails[200], "new@example.com"):
        assert _find(engine, email) == [email]
    report = ks.rewrite_column(engine, User.email, batch_size=50)
    assert report.resumed and report.finished and report.reasons == {"index": 300}
    assert ks.scan_column(engine, User.email).index_versions == {2: 301}
    config.keyring.retire("users.email", 1)
    assert [k["version"] for k in config.keyring.status() if not k["retired"]] == [2]
    assert all(_find(engine, e) == [e] for e in emails[::37])


def test_a_new_index_version_waits_out_its_grace_before_indexing(kek: str, engine: Engine) -> None:
    config = ks.configure(kek, engine=engine, index_grace=3600)
    Base.metadata.create_all(engine)
    config.create_tables()
    config.ensure_index_keys(["users.email"])
    config.keyring.rotate("users.email")
    _add(engine, "a@example.com")
    # Still written with v1, but lookups already match v2 too (so other processes may switch early).
    assert ks.scan_column(engine, User.email).index_versions == {1: 1}
    assert [k["writing"] for k in config.keyring.status()] == [False, True]
    assert _find(engine, "a@example.com") == ["a@example.com"]


def test_a_swapped_or_altered_index_key_row_fails_to_load(config: ks.EncryptionConfig, engine: Engine) -> None:
    config.keyring.rotate("users.email")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE kmsbox_orm_index_keys SET sealed_key = "
                "(SELECT sealed_key FROM kmsbox_orm_index_keys WHERE version = 1) WHERE version = 2"
            )
        )
    with pytest.raises(kmsbox.IntegrityError):
        config.keyring.reload()
    with pytest.raises(kmsbox.IntegrityError):
        config.keyring.rewrap()


def test_a_later_activation_or_unretire_is_detected(config: ks.EncryptionConfig, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE kmsbox_orm_index_keys SET active_from = active_from + 100"))
    with pytest.raises(kmsbox.IntegrityError):
        config.keyring.reload()


def test_lookups_need_the_index_key(kek: str, engine: Engine) -> None:
    ks.configure(kek, engine=engine)
    Base.metadata.create_all(engine)
    ks.get_default().create_tables()
    with Session(engine) as session:
        session.add(User(name="x", email="x@example.com"))
        with pytest.raises(kmsbox.ConfigError):
            session.commit()
