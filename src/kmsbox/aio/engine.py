"""The standalone engine for asyncio: awaitable encrypt and decrypt.

The same engine as :class:`kmsbox.Envelope` (one core: format, data-key cache, KEK
steps). With the data key cached, a call is plain code on the event loop; a KEK call
goes to the provider's async form, once for all concurrent callers that need the same
data key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from kmsbox.aio.kek import AsyncKekProvider, async_kek
from kmsbox.aio.ports import drive
from kmsbox.engine import DataKeySlot, EnvelopeCore, check_data, check_keks, encoded_context
from kmsbox.kek import KekProvider
from kmsbox.keys import KeyCache

__all__ = ["Envelope"]


class _KekPorts:
    """Ports for the engine's KEK steps: each provider's async form."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._adapted: dict[int, AsyncKekProvider] = {}

    def kek(self, provider: KekProvider) -> Any:
        adapted = self._adapted.get(id(provider))
        if adapted is None:
            adapted = self._adapted[id(provider)] = async_kek(provider, self._executor)
        return adapted


class Envelope:
    """Encrypt and decrypt bytes under a KEK from asyncio code (see :class:`kmsbox.Envelope`
    for the arguments and errors). ``executor`` runs a sync provider's calls (a small pool
    of its own by default)."""

    def __init__(
        self,
        kek: str | KekProvider | Sequence[str | KekProvider],
        *,
        cache: KeyCache[DataKeySlot] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._core = EnvelopeCore(check_keks(kek), cache)
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="kmsbox-envelope")
        self._ports = _KekPorts(self._executor)
        self._flights: dict[Any, asyncio.Task[DataKeySlot]] = {}

    def __repr__(self) -> str:
        return f"aio.Envelope(kek={[k.uri for k in self._core.keks]!r})"

    @property
    def cache(self) -> KeyCache[DataKeySlot]:
        """The data-key cache."""
        return self._core.cache

    async def _flight(self, key: Any, make: Any) -> DataKeySlot:
        task = self._flights.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(drive(make()))
            self._flights[key] = task

            def landed(done: asyncio.Task[DataKeySlot]) -> None:
                if self._flights.get(key) is done:
                    del self._flights[key]
                if not done.cancelled():
                    done.exception()

            task.add_done_callback(landed)
        return await asyncio.shield(task)

    async def encrypt(self, data: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """See :meth:`kmsbox.Envelope.encrypt`."""
        aad_context = encoded_context(context)
        check_data(data, aad_context)
        core = self._core
        slot = core.encryption_slot()
        if slot is None:
            slot = await self._flight(("encrypt",), lambda: core.new_data_key(self._ports))
        return core.seal(slot, data, aad_context)

    async def decrypt(self, blob: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """See :meth:`kmsbox.Envelope.decrypt`."""
        aad_context = encoded_context(context)
        core = self._core
        plaintext = core.open_warm(blob, aad_context)
        if plaintext is not None:
            return plaintext
        plaintext, env = core.open_cold(blob, aad_context)
        if plaintext is not None:
            return plaintext
        slot = await self._flight(("decrypt", env.header), lambda: core.unwrap(self._ports, env))
        return core.open_with(slot, env, aad_context)

    async def aclose(self) -> None:
        """Release the thread pool (when it is this envelope's own)."""
        if self._own_executor:
            self._executor.shutdown(wait=False)
