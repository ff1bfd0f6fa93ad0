"""The two small tables the plugin keeps in the user's database, and the index-key store over them.

- ``kmsbox_orm_index_keys``: one row per index-key version (see kmsbox_orm.index_keys).
- ``kmsbox_orm_checkpoints``: one row per unfinished rewrite job (its sealed checkpoint).

Create them with :func:`create_tables` (or ``kmsbox_sqlalchemy.metadata`` in Alembic).
"""

from __future__ import annotations

from kmsbox_orm.index_keys import IndexKeyRecord
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

__all__ = ["SqlIndexKeyStore", "checkpoints", "create_tables", "index_keys", "metadata"]

#: The plugin's own tables (add ``kmsbox_sqlalchemy.metadata`` to Alembic's target metadata).
metadata = MetaData()

index_keys = Table(
    "kmsbox_orm_index_keys",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("active_from", BigInteger, nullable=False),
    Column("retired", Boolean, nullable=False),
    Column("sealed_key", LargeBinary, nullable=False),
)

checkpoints = Table(
    "kmsbox_orm_checkpoints",
    metadata,
    Column("job", String(400), primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
)


def create_tables(bind: Engine | Connection) -> None:
    """Create the plugin's tables where they are missing."""
    metadata.create_all(bind, checkfirst=True)


class SqlIndexKeyStore:
    """Index-key rows in ``kmsbox_orm_index_keys``, each call on its own connection and transaction.

    ``engine`` is a sync Engine (for an AsyncEngine pass its ``sync_engine``: calls then run
    inside SQLAlchemy's asyncio bridge, as flushes and query executions do).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"SqlIndexKeyStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def load_index_keys(self) -> list[IndexKeyRecord]:
        """Every row."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(index_keys)).all()
        return [
            IndexKeyRecord(r.name, int(r.version), int(r.active_from), bool(r.retired), bytes(r.sealed_key))
            for r in rows
        ]

    def add_index_key(self, record: IndexKeyRecord) -> bool:
        """Insert and commit; False when the (name, version) row exists."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(index_keys).values(
                        name=record.name,
                        version=record.version,
                        active_from=record.active_from,
                        retired=record.retired,
                        sealed_key=record.sealed_key,
                    )
                )
        except sa_exc.IntegrityError:
            return False
        return True

    def replace_index_key(self, old: IndexKeyRecord, new: IndexKeyRecord) -> bool:
        """Compare-and-set on the sealed key; commit."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(index_keys)
                .where(
                    and_(
                        index_keys.c.name == old.name,
                        index_keys.c.version == old.version,
                        index_keys.c.sealed_key == old.sealed_key,
                    )
                )
                .values(active_from=new.active_from, retired=new.retired, sealed_key=new.sealed_key)
            )
        return result.rowcount == 1
