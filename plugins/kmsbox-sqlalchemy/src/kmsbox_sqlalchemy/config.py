"""The encryption settings of an application's encrypted columns, and the default one.

``configure(kek=..., engine=engine)`` at start-up makes the default that every
``Encrypted``/``BlindIndex`` column without an explicit ``config`` uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from kmsbox_orm.encryption import ColumnEncryption
from kmsbox_orm.index_keys import DEFAULT_GRACE, DEFAULT_REFRESH, IndexKeyring
from sqlalchemy import Engine, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from kmsbox import KekProvider, KeyCache
from kmsbox.errors import ConfigError
from kmsbox_sqlalchemy.schema import SqlIndexKeyStore, create_tables

__all__ = ["KEK_ENV", "EncryptionConfig", "configure", "get_default", "reset_default"]

#: The variable the default KEK list is read from when ``configure`` gets none (comma-separated URIs).
KEK_ENV = "KMSBOX_KEK"


class EncryptionConfig:
    """The KEK(s), data-key cache and index keys of a set of encrypted columns.

    ``kek``: a URI, a provider or a list (the first wraps new data keys, any unwraps).
    ``engine``: the database whose ``kmsbox_orm_index_keys`` table holds the index keys
    (a sync Engine or an AsyncEngine); needed only by blind indexes.
    ``index_refresh``/``index_grace``: how often index keys are reloaded, and how long a
    rotated index key waits before it indexes new values (seconds; grace > refresh).
    """

    def __init__(
        self,
        kek: str | KekProvider | Sequence[str | KekProvider],
        *,
        engine: Engine | AsyncEngine | None = None,
        scope: str | None = None,
        cache: KeyCache[Any] | None = None,
        index_refresh: float = DEFAULT_REFRESH,
        index_grace: float = DEFAULT_GRACE,
    ) -> None:
        self.encryption = ColumnEncryption(kek, scope=scope, cache=cache)
        self.keyring = IndexKeyring(self.encryption, refresh=index_refresh, grace=index_grace)
        self.engine: Engine | AsyncEngine | None = None
        if engine is not None:
            self.bind(engine)

    def __repr__(self) -> str:
        return f"EncryptionConfig({self.encryption!r})"

    def bind(self, engine: Engine | AsyncEngine) -> None:
        """Keep index keys in ``engine``'s database."""
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self.engine = engine
        self.keyring.bind(SqlIndexKeyStore(sync))

    def _sync_engine(self) -> Engine:
        if self.engine is None:
            raise ConfigError("no database bound: pass engine= to configure() or call bind(engine)")
        if isinstance(self.engine, AsyncEngine):
            raise ConfigError("this call is synchronous: use the *_async form with an AsyncEngine")
        return self.engine

    def create_tables(self) -> None:
        """Create the plugin's tables in the bound database (sync engines)."""
        create_tables(self._sync_engine())

    def ensure_index_keys(self, names: Iterable[str] | MetaData) -> list[str]:
        """Create the first index key of every blind index named (or found in a MetaData); return those created."""
        self._sync_engine()
        return self.keyring.ensure(_index_names(names))

    async def create_tables_async(self) -> None:
        """Create the plugin's tables (AsyncEngine)."""
        engine = self._async_engine()
        async with engine.begin() as conn:
            await conn.run_sync(create_tables)

    async def ensure_index_keys_async(self, names: Iterable[str] | MetaData) -> list[str]:
        """:meth:`ensure_index_keys` for an AsyncEngine."""
        engine = self._async_engine()
        wanted = _index_names(names)
        async with engine.connect() as conn:
            # The keyring opens its own connections; inside run_sync they go through the asyncio bridge.
            created: list[str] = await conn.run_sync(lambda _conn: self.keyring.ensure(wanted))
        return created

    async def reload_index_keys_async(self) -> None:
        """Reload the index keys now (AsyncEngine)."""
        engine = self._async_engine()
        async with engine.connect() as conn:
            await conn.run_sync(lambda _conn: self.keyring.reload())

    def _async_engine(self) -> AsyncEngine:
        if not isinstance(self.engine, AsyncEngine):
            raise ConfigError("bind an AsyncEngine for the *_async calls")
        return self.engine

    def close(self) -> None:
        """Close the KEK providers."""
        self.encryption.close()


def _index_names(names: Iterable[str] | MetaData) -> list[str]:
    if isinstance(names, MetaData):
        from kmsbox_sqlalchemy.types import blind_index_names

        return blind_index_names(names)
    if isinstance(names, str):
        return [names]
    return list(names)


_default: EncryptionConfig | None = None


def configure(
    kek: str | KekProvider | Sequence[str | KekProvider] | None = None,
    **options: Any,
) -> EncryptionConfig:
    """Make (and return) the default :class:`EncryptionConfig`; ``kek`` defaults to ``$KMSBOX_KEK``.

    Raises ConfigError when no KEK is given or set.
    """
    global _default
    if kek is None:
        kek = [k.strip() for k in os.environ.get(KEK_ENV, "").split(",") if k.strip()]
        if not kek:
            raise ConfigError(f"no KEK for encrypted columns: pass kek= or set {KEK_ENV}")
    _default = EncryptionConfig(kek, **options)
    return _default


def get_default() -> EncryptionConfig:
    """The configured default (ConfigError before :func:`configure`)."""
    if _default is None:
        raise ConfigError("encrypted columns are not configured: call kmsbox_sqlalchemy.configure() at start-up")
    return _default


def reset_default() -> None:
    """Forget the default (tests)."""
    global _default
    _default = None
