"""Async fixtures for tests of asyncio code that uses :mod:`kmsbox.aio`.

kmsbox's pytest plugin registers them:

- ``kmsbox_async_store``: an :class:`~kmsbox.aio.AsyncSecretStore` on a fresh SQLite file
  with a generated ``env://`` KEK, closed after the test.
- ``kmsbox_async_store_factory``: ``await factory(url=None, kek=None, **options)`` opens
  another store (any URL, KEK and :func:`kmsbox.aio.open_store` option); every store it
  opened is closed after the test.

They are plain async fixtures, so the async plugin that runs the test runs them on the
test's own event loop: anyio's plugin for a test marked ``@pytest.mark.anyio`` with the
``asyncio`` backend, or pytest-asyncio in ``asyncio_mode = "auto"``. Under
pytest-asyncio's strict mode, declare them again with ``@pytest_asyncio.fixture`` over
:class:`AsyncStoreFactory` (``docs/async.md`` shows the four lines).

A store opened here never reads the ``kmsbox.toml`` of the working folder (it gets an
empty settings file of its own), so a developer's settings or audit sinks stay out of
the tests. Pass ``config_file=`` to the factory to test a settings file.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

import kmsbox.aio
from kmsbox.aio import AsyncSecretStore
from kmsbox.kek import KekProvider

__all__ = ["AsyncStoreFactory", "kmsbox_async_store", "kmsbox_async_store_factory"]

KekSpec = str | KekProvider | Sequence[str | KekProvider]


class AsyncStoreFactory:
    """Opens async stores for one test and closes every one of them at the end.

    ``directory`` holds the SQLite files it makes (``kmsbox-store-1.db``, ...) and the empty
    settings file; ``kek`` is the KEK of a store opened without one::

        async with AsyncStoreFactory(tmp_path, "env://KMSBOX_TEST_KEK") as open_store:
            store = await open_store()                       # a fresh SQLite file
            other = await open_store("memory://", kek=fake_kek)
    """

    def __init__(self, directory: str | Path, kek: KekSpec) -> None:
        self._directory = Path(directory)
        self._kek = kek
        self._numbers = itertools.count(1)
        self._stack = AsyncExitStack()
        self._closed = False
        self.stores: list[AsyncSecretStore] = []  #: Every store opened so far, in order.

    def __repr__(self) -> str:
        return f"AsyncStoreFactory(directory={str(self._directory)!r}, stores={len(self.stores)})"

    def fresh_url(self) -> str:
        """The URL of a SQLite file no store has used yet, in this factory's directory."""
        return f"sqlite:///{self._directory.resolve() / f'kmsbox-store-{next(self._numbers)}.db'}"

    async def __call__(self, url: str | None = None, kek: KekSpec | None = None, **options: Any) -> AsyncSecretStore:
        """Open a store (a fresh SQLite file and the factory's KEK by default); ``options``
        are :func:`kmsbox.aio.open_store`'s keyword arguments. Raises as it does."""
        if self._closed:
            raise RuntimeError("this factory has closed its stores: the test is over")
        require_asyncio("kmsbox_async_store_factory")
        if "config_file" not in options:
            options["config_file"] = self._settings_file()
        store = await kmsbox.aio.open_store(
            self.fresh_url() if url is None else url, self._kek if kek is None else kek, **options
        )
        self._stack.push_async_callback(store.close)
        self.stores.append(store)
        return store

    def _settings_file(self) -> Path:
        path = self._directory / "kmsbox-empty.toml"
        if not path.exists():
            self._directory.mkdir(parents=True, exist_ok=True)
            path.write_text("# no settings: kmsbox.testing.aio keeps the working folder's kmsbox.toml out\n")
        return path

    async def aclose(self) -> None:
        """Close every store opened here, the last first; a failure to close one is raised
        after the others were closed."""
        self._closed = True
        await self._stack.aclose()

    async def __aenter__(self) -> AsyncStoreFactory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def require_asyncio(fixture: str) -> None:
    """RuntimeError, saying what to change, unless an asyncio event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # anyio also runs tests on trio; kmsbox.aio needs asyncio's loop and thread pool.
        raise RuntimeError(
            f"{fixture} needs an asyncio event loop: kmsbox.aio runs on asyncio only. With anyio's "
            "pytest plugin, define an anyio_backend fixture that returns 'asyncio'."
        ) from None


@pytest.fixture
async def kmsbox_async_store_factory(tmp_path: Path, kmsbox_local_kek: str) -> AsyncIterator[AsyncStoreFactory]:
    """Open async stores (``await factory(url=None, kek=None, **options)``); all are closed
    after the test. The default store is a fresh SQLite file under the test's ``tmp_path``
    and the default KEK is ``kmsbox_local_kek``."""
    require_asyncio("kmsbox_async_store_factory")
    async with AsyncStoreFactory(tmp_path / "kmsbox", kmsbox_local_kek) as factory:
        yield factory


@pytest.fixture
async def kmsbox_async_store(kmsbox_async_store_factory: AsyncStoreFactory) -> AsyncSecretStore:
    """An :class:`~kmsbox.aio.AsyncSecretStore` on a fresh SQLite file with a generated
    ``env://`` KEK, closed after the test."""
    return await kmsbox_async_store_factory()
