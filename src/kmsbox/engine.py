"""Standalone envelope encryption of the user's own data, without the store.

>>> env = Envelope(kek="env://KMSBOX_MASTER_KEY")        # doctest: +SKIP
>>> blob = env.encrypt(b"card 4111...", {"table": "payments", "row": "42"})  # doctest: +SKIP
>>> env.decrypt(blob, {"table": "payments", "row": "42"})  # doctest: +SKIP

Each message carries its data key wrapped by the KEK, so it is self-contained
given the KEK. A data key is reused for many messages (each with a fresh random
nonce) while the key cache allows, so both sides make one KEK call per cached key
lifetime, not one per message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kmsbox import format as fmt
from kmsbox._crypto import NONCE_SIZE, TAG_SIZE, Aead, random_key
from kmsbox.errors import IntegrityError, KeyUnavailable
from kmsbox.kek import KekProvider, WrappedKey, open_kek
from kmsbox.keys import KeyCache

__all__ = ["Envelope"]

_DATA_KEY_CONTEXT = {"kmsbox:purpose": "engine-data-key"}
_ENCRYPT_SLOT = ("encrypt",)
_VIEW_FROM = 64 * 1024


class Envelope:
    """Encrypt and decrypt bytes under a KEK, binding a context as associated data.

    ``kek`` is a key URI, a provider, or a list of them: the first wraps new data
    keys, any of them may unwrap. ``cache`` bounds how long and how often one data
    key is used (by default 5 minutes and 2**24 messages).
    """

    def __init__(
        self,
        kek: str | KekProvider | Sequence[str | KekProvider],
        *,
        cache: KeyCache[tuple[bytes, Aead]] | None = None,
    ) -> None:
        items = [kek] if isinstance(kek, (str, KekProvider)) else list(kek)
        if not items:
            raise ValueError("Envelope needs at least one KEK")
        self._keks: list[KekProvider] = [open_kek(k) if isinstance(k, str) else k for k in items]
        self._cache: KeyCache[tuple[bytes, Aead]] = cache or KeyCache()
        self._header_len = 0

    def __repr__(self) -> str:
        return f"Envelope(kek={[k.uri for k in self._keks]!r})"

    @property
    def cache(self) -> KeyCache[tuple[bytes, Aead]]:
        """The data-key cache (exposed for its stats and bounds)."""
        return self._cache

    def encrypt(self, data: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Encrypt ``data``; the same ``context`` is needed to decrypt.

        Raises ProviderError if the KEK cannot wrap a new data key.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        slot = self._cache.get(_ENCRYPT_SLOT)
        if slot is None:
            slot = self._new_data_key()
        header, aead = slot
        nonce, ciphertext = aead.seal(bytes(data), header + fmt.encode_context_cached(context))
        return header + nonce + ciphertext

    def _new_data_key(self) -> tuple[bytes, Aead]:
        key = random_key()
        wrapped = self._keks[0].wrap(key, _DATA_KEY_CONTEXT)
        header = fmt.encode_message_header(wrapped.key_version, wrapped.ciphertext)
        slot = (header, Aead(key))
        self._cache.put(_ENCRYPT_SLOT, slot)
        self._cache.put(header, slot)
        self._header_len = len(header)
        return slot

    def decrypt(self, blob: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Decrypt a message made by :meth:`encrypt`.

        Raises IntegrityError when the blob is malformed, altered or the context
        differs; KeyUnavailable when the KEK version that wrapped it is gone.
        """
        end = self._header_len
        if type(blob) is bytes and end and len(blob) >= end + NONCE_SIZE + TAG_SIZE:
            # Hot path: headers are self-delimiting, so if the first ``end`` bytes equal
            # a header already verified and cached, they are this blob's header.
            header = blob[:end]
            slot = self._cache.get(header)
            if slot is not None:
                start = end + NONCE_SIZE
                # A large ciphertext goes on as a view: a fresh copy of it costs more (in
                # page faults) than decrypting it. Small ones are cheaper to slice.
                body = blob[start:] if len(blob) < _VIEW_FROM else memoryview(blob)[start:]
                return slot[1].open(blob[end:start], body, header + fmt.encode_context_cached(context))
        env = fmt.parse_message(blob)
        slot = self._cache.get(env.header)
        if slot is None:
            slot = self._cache.put(env.header, (env.header, self._unwrap(env)))
        self._header_len = len(env.header)
        return slot[1].open(env.nonce, env.ciphertext, env.header + fmt.encode_context_cached(context))

    def _unwrap(self, env: fmt.MessageEnvelope) -> Aead:
        unavailable: KeyUnavailable | None = None
        for kek in self._keks:
            try:
                key = kek.unwrap(WrappedKey(kek.uri, env.kek_version, env.wrapped_key), _DATA_KEY_CONTEXT)
            except KeyUnavailable as exc:
                unavailable = exc
                continue
            except IntegrityError:
                continue
            return Aead(key)
        if unavailable is not None:
            raise KeyUnavailable(f"no configured KEK holds version {env.kek_version!r}") from None
        raise IntegrityError("malformed or unauthentic ciphertext")
