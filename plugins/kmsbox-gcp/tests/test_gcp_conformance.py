"""The shared KEK provider conformance suite, run against Cloud KMS's fake through the official client:
the sync provider, and its native async form."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kmsbox_gcp.fake import FakeGcpKms
from kmsbox_gcp.provider import GcpKekProvider

from kmsbox.kek import KekProvider, open_kek
from kmsbox.testing.kek_conformance import KekProviderConformance


class TestGcpKekConformance(KekProviderConformance):
    """Every KEK provider test, with a gcp-kms:// key served by the fake."""

    @pytest.fixture
    def fake(self, fake_gcp_kms: FakeGcpKms) -> FakeGcpKms:
        return fake_gcp_kms

    @pytest.fixture
    def kek(self, fake_gcp_kms: FakeGcpKms) -> Iterator[KekProvider]:
        provider = open_kek(fake_gcp_kms.kek_uri)
        yield provider
        provider.close()

    @pytest.fixture
    def other_kek(self, fake_gcp_kms: FakeGcpKms, unique: Callable[[str], str]) -> Iterator[KekProvider]:
        provider = open_kek(fake_gcp_kms.create_key(unique("other")))
        yield provider
        provider.close()


class BlockingView:
    """The async form of a provider, called as a sync one: each call runs to its end on one event loop."""

    def __init__(self, provider: GcpKekProvider, runner: asyncio.Runner) -> None:
        self._provider = provider
        self._native = provider.as_async()
        self._runner = runner

    def __repr__(self) -> str:
        return repr(self._native)

    @property
    def uri(self) -> str:
        return self._native.uri

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._native, name)
        return lambda *args: self._runner.run(method(*args))

    def close(self) -> None:
        self._runner.run(self._native.aclose())
        self._provider.close()


class TestGcpAsyncKekConformance(KekProviderConformance):
    """The same suite through the native async form (as_async()), over grpc.aio."""

    @pytest.fixture
    def fake(self, fake_gcp_kms: FakeGcpKms) -> FakeGcpKms:
        return fake_gcp_kms

    @pytest.fixture
    def runner(self) -> Iterator[asyncio.Runner]:
        with asyncio.Runner() as runner:
            yield runner

    @pytest.fixture
    def kek(self, fake_gcp_kms: FakeGcpKms, runner: asyncio.Runner) -> Iterator[Any]:
        view = BlockingView(GcpKekProvider(fake_gcp_kms.kek_uri), runner)
        yield view
        view.close()

    @pytest.fixture
    def other_kek(
        self, fake_gcp_kms: FakeGcpKms, unique: Callable[[str], str], runner: asyncio.Runner
    ) -> Iterator[Any]:
        view = BlockingView(GcpKekProvider(fake_gcp_kms.create_key(unique("other"))), runner)
        yield view
        view.close()
