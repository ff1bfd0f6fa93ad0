"""The standalone envelope engine: round trips, tampering, wrong keys, KEK call counts, no leaks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kmsbox import Envelope, KeyCache
from kmsbox import format as fmt
from kmsbox._crypto import Aead
from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, KmsboxError
from kmsbox.kek import WrappedKey, open_kek
from kmsbox.keys import seal_secret
from kmsbox.providers.local import add_keyring_version, generate_keyring, remove_keyring_version
from kmsbox.testing.counting import CountingKek

_CONTEXT = {"table": "payments", "row": "42"}
_PLAINTEXT = b"card 4111 1111 1111 1111"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def kek_uri(monkeypatch: pytest.MonkeyPatch, key: bytes) -> str:
    monkeypatch.setenv("KMSBOX_ENGINE_TEST_KEK", key.hex())
    return "env://KMSBOX_ENGINE_TEST_KEK"


@pytest.fixture
def envelope(kek_uri: str) -> Envelope:
    return Envelope(kek_uri)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16, 1000])
def test_round_trip_small_sizes(envelope: Envelope, size: int) -> None:
    data = os.urandom(size)
    assert envelope.decrypt(envelope.encrypt(data, _CONTEXT), _CONTEXT) == data


def test_round_trip_multi_megabyte(envelope: Envelope, kek_uri: str) -> None:
    data = os.urandom(8 * 1024 * 1024)
    blob = envelope.encrypt(data, _CONTEXT)
    assert len(blob) < len(data) + 200
    assert Envelope(kek_uri).decrypt(blob, _CONTEXT) == data


@pytest.mark.parametrize("size", [64 * 1024 - 200, 64 * 1024, 300 * 1024])
def test_large_messages_on_the_warm_path_are_checked_like_small_ones(envelope: Envelope, size: int) -> None:
    # Around and above the size where the warm path passes a view instead of a copy.
    data = os.urandom(size)
    blob = envelope.encrypt(data, _CONTEXT)
    assert envelope.decrypt(blob, _CONTEXT) == data
    result = envelope.decrypt(blob, _CONTEXT)
    assert type(result) is bytes
    for position in (len(blob) - 1, len(blob) // 2, len(fmt.parse_message(blob).header) + 12):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            envelope.decrypt(bytes(tampered), _CONTEXT)
    with pytest.raises(IntegrityError):
        envelope.decrypt(blob[:-1], _CONTEXT)
    with pytest.raises(IntegrityError):
        envelope.decrypt(blob, {"table": "other"})


def test_round_trip_accepts_bytearray_and_memoryview(envelope: Envelope) -> None:
    assert envelope.decrypt(envelope.encrypt(bytearray(b"abc")), None) == b"abc"  # type: ignore[arg-type]
    assert envelope.decrypt(envelope.encrypt(memoryview(b"abc")), None) == b"abc"  # type: ignore[arg-type]


def test_another_envelope_with_the_same_kek_decrypts(envelope: Envelope, kek_uri: str) -> None:
    blob = envelope.encrypt(_PLAINTEXT, _CONTEXT)
    assert Envelope(kek_uri).decrypt(blob, _CONTEXT) == _PLAINTEXT


def test_same_plaintext_encrypts_to_different_blobs(envelope: Envelope) -> None:
    assert envelope.encrypt(_PLAINTEXT, _CONTEXT) != envelope.encrypt(_PLAINTEXT, _CONTEXT)


def test_blob_does_not_contain_plaintext(envelope: Envelope) -> None:
    assert _PLAINTEXT not in envelope.encrypt(_PLAINTEXT, _CONTEXT)


def test_non_bytes_data_is_type_error(envelope: Envelope) -> None:
    with pytest.raises(TypeError):
        envelope.encrypt("text", _CONTEXT)  # type: ignore[arg-type]


def test_envelope_needs_a_kek() -> None:
    with pytest.raises(ValueError):
        Envelope([])


# --- contexts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        {"table": "payments", "row": "43"},
        {"table": "payments"},
        {**_CONTEXT, "extra": ""},
        {"Table": "payments", "row": "42"},
        {},
        None,
    ],
)
def test_different_context_fails_to_decrypt(envelope: Envelope, other: dict[str, str] | None) -> None:
    blob = envelope.encrypt(_PLAINTEXT, _CONTEXT)
    with pytest.raises(IntegrityError):
        envelope.decrypt(blob, other)


def test_no_context_and_empty_context_are_the_same(envelope: Envelope) -> None:
    assert envelope.decrypt(envelope.encrypt(_PLAINTEXT, None), {}) == _PLAINTEXT
    assert envelope.decrypt(envelope.encrypt(_PLAINTEXT, {}), None) == _PLAINTEXT


def test_context_order_does_not_matter(envelope: Envelope) -> None:
    blob = envelope.encrypt(_PLAINTEXT, {"a": "1", "b": "2"})
    assert envelope.decrypt(blob, {"b": "2", "a": "1"}) == _PLAINTEXT


def test_a_pre_encoded_context_is_the_same_binding_as_the_mapping(envelope: Envelope) -> None:
    encoded = fmt.encode_context(_CONTEXT)
    assert envelope.decrypt_encoded(envelope.encrypt(_PLAINTEXT, _CONTEXT), encoded) == _PLAINTEXT
    assert envelope.decrypt(envelope.encrypt_encoded(_PLAINTEXT, encoded), _CONTEXT) == _PLAINTEXT
    with pytest.raises(IntegrityError):
        envelope.decrypt_encoded(envelope.encrypt(_PLAINTEXT, _CONTEXT), fmt.encode_context({"row": "42"}))


@pytest.mark.parametrize("context", ["table=payments", {"table": "payments"}, None, 5])
def test_an_encoded_context_that_is_not_bytes_is_a_type_error_and_costs_no_kek_call(
    kek_uri: str, context: object
) -> None:
    counting = CountingKek(open_kek(kek_uri))
    envelope = Envelope(counting)
    with pytest.raises(TypeError):
        envelope.encrypt_encoded(_PLAINTEXT, context)  # type: ignore[arg-type]
    assert counting.total == 0
    blob = envelope.encrypt(_PLAINTEXT, _CONTEXT)
    with pytest.raises(TypeError):
        envelope.decrypt_encoded(blob, context)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Envelope(kek_uri).decrypt_encoded(blob, context)  # type: ignore[arg-type]  # cold: parsed first


# --- tampering -------------------------------------------------------------------------------


def test_flipping_every_byte_fails_with_integrity_error(kek_uri: str) -> None:
    sender = Envelope(kek_uri)
    blob = sender.encrypt(b"small", _CONTEXT)
    for position in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            # A warm cache (the sender) and a cold one (a fresh reader) both refuse.
            for reader in (sender, Envelope(kek_uri)):
                with pytest.raises(IntegrityError):
                    reader.decrypt(bytes(tampered), _CONTEXT)


def test_truncated_blobs_fail_with_integrity_error(envelope: Envelope) -> None:
    blob = envelope.encrypt(b"small", _CONTEXT)
    for length in range(len(blob)):
        with pytest.raises(IntegrityError):
            envelope.decrypt(blob[:length], _CONTEXT)


@pytest.mark.parametrize("extra", [b"\x00", b"\x01" * 16, os.urandom(100)])
def test_extended_blobs_fail_with_integrity_error(envelope: Envelope, extra: bytes) -> None:
    blob = envelope.encrypt(b"small", _CONTEXT)
    with pytest.raises(IntegrityError):
        envelope.decrypt(blob + extra, _CONTEXT)
    with pytest.raises(IntegrityError):
        envelope.decrypt(extra + blob, _CONTEXT)


def test_swapped_ciphertext_between_messages_fails(envelope: Envelope) -> None:
    a = envelope.encrypt(b"first message", _CONTEXT)
    b = envelope.encrypt(b"other message", _CONTEXT)
    header_len = len(fmt.parse_message(a).header)
    spliced = a[: header_len + 12] + b[header_len + 12 :]
    with pytest.raises(IntegrityError):
        envelope.decrypt(spliced, _CONTEXT)


@pytest.mark.parametrize("blob", [b"", b"KB", b"not a kmsbox blob at all", os.urandom(200)])
def test_garbage_fails_with_integrity_error(envelope: Envelope, blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        envelope.decrypt(blob, _CONTEXT)


def test_stored_secret_blob_is_not_an_engine_message(envelope: Envelope) -> None:
    blob = seal_secret(Aead(os.urandom(32)), 1, "ns", "name", 1, b"value")
    with pytest.raises(IntegrityError):
        envelope.decrypt(blob, _CONTEXT)


# --- wrong and removed KEKs --------------------------------------------------------------------


def test_wrong_kek_fails_with_integrity_error(envelope: Envelope, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = envelope.encrypt(_PLAINTEXT, _CONTEXT)
    monkeypatch.setenv("KMSBOX_ENGINE_OTHER_KEK", os.urandom(32).hex())
    with pytest.raises(IntegrityError):
        Envelope("env://KMSBOX_ENGINE_OTHER_KEK").decrypt(blob, _CONTEXT)


def test_any_listed_kek_can_decrypt(envelope: Envelope, kek_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = envelope.encrypt(_PLAINTEXT, _CONTEXT)
    monkeypatch.setenv("KMSBOX_ENGINE_OTHER_KEK", os.urandom(32).hex())
    other = "env://KMSBOX_ENGINE_OTHER_KEK"
    assert Envelope([other, kek_uri]).decrypt(blob, _CONTEXT) == _PLAINTEXT
    # The first KEK wraps: a message made with [other, kek] needs `other`.
    blob2 = Envelope([other, kek_uri]).encrypt(_PLAINTEXT, _CONTEXT)
    with pytest.raises(IntegrityError):
        Envelope(kek_uri).decrypt(blob2, _CONTEXT)


def test_removed_env_kek_version_is_key_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    monkeypatch.setenv("KMSBOX_ENGINE_ROT", f"v2:{k2.hex()},v1:{k1.hex()}")
    blob = Envelope("env://KMSBOX_ENGINE_ROT").encrypt(_PLAINTEXT, _CONTEXT)
    assert fmt.parse_message(blob).kek_version == "v2"
    monkeypatch.setenv("KMSBOX_ENGINE_ROT", f"v1:{k1.hex()}")
    with pytest.raises(KeyUnavailable):
        Envelope("env://KMSBOX_ENGINE_ROT").decrypt(blob, _CONTEXT)


def test_removed_keyring_version_is_key_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    uri = generate_keyring(path)
    blob = Envelope(uri).encrypt(_PLAINTEXT, _CONTEXT)
    add_keyring_version(path)
    assert Envelope(uri).decrypt(blob, _CONTEXT) == _PLAINTEXT
    remove_keyring_version(path, "v1")
    with pytest.raises(KeyUnavailable) as info:
        Envelope(uri).decrypt(blob, _CONTEXT)
    assert "v1" in str(info.value)


def test_missing_kek_variable_is_config_error_at_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMSBOX_ENGINE_UNSET", raising=False)
    with pytest.raises(ConfigError, match="KMSBOX_ENGINE_UNSET"):
        Envelope("env://KMSBOX_ENGINE_UNSET")


# --- KEK calls per cached key lifetime ------------------------------------------------------------


def test_one_kek_call_per_cached_key_on_each_side(kek_uri: str) -> None:
    sender_kek = CountingKek(open_kek(kek_uri))
    sender = Envelope(sender_kek)
    blobs = [sender.encrypt(os.urandom(64), {"i": str(i)}) for i in range(200)]
    assert sender_kek.wraps == 1 and sender_kek.unwraps == 0
    for i, blob in enumerate(blobs[:20]):
        sender.decrypt(blob, {"i": str(i)})
    assert sender_kek.unwraps == 0  # the sender already holds the data key

    reader_kek = CountingKek(open_kek(kek_uri))
    reader = Envelope(reader_kek)
    for i, blob in enumerate(blobs):
        reader.decrypt(blob, {"i": str(i)})
    assert reader_kek.unwraps == 1 and reader_kek.wraps == 0


def test_new_data_key_after_max_uses(kek_uri: str) -> None:
    counting = CountingKek(open_kek(kek_uri))
    envelope = Envelope(counting, cache=KeyCache(max_uses=10))
    for _ in range(25):
        envelope.encrypt(b"x")
    # The first encrypt makes the key, the slot serves 10 uses, then it is renewed.
    assert counting.wraps == 3


def test_new_data_key_after_max_age(kek_uri: str) -> None:
    clock = Clock()
    counting = CountingKek(open_kek(kek_uri))
    envelope = Envelope(counting, cache=KeyCache(max_age=60, clock=clock))
    first = envelope.encrypt(b"x")
    envelope.encrypt(b"x")
    assert counting.wraps == 1
    clock.now += 61
    second = envelope.encrypt(b"x")
    assert counting.wraps == 2
    assert fmt.parse_message(first).header != fmt.parse_message(second).header

    reader_kek = CountingKek(open_kek(kek_uri))
    reader = Envelope(reader_kek, cache=KeyCache(max_age=60, clock=clock))
    reader.decrypt(second)
    reader.decrypt(second)
    assert reader_kek.unwraps == 1
    clock.now += 61
    reader.decrypt(second)
    assert reader_kek.unwraps == 2


def test_failed_decrypt_does_not_poison_the_cache(envelope: Envelope) -> None:
    blob = envelope.encrypt(_PLAINTEXT, _CONTEXT)
    with pytest.raises(IntegrityError):
        envelope.decrypt(blob, {"wrong": "context"})
    assert envelope.decrypt(blob, _CONTEXT) == _PLAINTEXT


# --- no key material or plaintext in strings --------------------------------------------------------


def _strings_of(objects: Sequence[object]) -> str:
    return "\n".join(repr(o) + "\n" + str(o) for o in objects)


def _assert_absent(text: str, secrets: Sequence[bytes]) -> None:
    for secret in secrets:
        assert secret.hex() not in text
        assert secret.hex().upper() not in text
        assert repr(secret) not in text
        assert secret.decode("latin-1") not in text


def test_no_repr_str_or_error_contains_key_bytes_or_plaintext(
    envelope: Envelope, kek_uri: str, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    plaintext = b"top secret plaintext " + os.urandom(8).hex().encode()
    blob = envelope.encrypt(plaintext, _CONTEXT)
    provider = open_kek(kek_uri)
    data_key = os.urandom(32)
    wrapped = provider.wrap(data_key, _CONTEXT)
    namespace_key = os.urandom(32)
    stored = seal_secret(Aead(namespace_key), 1, "ns", "name", 1, plaintext)
    cache: KeyCache[bytes] = KeyCache()
    cache.put("k", data_key)

    errors: list[BaseException] = []
    calls: list[Callable[[], object]] = [
        lambda: envelope.decrypt(blob, {"other": "context"}),
        lambda: envelope.decrypt(blob[:-1], _CONTEXT),
        lambda: provider.unwrap(WrappedKey(provider.uri, "v9", wrapped.ciphertext), _CONTEXT),
        lambda: provider.unwrap(wrapped, {}),
        lambda: Aead(namespace_key[:31]),
        lambda: Aead(os.urandom(32)).open(b"\x00" * 12, stored, b""),
    ]
    for call in calls:
        with pytest.raises(KmsboxError) as info:
            call()
        errors.append(info.value)
    # Malformed keys in the variable: close to a key, but not one; the message must not echo it.
    for bad in [key.hex()[:-1], key.hex() + "0", "zz" + key.hex()[2:], f"v1:{key.hex()},v1:{key.hex()}"]:
        monkeypatch.setenv("KMSBOX_ENGINE_BAD", bad)
        with pytest.raises(ConfigError) as config_info:
            open_kek("env://KMSBOX_ENGINE_BAD")
        errors.append(config_info.value)
        assert key.hex()[2:-2] not in str(config_info.value)

    objects: list[object] = [
        envelope,
        envelope.cache,
        provider,
        provider.describe(),
        wrapped,
        cache,
        Aead(key),
        fmt.parse_message(blob),
        fmt.parse_secret(stored),
        *errors,
        *(e.__cause__ for e in errors if e.__cause__ is not None),
    ]
    text = _strings_of(objects)
    _assert_absent(text, [key, data_key, namespace_key, plaintext])
