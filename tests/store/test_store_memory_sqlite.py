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


def test_put_of_a_name_another_store_created_adds_a_version(kek_uri: str, tmp_path: Path) -> None:
    # This store has not seen the name, so it tries the one-statement create first.
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with kmsbox.open_store(url, kek=kek_uri) as mine, kmsbox.open_store(url, kek=kek_uri) as other:
        mine.put("warm", "w", namespace="ns")
        other.put("s", "from the other", namespace="ns", description="theirs")
        info = mine.put("s", "from mine", namespace="ns")
        assert (info.version, info.description) == (2, "theirs")
        assert mine.get("s", namespace="ns").value == "from mine"
        assert other.get("s", namespace="ns", version=1).value == "from the other"
        assert mine.verify_audit().ok


def test_put_after_another_store_rotated_the_key_uses_the_new_key(kek_uri: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with kmsbox.open_store(url, kek=kek_uri) as mine, kmsbox.open_store(url, kek=kek_uri) as other:
        mine.put("before", "v", namespace="ns")  # this store now guesses key version 1
        other.rotate_namespace_key("ns")
        mine.put("after", "v2", namespace="ns")
        versions = {v.version: v.namespace_key_version for v in mine.history("after", namespace="ns")}
        assert versions == {1: 2}
        assert other.get("after", namespace="ns").value == "v2"
        created = [e for e in mine.audit_events()[0] if e.name == "after" and e.action == "create"]
        assert [(e.action, e.detail) for e in created] == [("create", {"namespace_key_version": 2})]
