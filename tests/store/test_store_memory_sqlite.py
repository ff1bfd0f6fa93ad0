"""The store conformance suite against ``memory://`` and an SQLite file, with an ``env://`` KEK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import kmsbox
from kmsbox.store.service import SecretStore
from kmsbox.testing.store_conformance import SecretStoreConformance


class TestMemoryStore(SecretStoreConformance):
    @pytest.fixture
    def store(self, kek_uri: str) -> Iterator[SecretStore]:
        with kmsbox.open_store("memory://", kek=kek_uri) as store:
            yield store


class TestSqliteStore(SecretStoreConformance):
    @pytest.fixture
    def store(self, kek_uri: str, tmp_path: Path) -> Iterator[SecretStore]:
        with kmsbox.open_store(f"sqlite:///{tmp_path / 'conformance.db'}", kek=kek_uri) as store:
            yield store


class TestSqliteStoreReopened(SecretStoreConformance):
    """Each test's store has been created, closed and opened again (keys come from the file)."""

    @pytest.fixture
    def store(self, kek_uri: str, tmp_path: Path) -> Iterator[SecretStore]:
        url = f"sqlite:///{tmp_path / 'reopened.db'}"
        with kmsbox.open_store(url, kek=kek_uri) as first:
            first.put("warm-up", "v", namespace="warm-up")
        with kmsbox.open_store(url, kek=kek_uri) as store:
            yield store
