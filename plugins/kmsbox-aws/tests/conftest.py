"""Fixtures for the kmsbox-aws tests: providers and raw boto3 clients on the session's fake AWS KMS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from kmsbox_aws import AwsKmsKekProvider

from kmsbox.kek import open_kek


@pytest.fixture
def aws_fake(fake_aws_kms: Any) -> Any:
    """The session's fake AWS KMS (faults cleared, its env exported, short retry deadline)."""
    return fake_aws_kms


@pytest.fixture
def kek(aws_fake: Any) -> Iterator[AwsKmsKekProvider]:
    """A provider on the fake's ready key (key ARN URI)."""
    provider = open_kek(aws_fake.kek_uri)
    assert isinstance(provider, AwsKmsKekProvider)
    yield provider
    provider.close()


@pytest.fixture
def alias_uri(aws_fake: Any) -> str:
    """The alias URI of a new key, unique to this test."""
    return str(aws_fake.create_key(f"kmsbox-test-{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def alias_kek(alias_uri: str) -> Iterator[AwsKmsKekProvider]:
    """A provider on a new key, named by its alias ARN."""
    provider = open_kek(alias_uri)
    assert isinstance(provider, AwsKmsKekProvider)
    yield provider
    provider.close()


@pytest.fixture
def own_kek(alias_kek: AwsKmsKekProvider) -> Iterator[AwsKmsKekProvider]:
    """A provider on a new key, named by its key ARN (safe to disable or delete)."""
    provider = open_kek("aws-kms://" + alias_kek.primary_version())
    assert isinstance(provider, AwsKmsKekProvider)
    yield provider
    provider.close()


@pytest.fixture
def kms(aws_fake: Any) -> Any:
    """The official boto3 KMS client on the fake, with botocore's own retries off."""
    client = boto3.session.Session().client(
        "kms", endpoint_url=aws_fake.endpoint, config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )
    yield client
    client.close()
