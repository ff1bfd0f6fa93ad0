"""Fixtures for the kmsbox-vault tests: the session fake (via kmsbox's ``fake_vault``), hvac clients, fresh keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import hvac
import pytest

from kmsbox.kek import KekProvider, open_kek


@pytest.fixture
def vault_client(fake_vault: Any) -> Iterator[hvac.Client]:
    """An hvac client on the fake with the root token."""
    client = hvac.Client(url=fake_vault.address, token=fake_vault.root_token, timeout=5)
    yield client
    client.adapter.close()


@pytest.fixture
def key_name() -> str:
    """A fresh key name, so tests never share key state."""
    return f"k-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def open_vault_key(fake_vault: Any) -> Iterator[Callable[..., KekProvider]]:
    """Create a fresh key in the fake and open a provider on it; providers are closed afterwards."""
    opened: list[KekProvider] = []

    def make(*, derived: bool = True, uri: str | None = None) -> KekProvider:
        kek = open_kek(uri or fake_vault.create_key(f"k-{uuid.uuid4().hex[:12]}", derived=derived))
        opened.append(kek)
        return kek

    yield make
    for kek in opened:
        kek.close()
