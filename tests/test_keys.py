"""Namespace keys and DEKs: the bounded key cache, and how stored blobs bind their row."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from kmsbox import format as fmt
from kmsbox._crypto import Aead
from kmsbox.errors import IntegrityError, KeyUnavailable
from kmsbox.keys import KeyCache, open_secret, rewrap_secret, seal_secret

_NS, _NAME, _VERSION = "app:production", "openai", 3


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


# --- KeyCache -------------------------------------------------------------------------------


def test_cache_hit_and_miss_are_counted() -> None:
    cache: KeyCache[str] = KeyCache()
    assert cache.get("a") is None
    assert cache.put("a", "A") == "A"
    assert cache.get("a") == "A"
    assert (cache.stats.hits, cache.stats.misses, cache.stats.evictions) == (1, 1, 0)


def test_cache_entry_expires_at_max_age() -> None:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(max_age=10, clock=clock)
    cache.put("a", "A")
    clock.now += 9.99
    assert cache.get("a") == "A"
    clock.now += 0.01
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.stats.evictions == 1


def test_cache_age_counts_from_put_not_from_last_use() -> None:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(max_age=10, clock=clock)
    cache.put("a", "A")
    for _ in range(9):
        clock.now += 1
        assert cache.get("a") == "A"
    clock.now += 1
    assert cache.get("a") is None


def test_cache_entry_is_dropped_after_max_uses() -> None:
    cache: KeyCache[str] = KeyCache(max_uses=3)
    cache.put("a", "A")
    assert [cache.get("a") for _ in range(4)] == ["A", "A", "A", None]
    cache.put("a", "A2")
    assert cache.get("a") == "A2"


def test_cache_evicts_the_oldest_entry_beyond_max_entries() -> None:
    cache: KeyCache[int] = KeyCache(max_entries=3)
    for i in range(3):
        cache.put(i, i)
    cache.put(3, 3)
    assert len(cache) == 3
    assert cache.get(0) is None
    assert [cache.get(k) for k in (1, 2, 3)] == [1, 2, 3]
    assert cache.stats.evictions == 1


def test_cache_put_of_an_existing_key_does_not_evict() -> None:
    cache: KeyCache[int] = KeyCache(max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)
    assert len(cache) == 2 and cache.stats.evictions == 0
    assert (cache.get("a"), cache.get("b")) == (3, 2)


def test_cache_put_replaces_and_restarts_the_clock() -> None:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(max_age=10, max_uses=2, clock=clock)
    cache.put("a", "A")
    cache.get("a")
    cache.get("a")
    clock.now += 9
    cache.put("a", "B")
    clock.now += 9
    assert cache.get("a") == "B"


def test_cache_invalidate_and_clear() -> None:
    cache: KeyCache[str] = KeyCache()
    cache.put("a", "A")
    cache.put("b", "B")
    cache.invalidate("a")
    cache.invalidate("missing")
    assert cache.get("a") is None and cache.get("b") == "B"
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("bounds", [{"max_age": 0}, {"max_uses": 0}, {"max_entries": 0}, {"max_age": -1}])
def test_cache_bounds_must_be_positive(bounds: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        KeyCache(**bounds)  # type: ignore[arg-type]


def test_empty_cache_is_truthy_so_callers_keep_it() -> None:
    # `cache or KeyCache()` must not swap an empty, caller-configured cache for a default one.
    cache: KeyCache[str] = KeyCache(max_uses=1)
    assert len(cache) == 0 and bool(cache)


def test_cache_holds_its_bound_under_threads() -> None:
    cache: KeyCache[int] = KeyCache(max_entries=50)

    def work(offset: int) -> None:
        for i in range(500):
            cache.put((offset, i), i)
            cache.get((offset, i - 1))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50


def test_cache_repr_shows_bounds_not_values() -> None:
    key = os.urandom(32)
    cache: KeyCache[bytes] = KeyCache()
    cache.put("k", key)
    text = repr(cache) + str(cache)
    assert "entries=1" in text
    assert key.hex() not in text and repr(key) not in text


# --- seal / open / rewrap ------------------------------------------------------------------------


@pytest.fixture
def namespace_key() -> Aead:
    return Aead(os.urandom(32))


def _seal(key: Aead, value: bytes = b"s" + b"sk-live-value", nkv: int = 1) -> bytes:
    return seal_secret(key, nkv, _NS, _NAME, _VERSION, value)


@pytest.mark.parametrize("value", [b"", b"x", os.urandom(5000)])
def test_seal_open_round_trip(namespace_key: Aead, value: bytes) -> None:
    blob = _seal(namespace_key, value)
    assert len(blob) == len(value) + fmt.SECRET_OVERHEAD
    assert open_secret(blob, lambda v: namespace_key, _NS, _NAME, _VERSION) == value


def test_open_asks_for_the_recorded_namespace_key_version(namespace_key: Aead) -> None:
    asked: list[int] = []

    def key_for(version: int) -> Aead:
        asked.append(version)
        return namespace_key

    open_secret(_seal(namespace_key, nkv=7), key_for, _NS, _NAME, _VERSION)
    assert asked == [7]


@pytest.mark.parametrize(
    ("namespace", "name", "version"),
    [
        ("app:staging", _NAME, _VERSION),
        (_NS, "anthropic", _VERSION),
        (_NS, _NAME, _VERSION + 1),
        (_NS, _NAME, _VERSION - 1),
    ],
)
def test_moved_blob_fails_to_open(namespace_key: Aead, namespace: str, name: str, version: int) -> None:
    blob = _seal(namespace_key)
    with pytest.raises(IntegrityError):
        open_secret(blob, lambda v: namespace_key, namespace, name, version)


def test_wrong_namespace_key_fails(namespace_key: Aead) -> None:
    blob = _seal(namespace_key)
    with pytest.raises(IntegrityError):
        open_secret(blob, lambda v: Aead(os.urandom(32)), _NS, _NAME, _VERSION)


def test_relabelled_namespace_key_version_fails(namespace_key: Aead) -> None:
    # Re-encoding the header with another version (valid CRC) still fails: the DEK AAD binds it.
    env = fmt.parse_secret(_seal(namespace_key, nkv=1))
    forged = fmt.encode_secret(2, env.dek_nonce, env.wrapped_dek, env.nonce, env.ciphertext)
    with pytest.raises(IntegrityError):
        open_secret(forged, lambda v: namespace_key, _NS, _NAME, _VERSION)


def test_swapped_value_ciphertext_between_rows_fails(namespace_key: Aead) -> None:
    a = fmt.parse_secret(_seal(namespace_key, b"value a"))
    b = fmt.parse_secret(_seal(namespace_key, b"value b"))
    forged = fmt.encode_secret(1, a.dek_nonce, a.wrapped_dek, b.nonce, b.ciphertext)
    with pytest.raises(IntegrityError):
        open_secret(forged, lambda v: namespace_key, _NS, _NAME, _VERSION)


def test_missing_namespace_key_propagates_key_unavailable(namespace_key: Aead) -> None:
    def key_for(version: int) -> Aead:
        raise KeyUnavailable(f"namespace key version {version} was deleted")

    with pytest.raises(KeyUnavailable):
        open_secret(_seal(namespace_key), key_for, _NS, _NAME, _VERSION)


def test_flipping_every_byte_of_a_stored_secret_fails(namespace_key: Aead) -> None:
    blob = _seal(namespace_key, b"sv")
    for position in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            with pytest.raises(IntegrityError):
                open_secret(bytes(tampered), lambda v: namespace_key, _NS, _NAME, _VERSION)


def test_truncated_and_extended_stored_secrets_fail(namespace_key: Aead) -> None:
    blob = _seal(namespace_key, b"sv")
    for length in range(len(blob)):
        with pytest.raises(IntegrityError):
            open_secret(blob[:length], lambda v: namespace_key, _NS, _NAME, _VERSION)
    for extra in (b"\x00", os.urandom(17)):
        with pytest.raises(IntegrityError):
            open_secret(blob + extra, lambda v: namespace_key, _NS, _NAME, _VERSION)


def test_rewrap_moves_the_dek_and_keeps_the_value_ciphertext(namespace_key: Aead) -> None:
    new_key = Aead(os.urandom(32))
    blob = _seal(namespace_key, b"value")
    rewrapped = rewrap_secret(blob, namespace_key, new_key, 2, _NS, _NAME, _VERSION)
    old_env, new_env = fmt.parse_secret(blob), fmt.parse_secret(rewrapped)
    assert new_env.namespace_key_version == 2
    assert (new_env.nonce, new_env.ciphertext) == (old_env.nonce, old_env.ciphertext)
    assert new_env.wrapped_dek != old_env.wrapped_dek
    keys = {1: namespace_key, 2: new_key}
    assert open_secret(rewrapped, keys.__getitem__, _NS, _NAME, _VERSION) == b"value"
    with pytest.raises(IntegrityError):
        open_secret(rewrapped, lambda v: namespace_key, _NS, _NAME, _VERSION)


def test_rewrap_with_the_wrong_old_key_fails(namespace_key: Aead) -> None:
    blob = _seal(namespace_key)
    with pytest.raises(IntegrityError):
        rewrap_secret(blob, Aead(os.urandom(32)), Aead(os.urandom(32)), 2, _NS, _NAME, _VERSION)


@pytest.mark.parametrize(
    ("namespace", "name", "version"),
    [("app:staging", _NAME, _VERSION), (_NS, "anthropic", _VERSION), (_NS, _NAME, _VERSION + 1)],
)
def test_rewrap_of_a_moved_blob_fails(namespace_key: Aead, namespace: str, name: str, version: int) -> None:
    blob = _seal(namespace_key)
    with pytest.raises(IntegrityError):
        rewrap_secret(blob, namespace_key, Aead(os.urandom(32)), 2, namespace, name, version)


def test_rewrapped_blob_is_still_bound_to_its_row(namespace_key: Aead) -> None:
    new_key = Aead(os.urandom(32))
    rewrapped = rewrap_secret(_seal(namespace_key), namespace_key, new_key, 2, _NS, _NAME, _VERSION)
    with pytest.raises(IntegrityError):
        open_secret(rewrapped, lambda v: new_key, _NS, "other", _VERSION)


def test_no_string_of_the_pieces_contains_keys_or_value() -> None:
    raw_key = os.urandom(32)
    value = b"sk-live-" + os.urandom(12).hex().encode()
    key = Aead(raw_key)
    blob = seal_secret(key, 1, _NS, _NAME, _VERSION, value)
    errors = []
    calls: list[Callable[[], object]] = [
        lambda: open_secret(blob, lambda v: key, _NS, "other", _VERSION),
        lambda: open_secret(blob[:-1] + b"\x00", lambda v: key, _NS, _NAME, _VERSION),
        lambda: rewrap_secret(blob, Aead(os.urandom(32)), key, 2, _NS, _NAME, _VERSION),
        lambda: Aead(raw_key[:16]),
    ]
    for call in calls:
        with pytest.raises(IntegrityError) as info:
            call()
        errors.append(info.value)
    text = "".join(repr(o) + str(o) for o in [key, fmt.parse_secret(blob), *errors])
    for secret in (raw_key, value):
        assert secret.hex() not in text and repr(secret) not in text and secret.decode("latin-1") not in text
