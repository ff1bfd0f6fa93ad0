"""Fixtures of the key-lifecycle tests: file:// and env:// KEKs and real SQLite files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lifecycle_helpers import ENV_KEK_VAR, Keyring

import kmsbox
from kmsbox.providers.local import generate_keyring
from kmsbox.store.service import SecretStore


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    """A fresh ``file://`` keyring with one version, ``v1``."""
    path = tmp_path / "keys" / "keyring.json"
    return Keyring(path, generate_keyring(path))


@pytest.fixture
def second_keyring(tmp_path: Path) -> Keyring:
    """Another, unrelated ``file://`` keyring (an escrow or migration target)."""
    path = tmp_path / "keys" / "other.json"
    return Keyring(path, generate_keyring(path))


@pytest.fixture
def env_kek(monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``env://`` KEK whose key is generated for this test."""
    monkeypatch.setenv(ENV_KEK_VAR, os.urandom(32).hex())
    return f"env://{ENV_KEK_VAR}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where this test's SQLite store lives."""
    return tmp_path / "secrets.db"


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    """``sqlite:////abs/path/secrets.db``."""
    return f"sqlite:///{db_path}"


@pytest.fixture
def open_store(sqlite_url: str, keyring: Keyring) -> Iterator[Callable[..., SecretStore]]:
    """Open stores on this test's SQLite file (default KEK: the ``keyring``); all closed at the end."""
    opened: list[SecretStore] = []

    def opener(kek: Any = None, url: str | None = None, **kwargs: Any) -> SecretStore:
        store = kmsbox.open_store(url or sqlite_url, kek=kek if kek is not None else keyring.uri, **kwargs)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()
