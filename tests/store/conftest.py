"""Shared fixtures of the store tests: a local KEK in the environment and SQLite files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kmsbox
from kmsbox.store.service import SecretStore

KEK_VAR = "KMSBOX_MASTER_KEY"
KEK_URI = f"env://{KEK_VAR}"


@pytest.fixture
def kek_uri(monkeypatch: pytest.MonkeyPatch) -> str:
    """``env://KMSBOX_MASTER_KEY`` holding a key generated for this test."""
    monkeypatch.setenv(KEK_VAR, os.urandom(32).hex())
    return KEK_URI


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where this test's SQLite store lives."""
    return tmp_path / "secrets.db"


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    """``sqlite:////abs/path/secrets.db`` for this test."""
    return f"sqlite:///{db_path}"


@pytest.fixture
def open_test_store(kek_uri: str, sqlite_url: str) -> Iterator[Callable[..., SecretStore]]:
    """Open stores (SQLite by default) that are closed when the test ends."""
    opened: list[SecretStore] = []

    def opener(url: str | None = None, kek: Any = None, **kwargs: Any) -> SecretStore:
        store = kmsbox.open_store(url or sqlite_url, kek=kek or kek_uri, **kwargs)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()
