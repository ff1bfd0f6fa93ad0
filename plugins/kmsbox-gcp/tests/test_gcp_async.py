"""The async form of the gcp-kms provider against the fake: it does what the sync provider does,
fault for fault, over grpc.aio, with its clients made in (and closed with) their event loop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import google.auth
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud.kms_v1 import CryptoKeyVersion, KeyManagementServiceAsyncClient, KeyManagementServiceClient
from google.protobuf import field_mask_pb2
from kmsbox_gcp.aio import AsyncGcpKekProvider
from kmsbox_gcp.client import ClientSettings
from kmsbox_gcp.fake import FakeGcpKms
from kmsbox_gcp.names import parse_kek_uri
from kmsbox_gcp.provider import GcpKekProvider

from kmsbox.aio import AsyncKekProvider, async_kek
from kmsbox.errors import ConfigError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.kek import WrappedKey
from kmsbox.retry import RetryPolicy
from kmsbox.testing.fakes import FAULT_KINDS, TRANSIENT_FAULT_KINDS

T = TypeVar("T")
State = CryptoKeyVersion.CryptoKeyVersionState
CONTEXT = {"kmsbox:namespace": "gcp-async", "kmsbox:key-version": "1"}
# Three attempts and a short per-call timeout: a transient fault makes exactly three calls.
POLICY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, deadline=20, timeout=0.3)
Run = Callable[[Awaitable[T]], T]
Eventually = Callable[[Callable[[], bool]], bool]


@dataclass(frozen=True)
class Outcome:
    """What one operation came to, comparable between the two forms of the provider."""

    result: Any = None
    error: str | None = None
    transient: bool | None = None
    code: str | None = None
    message: str | None = None
    calls: int = 0


# The part of a retried error's message that varies with timing.
_GAVE_UP = re.compile(r" \(gave up after \d+ attempts in [0-9.]+s\)$")


def outcome(fake: FakeGcpKms, operation: Callable[[], Any], rpc: str) -> Outcome:
    """Run ``operation`` and record its result or error and how many ``rpc`` calls it made."""
    fake.faults.reset_counts()
    try:
        result = operation()
    except (ProviderError, KeyUnavailable, IntegrityError) as exc:
        assert exc.__cause__ is not None or not isinstance(exc, ProviderError) or exc.code == "WRONG_KEY"
        return Outcome(
            error=type(exc).__name__,
            transient=getattr(exc, "transient", None),
            code=getattr(exc, "code", None),
            message=_GAVE_UP.sub("", str(exc)),
            calls=fake.faults.total_calls(rpc),
        )
    return Outcome(result=result, calls=fake.faults.total_calls(rpc))


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    """Run coroutines on one event loop for the whole test (as a service's loop would be)."""
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def pair(fresh_key_uri: str, fake: FakeGcpKms) -> Iterator[tuple[GcpKekProvider, AsyncGcpKekProvider]]:
    """The sync provider and its async form, on a fresh key, with the three-attempt policy."""
    provider = GcpKekProvider(fresh_key_uri, policy=POLICY)
    yield provider, provider.as_async()
    provider.close()


def set_state(client: KeyManagementServiceClient, name: str, state: State) -> None:
    client.update_crypto_key_version(
        crypto_key_version={"name": name, "state": state}, update_mask=field_mask_pb2.FieldMask(paths=["state"])
    )


# The async form and kmsbox.aio


def test_as_async_is_the_native_form_kmsbox_aio_uses(pair: tuple[GcpKekProvider, AsyncGcpKekProvider]) -> None:
    provider, native = pair
    assert isinstance(native, AsyncKekProvider)
    assert provider.as_async() is native  # one per provider, so closing the provider closes its clients
    assert async_kek(provider, executor=None) is native  # type: ignore[arg-type]  # no pool is ever needed
    assert native.uri == provider.uri and repr(native) == f"AsyncGcpKekProvider(uri={provider.uri!r})"


# Every fault, on every RPC the provider makes: the same error, the same retries


OPERATIONS = {
    "Encrypt": lambda kek, wrapped: kek.wrap(b"\x01" * 32, CONTEXT),
    "Decrypt": lambda kek, wrapped: kek.unwrap(wrapped, CONTEXT),
    "GetCryptoKey": lambda kek, wrapped: kek.primary_version(),
    "GetCryptoKeyVersion": lambda kek, wrapped: kek.version_available("1"),
}


@pytest.mark.parametrize("kind", FAULT_KINDS)
@pytest.mark.parametrize("rpc", list(OPERATIONS))
def test_each_fault_on_each_rpc_ends_as_it_does_for_the_sync_provider(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any], rpc: str, kind: str
) -> None:
    provider, native = pair
    wrapped = provider.wrap(os.urandom(32), CONTEXT)
    operation = OPERATIONS[rpc]
    fake.faults.configure(rate=1.0, kind=kind, operations={rpc})
    sync = outcome(fake, lambda: operation(provider, wrapped), rpc)
    native_outcome = outcome(fake, lambda: run(operation(native, wrapped)), rpc)
    fake.faults.clear()

    assert sync.error == native_outcome.error == "ProviderError"
    assert (native_outcome.transient, native_outcome.code) == (sync.transient, sync.code)
    assert native_outcome.calls == sync.calls == (POLICY.max_attempts if kind in TRANSIENT_FAULT_KINDS else 1)
    if kind == "reset":
        # grpc words a reset connection its own way in each stack; kmsbox's part of the message is the same.
        assert native_outcome.message and sync.message
        assert "Connection reset by peer" in native_outcome.message and "Connection reset by peer" in sync.message
        assert native_outcome.message.split(":")[0] == sync.message.split(":")[0] == "Cloud KMS UNAVAILABLE"
    else:
        assert native_outcome.message == sync.message
    # And both work again once the fault is gone.
    assert run(native.unwrap(wrapped, CONTEXT)) == provider.unwrap(wrapped, CONTEXT)


def test_a_malformed_reply_is_a_permanent_bad_response_not_a_none_result(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any]
) -> None:
    _, native = pair
    # grpc.aio hands back None for a reply it cannot parse; it must not become a result.
    fake.faults.configure(rate=1.0, kind="malformed", operations={"GetCryptoKeyVersion"})
    with pytest.raises(ProviderError) as info:
        run(native.version_available("1"))
    assert (info.value.transient, info.value.code) == (False, "BAD_RESPONSE")


@pytest.mark.parametrize("kind", ["throttle", "unavailable", "reset"])
def test_a_passing_fault_is_retried_to_success(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any], kind: str
) -> None:
    _, native = pair
    key = os.urandom(32)
    fake.faults.reset_counts()
    fake.faults.configure(rate=1.0, kind=kind, count=2)
    wrapped = run(native.wrap(key, CONTEXT))
    assert fake.faults.total_calls("Encrypt") == 3
    assert run(native.unwrap(wrapped, CONTEXT)) == key


def test_latency_is_awaited_without_blocking_the_loop(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any]
) -> None:
    _, native = pair
    fake.faults.configure(latency=0.2)

    async def wrap_while_ticking() -> tuple[float, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        start = time.monotonic()
        await native.wrap(os.urandom(32), CONTEXT)
        elapsed = time.monotonic() - start
        ticker.cancel()
        return elapsed, ticks

    elapsed, ticks = run(wrap_while_ticking())
    assert elapsed >= 0.2
    assert ticks >= 20  # the loop ran other tasks the whole time


# Integrity fields


@pytest.mark.parametrize(
    ("fault", "rpc", "operation"),
    [
        ("corrupt_response_crc", "Encrypt", "wrap"),
        ("corrupt_response_crc", "Decrypt", "unwrap"),
        ("unverified_request_crc", "Encrypt", "wrap"),
    ],
)
def test_a_corrupted_checksum_is_retried_like_the_sync_provider_does(
    fake: FakeGcpKms,
    pair: tuple[GcpKekProvider, AsyncGcpKekProvider],
    run: Run[Any],
    fault: str,
    rpc: str,
    operation: str,
) -> None:
    provider, native = pair
    key = os.urandom(32)
    wrapped = provider.wrap(key, CONTEXT)

    def call(kek: Any) -> Any:
        return kek.wrap(key, CONTEXT) if operation == "wrap" else kek.unwrap(wrapped, CONTEXT)

    fake.faults.configure_integrity(**{fault: 1})
    sync = outcome(fake, lambda: call(provider), rpc)
    fake.faults.configure_integrity(**{fault: 1})
    native_outcome = outcome(fake, lambda: run(call(native)), rpc)
    assert sync.calls == native_outcome.calls == 2
    assert sync.error is native_outcome.error is None

    fake.faults.configure_integrity(**{fault: 100})
    sync = outcome(fake, lambda: call(provider), rpc)
    native_outcome = outcome(fake, lambda: run(call(native)), rpc)
    fake.faults.clear()
    assert native_outcome == sync
    assert (sync.error, sync.transient, sync.code, sync.calls) == ("ProviderError", True, "CRC32C_MISMATCH", 3)


# Versions, key states and bad input: the same answers and errors


def test_versions_and_rewrap_across_a_rotation(
    fake: FakeGcpKms, fresh_key_uri: str, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any]
) -> None:
    provider, native = pair
    first_key = os.urandom(32)
    first = run(native.wrap(first_key, CONTEXT))
    assert first.key_version == "1" == run(native.primary_version())
    assert fake.rotate_key(fresh_key_uri) == "2"
    assert run(native.primary_version()) == "2" == provider.primary_version()
    rewrapped = run(native.rewrap(first, CONTEXT))
    assert rewrapped.key_version == "2"
    assert provider.unwrap(rewrapped, CONTEXT) == first_key == run(native.unwrap(first, CONTEXT))


def test_version_available_answers_as_the_sync_provider(
    kms_client: KeyManagementServiceClient,
    fresh_key_uri: str,
    pair: tuple[GcpKekProvider, AsyncGcpKekProvider],
    run: Run[Any],
) -> None:
    provider, native = pair
    full_name = parse_kek_uri(fresh_key_uri).version_path("1")
    versions = ["1", full_name, "2", "0", "v1", full_name.replace("/cryptoKeys/", "/cryptoKeys/x")]
    expected = [True, True, False, False, False, False]
    assert [run(native.version_available(v)) for v in versions] == expected
    assert [provider.version_available(v) for v in versions] == expected
    set_state(kms_client, full_name, State.DISABLED)
    assert run(native.version_available("1")) is False is provider.version_available("1")


def test_disabled_and_destroyed_versions_are_key_unavailable(
    kms_client: KeyManagementServiceClient,
    fake: FakeGcpKms,
    fresh_key_uri: str,
    pair: tuple[GcpKekProvider, AsyncGcpKekProvider],
    run: Run[Any],
) -> None:
    provider, native = pair
    version = parse_kek_uri(fresh_key_uri).version_path("1")
    key = os.urandom(32)
    wrapped = run(native.wrap(key, CONTEXT))

    set_state(kms_client, version, State.DISABLED)
    sync = outcome(fake, lambda: provider.unwrap(wrapped, CONTEXT), "Decrypt")
    native_outcome = outcome(fake, lambda: run(native.unwrap(wrapped, CONTEXT)), "Decrypt")
    assert native_outcome == sync
    assert (sync.error, sync.calls) == ("KeyUnavailable", 1) and "DISABLED" in (sync.message or "")
    wrap_sync = outcome(fake, lambda: provider.wrap(key, CONTEXT), "Encrypt")
    assert outcome(fake, lambda: run(native.wrap(key, CONTEXT)), "Encrypt") == wrap_sync
    assert wrap_sync.error == "KeyUnavailable"

    set_state(kms_client, version, State.ENABLED)
    kms_client.destroy_crypto_key_version(name=version)
    fake.kms.complete_scheduled_destruction()
    sync = outcome(fake, lambda: provider.unwrap(wrapped, CONTEXT), "Decrypt")
    assert outcome(fake, lambda: run(native.unwrap(wrapped, CONTEXT)), "Decrypt") == sync
    assert sync.error == "KeyUnavailable" and "DESTROYED" in (sync.message or "")


def test_describe_reports_what_the_sync_provider_does(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any]
) -> None:
    provider, native = pair
    description = run(native.describe())
    assert description == provider.describe()
    assert description["primary_version"] == "1" and fake.endpoint in description["endpoint"]
    fake.faults.configure(rate=1.0, kind="denied", operations={"GetCryptoKey"})
    description = run(native.describe())
    assert description == provider.describe()
    assert description["primary_version"] == "unknown (ProviderError)"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda w: (w, {"kmsbox:namespace": "elsewhere"}), id="wrong-context"),
        pytest.param(lambda w: (w, {}), id="no-context"),
        pytest.param(
            lambda w: (
                WrappedKey(w.kek_uri, w.key_version, w.ciphertext[:-1] + bytes([w.ciphertext[-1] ^ 1])),
                CONTEXT,
            ),
            id="tampered",
        ),
        pytest.param(lambda w: (WrappedKey(w.kek_uri, w.key_version, b""), CONTEXT), id="empty-ciphertext"),
        pytest.param(lambda w: (WrappedKey(w.kek_uri, "v1", w.ciphertext), CONTEXT), id="not-a-version"),
        pytest.param(
            lambda w: (
                WrappedKey("gcp-kms://projects/p1/locations/global/keyRings/r/cryptoKeys/k", "1", w.ciphertext),
                CONTEXT,
            ),
            id="another-kek",
        ),
    ],
)
def test_bad_wrapped_keys_fail_the_same_way(
    fake: FakeGcpKms,
    pair: tuple[GcpKekProvider, AsyncGcpKekProvider],
    run: Run[Any],
    bad: Callable[[WrappedKey], tuple[WrappedKey, dict[str, str]]],
) -> None:
    provider, native = pair
    key = os.urandom(32)
    wrapped, context = bad(provider.wrap(key, CONTEXT))
    sync = outcome(fake, lambda: provider.unwrap(wrapped, context), "Decrypt")
    native_outcome = outcome(fake, lambda: run(native.unwrap(wrapped, context)), "Decrypt")
    assert native_outcome == sync
    assert sync.error in {"IntegrityError", "KeyUnavailable"} and sync.calls <= 1
    assert key.hex() not in (sync.message or "")


def test_an_unknown_key_is_a_permanent_not_found(fake: FakeGcpKms, unique: Callable[[str], str], run: Run[Any]) -> None:
    ring = parse_kek_uri(fake.kek_uri).key_ring_path
    provider = GcpKekProvider(f"gcp-kms://{ring}/cryptoKeys/{unique('absent')}", policy=POLICY)
    try:
        sync = outcome(fake, lambda: provider.wrap(os.urandom(32), CONTEXT), "Encrypt")
        native = outcome(fake, lambda: run(provider.as_async().wrap(os.urandom(32), CONTEXT)), "Encrypt")
    finally:
        provider.close()
    assert native == sync
    assert (sync.error, sync.transient, sync.code, sync.calls) == ("ProviderError", False, "NOT_FOUND", 1)


def test_an_unreachable_endpoint_is_transient_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch, fake: FakeGcpKms
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("KMSBOX_GCP_KMS_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "1")
    provider = GcpKekProvider(fake.kek_uri)
    native = provider.as_async()

    async def attempt() -> tuple[float, ProviderError, dict[str, str]]:
        start = time.monotonic()
        with pytest.raises(ProviderError) as info:
            await native.wrap(os.urandom(32), CONTEXT)
        return time.monotonic() - start, info.value, await native.describe()

    try:
        elapsed, error, description = asyncio.run(attempt())
        sync_description = provider.describe()
    finally:
        provider.close()
    assert error.transient is True and elapsed < 3
    assert description == sync_description
    assert description["primary_version"] == "unknown (ProviderError)"


# Batches


def test_batch_forms_keep_order_and_raise_the_first_failure_in_order(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any]
) -> None:
    provider, native = pair
    keys = [os.urandom(32) for _ in range(20)]
    contexts = [{"i": str(i)} for i in range(20)]
    wrapped = run(native.wrap_many(list(zip(keys, contexts, strict=True))))
    assert [w.key_version for w in wrapped] == ["1"] * 20
    assert run(native.unwrap_many(list(zip(wrapped, contexts, strict=True)))) == keys
    assert provider.unwrap_many(list(zip(wrapped, contexts, strict=True))) == keys
    rewrapped = run(native.rewrap_many(list(zip(wrapped, contexts, strict=True))))
    assert provider.unwrap_many(list(zip(rewrapped, contexts, strict=True))) == keys
    # Another KEK's item fails at once (KeyUnavailable, no call); a wrong context only when Cloud KMS
    # answers (IntegrityError). The one raised is the first in item order, not the first to fail.
    foreign = (WrappedKey("gcp-kms://projects/p1/locations/global/keyRings/r/cryptoKeys/k", "1", b"x"), contexts[3])
    mismatched = (wrapped[5], contexts[6])
    good = list(zip(wrapped, contexts, strict=True))
    for items, error in [
        ([good[0], mismatched, good[1], foreign], IntegrityError),
        ([good[0], foreign, mismatched, good[1]], KeyUnavailable),
    ]:
        with pytest.raises(error):
            run(native.unwrap_many(items))
        with pytest.raises(error):
            provider.unwrap_many(items)


def test_a_batch_never_has_more_than_eight_calls_in_flight(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any]
) -> None:
    _, native = pair
    fake.faults.configure(latency=0.1)
    start = time.monotonic()
    run(native.wrap_many([(os.urandom(32), CONTEXT) for _ in range(16)]))
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 1.0  # two rounds of eight, not one of sixteen, nor sixteen in turn


# Clients: made lazily in the running loop, one per loop, closed with the provider


def test_no_client_is_made_until_a_call_runs_in_a_loop(fake: FakeGcpKms) -> None:
    provider = GcpKekProvider(fake.kek_uri)
    native = provider.as_async()
    assert native.open_clients == 0
    key = os.urandom(32)
    # Two asyncio.run calls: two loops, each with a client of its own (a grpc.aio channel cannot move).
    wrapped = asyncio.run(native.wrap(key, CONTEXT))
    assert asyncio.run(native.unwrap(wrapped, CONTEXT)) == key
    assert native.open_clients == 1  # the first loop's client went with its loop
    provider.close()
    assert native.open_clients == 0


def test_clients_of_loops_on_other_threads_are_closed_by_close(
    fake: FakeGcpKms, made_clients: list[KeyManagementServiceAsyncClient], eventually: Eventually
) -> None:
    fresh = FakeGcpKms()
    try:
        provider = GcpKekProvider(fresh.kek_uri, settings=_settings_for(fresh))
        native = provider.as_async()
        loops = [asyncio.new_event_loop() for _ in range(2)]
        threads = [threading.Thread(target=loop.run_forever, daemon=True) for loop in loops]
        for thread in threads:
            thread.start()
        try:
            for loop in loops:
                asyncio.run_coroutine_threadsafe(native.primary_version(), loop).result(10)
            assert native.open_clients == 2 == len(made_clients)
            provider.primary_version()
            # grpc may share one connection between channels to the same target: count "some", then "none".
            assert fresh.client_connections >= 1
            provider.close()
            assert native.open_clients == 0
            assert eventually(lambda: fresh.client_connections == 0)
        finally:
            for loop, thread in zip(loops, threads, strict=True):
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
                loop.close()
    finally:
        fresh.stop()


def test_aclose_closes_the_loops_client(
    fake: FakeGcpKms, made_clients: list[KeyManagementServiceAsyncClient], eventually: Eventually
) -> None:
    fresh = FakeGcpKms()
    provider = GcpKekProvider(fresh.kek_uri, settings=_settings_for(fresh))
    native = provider.as_async()

    async def use_then_close() -> None:
        await native.primary_version()
        assert native.open_clients == 1
        await native.aclose()
        assert native.open_clients == 0

    try:
        asyncio.run(use_then_close())
        assert len(made_clients) == 1
        provider.close()  # the sync client's channel
        assert eventually(lambda: fresh.client_connections == 0)
    finally:
        provider.close()
        fresh.stop()


def test_a_call_cancelled_while_it_retries_leaves_nothing_behind(
    fake: FakeGcpKms, pair: tuple[GcpKekProvider, AsyncGcpKekProvider], run: Run[Any]
) -> None:
    _, native = pair
    fake.faults.configure(rate=1.0, kind="timeout")

    async def cancel_soon() -> None:
        task = asyncio.ensure_future(native.wrap(os.urandom(32), CONTEXT))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    start = time.monotonic()
    run(cancel_soon())
    assert time.monotonic() - start < 1  # the held call was given up, not waited for
    fake.faults.clear()
    assert run(native.primary_version()) == "1"


def _settings_for(fake: FakeGcpKms) -> ClientSettings:
    return ClientSettings(endpoint=fake.endpoint, insecure=True)


# Credentials: looked up once, off the loop, and shared with the async client


@pytest.fixture
def service_account_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Application Default Credentials from a service-account key made for this test (never sent anywhere)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "kmsbox-test",
        "private_key_id": "test",
        "private_key": pem,
        "client_email": "kmsbox-test@kmsbox-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return path


def test_credentials_are_looked_up_once_when_the_provider_opens(
    service_account_file: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeGcpKms
) -> None:
    lookups: list[dict[str, Any]] = []
    real_default = google.auth.default

    def counted_default(*args: Any, **kwargs: Any) -> Any:
        lookups.append(kwargs)
        return real_default(*args, **kwargs)

    monkeypatch.setattr(google.auth, "default", counted_default)
    with socket.socket() as probe:  # a TLS endpoint where nothing listens: calls fail fast, and transiently
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ClientSettings(endpoint=f"127.0.0.1:{port}", insecure=False)
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, deadline=2, timeout=0.5)
    provider = GcpKekProvider(fake.kek_uri, settings=settings, policy=policy)
    assert len(lookups) == 1
    native = provider.as_async()

    async def call() -> ProviderError:
        with pytest.raises(ProviderError) as info:
            await native.primary_version()
        assert native.open_clients == 1  # the client was made, in this loop
        return info.value

    try:
        error = asyncio.run(call())
    finally:
        provider.close()
    assert error.transient is True
    assert len(lookups) == 1  # the async client was given the provider's credentials


def test_an_async_form_without_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kms_client: KeyManagementServiceClient, fake: FakeGcpKms
) -> None:
    # A provider given its own client looks credentials up for its async form when that is made.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    provider = GcpKekProvider(
        fake.kek_uri, client=kms_client, settings=ClientSettings(endpoint="kms.example.internal:443")
    )
    assert provider.primary_version() == "1"  # its own client works
    with pytest.raises(ConfigError, match="no Google credentials"):
        provider.as_async()
