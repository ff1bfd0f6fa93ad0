"""Standalone envelope encryption of the user's own data, without the store.

>>> env = Envelope(kek="env://KMSBOX_MASTER_KEY")        # doctest: +SKIP
>>> blob = env.encrypt(b"card 4111...", {"table": "payments", "row": "42"})  # doctest: +SKIP
>>> env.decrypt(blob, {"table": "payments", "row": "42"})  # doctest: +SKIP

Each message carries its data key wrapped by the KEK, so it is self-contained
given the KEK. A data key is reused for many messages (each with a fresh random
nonce) while the key cache allows, so both sides make one KEK call per cached key
lifetime, not one per message.

The steps that need a KEK are operations (:mod:`kmsbox.store.io`) shared with
:class:`kmsbox.aio.Envelope`; everything else, the warm path included, is plain code
both faces call.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

from kmsbox import format as fmt
from kmsbox._crypto import NONCE_SIZE, TAG_SIZE, Aead, random_key
from kmsbox.errors import IntegrityError, KeyUnavailable
from kmsbox.kek import KekProvider, WrappedKey, open_kek
from kmsbox.keys import KeyCache

__all__ = ["DataKeySlot", "Envelope", "EnvelopeCore", "check_data", "encoded_context"]

_DATA_KEY_CONTEXT = {"kmsbox:purpose": "engine-data-key"}
_ENCRYPT_SLOT = ("encrypt",)
_VIEW_FROM = 64 * 1024

#: A cached data key: the message header that carries it wrapped, and the key.
DataKeySlot = tuple[bytes, Aead]
_Op = Generator[Any, Any, Any]


def check_keks(kek: object) -> list[KekProvider]:
    """A KEK argument as providers: a URI, a provider, or a non-empty list of them
    (TypeError for anything else, ValueError for an empty list)."""
    if isinstance(kek, (str, KekProvider)):
        items: list[object] = [kek]
    elif isinstance(kek, (list, tuple)):
        items = list(kek)
    else:
        raise TypeError(f"kek must be a key URI, a KEK provider or a list of them, got {type(kek).__name__}")
    if not items:
        raise ValueError("Envelope needs at least one KEK")
    keks: list[KekProvider] = []
    for index, item in enumerate(items, start=1):
        if isinstance(item, str):
            keks.append(open_kek(item))
        elif isinstance(item, KekProvider):
            keks.append(item)
        else:
            raise TypeError(f"kek entry {index} must be a key URI or a KEK provider, got {type(item).__name__}")
    return keks


def encoded_context(context: object) -> bytes:
    """A context argument encoded as associated data (TypeError when it is not a mapping of
    str to str, ValueError for an entry longer than 65,535 bytes)."""
    if context is None or type(context) is dict:
        return fmt.encode_context_cached(context)  # entries are checked (TypeError) there
    if isinstance(context, Mapping) and all(type(k) is str for k in context):
        return fmt.encode_context_cached(context)  # values are checked (TypeError) there
    raise TypeError(f"context must be a mapping of str to str, got {type(context).__name__}")


def check_data(data: object, context: object) -> None:
    """TypeError unless ``data`` is bytes-like and ``context`` is an encoded context (bytes);
    checked before a data key is made, so a bad call costs no KEK call."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    if type(context) is not bytes:
        raise TypeError("an encoded context must be bytes")


class EnvelopeCore:
    """What the sync and async envelopes share: the data-key cache, the message format,
    and the KEK steps as operations."""

    def __init__(self, keks: list[KekProvider], cache: KeyCache[DataKeySlot] | None) -> None:
        self.keks = keks
        self.cache: KeyCache[DataKeySlot] = cache or KeyCache()
        self._header_len = 0

    # --- plain steps ------------------------------------------------------------------------

    def seal(self, slot: DataKeySlot, data: bytes | bytearray | memoryview, aad_context: bytes) -> bytes:
        """Encrypt under a cached data key, bound to an encoded context."""
        header, aead = slot
        nonce, ciphertext = aead.seal(bytes(data), header + aad_context)
        return header + nonce + ciphertext

    def open_warm(self, blob: bytes, aad_context: bytes) -> bytes | None:
        """Decrypt with the data key of the last header seen, if it is still cached; None
        otherwise (then :meth:`open_cold`). The path of every message after the first."""
        end = self._header_len
        if type(blob) is bytes and end and len(blob) >= end + NONCE_SIZE + TAG_SIZE:
            # Headers are self-delimiting, so if the first ``end`` bytes equal a header
            # already verified and cached, they are this blob's header.
            header = blob[:end]
            slot = self.cache.get(header)
            if slot is not None:
                start = end + NONCE_SIZE
                # A large ciphertext goes on as a view: a fresh copy of it costs more (in
                # page faults) than decrypting it. Small ones are cheaper to slice.
                body = blob[start:] if len(blob) < _VIEW_FROM else memoryview(blob)[start:]
                return slot[1].open(blob[end:start], body, header + aad_context)
        return None

    def open_cold(self, blob: bytes, aad_context: bytes) -> tuple[bytes | None, fmt.MessageEnvelope]:
        """Parse a message and decrypt it if its data key is cached: ``(plaintext, envelope)``,
        or ``(None, envelope)`` when the key must be unwrapped (IntegrityError if malformed)."""
        env = fmt.parse_message(blob)
        slot = self.cache.get(env.header)
        if slot is None:
            return None, env
        return self.open_with(slot, env, aad_context), env

    def open_with(self, slot: DataKeySlot, env: fmt.MessageEnvelope, aad_context: bytes) -> bytes:
        """Decrypt a parsed message with its data key."""
        self._header_len = len(env.header)
        return slot[1].open(env.nonce, env.ciphertext, env.header + aad_context)

    # --- KEK steps (operations) --------------------------------------------------------------

    def new_data_key(self, io: Any) -> _Op:
        """Make a data key for new messages, wrapped by the first KEK; the slot."""
        key = random_key()
        wrapped: WrappedKey = yield io.kek(self.keks[0]).wrap(key, _DATA_KEY_CONTEXT)
        header = fmt.encode_message_header(wrapped.key_version, wrapped.ciphertext)
        slot = (header, Aead(key))
        self.cache.put(_ENCRYPT_SLOT, slot)
        self.cache.put(header, slot)
        self._header_len = len(header)
        return slot

    def unwrap(self, io: Any, env: fmt.MessageEnvelope) -> _Op:
        """The data key of a message, through the first KEK that can; the slot.

        KeyUnavailable when no configured KEK holds the version that wrapped it,
        IntegrityError when none authenticates it.
        """
        unavailable: KeyUnavailable | None = None
        for kek in self.keks:
            try:
                key: bytes = yield io.kek(kek).unwrap(
                    WrappedKey(kek.uri, env.kek_version, env.wrapped_key), _DATA_KEY_CONTEXT
                )
            except KeyUnavailable as exc:
                unavailable = exc
                continue
            except IntegrityError:
                continue
            slot: DataKeySlot = self.cache.put(env.header, (env.header, Aead(key)))
            return slot
        if unavailable is not None:
            raise KeyUnavailable(f"no configured KEK holds version {env.kek_version!r}") from None
        raise IntegrityError("malformed or unauthentic ciphertext")

    def encryption_slot(self) -> DataKeySlot | None:
        """The cached data key for new messages, if any."""
        return self.cache.get(_ENCRYPT_SLOT)


class _Direct:
    """Ports for the sync envelope: each KEK call is made at once."""

    @staticmethod
    def kek(provider: KekProvider) -> KekProvider:
        return provider


def _run(op: _Op) -> Any:
    try:
        value = next(op)
        while True:
            value = op.send(value)
    except StopIteration as stop:
        return stop.value


class Envelope:
    """Encrypt and decrypt bytes under a KEK, binding a context as associated data.

    ``kek`` is a key URI, a provider, or a list of them: the first wraps new data
    keys, any of them may unwrap. ``cache`` bounds how long and how often one data
    key is used (by default 5 minutes and 2**24 messages). TypeError for a ``kek``
    that is none of these; ValueError for an empty list.
    """

    def __init__(
        self,
        kek: str | KekProvider | Sequence[str | KekProvider],
        *,
        cache: KeyCache[DataKeySlot] | None = None,
    ) -> None:
        self._core = EnvelopeCore(check_keks(kek), cache)

    def __repr__(self) -> str:
        return f"Envelope(kek={[k.uri for k in self._core.keks]!r})"

    @property
    def cache(self) -> KeyCache[DataKeySlot]:
        """The data-key cache (exposed for its stats and bounds)."""
        return self._core.cache

    @property
    def keks(self) -> list[KekProvider]:
        """The configured KEKs, the one that wraps new data keys first."""
        return list(self._core.keks)

    def encrypt(self, data: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Encrypt ``data``; the same ``context`` is needed to decrypt.

        Raises TypeError for data that is not bytes or a context that is not a mapping
        of str to str, and ProviderError if the KEK cannot wrap a new data key.
        """
        return self.encrypt_encoded(data, encoded_context(context))

    def decrypt(self, blob: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Decrypt a message made by :meth:`encrypt`.

        Raises IntegrityError when the blob is malformed, altered or the context differs;
        KeyUnavailable when the KEK version that wrapped it is gone; TypeError for a
        context that is not a mapping of str to str.
        """
        return self.decrypt_encoded(blob, encoded_context(context))

    def encrypt_encoded(self, data: bytes, context: bytes) -> bytes:
        """:meth:`encrypt` with the context already encoded by
        :func:`kmsbox.format.encode_context` (for callers that build one per row, such as
        the ORM columns, where encoding is a large part of the cost of a small value)."""
        check_data(data, context)
        core = self._core
        slot = core.encryption_slot()
        if slot is None:
            slot = _run(core.new_data_key(_Direct))
        return core.seal(slot, data, context)

    def decrypt_encoded(self, blob: bytes, context: bytes) -> bytes:
        """:meth:`decrypt` with the context already encoded by :func:`kmsbox.format.encode_context`
        (a context that is not bytes is a TypeError when it is joined to the header)."""
        core = self._core
        plaintext = core.open_warm(blob, context)
        if plaintext is None:
            plaintext, env = core.open_cold(blob, context)
            if plaintext is None:
                plaintext = core.open_with(_run(core.unwrap(_Direct, env)), env, context)
        return plaintext
