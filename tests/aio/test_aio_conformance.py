"""The store conformance suite through the async store: the same semantics, errors and
audit events as the sync one, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aio_helpers import LoopThread, SyncView

import kmsbox.aio
from kmsbox.testing.store_conformance import SecretStoreConformance


def _opened(loop: LoopThread, url: str, kek: str) -> Iterator[Any]:
    store = loop.run(kmsbox.aio.open_store(url, kek=kek))
    try:
        yield SyncView(store, loop)
    finally:
        loop.run(store.close())


class TestAsyncMemoryStore(SecretStoreConformance):
    @pytest.fixture
    def store(self, kek_uri: str, loop_thread: LoopThread) -> Iterator[Any]:
        yield from _opened(loop_thread, "memory://", kek_uri)


class TestAsyncSqliteStore(SecretStoreConformance):
    @pytest.fixture
    def store(self, kek_uri: str, loop_thread: LoopThread, tmp_path: Path) -> Iterator[Any]:
        yield from _opened(loop_thread, f"sqlite:///{tmp_path / 'aio.db'}", kek_uri)


@pytest.mark.postgres
class TestAsyncPostgresStore(SecretStoreConformance):
    @pytest.fixture
    def store(self, kek_uri: str, loop_thread: LoopThread, postgres_url: str) -> Iterator[Any]:
        yield from _opened(loop_thread, postgres_url, kek_uri)
