"""Conformance suite for KEK providers: ours and any third party's.

Use it from a test module::

    from kmsbox.testing.kek_conformance import KekProviderConformance

    class TestMyProvider(KekProviderConformance):
        @pytest.fixture
        def kek(self): return open_kek("my-kms://...")
        @pytest.fixture
        def other_kek(self): return open_kek("my-kms://another-key")
        @pytest.fixture
        def fake(self): return my_fake_server   # or None if the provider is local

``fake`` is a :class:`kmsbox.testing.fakes.FakeServer` whose ``faults`` sit in
front of the provider's API; fault tests are skipped (with the reason) when it
is None. The provider under test should be opened with a short retry deadline.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from kmsbox.errors import IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import KekProvider, WrappedKey

__all__ = ["KekProviderConformance"]

_CONTEXT = {"kmsbox:namespace": "conformance", "kmsbox:key-version": "1"}


class KekProviderConformance:
    """Tests every KEK provider must pass. Provide fixtures ``kek``, ``other_kek``, ``fake``."""

    @pytest.fixture
    def other_kek(self) -> KekProvider | None:
        """A provider for a different key of the same kind (None to skip that test)."""
        return None

    @pytest.fixture
    def fake(self) -> Any:
        """The fake server behind ``kek`` (None for providers with no remote calls)."""
        return None

    def test_round_trip(self, kek: KekProvider) -> None:
        key = os.urandom(32)
        wrapped = kek.wrap(key, _CONTEXT)
        assert isinstance(wrapped, WrappedKey)
        assert key not in wrapped.ciphertext
        assert kek.unwrap(wrapped, _CONTEXT) == key

    def test_wrapped_key_is_bytes_and_uri_recorded(self, kek: KekProvider) -> None:
        wrapped = kek.wrap(os.urandom(32), _CONTEXT)
        assert isinstance(wrapped.ciphertext, bytes) and wrapped.ciphertext
        assert wrapped.kek_uri == kek.uri

    def test_two_wraps_differ(self, kek: KekProvider) -> None:
        key = os.urandom(32)
        assert kek.wrap(key, _CONTEXT).ciphertext != kek.wrap(key, _CONTEXT).ciphertext

    def test_wrong_context_fails(self, kek: KekProvider) -> None:
        wrapped = kek.wrap(os.urandom(32), _CONTEXT)
        with pytest.raises(IntegrityError):
            kek.unwrap(wrapped, {**_CONTEXT, "kmsbox:namespace": "another"})

    def test_missing_context_fails(self, kek: KekProvider) -> None:
        wrapped = kek.wrap(os.urandom(32), _CONTEXT)
        with pytest.raises(IntegrityError):
            kek.unwrap(wrapped, {})

    def test_tampered_ciphertext_fails(self, kek: KekProvider) -> None:
        wrapped = kek.wrap(os.urandom(32), _CONTEXT)
        data = bytearray(wrapped.ciphertext)
        data[len(data) // 2] ^= 0x01
        with pytest.raises((IntegrityError, KeyUnavailable)):
            kek.unwrap(WrappedKey(wrapped.kek_uri, wrapped.key_version, bytes(data)), _CONTEXT)

    def test_version_reported(self, kek: KekProvider) -> None:
        wrapped = kek.wrap(os.urandom(32), _CONTEXT)
        assert wrapped.key_version == kek.primary_version()
        assert kek.version_available(wrapped.key_version) in (True, None)

    def test_unknown_version_is_key_unavailable(self, kek: KekProvider) -> None:
        wrapped = kek.wrap(os.urandom(32), _CONTEXT)
        if kek.version_available("v999999") is None:
            pytest.skip("provider cannot tell which versions exist")
        with pytest.raises((KeyUnavailable, IntegrityError)):
            kek.unwrap(WrappedKey(wrapped.kek_uri, "v999999", wrapped.ciphertext), _CONTEXT)

    def test_other_key_cannot_unwrap(self, kek: KekProvider, other_kek: KekProvider | None) -> None:
        if other_kek is None:
            pytest.skip("no second key of this provider was given")
        wrapped = kek.wrap(os.urandom(32), _CONTEXT)
        with pytest.raises((IntegrityError, KeyUnavailable)) as info:
            other_kek.unwrap(WrappedKey(other_kek.uri, wrapped.key_version, wrapped.ciphertext), _CONTEXT)
        assert not isinstance(info.value, ProviderError)

    def test_batch_forms(self, kek: KekProvider) -> None:
        keys = [os.urandom(32) for _ in range(5)]
        contexts = [{**_CONTEXT, "i": str(i)} for i in range(5)]
        wrapped = kek.wrap_many(list(zip(keys, contexts, strict=True)))
        assert len(wrapped) == 5
        assert kek.unwrap_many(list(zip(wrapped, contexts, strict=True))) == keys
        rewrapped = kek.rewrap_many(list(zip(wrapped, contexts, strict=True)))
        assert [kek.unwrap(w, c) for w, c in zip(rewrapped, contexts, strict=True)] == keys

    def test_rewrap_keeps_key(self, kek: KekProvider) -> None:
        key = os.urandom(32)
        wrapped = kek.wrap(key, _CONTEXT)
        rewrapped = kek.rewrap(wrapped, _CONTEXT)
        assert rewrapped.key_version == kek.primary_version()
        assert kek.unwrap(rewrapped, _CONTEXT) == key

    def test_describe_has_no_key_material(self, kek: KekProvider) -> None:
        key = os.urandom(32)
        kek.wrap(key, _CONTEXT)
        text = repr(kek.describe()) + repr(kek)
        assert key.hex() not in text and repr(key) not in text

    def test_transient_fault_is_retried(self, kek: KekProvider, fake: Any) -> None:
        if fake is None:
            pytest.skip("provider makes no remote calls, so it has no transient faults")
        fake.faults.configure(rate=1.0, kind="unavailable", count=1)
        try:
            key = os.urandom(32)
            assert kek.unwrap(kek.wrap(key, _CONTEXT), _CONTEXT) == key
        finally:
            fake.faults.clear()

    def test_throttling_is_retried(self, kek: KekProvider, fake: Any) -> None:
        if fake is None:
            pytest.skip("provider makes no remote calls, so it has no throttling")
        fake.faults.configure(rate=1.0, kind="throttle", count=2)
        try:
            key = os.urandom(32)
            assert kek.unwrap(kek.wrap(key, _CONTEXT), _CONTEXT) == key
        finally:
            fake.faults.clear()

    def test_persistent_transient_fault_raises_transient(self, kek: KekProvider, fake: Any) -> None:
        if fake is None:
            pytest.skip("provider makes no remote calls, so it has no transient faults")
        fake.faults.configure(rate=1.0, kind="unavailable")
        start = time.monotonic()
        try:
            with pytest.raises(ProviderError) as info:
                kek.wrap(os.urandom(32), _CONTEXT)
        finally:
            fake.faults.clear()
        assert info.value.transient is True
        assert time.monotonic() - start < 60

    def test_permanent_fault_raises_at_once(self, kek: KekProvider, fake: Any) -> None:
        if fake is None:
            pytest.skip("provider makes no remote calls, so it has no permanent faults")
        fake.faults.reset_counts()
        fake.faults.configure(rate=1.0, kind="denied")
        try:
            with pytest.raises(ProviderError) as info:
                kek.wrap(os.urandom(32), _CONTEXT)
        finally:
            fake.faults.clear()
        assert info.value.transient is False
        assert fake.faults.total_calls() == 1
