"""The ORM-neutral parts: row ids, codecs, stored forms, header reading, index keys and legacy readers."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st
from kmsbox_orm import (
    BlindIndexSpec,
    ColumnEncryption,
    DjangoCryptographyFormat,
    EncryptedColumn,
    FernetFieldsFormat,
    IndexKeyRecord,
    IndexKeyring,
    SqlalchemyUtilsFormat,
    ValueTooLarge,
    WrongValueType,
    blind,
    codec_for,
    row_id,
)
from kmsbox_orm.message import read_header

import kmsbox
from kmsbox.testing.fake_kek import FakeKek

# An in-memory KEK for the hypothesis test (function-scoped fixtures do not mix with @given).
_HYPOTHESIS_KEK = FakeKek("orm-contexts")


@pytest.fixture
def encryption(kmsbox_local_kek: str) -> ColumnEncryption:
    return ColumnEncryption(kmsbox_local_kek)


def test_row_ids_are_canonical_and_refuse_what_cannot_name_a_row() -> None:
    u = uuid.uuid4()
    assert row_id((42,)) == "42" and row_id(("a",)) == "a" and row_id((u,)) == str(u)
    assert row_id((1, "x")) == '["1","x"]' and row_id((b"\x01",)) == "hex:01"
    assert row_id((1, "2")) != row_id((12,))
    for bad in ((None,), (True,), (1.5,), ()):
        with pytest.raises((TypeError, ValueError)):
            row_id(bad)
    with pytest.raises(ValueError):
        row_id(("x" * 5000,))


def test_codecs_check_types_sizes_and_decode_strictly() -> None:
    text, data, doc = codec_for("text", 8), codec_for("bytes"), codec_for("json")
    assert text.decode(text.encode("héllo")) == "héllo"
    assert doc.encode({"b": 1, "a": [True, None]}) == b'{"a":[true,null],"b":1}'
    with pytest.raises(ValueTooLarge) as info:
        text.encode("123456789")
    assert "123456789" not in str(info.value)
    for codec, value in ((text, b"x"), (text, "\ud800"), (data, "s"), (doc, {"x": float("nan")}), (doc, {1j})):
        with pytest.raises(WrongValueType):
            codec.encode(value)
    with pytest.raises(kmsbox.IntegrityError):
        text.decode(b"\xff")
    with pytest.raises(kmsbox.IntegrityError):
        doc.decode(b"{not json")
    for bad in (0, -1, True, 10**12, "5"):
        with pytest.raises(ValueError):
            codec_for("text", bad)  # type: ignore[arg-type]


def test_stored_forms_binding_and_state(encryption: ColumnEncryption) -> None:
    binary = EncryptedColumn("t", "c", codec_for("text"), encryption)
    text = EncryptedColumn("t", "c", codec_for("text"), encryption, stored_as="text")
    sealed = binary.seal("v", "1")
    assert binary.open(sealed.stored, "1") == "v" and binary.state(sealed.stored) == "current"
    as_text = text.seal("v", "1").stored
    assert isinstance(as_text, str) and as_text.startswith("kb1:") and text.open(as_text, "1") == "v"
    for row, other in (("2", binary), ("1", EncryptedColumn("t", "d", codec_for("text"), encryption))):
        with pytest.raises(kmsbox.IntegrityError):
            other.open(sealed.stored, row)
    for bad in (b"", b"KB\x01\x01", b"legacy", "kb1:!!!", "plain text"):
        with pytest.raises(kmsbox.IntegrityError):
            (text if isinstance(bad, str) else binary).open(bad, "1")
    header = read_header(bytes(sealed.stored))  # type: ignore[arg-type]
    assert header.kek_version == "v1" and "wrapped_key=<" in repr(header)
    assert "v" not in repr(sealed).replace("bytes", "")


@settings(max_examples=300, deadline=None)
@given(
    table=st.text(min_size=1, max_size=20),
    column=st.text(min_size=1, max_size=20),
    scope=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    row=st.text(max_size=40),
)
def test_a_columns_encoded_context_is_the_engines_encoding_of_its_context(
    table: str, column: str, scope: str | None, row: str
) -> None:
    # The column builds the associated data from fixed parts (the hot path); it must be
    # byte for byte what the engine makes of the mapping, or old rows stop decrypting.
    encryption = ColumnEncryption(_HYPOTHESIS_KEK, scope=scope)
    encrypted = EncryptedColumn(table, column, codec_for("text"), encryption)
    try:
        expected = kmsbox.format.encode_context(encrypted.context(row))
    except ValueError:  # a lone surrogate (UnicodeEncodeError) is refused by both
        with pytest.raises(ValueError):
            encrypted.encoded_context(row)
        return
    assert encrypted.encoded_context(row) == expected


def test_a_row_identifier_that_is_not_text_or_too_long_is_refused(encryption: ColumnEncryption) -> None:
    encrypted = EncryptedColumn("t", "c", codec_for("text"), encryption)
    stored = encrypted.seal("v", "1").stored
    for row in (1, b"1", None):
        with pytest.raises(TypeError):
            encrypted.open(stored, row)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encrypted.open(stored, "x" * 70_000)


def test_header_verdict_follows_the_primary_kek(monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = os.urandom(32).hex(), os.urandom(32).hex()
    monkeypatch.setenv("ORM_UNIT_KEK", f"v1:{v1}")
    old = EncryptedColumn("t", "c", codec_for("text"), ColumnEncryption("env://ORM_UNIT_KEK"))
    stored = old.seal("x", "1").stored
    monkeypatch.setenv("ORM_UNIT_KEK", f"v2:{v2},v1:{v1}")
    new = EncryptedColumn("t", "c", codec_for("text"), ColumnEncryption("env://ORM_UNIT_KEK"))
    assert new.state(stored) == "old-kek" and new.open(stored, "1") == "x"
    # Same version name, another KEK: not current either.
    monkeypatch.setenv("ORM_OTHER_KEK", f"v1:{os.urandom(32).hex()}")
    other = EncryptedColumn(
        "t", "c", codec_for("text"), ColumnEncryption(["env://ORM_OTHER_KEK", "env://ORM_UNIT_KEK"])
    )
    assert other.state(stored) == "old-kek"


class MemoryIndexKeys:
    """An in-memory IndexKeyStore."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], IndexKeyRecord] = {}

    def load_index_keys(self) -> list[IndexKeyRecord]:
        return list(self.rows.values())

    def add_index_key(self, record: IndexKeyRecord) -> bool:
        return self.rows.setdefault((record.name, record.version), record) is record

    def replace_index_key(self, old: IndexKeyRecord, new: IndexKeyRecord) -> bool:
        if self.rows.get((old.name, old.version)) != old:
            return False
        self.rows[(old.name, old.version)] = new
        return True


def test_index_keyring_two_phase_rotation(encryption: ColumnEncryption) -> None:
    now = [1_000_000.0]
    store = MemoryIndexKeys()
    ring = IndexKeyring(encryption, store, refresh=10, grace=60, clock=lambda: now[0])
    spec, codec = BlindIndexSpec("t.email", length=8, normalize="casefold"), codec_for("text")
    assert ring.ensure(["t.email"]) == ["t.email"]
    first = spec.digest(ring, codec, "A@b.c")
    assert first is not None and len(first) == 10 and first == spec.digest(ring, codec, " a@B.C")
    assert ring.rotate("t.email") == 2
    assert spec.digest(ring, codec, "a@b.c") == first  # v2 waits out its grace
    assert len(spec.digests(ring, codec, blind("a@b.c"))) == 2
    now[0] += 61
    second = spec.digest(ring, codec, "a@b.c")
    assert second != first and second in spec.digests(ring, codec, "a@b.c") and spec.is_current(ring, second)
    assert not spec.is_current(ring, first)
    with pytest.raises(ValueError):
        ring.retire("t.email", 2)
    ring.retire("t.email", 1)
    assert spec.digests(ring, codec, "a@b.c") == [second]
    assert "key=***" in repr(ring.readers("t.email")[0])
    with pytest.raises(kmsbox.ConfigError):
        spec.digest(IndexKeyring(encryption, MemoryIndexKeys()), codec, "x")
    for bad in ("", "x" * 201, "a\nb"):
        with pytest.raises(ValueError):
            BlindIndexSpec(bad)
    with pytest.raises(ValueError):
        BlindIndexSpec("n", length=33)
    with pytest.raises(ValueError):
        blind(None)


def test_sqlalchemy_utils_reader_rejects_wrong_keys_and_garbage() -> None:
    key = "k"
    fernet = Fernet(base64.urlsafe_b64encode(__import__("hashlib").sha256(b"k").digest()))
    token = fernet.encrypt(b"hello").decode()
    assert SqlalchemyUtilsFormat(key, engine="fernet").decode(token) == "hello"
    assert SqlalchemyUtilsFormat(key, engine="fernet").decode(token.encode()) == "hello"
    for fmt, stored in (
        (SqlalchemyUtilsFormat("other", engine="fernet"), token),
        (SqlalchemyUtilsFormat(key, engine="aes-gcm"), "c2hvcnQ="),
        (SqlalchemyUtilsFormat(key, engine="aes", padding="pkcs5"), "not base64!"),
        (SqlalchemyUtilsFormat(key, engine="aes", padding="pkcs5"), base64.b64encode(b"x" * 16).decode()),
    ):
        with pytest.raises(kmsbox.IntegrityError):
            fmt.decode(stored)
    with pytest.raises(ValueError):
        SqlalchemyUtilsFormat(key, engine="des")  # type: ignore[arg-type]
    assert "k" not in repr(SqlalchemyUtilsFormat("secret-key")).replace("SqlalchemyUtilsFormat", "")


def test_fernet_fields_and_django_cryptography_readers_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        FernetFieldsFormat("not a list")
    with pytest.raises(ValueError):
        FernetFieldsFormat(["short"], use_hkdf=False)
    with pytest.raises(kmsbox.IntegrityError):
        FernetFieldsFormat(["k"]).decode(b"gAAAAAgarbage")
    reader = DjangoCryptographyFormat("secret")
    for stored in (b"", b"\x80" + b"\x00" * 80, b"\x81" + b"\x00" * 80):
        with pytest.raises(kmsbox.IntegrityError):
            reader.decode(stored)


def _django_cryptography_blob(secret: str, payload: bytes) -> bytes:
    """A django-cryptography value made from its format (docs: kmsbox_orm.legacy), for a forged pickle."""
    import hashlib
    import hmac
    import struct
    import time

    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    key = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=b"django-cryptography", iterations=30000).derive(
        secret.encode()
    )
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    body = struct.pack(">cQ", b"\x80", int(time.time())) + iv
    body += encryptor.update(padder.update(payload) + padder.finalize()) + encryptor.finalize()
    return body + hmac.new(secret.encode(), body, hashlib.sha256).digest()


def test_django_cryptography_reader_unpickles_plain_data_only() -> None:
    import datetime
    import pickle

    reader = DjangoCryptographyFormat("secret")
    value = {"when": datetime.date(2026, 1, 2), "tags": {"a"}, "n": [1, 2.5, None]}
    assert reader.decode(_django_cryptography_blob("secret", pickle.dumps(value))) == value

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    with pytest.raises(kmsbox.IntegrityError):
        reader.decode(_django_cryptography_blob("secret", pickle.dumps(Evil())))
    with pytest.raises(kmsbox.IntegrityError):
        DjangoCryptographyFormat("other").decode(_django_cryptography_blob("secret", pickle.dumps("x")))


def test_a_newer_engine_format_is_handed_to_the_engine_not_taken_for_legacy(encryption: ColumnEncryption) -> None:
    column = EncryptedColumn("t", "c", codec_for("text"), encryption, legacy=FernetFieldsFormat(["k"]))
    stored = bytes(column.seal("v", "1").stored)  # type: ignore[arg-type]
    newer = stored[:2] + b"\x02" + stored[3:]
    assert column.message(newer) == newer and column.state(newer) == "current"
    with pytest.raises(kmsbox.IntegrityError):
        column.open(newer, "1")  # this engine knows only version 1
