"""The whole secret-store suite, once against each cloud provider through its fake.

The official client of each KMS (boto3, google-cloud-kms, hvac) talks to the fake
over a loopback socket; the store wraps its namespace keys and audit key there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import kmsbox
from kmsbox.store.service import SecretStore
from kmsbox.testing.store_conformance import SecretStoreConformance


class TestStoreOnAwsKmsFake(SecretStoreConformance):
    @pytest.fixture
    def store(self, fake_aws_kms: Any) -> Iterator[SecretStore]:
        with kmsbox.open_store("memory://", kek=fake_aws_kms.kek_uri) as store:
            yield store


class TestStoreOnGcpKmsFake(SecretStoreConformance):
    @pytest.fixture
    def store(self, fake_gcp_kms: Any) -> Iterator[SecretStore]:
        with kmsbox.open_store("memory://", kek=fake_gcp_kms.kek_uri) as store:
            yield store


class TestStoreOnVaultFake(SecretStoreConformance):
    @pytest.fixture
    def store(self, fake_vault: Any) -> Iterator[SecretStore]:
        with kmsbox.open_store("memory://", kek=fake_vault.kek_uri) as store:
            yield store


class TestStoreWithLocalAndVaultEscrow(SecretStoreConformance):
    """A primary local KEK with every namespace key also wrapped by Vault."""

    @pytest.fixture
    def store(self, kmsbox_local_kek: str, fake_vault: Any) -> Iterator[SecretStore]:
        with kmsbox.open_store("memory://", kek=[kmsbox_local_kek, fake_vault.kek_uri]) as store:
            yield store


def test_reads_cost_one_kms_call_per_namespace_key(fake_gcp_kms: Any, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with kmsbox.open_store(url, kek=fake_gcp_kms.kek_uri) as store:
        for ns in range(3):
            for i in range(20):
                store.put(f"s{i}", f"v{i}", namespace=f"tenant-{ns}")
    fake_gcp_kms.faults.reset_counts()
    with kmsbox.open_store(url, kek=fake_gcp_kms.kek_uri) as store:
        for ns in range(3):
            for i in range(20):
                assert store.get(f"s{i}", namespace=f"tenant-{ns}").value == f"v{i}"
    # one Decrypt for the audit key at open, one per namespace key
    assert fake_gcp_kms.faults.total_calls("Decrypt") == 4


def test_kms_outage_during_first_write_writes_nothing(fake_vault: Any, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with kmsbox.open_store(url, kek=fake_vault.kek_uri) as store:
        fake_vault.faults.configure(rate=1.0, kind="unavailable")
        try:
            with pytest.raises(kmsbox.ProviderError) as info:
                store.put("db/password", "hunter2", namespace="fresh-namespace")
        finally:
            fake_vault.faults.clear()
        assert info.value.transient is True
        assert store.list(namespace="fresh-namespace").items == []
        assert "fresh-namespace" not in store.namespaces()
        store.put("db/password", "hunter2", namespace="fresh-namespace")
        assert store.get("db/password", namespace="fresh-namespace").value == "hunter2"
