"""AsyncSession: aiosqlite on SQLite and psycopg 3's async driver on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import kmsbox_sqlalchemy as ks
import pytest
from sa_helpers import Database
from sa_models import Base, Card, User
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

import kmsbox


def test_async_session_round_trip_lookup_and_binding(kek: str, database: Database) -> None:
    async def scenario() -> None:
        engine = database.async_engine()
        config = ks.configure(kek, engine=engine, index_grace=0)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await config.create_tables_async()
        assert await config.ensure_index_keys_async(Base.metadata) == ["users.email"]
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        card_id = uuid.uuid4()
        async with sessions() as session:
            session.add_all(
                [User(name="a", api_key="k-a", email="A@x.io", prefs={"n": 1}), User(name="b", api_key="k-b")]
            )
            session.add(Card(id=card_id, number="4111"))
            await session.commit()
        async with sessions() as session:
            users = (await session.scalars(select(User).order_by(User.id))).all()
            assert [(u.api_key, u.email, u.prefs) for u in users] == [("k-a", "A@x.io", {"n": 1}), ("k-b", None, None)]
            found = (await session.scalars(select(User).where(User.email_index == ks.blind("a@x.io")))).one()
            assert found.name == "a"
            found.api_key = "k-a2"
            await session.commit()
            await session.refresh(found)
            assert found.api_key == "k-a2"
            assert (await session.get(Card, card_id)).number == "4111"  # type: ignore[union-attr]
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE users SET api_key = (SELECT api_key FROM users WHERE name = 'a') WHERE name = 'b'")
            )
        async with sessions() as session:
            with pytest.raises(kmsbox.IntegrityError):
                (await session.scalars(select(User).where(User.name == "b"))).one()
            user = User(name="big", api_key="x" * 5000)
            session.add(user)
            with pytest.raises(ks.ValueTooLarge):
                await session.commit()
        # A new index version made by another process is picked up inside the asyncio bridge.
        await config.reload_index_keys_async()
        async with engine.connect() as conn:
            await conn.run_sync(lambda _c: config.keyring.rotate("users.email"))
        async with sessions() as session:
            session.add(User(name="c", email="c@x.io"))
            await session.commit()
            assert (await session.scalars(select(User).where(User.email_index == ks.blind("c@x.io")))).one().name == "c"
            assert (await session.scalars(select(User).where(User.email_index == ks.blind("a@x.io")))).one().name == "a"
        await engine.dispose()

    asyncio.run(scenario())
