"""The shared KEK provider conformance suite, run against Cloud KMS's fake through the official client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kmsbox_gcp.fake import FakeGcpKms

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
