"""kmsbox.aio on a gcp-kms:// key: KMS calls are awaited on the loop through the native async
provider (never handed to the store's thread pool), concurrent cold reads share one Decrypt,
and closing the store closes the async client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.cloud.kms_v1 import KeyManagementServiceAsyncClient
from kmsbox_gcp.fake import FakeGcpKms
from kmsbox_gcp.provider import GcpKekProvider

import kmsbox
import kmsbox.aio
from kmsbox.errors import KmsboxError
from kmsbox.keys import KeyCache

pytestmark = pytest.mark.anyio

Eventually = Callable[[Callable[[], bool]], bool]
# The part of a retried error's message that varies with timing.
_GAVE_UP = re.compile(r" \(gave up after \d+ attempts in [0-9.]+s\)")


def seen(error: KmsboxError) -> tuple[Any, ...]:
    """What a caller sees of an error: its class, transient flag, code and message (timing aside)."""
    return type(error), getattr(error, "transient", None), getattr(error, "code", None), _GAVE_UP.sub("", str(error))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingExecutor(ThreadPoolExecutor):
    """A store's thread pool that counts what it is given, and names the KEK provider calls among it."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0
        self.kek_calls: list[str] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        target = getattr(fn, "func", fn)  # the adapter submits functools.partial(provider.method, ...)
        if isinstance(getattr(target, "__self__", None), GcpKekProvider):
            self.kek_calls.append(target.__name__)
        return super().submit(fn, *args, **kwargs)


class ThreadedGcpKekProvider(GcpKekProvider):
    """The same provider without its native async form: kmsbox.aio runs it on the thread pool."""

    as_async = None  # type: ignore[assignment]


@pytest.fixture
async def executor() -> AsyncIterator[CountingExecutor]:
    pool = CountingExecutor()
    yield pool
    pool.shutdown()


async def exercise(store: kmsbox.aio.AsyncSecretStore, cache: KeyCache[Any]) -> None:
    """Writes into new namespaces (Encrypt), cold reads (Decrypt), a namespace-key rotation and a rewrap."""
    for ns in ("tenant-a", "tenant-b"):
        await store.put("db/password", f"pw-{ns}", namespace=ns)
    cache.clear()
    assert (await store.get("db/password", namespace="tenant-a")).value == "pw-tenant-a"
    await store.rotate_namespace_key("tenant-b")
    await store.rewrap_namespace_keys()
    cache.clear()
    assert (await store.get("db/password", namespace="tenant-b")).value == "pw-tenant-b"


async def test_the_store_awaits_cloud_kms_on_the_loop_and_never_on_its_thread_pool(
    fake: FakeGcpKms, executor: CountingExecutor, tmp_path: Path
) -> None:
    cache: KeyCache[Any] = KeyCache()
    url = f"sqlite:///{tmp_path / 'native.db'}"
    store = await kmsbox.aio.open_store(url, kek=fake.kek_uri, executor=executor, cache=cache)
    async with store:
        fake.faults.reset_counts()
        await exercise(store, cache)
    assert fake.faults.total_calls("Encrypt") >= 3 and fake.faults.total_calls("Decrypt") >= 2
    assert executor.kek_calls == []


async def test_without_the_native_form_the_same_work_goes_to_the_thread_pool(
    fake: FakeGcpKms, executor: CountingExecutor, tmp_path: Path
) -> None:
    # The counter above can see KEK calls on the pool: here they are.
    provider = ThreadedGcpKekProvider(fake.kek_uri)
    cache: KeyCache[Any] = KeyCache()
    url = f"sqlite:///{tmp_path / 'threaded.db'}"
    store = await kmsbox.aio.open_store(url, kek=provider, executor=executor, cache=cache)
    async with store:
        await exercise(store, cache)
    assert {"wrap", "unwrap"} <= set(executor.kek_calls)


async def test_fifty_concurrent_cold_reads_of_one_namespace_make_one_decrypt(
    fake: FakeGcpKms, executor: CountingExecutor, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cold.db'}"
    setup = kmsbox.open_store(url, kek=fake.kek_uri)
    for i in range(10):
        setup.put(f"s{i}", f"v{i}", namespace="app:production")
    setup.close()
    store = await kmsbox.aio.open_store(url, kek=fake.kek_uri, executor=executor)
    async with store:
        fake.faults.reset_counts()
        fake.faults.configure(latency=0.2)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        start = time.monotonic()
        secrets = await asyncio.gather(*[store.get(f"s{i % 10}", namespace="app:production") for i in range(50)])
        elapsed = time.monotonic() - start
        ticker.cancel()
        fake.faults.clear()
    assert [s.value for s in secrets] == [f"v{i % 10}" for i in range(50)]
    assert fake.faults.total_calls("Decrypt") == 1
    assert elapsed >= 0.2 and ticks >= 20  # the loop kept running while Cloud KMS took 200 ms
    assert executor.kek_calls == []


async def test_a_kms_outage_reaches_the_async_caller_as_it_reaches_a_sync_one(fake: FakeGcpKms, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outage.db'}"
    sync_cache: KeyCache[Any] = KeyCache()
    async_cache: KeyCache[Any] = KeyCache()
    sync_store = kmsbox.open_store(url, kek=fake.kek_uri, cache=sync_cache)
    sync_store.put("k", "v", namespace="app")
    store = await kmsbox.aio.open_store(url, kek=fake.kek_uri, cache=async_cache)
    async with store:
        for kind in ("unavailable", "denied", "malformed"):
            sync_cache.clear()
            async_cache.clear()
            fake.faults.configure(rate=1.0, kind=kind, operations={"Decrypt"})
            with pytest.raises(KmsboxError) as sync_error:
                sync_store.get("k", namespace="app")
            with pytest.raises(KmsboxError) as async_error:
                await store.get("k", namespace="app")
            assert seen(async_error.value) == seen(sync_error.value)
            assert kind != "unavailable" or getattr(sync_error.value, "transient", None) is True
        fake.faults.clear()
        assert (await store.get("k", namespace="app")).value == "v"
    sync_store.close()


async def test_closing_the_store_closes_the_async_client(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeGcpKms,
    made_clients: list[KeyManagementServiceAsyncClient],
    eventually: Eventually,
    tmp_path: Path,
) -> None:
    own = FakeGcpKms()  # its own fake, so no other test's client is connected to it
    try:
        for name, value in own.env().items():
            monkeypatch.setenv(name, value)
        store = await kmsbox.aio.open_store(f"sqlite:///{tmp_path / 'close.db'}", kek=own.kek_uri)
        await store.put("k", "v", namespace="app")
        assert len(made_clients) == 1 and own.client_connections >= 1
        await store.close()
        # The test still holds the client: only closing its channel ends the connection.
        assert await asyncio.to_thread(eventually, lambda: own.client_connections == 0)
    finally:
        own.stop()


async def test_the_async_envelope_uses_the_native_provider(fake: FakeGcpKms, executor: CountingExecutor) -> None:
    provider = GcpKekProvider(fake.kek_uri)
    envelope = kmsbox.aio.Envelope(provider, executor=executor)
    try:
        fake.faults.reset_counts()
        blob = await envelope.encrypt(b"card 4111", {"table": "payments", "id": "7"})
        envelope.cache.clear()
        assert await envelope.decrypt(blob, {"table": "payments", "id": "7"}) == b"card 4111"
        assert fake.faults.total_calls("Encrypt") == 1 and fake.faults.total_calls("Decrypt") == 1
        assert executor.submitted == 0
    finally:
        await envelope.aclose()
        await provider.as_async().aclose()
        provider.close()
