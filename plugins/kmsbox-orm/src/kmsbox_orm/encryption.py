"""The KEK(s) and data-key cache that encrypted columns use.

One :class:`ColumnEncryption` per application: the first KEK wraps new data keys, any of
them unwraps (so rows written under an older KEK, or another KMS, stay readable), and the
engine's data-key cache makes reads cost one KEK call per cached data key, not per row.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from kmsbox import Envelope, KekProvider, KeyCache, WrappedKey, open_kek
from kmsbox.errors import IntegrityError, KeyUnavailable
from kmsbox_orm.message import MessageHeader, header_length, read_header

__all__ = ["ENGINE_DATA_KEY_CONTEXT", "ColumnEncryption"]

#: The context the engine wraps its data keys under (docs/format.md, kind 0x01).
ENGINE_DATA_KEY_CONTEXT: Mapping[str, str] = {"kmsbox:purpose": "engine-data-key"}
_VERDICTS = 4096  # distinct data-key headers remembered by header_is_current


class ColumnEncryption:
    """Encrypt and decrypt column values with the engine under ``kek`` (a URI, a provider or a list).

    ``scope``, when set, is bound into every value's context too (for example a database
    name, so that two databases with the same table names never accept each other's
    ciphertexts). ``cache`` is the engine's data-key cache (see :class:`kmsbox.KeyCache`).
    """

    def __init__(
        self,
        kek: str | KekProvider | Sequence[str | KekProvider],
        *,
        scope: str | None = None,
        cache: KeyCache[Any] | None = None,
    ) -> None:
        items = [kek] if isinstance(kek, (str, KekProvider)) else list(kek)
        if not items:
            raise ValueError("ColumnEncryption needs at least one KEK")
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise ValueError("scope must be a non-empty string or None")
        self.keks: list[KekProvider] = [open_kek(k) if isinstance(k, str) else k for k in items]
        self.envelope = Envelope(self.keks, cache=cache)
        self.scope = scope
        # Header bytes -> "wrapped by the primary KEK's primary version", valid for _verdicts_primary.
        self._verdicts: dict[bytes, bool] = {}
        self._verdicts_primary: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ColumnEncryption(kek={[k.uri for k in self.keks]!r}, scope={self.scope!r})"

    @property
    def primary_kek(self) -> KekProvider:
        """The KEK that wraps new data keys."""
        return self.keks[0]

    def encrypt(self, data: bytes, context: Mapping[str, str]) -> bytes:
        """An engine message of ``data`` bound to ``context`` (ProviderError if the KEK fails)."""
        return self.envelope.encrypt(data, context)

    def decrypt(self, blob: bytes, context: Mapping[str, str]) -> bytes:
        """The plaintext of an engine message; IntegrityError or KeyUnavailable as the engine raises."""
        return self.envelope.decrypt(blob, context)

    def header_is_current(self, header: MessageHeader) -> bool:
        """Whether a message's data key is wrapped by the primary KEK's primary version.

        Answered once per distinct header (one KEK call), then remembered until the
        primary version changes: the rewrite job skips current rows without decrypting them.
        """
        kek = self.keks[0]
        primary = kek.primary_version()
        if primary != self._verdicts_primary:
            with self._lock:
                self._verdicts = {}
                self._verdicts_primary = primary
        verdict = self._verdicts.get(header.header)
        if verdict is not None:
            return verdict
        verdict = header.kek_version == primary
        if verdict:
            try:
                kek.unwrap(WrappedKey(kek.uri, header.kek_version, header.wrapped_key), ENGINE_DATA_KEY_CONTEXT)
            except (IntegrityError, KeyUnavailable):
                # Same version name, another KEK (an escrow or the KMS migrated from).
                verdict = False
        with self._lock:
            if len(self._verdicts) >= _VERDICTS:
                self._verdicts.clear()
            self._verdicts[header.header] = verdict
        return verdict

    def message_is_current(self, message: bytes) -> bool:
        """:meth:`header_is_current` for a whole message, without re-parsing a header already judged.

        IntegrityError when the header is malformed.
        """
        if message[2:3] != b"\x01":
            return True  # a newer engine format, written by the engine in use: nothing newer to move to
        end = header_length(message)
        verdict = self._verdicts.get(message[:end]) if end else None
        if verdict is None or self._verdicts_primary != self.keks[0].primary_version():
            return self.header_is_current(read_header(message))
        return verdict

    def close(self) -> None:
        """Close the KEK providers."""
        for kek in self.keks:
            kek.close()
