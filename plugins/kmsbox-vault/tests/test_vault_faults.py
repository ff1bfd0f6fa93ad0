"""Fault injection through the provider: each kind, latency, and time-bounded retries."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kmsbox_vault.fake import start_vault_fake

from kmsbox.errors import ProviderError
from kmsbox.kek import KekProvider, open_kek

CONTEXT = {"kmsbox:namespace": "faults"}


@pytest.fixture
def kek(open_vault_key: Callable[..., KekProvider]) -> KekProvider:
    """A fresh key whose binding is already known, so each test counts only the calls it causes."""
    provider = open_vault_key()
    provider.primary_version()
    return provider


@pytest.mark.parametrize("kind", ["throttle", "unavailable"])
def test_transient_faults_are_retried(fake_vault: Any, kek: KekProvider, kind: str) -> None:
    fake_vault.faults.reset_counts()
    fake_vault.faults.configure(rate=1.0, kind=kind, count=2)
    wrapped = kek.wrap(os.urandom(32), CONTEXT)
    assert wrapped.key_version == "v1"
    assert fake_vault.faults.calls["encrypt"] == 3


@pytest.mark.parametrize(("kind", "code"), [("throttle", "throttled"), ("unavailable", "unavailable")])
def test_persistent_transient_faults_give_up_within_the_deadline(
    fake_vault: Any, kek: KekProvider, kind: str, code: str
) -> None:
    fake_vault.faults.configure(rate=1.0, kind=kind)
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    elapsed = time.monotonic() - start
    assert info.value.transient is True and info.value.code == code
    assert elapsed < 3 + 1  # KMSBOX_KMS_DEADLINE=3 from the fixture, plus slack


def test_denied_is_permanent_and_not_retried(fake_vault: Any, kek: KekProvider) -> None:
    fake_vault.faults.reset_counts()
    fake_vault.faults.configure(rate=1.0, kind="denied")
    with pytest.raises(ProviderError) as info:
        kek.wrap_many([(os.urandom(32), CONTEXT)])
    assert info.value.transient is False and info.value.code == "permission_denied"
    assert fake_vault.faults.total_calls() == 1


def test_timeout_is_retried_then_succeeds(fake_vault: Any, kek: KekProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.3")  # the fake then sleeps 1.3 s on a timeout fault
    fast = open_kek(kek.uri)
    key = os.urandom(32)
    wrapped = fast.wrap(key, CONTEXT)
    fake_vault.faults.configure(rate=1.0, kind="timeout", count=1)
    start = time.monotonic()
    assert fast.unwrap(wrapped, CONTEXT) == key
    assert 0.3 <= time.monotonic() - start < 2.5
    fast.close()


def test_persistent_timeouts_raise_transient_within_the_deadline(
    fake_vault: Any, kek: KekProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.2")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    fast = open_kek(kek.uri)
    fast.primary_version()
    fake_vault.faults.configure(rate=1.0, kind="timeout")
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        fast.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is True and info.value.code == "timeout"
    assert time.monotonic() - start < 1 + 0.2 + 1  # deadline + one request time-out + slack
    fast.close()


def test_latency_is_added_to_every_call(fake_vault: Any, kek: KekProvider) -> None:
    fake_vault.faults.configure(latency=0.2)
    start = time.monotonic()
    kek.wrap(os.urandom(32), CONTEXT)
    assert time.monotonic() - start >= 0.2


def test_unreachable_vault_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = start_vault_fake()
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    kek = open_kek(fake.kek_uri)
    fake.stop()
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        kek.wrap(os.urandom(32), CONTEXT)
    assert info.value.transient is True and info.value.code == "connection"
    assert time.monotonic() - start < 3
    kek.close()


def test_factory_options_configure_faults() -> None:
    fake = start_vault_fake(latency=0.0, fault_rate=1.0, fault_kind="throttle", fault_count=1)
    try:
        assert fake.faults.rate == 1.0 and fake.faults.kind == "throttle" and fake.faults.remaining == 1
    finally:
        fake.stop()


# -- faults aimed at one operation, and what the provider makes of each kind ----------------------


@pytest.mark.parametrize(
    ("kind", "transient", "code"),
    [
        ("throttle", True, "throttled"),
        ("unavailable", True, "unavailable"),
        ("timeout", True, "timeout"),
        ("reset", True, "connection"),
        ("denied", False, "permission_denied"),
        ("malformed", False, "bad_response"),
    ],
)
def test_each_fault_on_decrypt_only_becomes_the_right_kmsbox_error(
    fake_vault: Any, kek: KekProvider, monkeypatch: pytest.MonkeyPatch, kind: str, transient: bool, code: str
) -> None:
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "0.3")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    fast = open_kek(kek.uri)
    fast.primary_version()
    key = os.urandom(32)
    fake_vault.faults.reset_counts()
    fake_vault.faults.configure(rate=1.0, kind=kind, operations={"decrypt"})
    wrapped = fast.wrap(key, CONTEXT)  # encrypt is spared
    with pytest.raises(ProviderError) as info:
        fast.unwrap(wrapped, CONTEXT)
    assert (info.value.transient, info.value.code) == (transient, code)
    assert fake_vault.faults.calls["encrypt"] == 1
    assert (fake_vault.faults.calls["decrypt"] > 1) is transient  # only transient faults are retried
    fake_vault.faults.clear()
    assert fast.unwrap(wrapped, CONTEXT) == key
    fast.close()


def test_a_reset_fault_resets_the_tcp_connection(fake_vault: Any) -> None:
    fake_vault.faults.configure(rate=1.0, kind="reset", operations={"keys.read"}, count=1)
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        requests.get(
            f"{fake_vault.address}/v1/transit/keys/kmsbox-kek",
            headers={"X-Vault-Token": fake_vault.root_token},
            timeout=5,
        )
    assert "Connection reset by peer" in str(info.value)


def test_a_malformed_fault_cuts_the_real_reply_short(fake_vault: Any) -> None:
    fake_vault.faults.configure(rate=1.0, kind="malformed", operations={"keys.read"}, count=1)
    raw = requests.get(
        f"{fake_vault.address}/v1/transit/keys/kmsbox-kek", headers={"X-Vault-Token": fake_vault.root_token}, timeout=5
    )
    assert raw.status_code == 200
    with pytest.raises(ValueError):
        raw.json()
    assert raw.text.startswith('{"request_id"')


def test_faults_can_only_be_aimed_at_the_fakes_operations(fake_vault: Any) -> None:
    with pytest.raises(ValueError, match="unknown operation 'Decrypt'"):
        fake_vault.faults.configure(operations={"Decrypt"})
    with pytest.raises(ValueError, match="unknown operation"):
        start_vault_fake(fault_operations=["transit/decrypt"])
