"""Readers of the encrypted-column formats people migrate from, written from their sources.

- :class:`SqlalchemyUtilsFormat`: sqlalchemy-utils ``EncryptedType`` / ``StringEncryptedType``
  (``AesEngine`` with its four paddings, ``AesGcmEngine``, ``FernetEngine``): the key is
  SHA-256 of the configured key; ``AesEngine`` uses AES-256-CBC with the first 16 key bytes
  as a fixed IV; values are base64 text (bytes of it in an ``EncryptedType`` column).
- :class:`FernetFieldsFormat`: django-fernet-fields: a Fernet token, the key derived from
  each of ``FERNET_KEYS`` (default ``[SECRET_KEY]``) with HKDF-SHA256 (salt
  ``django-fernet-fields-hkdf-salt``, info ``django-fernet-fields``) unless
  ``FERNET_USE_HKDF = False``; ``MultiFernet`` over several keys.
- :class:`DjangoCryptographyFormat`: django-cryptography's ``encrypt(...)`` fields:
  ``0x80 || 8-byte time || 16-byte IV || AES-256-CBC(PKCS7(pickle(value))) || HMAC-SHA256``,
  the AES key PBKDF2-HMAC-SHA256(``CRYPTOGRAPHY_KEY or SECRET_KEY``, salt
  ``CRYPTOGRAPHY_SALT`` = ``django-cryptography``, 30,000 iterations), the HMAC keyed by
  ``SECRET_KEY``. Only plain data types are unpickled (see :class:`_PlainUnpickler`).

Each reader takes the stored value (bytes or text) and returns the plaintext value, or
raises :class:`kmsbox.IntegrityError` with the same opaque message for anything that does
not decrypt. Note that ``AesEngine`` values carry no authentication: a value changed in the
database decrypts to garbage (or fails to), and the rewrite job re-encrypts what it reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac as std_hmac
import io
import pickle
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from kmsbox.errors import IntegrityError

__all__ = ["DjangoCryptographyFormat", "FernetFieldsFormat", "LegacyFormat", "SqlalchemyUtilsFormat"]

_OPAQUE = "malformed or unauthentic legacy ciphertext"
Secret = str | bytes


def _bytes(value: Secret) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _fail() -> IntegrityError:
    return IntegrityError(_OPAQUE)


class LegacyFormat:
    """A reader of one legacy format: ``decode(stored) -> value``."""

    #: A short name for reports (``sqlalchemy-utils``, ``fernet-fields``, ``django-cryptography``).
    name = "legacy"

    def decode(self, stored: bytes | str) -> Any:
        """The plaintext value of a stored legacy ciphertext (IntegrityError if it does not decrypt)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        # Never the keys.
        return f"{type(self).__name__}()"


class SqlalchemyUtilsFormat(LegacyFormat):
    """sqlalchemy-utils ``EncryptedType`` values: ``engine`` is aes, aes-gcm or fernet; ``padding``
    (aes only) is naive (the library's default), pkcs5, oneandzeroes or zeroes. ``key`` is the
    key the column was declared with (a str, bytes, or a callable returning one)."""

    name = "sqlalchemy-utils"

    def __init__(
        self,
        key: Secret | Callable[[], Secret],
        *,
        engine: Literal["aes", "aes-gcm", "fernet"] = "aes",
        padding: Literal["naive", "pkcs5", "oneandzeroes", "zeroes"] = "naive",
    ) -> None:
        if engine not in ("aes", "aes-gcm", "fernet"):
            raise ValueError("engine must be aes, aes-gcm or fernet")
        if padding not in ("naive", "pkcs5", "oneandzeroes", "zeroes"):
            raise ValueError("padding must be naive, pkcs5, oneandzeroes or zeroes")
        self._key = key
        self.engine = engine
        self.padding = padding

    def __repr__(self) -> str:
        return f"SqlalchemyUtilsFormat(engine={self.engine!r}, padding={self.padding!r})"

    def _engine_key(self) -> bytes:
        key = self._key() if callable(self._key) else self._key
        return hashlib.sha256(_bytes(key)).digest()

    def decode(self, stored: bytes | str) -> str:
        """The decrypted text (sqlalchemy-utils then converts it to the underlying type)."""
        text = stored.decode("ascii", "replace") if isinstance(stored, (bytes, bytearray, memoryview)) else stored
        if not isinstance(text, str):
            raise _fail()
        key = self._engine_key()
        try:
            if self.engine == "fernet":
                return Fernet(base64.urlsafe_b64encode(key)).decrypt(text.encode("ascii")).decode("utf-8")
            raw = base64.b64decode(text, validate=True)
            if self.engine == "aes-gcm":
                if len(raw) < 28:
                    raise ValueError
                return AESGCM(key).decrypt(raw[:12], raw[28:] + raw[12:28], None).decode("utf-8")
            if not raw or len(raw) % 16:
                raise ValueError
            decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
            return self._unpad(decryptor.update(raw) + decryptor.finalize()).decode("utf-8")
        except (ValueError, InvalidTag, InvalidToken, binascii.Error, UnicodeError):
            raise _fail() from None

    def _unpad(self, value: bytes) -> bytes:
        # Exactly sqlalchemy_utils.types.encrypted.padding, including its quirks.
        if self.padding == "naive":
            return value.rstrip(b"*")
        if self.padding == "oneandzeroes":
            return value.rstrip(b"\x00").rstrip(b"\x80")
        if self.padding == "zeroes":
            return value[: -value[-1]]
        n = value[-1]
        if n == 0 or n > 16 or value[-n:] != bytes([n]) * n:
            raise ValueError
        return value[:-n]


class FernetFieldsFormat(LegacyFormat):
    """django-fernet-fields values. ``keys`` are ``FERNET_KEYS`` (or ``[SECRET_KEY]``), newest first;
    ``use_hkdf`` is ``FERNET_USE_HKDF`` (default True)."""

    name = "fernet-fields"

    def __init__(self, keys: Sequence[Secret], *, use_hkdf: bool = True) -> None:
        if isinstance(keys, (str, bytes)) or not keys:
            raise ValueError("keys must be a non-empty list (FERNET_KEYS, or [SECRET_KEY])")
        try:
            fernet_keys = [self._derive(k) if use_hkdf else _bytes(k) for k in keys]
            self._fernet = MultiFernet([Fernet(k) for k in fernet_keys])
        except (ValueError, binascii.Error):
            raise ValueError("with use_hkdf=False every key must be a Fernet key (32 url-safe base64 bytes)") from None

    @staticmethod
    def _derive(key: Secret) -> bytes:
        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"django-fernet-fields-hkdf-salt", info=b"django-fernet-fields"
        )
        return base64.urlsafe_b64encode(hkdf.derive(_bytes(key)))

    def decode(self, stored: bytes | str) -> bytes:
        """The decrypted bytes (the fields turn them into text with ``force_text``)."""
        try:
            return self._fernet.decrypt(_bytes(stored))
        except (InvalidToken, TypeError, ValueError):
            raise _fail() from None


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: a pickle naming any other global is refused, so a legacy row
    can never run code (even though its HMAC was checked first)."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("builtins", "set"),
            ("builtins", "frozenset"),
            ("builtins", "complex"),
            ("datetime", "date"),
            ("datetime", "datetime"),
            ("datetime", "time"),
            ("datetime", "timedelta"),
            ("datetime", "timezone"),
            ("decimal", "Decimal"),
            ("uuid", "UUID"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        """Only the plain types above."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError("legacy value pickles a type this reader does not load")
        return super().find_class(module, name)


class DjangoCryptographyFormat(LegacyFormat):
    """django-cryptography values. ``secret_key`` is ``SECRET_KEY``; ``cryptography_key`` is
    ``CRYPTOGRAPHY_KEY`` (when set); ``salt`` is ``CRYPTOGRAPHY_SALT``; ``field_key`` is a
    field's own ``key=`` argument (used as the AES key as is)."""

    name = "django-cryptography"

    def __init__(
        self,
        secret_key: Secret,
        *,
        cryptography_key: Secret | None = None,
        salt: Secret = "django-cryptography",
        field_key: bytes | None = None,
    ) -> None:
        if not secret_key:
            raise ValueError("secret_key must be the project's SECRET_KEY")
        self._sign_key = _bytes(secret_key)
        if field_key is not None:
            self._aes_key = bytes(field_key)
        else:
            kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_bytes(salt), iterations=30000)
            self._aes_key = kdf.derive(_bytes(cryptography_key or secret_key))
        if len(self._aes_key) not in (16, 24, 32):
            raise ValueError("field_key must be 16, 24 or 32 bytes")

    def decode(self, stored: bytes | str) -> Any:
        """The unpickled value."""
        data = _bytes(stored)
        if len(data) < 9 + 32 + 32 or data[0] != 0x80:
            raise _fail()
        body, signature = data[:-32], data[-32:]
        expected = std_hmac.new(self._sign_key, body, hashlib.sha256).digest()
        if not std_hmac.compare_digest(signature, expected):
            raise _fail()
        iv, ciphertext = body[9:25], body[25:]
        try:
            decryptor = Cipher(algorithms.AES(self._aes_key), modes.CBC(iv)).decryptor()
            padded = decryptor.update(ciphertext) + decryptor.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            pickled = unpadder.update(padded) + unpadder.finalize()
            return _PlainUnpickler(io.BytesIO(pickled)).load()
        except (ValueError, EOFError, pickle.UnpicklingError, IndexError, TypeError, AttributeError):
            raise _fail() from None
