"""KEK providers for asyncio: the async protocol, and the adapter every sync provider gets.

A provider whose SDK has an async client offers it through ``as_async()`` (the GCP
plugin's does, over ``KeyManagementServiceAsyncClient``). Any other provider, a third
party's included, is adapted automatically: each call runs on a bounded thread pool, so
a KMS round trip never runs on the event loop's thread. A provider that never leaves
the process (``in_process``: a local key) is called directly, with no thread hop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar, runtime_checkable

from kmsbox.kek import Context, KekProvider, WrappedKey

__all__ = ["AsyncKekProvider", "InlineKek", "ThreadedKek", "async_kek"]

T = TypeVar("T")


@runtime_checkable
class AsyncKekProvider(Protocol):
    """What the async store needs of a key-encryption key (the async form of
    :class:`kmsbox.KekProvider`, with the same errors)."""

    @property
    def uri(self) -> str:
        """The key URI."""
        ...

    async def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """Wrap under the primary version."""
        ...

    async def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """Unwrap with the version recorded in ``wrapped``."""
        ...

    async def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """Wrap several keys."""
        ...

    async def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """Unwrap several keys."""
        ...

    async def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """Re-wrap under the primary version."""
        ...

    async def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """Re-wrap several keys."""
        ...

    async def primary_version(self) -> str:
        """The version new wraps use."""
        ...

    async def version_available(self, version: str) -> bool | None:
        """Whether the KEK can still unwrap ``version`` (None when it cannot tell)."""
        ...

    async def describe(self) -> dict[str, str]:
        """A description for status output."""
        ...


class ThreadedKek:
    """A sync provider whose every call runs on a bounded executor."""

    def __init__(self, provider: KekProvider, executor: Executor) -> None:
        self.provider = provider
        self._executor = executor

    def __repr__(self) -> str:
        return f"ThreadedKek({self.provider!r})"

    @property
    def uri(self) -> str:
        """The key URI."""
        return self.provider.uri

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def wrap(self, key: bytes, context: Context) -> WrappedKey:
        """See :meth:`KekProvider.wrap`."""
        return await self._call(self.provider.wrap, key, context)

    async def unwrap(self, wrapped: WrappedKey, context: Context) -> bytes:
        """See :meth:`KekProvider.unwrap`."""
        return await self._call(self.provider.unwrap, wrapped, context)

    async def wrap_many(self, items: Sequence[tuple[bytes, Context]]) -> list[WrappedKey]:
        """See :meth:`KekProvider.wrap_many`."""
        return await self._call(self.provider.wrap_many, items)

    async def unwrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[bytes]:
        """See :meth:`KekProvider.unwrap_many`."""
        return await self._call(self.provider.unwrap_many, items)

    async def rewrap(self, wrapped: WrappedKey, context: Context) -> WrappedKey:
        """See :meth:`KekProvider.rewrap`."""
        return await self._call(self.provider.rewrap, wrapped, context)

    async def rewrap_many(self, items: Sequence[tuple[WrappedKey, Context]]) -> list[WrappedKey]:
        """See :meth:`KekProvider.rewrap_many`."""
        return await self._call(self.provider.rewrap_many, items)

    async def primary_version(self) -> str:
        """See :meth:`KekProvider.primary_version`."""
        return await self._call(self.provider.primary_version)

    async def version_available(self, version: str) -> bool | None:
        """See :meth:`KekProvider.version_available`."""
        return await self._call(self.provider.version_available, version)

    async def describe(self) -> dict[str, str]:
        """See :meth:`KekProvider.describe`."""
        return await self._call(self.provider.describe)


class InlineKek(ThreadedKek):
    """A provider that never leaves the process, called directly on the event loop."""

    def __init__(self, provider: KekProvider) -> None:
        super().__init__(provider, None)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"InlineKek({self.provider!r})"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


def async_kek(provider: KekProvider, executor: Executor) -> AsyncKekProvider:
    """The async form of a provider: its own (``as_async()``), a direct call for one that
    never leaves the process, else the provider on ``executor``."""
    native = getattr(provider, "as_async", None)
    if callable(native):
        adapted = native()
        if isinstance(adapted, AsyncKekProvider):
            return adapted
    if getattr(provider, "in_process", False):
        return InlineKek(provider)
    return ThreadedKek(provider, executor)
