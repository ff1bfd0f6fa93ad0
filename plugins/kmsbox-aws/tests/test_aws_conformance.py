"""The kmsbox KEK conformance suite, run on AWS KMS providers against the fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kmsbox.kek import KekProvider, open_kek
from kmsbox.testing.kek_conformance import KekProviderConformance


class TestAwsKmsKeyArnConformance(KekProviderConformance):
    """kek: the fake's ready key by key ARN; other_kek: another key by alias."""

    @pytest.fixture
    def fake(self, aws_fake: Any) -> Any:
        return aws_fake

    @pytest.fixture
    def other_kek(self, alias_kek: KekProvider) -> KekProvider:
        return alias_kek


class TestAwsKmsAliasConformance(KekProviderConformance):
    """kek: a key by alias ARN; other_kek: the fake's ready key by key ARN."""

    @pytest.fixture
    def fake(self, aws_fake: Any) -> Any:
        return aws_fake

    @pytest.fixture
    def kek(self, alias_kek: KekProvider) -> KekProvider:
        return alias_kek

    @pytest.fixture
    def other_kek(self, aws_fake: Any) -> Iterator[KekProvider]:
        provider = open_kek(aws_fake.kek_uri)
        yield provider
        provider.close()
