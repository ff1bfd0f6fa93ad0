"""The envelope format: layouts, strict parsing, and the canonical context encoding."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsbox import format as fmt
from kmsbox._crypto import KEY_SIZE, NONCE_SIZE, TAG_SIZE
from kmsbox.errors import IntegrityError

_PARSERS = [fmt.parse_message, fmt.parse_secret, fmt.parse_local_wrap]
_text = st.text(max_size=20)
_contexts = st.dictionaries(_text, _text, max_size=6)


def _secret_blob(value_len: int = 5, nkv: int = 7) -> bytes:
    return fmt.encode_secret(
        nkv,
        os.urandom(NONCE_SIZE),
        os.urandom(KEY_SIZE + TAG_SIZE),
        os.urandom(NONCE_SIZE),
        os.urandom(value_len + TAG_SIZE),
    )


def _message_blob(version: str = "v1", wrapped_len: int = 60, body_len: int = 10) -> bytes:
    header = fmt.encode_message_header(version, os.urandom(wrapped_len))
    return header + os.urandom(NONCE_SIZE) + os.urandom(body_len + TAG_SIZE)


# --- stored secrets -----------------------------------------------------------------


def test_secret_overhead_is_100_bytes_and_within_budget() -> None:
    # 8 header + 4 CRC + 12 DEK nonce + 48 wrapped DEK + 12 nonce + 16 tag; the store adds a 1-byte type tag.
    assert fmt.SECRET_OVERHEAD == 100
    assert fmt.SECRET_OVERHEAD + 1 <= 120
    for size in (0, 1, 1000):
        assert len(_secret_blob(size)) == size + fmt.SECRET_OVERHEAD


def test_secret_layout_matches_the_spec() -> None:
    dek_nonce, wrapped, nonce, ct = os.urandom(12), os.urandom(48), os.urandom(12), os.urandom(21)
    blob = fmt.encode_secret(0x01020304, dek_nonce, wrapped, nonce, ct)
    assert blob[:8] == b"KB\x01\x02\x01\x02\x03\x04"
    assert blob[8:12] == struct.pack(">I", zlib.crc32(blob[:8]))
    assert blob[12:24] == dek_nonce
    assert blob[24:72] == wrapped
    assert blob[72:84] == nonce
    assert blob[84:] == ct


def test_secret_round_trips_through_parser() -> None:
    dek_nonce, wrapped, nonce, ct = os.urandom(12), os.urandom(48), os.urandom(12), os.urandom(40)
    env = fmt.parse_secret(fmt.encode_secret(3, dek_nonce, wrapped, nonce, ct))
    assert (env.namespace_key_version, env.dek_nonce, env.wrapped_dek, env.nonce, env.ciphertext) == (
        3,
        dek_nonce,
        wrapped,
        nonce,
        ct,
    )
    assert fmt.secret_namespace_key_version(fmt.encode_secret(9, dek_nonce, wrapped, nonce, ct)) == 9


@pytest.mark.parametrize(
    "args",
    [
        (0, 12, 48, 12, 16),
        (2**32, 12, 48, 12, 16),
        (1, 11, 48, 12, 16),
        (1, 12, 47, 12, 16),
        (1, 12, 48, 13, 16),
        (1, 12, 48, 12, 15),
    ],
)
def test_encode_secret_rejects_bad_sizes(args: tuple[int, int, int, int, int]) -> None:
    nkv, a, b, c, d = args
    with pytest.raises(ValueError):
        fmt.encode_secret(nkv, bytes(a), bytes(b), bytes(c), bytes(d))


def test_every_header_byte_of_a_secret_is_checked() -> None:
    blob = _secret_blob()
    for position in range(12):  # header and its CRC
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            fmt.parse_secret(bytes(tampered))


def test_namespace_key_version_zero_is_rejected() -> None:
    head = b"KB\x01\x02" + bytes(4)
    blob = head + struct.pack(">I", zlib.crc32(head)) + bytes(fmt.SECRET_OVERHEAD - 12)
    with pytest.raises(IntegrityError):
        fmt.parse_secret(blob)


@pytest.mark.parametrize("cut", [1, 16, 50])
def test_truncated_secret_is_rejected_when_below_overhead(cut: int) -> None:
    blob = _secret_blob(0)
    with pytest.raises(IntegrityError):
        fmt.parse_secret(blob[:-cut])


# --- engine messages ----------------------------------------------------------------


def test_message_header_layout_matches_the_spec() -> None:
    wrapped = os.urandom(60)
    header = fmt.encode_message_header("v12", wrapped)
    assert header[:5] == b"KB\x01\x01\x03"
    assert header[5:8] == b"v12"
    assert header[8:10] == struct.pack(">H", 60)
    assert header[10:70] == wrapped
    assert header[70:] == struct.pack(">I", zlib.crc32(header[:70]))


def test_message_round_trips_through_parser() -> None:
    wrapped, nonce, ct = os.urandom(60), os.urandom(12), os.urandom(30)
    header = fmt.encode_message_header("v7", wrapped)
    env = fmt.parse_message(header + nonce + ct)
    assert (env.kek_version, env.wrapped_key, env.nonce, env.ciphertext, env.header) == (
        "v7",
        wrapped,
        nonce,
        ct,
        header,
    )


@pytest.mark.parametrize(("version", "wrapped_len"), [("", 10), ("v" * 256, 10), ("v1", 0), ("v1", 0x10000)])
def test_message_header_rejects_bad_lengths(version: str, wrapped_len: int) -> None:
    with pytest.raises(ValueError):
        fmt.encode_message_header(version, bytes(wrapped_len))


def test_every_header_byte_of_a_message_is_checked() -> None:
    blob = _message_blob()
    header_len = len(fmt.parse_message(blob).header)
    for position in range(header_len):
        tampered = bytearray(blob)
        tampered[position] ^= 0x80
        with pytest.raises(IntegrityError):
            fmt.parse_message(bytes(tampered))


def test_message_too_short_for_nonce_and_tag_is_rejected() -> None:
    header = fmt.encode_message_header("v1", os.urandom(60))
    with pytest.raises(IntegrityError):
        fmt.parse_message(header + os.urandom(NONCE_SIZE + TAG_SIZE - 1))
    assert fmt.parse_message(header + os.urandom(NONCE_SIZE + TAG_SIZE)).ciphertext


def test_non_ascii_kek_version_is_rejected() -> None:
    head = b"KB\x01\x01\x02\xff\xfe" + struct.pack(">H", 4) + b"abcd"
    blob = head + struct.pack(">I", zlib.crc32(head)) + bytes(NONCE_SIZE + TAG_SIZE)
    with pytest.raises(IntegrityError):
        fmt.parse_message(blob)


# --- local wraps ----------------------------------------------------------------------


def test_local_wrap_layout_and_round_trip() -> None:
    nonce, ct = os.urandom(12), os.urandom(48)
    blob = fmt.encode_local_wrap(nonce, ct)
    assert blob == b"KB\x01\x03" + nonce + ct
    assert fmt.parse_local_wrap(blob) == (nonce, ct)
    with pytest.raises(ValueError):
        fmt.encode_local_wrap(os.urandom(11), ct)
    with pytest.raises(ValueError):
        fmt.encode_local_wrap(nonce, os.urandom(15))


def test_kinds_are_not_interchangeable() -> None:
    secret, message = _secret_blob(), _message_blob()
    local = fmt.encode_local_wrap(os.urandom(12), os.urandom(48))
    for parse, foreign in [
        (fmt.parse_message, secret),
        (fmt.parse_message, local),
        (fmt.parse_secret, message),
        (fmt.parse_secret, local),
        (fmt.parse_local_wrap, secret),
        (fmt.parse_local_wrap, message),
    ]:
        with pytest.raises(IntegrityError):
            parse(foreign)


@pytest.mark.parametrize("parse", _PARSERS)
@pytest.mark.parametrize("value", [None, "KB\x01", 12, [1, 2]])
def test_parsers_reject_non_bytes_with_integrity_error(parse: object, value: object) -> None:
    with pytest.raises(IntegrityError):
        parse(value)  # type: ignore[operator]


@pytest.mark.parametrize("parse", _PARSERS)
def test_parsers_accept_bytearray_and_memoryview(parse: object) -> None:
    blob = {
        fmt.parse_message: _message_blob(),
        fmt.parse_secret: _secret_blob(),
        fmt.parse_local_wrap: fmt.encode_local_wrap(os.urandom(12), os.urandom(48)),
    }[parse]  # type: ignore[index]
    assert parse(bytearray(blob)) == parse(memoryview(blob)) == parse(blob)  # type: ignore[operator]


def test_parse_error_messages_are_opaque() -> None:
    messages = set()
    for parse, blob in [(fmt.parse_message, b"x"), (fmt.parse_secret, b"KB" * 80), (fmt.parse_local_wrap, b"")]:
        with pytest.raises(IntegrityError) as info:
            parse(blob)
        messages.add(str(info.value))
    assert messages == {"malformed or unauthentic ciphertext"}


# --- hypothesis: the parsers see only IntegrityError ----------------------------------


def _parses_or_integrity_error(parse: object, data: bytes) -> None:
    with contextlib.suppress(IntegrityError):
        parse(data)  # type: ignore[operator]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_on_arbitrary_bytes_raise_only_integrity_error(data: bytes) -> None:
    for parse in _PARSERS:
        _parses_or_integrity_error(parse, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parsers_on_bytes_after_a_valid_prefix_raise_only_integrity_error(tail: bytes) -> None:
    # Arbitrary bytes rarely pass the magic check; prefixing each kind's magic reaches deeper code.
    for parse, prefix in [
        (fmt.parse_message, b"KB\x01\x01"),
        (fmt.parse_secret, b"KB\x01\x02"),
        (fmt.parse_local_wrap, b"KB\x01\x03"),
    ]:
        _parses_or_integrity_error(parse, prefix + tail)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_blobs_raise_only_integrity_error_or_parse(data: st.DataObject) -> None:
    blob = bytearray(data.draw(st.sampled_from([_message_blob(), _secret_blob()])))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    for parse in _PARSERS:
        _parses_or_integrity_error(parse, bytes(blob[:cut]))


# --- the canonical context encoding -----------------------------------------------------


def test_empty_context_encodings_agree() -> None:
    assert fmt.encode_context(None) == fmt.encode_context({}) == b"\x00\x00"


def test_context_encoding_is_length_prefixed_and_sorted() -> None:
    assert fmt.encode_context({"b": "2", "a": "é"}) == (
        b"\x00\x02" + b"\x00\x01a" + b"\x00\x02\xc3\xa9" + b"\x00\x01b" + b"\x00\x012"
    )


def test_context_rejects_non_strings_and_huge_items() -> None:
    with pytest.raises(TypeError):
        fmt.encode_context({"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        fmt.encode_context({1: "a"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        fmt.encode_context({"a": "x" * 0x10000})
    assert fmt.encode_context({"a": "x" * 0xFFFF})


def _decode_context(data: bytes) -> dict[str, str]:
    (count,) = struct.unpack_from(">H", data)
    pos, out = 2, {}
    for _ in range(count):
        (klen,) = struct.unpack_from(">H", data, pos)
        key = data[pos + 2 : pos + 2 + klen].decode()
        pos += 2 + klen
        (vlen,) = struct.unpack_from(">H", data, pos)
        out[key] = data[pos + 2 : pos + 2 + vlen].decode()
        pos += 2 + vlen
    assert pos == len(data)
    return out


@settings(max_examples=200, deadline=None)
@given(_contexts)
def test_context_encoding_round_trips_and_ignores_insertion_order(context: dict[str, str]) -> None:
    encoded = fmt.encode_context(context)
    assert _decode_context(encoded) == context
    assert fmt.encode_context(dict(reversed(list(context.items())))) == encoded


@settings(max_examples=300, deadline=None)
@given(_contexts, _contexts)
def test_context_encoding_is_injective(a: dict[str, str], b: dict[str, str]) -> None:
    if a != b:
        assert fmt.encode_context(a) != fmt.encode_context(b)
    else:
        assert fmt.encode_context(a) == fmt.encode_context(b)


@settings(max_examples=200, deadline=None)
@given(_contexts)
def test_cached_context_encoding_agrees_with_the_canonical_one(context: dict[str, str]) -> None:
    encode_cached = getattr(fmt, "encode_context_cached", fmt.encode_context)
    expected = fmt.encode_context(context)
    assert encode_cached(context) == expected
    assert encode_cached(dict(reversed(list(context.items())))) == expected
    assert encode_cached(context) == expected  # a memo hit returns the same bytes


def test_context_encoding_separates_lookalikes() -> None:
    # Without length prefixes these would collide.
    pairs = [
        ({"a": "bc"}, {"ab": "c"}),
        ({"a": "b", "c": "d"}, {"a": "b\x00\x01c\x00\x01d"}),
        ({"": "a"}, {"a": ""}),
    ]
    for left, right in pairs:
        assert fmt.encode_context(left) != fmt.encode_context(right)


def test_aad_builders_bind_every_field() -> None:
    base = fmt.dek_aad("ns", "name", 1, 1)
    assert (
        len(
            {
                base,
                fmt.dek_aad("nt", "name", 1, 1),
                fmt.dek_aad("ns", "nam", 1, 1),
                fmt.dek_aad("ns", "name", 2, 1),
                fmt.dek_aad("ns", "name", 1, 2),
            }
        )
        == 5
    )
    value = fmt.value_aad("ns", "name", 1)
    assert (
        len({value, fmt.value_aad("nt", "name", 1), fmt.value_aad("ns", "nam", 1), fmt.value_aad("ns", "name", 2)}) == 4
    )
    assert base.startswith(b"KB\x01dek") and value.startswith(b"KB\x01val")


_names = st.text(min_size=1, max_size=30)
_versions = st.integers(min_value=1, max_value=2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(_names, _names, _versions, _versions)
def test_aads_are_the_documented_context_encodings(namespace: str, name: str, version: int, nkv: int) -> None:
    # docs/format.md defines both AADs through encode_context; a faster encoder must agree byte for byte.
    assert fmt.dek_aad(namespace, name, version, nkv) == b"KB\x01dek" + fmt.encode_context(
        {"ns": namespace, "name": name, "v": str(version), "nkv": str(nkv)}
    )
    assert fmt.value_aad(namespace, name, version) == b"KB\x01val" + fmt.encode_context(
        {"ns": namespace, "name": name, "v": str(version)}
    )


def test_envelope_reprs_show_sizes_not_bytes() -> None:
    blob = _message_blob()
    env = fmt.parse_message(blob)
    secret = fmt.parse_secret(_secret_blob())
    for obj, raw in [
        (env, env.wrapped_key),
        (env, env.ciphertext),
        (secret, secret.wrapped_dek),
        (secret, secret.ciphertext),
    ]:
        text = repr(obj) + str(obj)
        assert raw.hex() not in text and repr(raw) not in text


# --- audit records -----------------------------------------------------------------------

_SCALARS = st.one_of(st.none(), st.text(), st.integers(), st.booleans(), st.floats(allow_nan=False))
_FIELDS = st.one_of(
    _SCALARS, st.dictionaries(st.text(), st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3)), max_size=4)
)


@settings(max_examples=500)
@given(st.lists(_FIELDS, max_size=12))
def test_audit_record_is_compact_sorted_json(fields: list[object]) -> None:
    # The chain MAC covers these bytes: the fast encoder must never drift from the canonical form.
    canonical = json.dumps(fields, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    assert fmt.encode_audit_record(fields) == b"KB\x01audit" + canonical.encode("utf-8")


def test_audit_record_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        fmt.encode_audit_record([object()])


@given(st.text(max_size=40), st.text(max_size=40), st.integers(1, 2**31), st.integers(1, 2**32 - 1))
def test_secret_aads_are_the_dek_and_value_aads(namespace: str, name: str, version: int, nkv: int) -> None:
    assert fmt.secret_aads(namespace, name, version, nkv) == (
        fmt.dek_aad(namespace, name, version, nkv),
        fmt.value_aad(namespace, name, version),
    )


@settings(max_examples=300)
@given(st.dictionaries(st.text(), _FIELDS, max_size=5))
def test_sorted_json_encoder_matches_json_dumps(value: dict[str, object]) -> None:
    assert fmt.sorted_json_encoder(compact=False, ensure_ascii=True)(value) == json.dumps(value, sort_keys=True)
    compact = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert fmt.sorted_json_encoder(compact=True, ensure_ascii=False)(value) == compact
