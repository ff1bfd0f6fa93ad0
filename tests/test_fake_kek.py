"""The in-process fake KEK that kmsbox.testing ships for users' unit tests."""

from __future__ import annotations

import os

import pytest

import kmsbox
from kmsbox.testing.fake_kek import FakeKek
from kmsbox.testing.kek_conformance import KekProviderConformance


class TestFakeKekConformance(KekProviderConformance):
    @pytest.fixture
    def kek(self, kmsbox_fake_kek: FakeKek) -> FakeKek:
        return kmsbox_fake_kek

    @pytest.fixture
    def other_kek(self) -> FakeKek:
        return FakeKek()

    @pytest.fixture
    def fake(self, kmsbox_fake_kek: FakeKek) -> FakeKek:
        return kmsbox_fake_kek


def test_a_store_survives_rotation_and_reports_a_destroyed_version(kmsbox_fake_kek: FakeKek) -> None:
    with kmsbox.open_store("memory://", kek=kmsbox_fake_kek) as store:
        store.put("db/password", "hunter2", namespace="app")
        kmsbox_fake_kek.rotate()
        assert store.rewrap_namespace_keys().processed == 2  # app's key and the audit key
        kmsbox_fake_kek.destroy_version("v1")
        store.key_cache.clear()
        assert store.get("db/password", namespace="app").value == "hunter2"
        assert store.diagnose().ok


def test_an_outage_at_open_fails_closed_as_a_provider_error(kmsbox_fake_kek: FakeKek) -> None:
    # A KMS that cannot be reached is an outage, not a configuration mistake.
    kmsbox_fake_kek.faults.configure(rate=1.0, kind="unavailable")
    with pytest.raises(kmsbox.ProviderError) as caught:
        kmsbox.open_store("memory://", kek=kmsbox_fake_kek)
    assert caught.value.transient


def test_destroying_the_primary_is_refused_and_nothing_shows_key_bytes() -> None:
    kek = FakeKek("named", seed=1)
    key = os.urandom(32)
    kek.wrap(key, {})
    with pytest.raises(ValueError):
        kek.destroy_version("v1")
    assert kek.uri == "fake-kek://named"
    assert key.hex() not in repr(kek.describe()) + repr(kek)
