"""The only module that encodes or parses kmsbox's stored bytes.

Specified in ``docs/format.md``. Every blob starts with the magic ``KB``, a format
version byte and a kind byte. Parsing is strict: anything malformed raises
:class:`~kmsbox.errors.IntegrityError`, whose message never says which byte was
wrong. Also here: the canonical encoding of contexts used as associated data.
"""

from __future__ import annotations

import functools
import json
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kmsbox._crypto import KEY_SIZE, NONCE_SIZE, TAG_SIZE
from kmsbox.errors import IntegrityError

__all__ = [
    "FORMAT_VERSION",
    "KIND_LOCAL_WRAP",
    "KIND_MESSAGE",
    "KIND_SECRET",
    "MAGIC",
    "SECRET_OVERHEAD",
    "MessageEnvelope",
    "SecretEnvelope",
    "dek_aad",
    "encode_audit_record",
    "encode_record",
    "encode_context",
    "encode_context_cached",
    "encode_local_wrap",
    "encode_message_header",
    "encode_secret",
    "namespace_key_context",
    "parse_local_wrap",
    "parse_message",
    "parse_secret",
    "secret_namespace_key_version",
    "SECRET_KEY_VERSION_AT",
    "value_aad",
]

MAGIC = b"KB"
FORMAT_VERSION = 1
KIND_MESSAGE = 0x01
KIND_SECRET = 0x02
KIND_LOCAL_WRAP = 0x03

_WRAPPED_DEK_SIZE = KEY_SIZE + TAG_SIZE
_SECRET_HEAD = struct.Struct(">2sBBI")  # magic, version, kind, namespace-key version
_CRC = struct.Struct(">I")
#: Bytes a stored secret adds to its value: header and its CRC, wrapped DEK with nonce, value nonce, tag.
SECRET_OVERHEAD = _SECRET_HEAD.size + _CRC.size + NONCE_SIZE + _WRAPPED_DEK_SIZE + NONCE_SIZE + TAG_SIZE
_NKV = struct.Struct(">I")
_NKV_AT = 4  # after magic, version and kind
_DEK_NONCE_AT = _SECRET_HEAD.size + _CRC.size
_WRAPPED_AT = _DEK_NONCE_AT + NONCE_SIZE
_NONCE_AT = _WRAPPED_AT + _WRAPPED_DEK_SIZE
_CIPHERTEXT_AT = _NONCE_AT + NONCE_SIZE
_MAX_CONTEXT_ITEM = 0xFFFF


def _fail() -> IntegrityError:
    return IntegrityError("malformed or unauthentic ciphertext")


_context_memo: dict[tuple[tuple[str, str], ...], bytes] = {}
_CONTEXT_MEMO_LIMIT = 4096


def encode_context(context: Mapping[str, str] | None) -> bytes:
    """Canonical bytes of a context: entries sorted by key, each length-prefixed.

    Raises ``TypeError`` for non-string keys or values and ``ValueError`` for an
    item longer than 65,535 bytes.
    """
    if not context:
        return b"\x00\x00"
    if not all(type(key) is str for key in context):
        raise TypeError("context keys and values must be str")
    parts = [struct.pack(">H", len(context))]
    for key in sorted(context):
        value = context[key]
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("context keys and values must be str")
        kb, vb = key.encode("utf-8"), value.encode("utf-8")
        if len(kb) > _MAX_CONTEXT_ITEM or len(vb) > _MAX_CONTEXT_ITEM:
            raise ValueError("a context key or value is longer than 65535 bytes")
        parts.append(struct.pack(">H", len(kb)) + kb + struct.pack(">H", len(vb)) + vb)
    return b"".join(parts)


def encode_context_cached(context: Mapping[str, str] | None) -> bytes:
    """:func:`encode_context`, memoising recent contexts (associated data, not secrets)
    keyed by their items in the order given; for the engine's hot path."""
    if not context:
        return b"\x00\x00"
    if len(context) == 1:
        # One entry (an ORM value's row binding): encoding it beats a memo that every new
        # row would miss and flush.
        ((key, value),) = context.items()
        if type(key) is str and type(value) is str:
            kb, vb = key.encode("utf-8"), value.encode("utf-8")
            if len(kb) <= _MAX_CONTEXT_ITEM and len(vb) <= _MAX_CONTEXT_ITEM:
                return b"\x00\x01" + len(kb).to_bytes(2, "big") + kb + len(vb).to_bytes(2, "big") + vb
    memo_key = tuple(context.items())
    cached = _context_memo.get(memo_key)
    if cached is None:
        cached = encode_context(context)
        if len(_context_memo) >= _CONTEXT_MEMO_LIMIT:
            _context_memo.clear()
        _context_memo[memo_key] = cached
    return cached


def namespace_key_context(namespace: str, version: int) -> dict[str, str]:
    """The context a namespace key is wrapped under by a KEK."""
    return {"kmsbox:purpose": "namespace-key", "kmsbox:namespace": namespace, "kmsbox:key-version": str(version)}


def _field(prefix: bytes, value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > _MAX_CONTEXT_ITEM:
        raise ValueError("a context key or value is longer than 65535 bytes")
    return prefix + len(data).to_bytes(2, "big") + data


# Pre-encoded keys, in sorted order, so these AADs equal encode_context() of the same
# mapping without sorting on every call (they are on every put and get).
_K_NAME = b"\x00\x04name"
_K_NKV = b"\x00\x03nkv"
_K_NS = b"\x00\x02ns"
_K_V = b"\x00\x01v"


def dek_aad(namespace: str, name: str, secret_version: int, namespace_key_version: int) -> bytes:
    """Associated data binding a wrapped DEK to its row and namespace-key version.

    Equal to ``b"KB\\x01dek" + encode_context({"ns", "name", "v", "nkv"})``.
    """
    return secret_aads(namespace, name, secret_version, namespace_key_version)[0]


def value_aad(namespace: str, name: str, secret_version: int) -> bytes:
    """Associated data binding a value ciphertext to its namespace, name and version.

    Equal to ``b"KB\\x01val" + encode_context({"ns", "name", "v"})``. The
    namespace-key version is deliberately absent: rotating a namespace key
    rewraps the DEK without touching the value ciphertext. The DEK itself, bound
    by :func:`dek_aad`, is the value's key reference.
    """
    return secret_aads(namespace, name, secret_version, 1)[1]  # any key version: it is not bound


@functools.lru_cache(maxsize=4096)
def secret_aads(namespace: str, name: str, secret_version: int, namespace_key_version: int) -> tuple[bytes, bytes]:
    """``(dek_aad(...), value_aad(...))`` of one stored version, built together (both are
    needed on every seal and open)."""
    name_field = _field(_K_NAME, name)  # new with each name; the other three repeat
    ns_field = _cached_field(_K_NS, namespace)
    version_field = _cached_field(_K_V, str(secret_version))
    return (
        b"KB\x01dek\x00\x04"
        + name_field
        + _cached_field(_K_NKV, str(namespace_key_version))
        + ns_field
        + version_field,
        b"KB\x01val\x00\x03" + name_field + ns_field + version_field,
    )


_cached_field = functools.lru_cache(maxsize=1024)(_field)


# --- standalone engine messages ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageEnvelope:
    """A parsed engine message. ``header`` is the AAD prefix of the ciphertext."""

    kek_version: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    header: bytes

    def __repr__(self) -> str:
        return (
            f"MessageEnvelope(kek_version={self.kek_version!r}, wrapped_key=<{len(self.wrapped_key)} bytes>, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


def encode_message_header(kek_version: str, wrapped_key: bytes) -> bytes:
    """Header of an engine message: magic, version, kind, KEK version, wrapped data key."""
    vb = kek_version.encode("ascii")
    if not 0 < len(vb) <= 0xFF or not 0 < len(wrapped_key) <= 0xFFFF:
        raise ValueError("KEK version or wrapped key has an unsupported length")
    head = (
        MAGIC + bytes((FORMAT_VERSION, KIND_MESSAGE, len(vb))) + vb + struct.pack(">H", len(wrapped_key)) + wrapped_key
    )
    # The CRC tells a corrupted header (IntegrityError) from a real missing KEK version.
    return head + _CRC.pack(zlib.crc32(head))


def parse_message(blob: bytes) -> MessageEnvelope:
    """Parse an engine message; raise IntegrityError if it is malformed."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise _fail()
    blob = bytes(blob)
    if len(blob) < 5 or blob[:2] != MAGIC or blob[2] != FORMAT_VERSION or blob[3] != KIND_MESSAGE:
        raise _fail()
    vlen = blob[4]
    pos = 5 + vlen
    if vlen == 0 or len(blob) < pos + 2:
        raise _fail()
    try:
        kek_version = blob[5:pos].decode("ascii")
    except UnicodeDecodeError:
        raise _fail() from None
    (wlen,) = struct.unpack_from(">H", blob, pos)
    pos += 2
    if wlen == 0 or len(blob) < pos + wlen + _CRC.size + NONCE_SIZE + TAG_SIZE:
        raise _fail()
    wrapped = blob[pos : pos + wlen]
    pos += wlen
    if _CRC.unpack_from(blob, pos)[0] != zlib.crc32(blob[:pos]):
        raise _fail()
    pos += _CRC.size
    return MessageEnvelope(
        kek_version=kek_version,
        wrapped_key=wrapped,
        nonce=blob[pos : pos + NONCE_SIZE],
        ciphertext=blob[pos + NONCE_SIZE :],
        header=blob[:pos],
    )


# --- stored secret values -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretEnvelope:
    """A parsed stored secret value (everything but the keys needed to open it)."""

    namespace_key_version: int
    dek_nonce: bytes
    wrapped_dek: bytes
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return (
            f"SecretEnvelope(namespace_key_version={self.namespace_key_version}, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


def encode_secret(
    namespace_key_version: int, dek_nonce: bytes, wrapped_dek: bytes, nonce: bytes, ciphertext: bytes
) -> bytes:
    """Encode a stored secret value."""
    if (
        not 0 < namespace_key_version <= 0xFFFFFFFF
        or len(dek_nonce) != NONCE_SIZE
        or len(wrapped_dek) != _WRAPPED_DEK_SIZE
        or len(nonce) != NONCE_SIZE
        or len(ciphertext) < TAG_SIZE
    ):
        raise ValueError("secret envelope fields have unsupported sizes")
    return _secret_head(namespace_key_version) + dek_nonce + wrapped_dek + nonce + ciphertext


@functools.lru_cache(maxsize=256)
def _secret_head(namespace_key_version: int) -> bytes:
    head = _SECRET_HEAD.pack(MAGIC, FORMAT_VERSION, KIND_SECRET, namespace_key_version)
    return head + _CRC.pack(zlib.crc32(head))


def split_secret(blob: bytes) -> tuple[int, bytes, bytes, bytes, bytes]:
    """The fields of a stored secret value, as :class:`SecretEnvelope` orders them.

    Raises IntegrityError if it is malformed. (The read path's form: no object built.)
    """
    if type(blob) is not bytes:
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise _fail()
        blob = bytes(blob)
    if len(blob) < SECRET_OVERHEAD:
        raise _fail()
    # The whole header and its CRC are fixed by the key version: compare them at once.
    nkv = _NKV.unpack_from(blob, _NKV_AT)[0]
    if nkv == 0 or blob[:_DEK_NONCE_AT] != _secret_head(nkv):
        raise _fail()
    return (
        nkv,
        blob[_DEK_NONCE_AT:_WRAPPED_AT],
        blob[_WRAPPED_AT:_NONCE_AT],
        blob[_NONCE_AT:_CIPHERTEXT_AT],
        blob[_CIPHERTEXT_AT:],
    )


def parse_secret(blob: bytes) -> SecretEnvelope:
    """Parse a stored secret value; raise IntegrityError if it is malformed."""
    return SecretEnvelope(*split_secret(blob))


def secret_namespace_key_version(blob: bytes) -> int:
    """The namespace-key version of a stored secret, read from its header only
    (IntegrityError if the header is malformed; the AEAD authenticates it on use)."""
    if type(blob) is not bytes or len(blob) < SECRET_OVERHEAD:
        return parse_secret(blob).namespace_key_version
    nkv: int = _NKV.unpack_from(blob, _NKV_AT)[0]
    if nkv == 0 or blob[:_DEK_NONCE_AT] != _secret_head(nkv):
        raise _fail()
    return nkv


#: Where a stored secret's namespace-key version starts (4 bytes, big-endian): storage
#: backends read it from the header (``substr(blob, 5, 4)`` in SQL) instead of a copy.
SECRET_KEY_VERSION_AT = _NKV_AT


# --- keys wrapped by the local KEK provider -------------------------------------------


def encode_local_wrap(nonce: bytes, ciphertext: bytes) -> bytes:
    """Encode a key wrapped by a local KEK: magic, version, kind, nonce, ciphertext."""
    if len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
        raise ValueError("local wrap fields have unsupported sizes")
    return MAGIC + bytes((FORMAT_VERSION, KIND_LOCAL_WRAP)) + nonce + ciphertext


def parse_local_wrap(blob: bytes) -> tuple[bytes, bytes]:
    """Return ``(nonce, ciphertext)`` of a local wrap; IntegrityError if malformed."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise _fail()
    blob = bytes(blob)
    if len(blob) < 4 + NONCE_SIZE + TAG_SIZE or blob[:4] != MAGIC + bytes((FORMAT_VERSION, KIND_LOCAL_WRAP)):
        raise _fail()
    return blob[4 : 4 + NONCE_SIZE], blob[4 + NONCE_SIZE :]


# --- audit events ---------------------------------------------------------------------


def _no_default(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not allowed in an audit record")


def sorted_json_encoder(*, compact: bool, ensure_ascii: bool) -> Callable[[object], str]:
    """``json.dumps(value, sort_keys=True, ...)`` as a reusable function.

    The encoder's C core is made once instead of on every call (a third of the cost of
    a small object), with the arguments ``JSONEncoder`` gives it, so the same bytes.
    """
    fallback = json.JSONEncoder(
        separators=(",", ":") if compact else (", ", ": "),
        sort_keys=True,
        ensure_ascii=ensure_ascii,
        check_circular=False,
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return fallback.encode
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    core = make(None, _no_default, strings, None, fallback.key_separator, fallback.item_separator, True, False, True)

    def encode(value: object) -> str:
        return "".join(core(value, 0))

    return encode


_encode_audit = sorted_json_encoder(compact=True, ensure_ascii=False)


def encode_audit_record(fields: Sequence[object]) -> bytes:
    """Canonical bytes of one audit event, the input of its chain MAC.

    ``fields`` is the event's values in a fixed order (strings, numbers, None and
    string-keyed mappings), encoded as compact JSON with sorted keys.
    """
    # The encoder writes a list or a tuple as a JSON array: no copy needed for those.
    items = fields if type(fields) in (list, tuple) else list(fields)
    return b"KB\x01audit" + _encode_audit(items).encode("utf-8")


# --- records under a MAC ----------------------------------------------------------------

_encode_record_json = sorted_json_encoder(compact=True, ensure_ascii=False)


def encode_record(tag: bytes, fields: Sequence[object]) -> bytes:
    """Canonical bytes of a record that a MAC authenticates.

    ``tag`` names the kind of record (a secret row, a namespace's key state, an audit
    event, a chain head), so that no record of one kind is ever valid as another. The
    fields follow as one compact JSON array: strings, integers, floats (by ``repr``, exact
    and stable), None, and mappings with sorted keys; bytes go in as hex text. JSON's
    syntax keeps every field apart, so the encoding is injective. Raises TypeError for
    another type and UnicodeEncodeError for text with a lone surrogate.
    """
    items = fields if type(fields) in (list, tuple) else list(fields)
    return b"KB\x02" + tag + b"\x00" + _encode_record_json(items).encode("utf-8")
