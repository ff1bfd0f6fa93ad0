"""Fixtures of kmsbox-gcp's tests: the session's fake Cloud KMS, the official client, fresh keys."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kmsbox_gcp.aio
import pytest
from google.cloud.kms_v1 import KeyManagementServiceAsyncClient, KeyManagementServiceClient
from kmsbox_gcp.client import ClientSettings, make_async_client, make_client
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


@pytest.fixture
def made_clients(monkeypatch: pytest.MonkeyPatch) -> list[KeyManagementServiceAsyncClient]:
    """Every async client the provider makes, held here: a channel then closes only when it is closed,
    not when the provider lets go of it."""
    made: list[KeyManagementServiceAsyncClient] = []

    def make_and_hold(*args: Any) -> KeyManagementServiceAsyncClient:
        made.append(make_async_client(*args))
        return made[-1]

    monkeypatch.setattr(kmsbox_gcp.aio, "make_async_client", make_and_hold)
    return made


@pytest.fixture
def eventually() -> Callable[[Callable[[], bool]], bool]:
    """Poll a check until it holds (True) or five seconds pass (False): a closed connection ends a moment later."""

    def poll(check: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + 5.0
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    return poll
