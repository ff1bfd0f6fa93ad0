"""The shared KEK-provider conformance suite, against the fake, for both ways of binding a context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kmsbox.kek import KekProvider
from kmsbox.testing.kek_conformance import KekProviderConformance


class TestVaultDerivedKey(KekProviderConformance):
    """A derived transit key: the context goes as Vault's ``context``; rewrap stays inside Vault."""

    @pytest.fixture
    def kek(self, open_vault_key: Callable[..., KekProvider]) -> KekProvider:
        return open_vault_key(derived=True)

    @pytest.fixture
    def other_kek(self, open_vault_key: Callable[..., KekProvider]) -> KekProvider:
        return open_vault_key(derived=True)

    @pytest.fixture
    def fake(self, fake_vault: Any) -> Any:
        return fake_vault


class TestVaultAssociatedDataKey(KekProviderConformance):
    """A plain transit key: the context goes as ``associated_data``."""

    @pytest.fixture
    def kek(self, open_vault_key: Callable[..., KekProvider]) -> KekProvider:
        return open_vault_key(derived=False)

    @pytest.fixture
    def other_kek(self, open_vault_key: Callable[..., KekProvider]) -> KekProvider:
        return open_vault_key(derived=False)

    @pytest.fixture
    def fake(self, fake_vault: Any) -> Any:
        return fake_vault


class TestVaultReadyKey(KekProviderConformance):
    """The fake's ready key, opened straight from ``kek_uri`` and ``env()`` as a user would."""

    @pytest.fixture
    def kek(self, open_vault_key: Callable[..., KekProvider], fake_vault: Any) -> KekProvider:
        return open_vault_key(uri=fake_vault.kek_uri)

    @pytest.fixture
    def other_kek(self, open_vault_key: Callable[..., KekProvider]) -> KekProvider:
        return open_vault_key(derived=True)

    @pytest.fixture
    def fake(self, fake_vault: Any) -> Any:
        return fake_vault
