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

A provider that holds its own key bytes in the process (a local keyring, an
embedded or exportable test key) should also give them, so the suite can check
that ``describe()``, ``repr()`` and ``str()`` never show them (``kmsbox status``
prints ``describe()``)::

        @pytest.fixture
        def kek_material(self): return [b"...32 key bytes of every version..."]

``kek_material`` is a sequence of ``bytes``, one per key (version) behind ``kek``;
the default, None, skips that test with the reason. A provider whose keys never
leave a remote KMS has nothing to give and leaves it None.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import pytest

from kmsbox.errors import IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import KekProvider, WrappedKey

__all__ = ["KekProviderConformance"]

_CONTEXT = {"kmsbox:namespace": "conformance", "kmsbox:key-version": "1"}
# A run of this many key bytes, in hex, counts as showing the key (a "fingerprint" that is a key prefix leaks too).
_HEX_WINDOW = 8


def _renderings(kek: KekProvider) -> str:
    """Everything a status command or a log line could print about ``kek``."""
    description = kek.describe()
    values = [f"{name}\t{value}" for name, value in description.items()]  # as a status table prints them
    return "\n".join([*values, repr(description), json.dumps(description, default=str), repr(kek), str(kek)])


def _forms_shown(text: str, key: bytes) -> list[str]:
    """The encodings of ``key`` (or of a run of its bytes) that appear in ``text``; names only, never the key."""
    shown = []
    lowered = text.lower()
    hex_key = key.hex()
    windows = {hex_key[i : i + 2 * _HEX_WINDOW] for i in range(0, max(len(hex_key) - 2 * _HEX_WINDOW, 0) + 1, 2)}
    if any(window in lowered for window in windows):
        shown.append("hex")
    for name, encoded in (
        ("base64", base64.b64encode(key).decode()),
        ("base64url", base64.urlsafe_b64encode(key).decode()),
    ):
        if encoded.rstrip("=") in text:
            shown.append(name)
    if repr(key)[2:-1] in text or key.decode("latin-1") in text:
        shown.append("raw bytes")
    return shown


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

    @pytest.fixture
    def kek_material(self) -> Sequence[bytes] | None:
        """The key bytes behind ``kek``, one entry per version (None: the provider holds none, skip)."""
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
        assert _forms_shown(_renderings(kek), key) == [], "describe() or repr() shows a key it wrapped"

    def test_describe_and_repr_hold_no_kek_material(self, kek: KekProvider, request: pytest.FixtureRequest) -> None:
        # Taken through request, not as an argument: a failure report lists a test's arguments.
        material = request.getfixturevalue("kek_material")
        if material is None:
            pytest.skip("no kek_material fixture: the provider's own key bytes were not given to check for")
        assert material and all(isinstance(k, bytes) and k for k in material), "kek_material must hold bytes"
        kek.wrap(os.urandom(32), _CONTEXT)  # some providers load or cache their keys on first use
        text = _renderings(kek)
        shown = {f"key {i}": forms for i, key in enumerate(material) if (forms := _forms_shown(text, key))}
        assert not shown, f"describe(), repr() or str() shows the provider's own key material: {shown}"

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
