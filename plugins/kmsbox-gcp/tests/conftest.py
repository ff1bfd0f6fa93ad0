"""Fixtures of kmsbox-gcp's tests: the session's fake Cloud KMS, the official client, fresh keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud.kms_v1 import KeyManagementServiceClient
from kmsbox_gcp.client import ClientSettings, make_client
from kmsbox_gcp.fake import FakeGcpKms
from kmsbox_gcp.provider import GcpKekProvider


@pytest.fixture
def fake(fake_gcp_kms: FakeGcpKms) -> FakeGcpKms:
    """The session's fake (faults cleared, its endpoint exported, short retry budget)."""
    return fake_gcp_kms


@pytest.fixture
def kms_client(fake: FakeGcpKms) -> Iterator[KeyManagementServiceClient]:
    """The official client, connected to the fake over an insecure loopback channel."""
    client = make_client(ClientSettings.from_env())
    yield client
    client.transport.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique resource ids, so tests sharing the session's fake never collide."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fresh_key_uri(fake: FakeGcpKms, unique: Callable[[str], str]) -> str:
    """A new crypto key (version 1 primary) for tests that rotate, disable or destroy versions."""
    return fake.create_key(unique("key"))


@pytest.fixture
def open_provider(fake: FakeGcpKms) -> Iterator[Callable[[str], GcpKekProvider]]:
    """Open providers with the current environment; they are closed after the test."""
    opened: list[GcpKekProvider] = []

    def open_(uri: str) -> GcpKekProvider:
        provider = GcpKekProvider(uri)
        opened.append(provider)
        return provider

    yield open_
    for provider in opened:
        provider.close()


def version_state(client: KeyManagementServiceClient, name: str) -> Any:
    """The state of a crypto key version, read through the official client."""
    return client.get_crypto_key_version(name=name).state
