"""The tenant service, run as a user runs it: ``uvicorn --factory tenant_service:create_app``
in its own process on a loopback socket, with Vault (kmsbox's fake, 200 ms per call) as
the KEK, driven over HTTP by httpx."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import kmsbox
import pytest

TENANTS = [f"tenant-{i}" for i in range(6)]
NAMES = ["db/password", "api/key", "smtp/password", "webhook-secret"]
#: The fake Vault's answer time, as `kmsbox fake-kms serve --only vault --latency 0.2` gives.
KMS_LATENCY = 0.2


@dataclass
class Seed:
    """The store the service reads, and every value put into it (never shown in a report)."""

    url: str
    kek: str
    values: dict[tuple[str, str], str] = field(repr=False)


@dataclass
class Service:
    """A running service process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as a process manager stops it; the app must shut down cleanly (its lifespan
        closes the store). uvicorn exits by the signal it caught, once it has shut down."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("the service did not stop on SIGTERM") from None
            assert self.process.returncode in (0, -signal.SIGTERM), self.output()
            assert "Application shutdown complete" in self.output()


@pytest.fixture
def seed(fake_vault: Any, tmp_path: Path) -> Seed:
    """Four secrets in each of six tenants, under the fake Vault's key, with random values."""
    url = f"sqlite:///{tmp_path / 'tenants.db'}"
    values = {(t, n): f"{t}-{n}-{secrets.token_urlsafe(16)}" for t in TENANTS for n in NAMES}
    with kmsbox.open_store(url, kek=fake_vault.kek_uri) as store:
        for (tenant, name), value in values.items():
            store.put(name, value, namespace=tenant)
        store.put("tls/key", os.urandom(48), namespace="tenant-0")
        store.put("old-token", "expired-value", namespace="tenant-1", expires=datetime.now(UTC) - timedelta(minutes=1))
        store.put("paused", "disabled-value", namespace="tenant-1")
        store.disable("paused", namespace="tenant-1")
    return Seed(url, fake_vault.kek_uri, values)


@pytest.fixture
def start_service(seed: Seed, tmp_path: Path) -> Iterator[Any]:
    """Start the service over the seeded store (``start_service()``); stopped after the test."""
    started: list[Service] = []

    def start() -> Service:
        env = {k: v for k, v in os.environ.items() if k != "KMSBOX_CONFIG"}
        # The settings a deployment would export (the fake_vault fixture exported VAULT_ADDR and VAULT_TOKEN).
        env.update(KMSBOX_STORE=seed.url, KMSBOX_KEK=seed.kek)
        log = tmp_path / f"service-{len(started)}.log"
        # Port 0: the kernel picks a free port, and uvicorn's start-up line names it.
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "tenant_service:create_app",
            "--host", "127.0.0.1", "--port", "0", "--no-access-log", "--timeout-graceful-shutdown", "5",
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        service = Service("", process, log)
        started.append(service)
        deadline = time.monotonic() + 30
        while not (running := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", service.output())):
            assert process.poll() is None, f"the service exited at start:\n{service.output()}"
            assert time.monotonic() < deadline, f"the service did not start:\n{service.output()}"
            time.sleep(0.05)
        service.url = running.group(1)
        assert httpx.get(f"{service.url}/health", timeout=5).status_code == 200
        return service

    yield start
    for service in started:
        service.stop()


def caller(name: str, request_id: str | None = None) -> dict[str, str]:
    """The headers of a request made for ``name``."""
    headers = {"X-Caller": name}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return headers


class HealthProber:
    """Asks ``/health`` again and again from a thread of its own (so the test's load client
    does not delay it), recording when each request was sent and answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                assert client.get("/health").status_code == 200
                self.answers.append((sent, time.monotonic()))
                time.sleep(0.005)

    def __enter__(self) -> HealthProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


class KmsCallLog:
    """When each call reached the fake Vault and when its injected latency ended."""

    def __init__(self, fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, float, float]] = []
        before_call = fake.faults.before_call

        def timed(operation: str) -> str | None:
            started = time.monotonic()
            fault: str | None = before_call(operation)
            self.calls.append((operation, started, time.monotonic()))
            return fault

        monkeypatch.setattr(fake.faults, "before_call", timed)


async def _read_all(url: str, requests: list[tuple[str, str, str]]) -> list[httpx.Response]:
    """Send every request at once, each on a connection of its own."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *[
                client.get(f"/tenants/{tenant}/secrets/{name}", headers=caller(f"svc-{tenant}", request_id))
                for tenant, name, request_id in requests
            ]
        )


def _reads(rounds: range) -> list[tuple[str, str, str]]:
    return [(t, n, f"req-{round_}-{t}-{n}") for round_ in rounds for t in TENANTS for n in NAMES]


def test_concurrent_reads_succeed_with_one_kms_call_per_tenant_while_health_answers(
    start_service: Any, seed: Seed, fake_vault: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_vault.faults.configure(latency=KMS_LATENCY)
    service = start_service()
    fake_vault.faults.reset_counts()  # opening the store unwrapped its audit key
    kms = KmsCallLog(fake_vault, monkeypatch)
    cold, warm = _reads(range(2)), _reads(range(2, 12))
    with HealthProber(service.url) as prober:
        responses = asyncio.run(_read_all(service.url, cold))  # every tenant's key is cold
        responses += asyncio.run(_read_all(service.url, warm))  # and now cached
    requests = cold + warm

    assert [r.status_code for r in responses] == [200] * len(requests)
    for (tenant, name, request_id), response in zip(requests, responses, strict=True):
        assert response.json() == {
            "tenant": tenant,
            "name": name,
            "version": 1,
            "value": seed.values[(tenant, name)],
            "encoding": "text",
        }
        assert response.headers["X-Request-Id"] == request_id
        assert response.headers["Cache-Control"] == "no-store"
    # 288 reads, 48 of them cold and concurrent: one Vault decrypt per tenant's namespace key.
    assert fake_vault.faults.calls == {"decrypt": len(TENANTS)}
    # While a KMS call took its 200 ms, the server's loop went on answering /health: a loop
    # blocked by the call could not answer a request sent and answered inside it.
    inside = [
        (sent, answered)
        for sent, answered in prober.answers
        if any(start <= sent and answered <= end for _, start, end in kms.calls)
    ]
    assert len(inside) >= 3, f"{len(inside)} of {len(prober.answers)} health answers came during a KMS call"
    # And it never stalled for long (generous: reading through the sync store on the loop
    # instead stalls it for the six KMS calls in a row, over a second).
    slowest = max(answered - sent for sent, answered in prober.answers)
    assert slowest < 3 * KMS_LATENCY, f"slowest /health answer: {slowest:.3f}s"

    # Every read is audited with the caller and the request id.
    fake_vault.faults.clear()
    service.stop()
    with kmsbox.open_store(seed.url, kek=seed.kek) as store:
        reads = [
            (e.namespace, e.name, e.actor, e.context.get("request_id"))
            for e in store.iter_audit_events()
            if e.action == "read" and e.result == "success"
        ]
        assert sorted(reads) == sorted((t, n, f"svc-{t}", r) for t, n, r in requests)
        # The store was closed at shutdown: every read's count was written.
        assert store.info("db/password", namespace="tenant-3").access_count == 12
    assert not any(value in service.output() for value in seed.values.values())


def test_a_missing_secret_or_tenant_is_a_404_that_echoes_nothing(start_service: Any, seed: Seed) -> None:
    service = start_service()
    with httpx.Client(base_url=service.url, timeout=30) as client:
        missing = client.get("/tenants/tenant-0/secrets/nope", headers=caller("svc", "r-1"))
        no_tenant = client.get("/tenants/tenant-99/secrets/db/password", headers=caller("svc", "r-2"))
        assert (missing.status_code, missing.json()) == (404, {"error": "not_found", "request_id": "r-1"})
        assert (no_tenant.status_code, no_tenant.json()) == (404, {"error": "not_found", "request_id": "r-2"})
        expired = client.get("/tenants/tenant-1/secrets/old-token", headers=caller("svc"))
        disabled = client.get("/tenants/tenant-1/secrets/paused", headers=caller("svc"))
        assert (expired.status_code, expired.json()["error"]) == (410, "expired")
        assert (disabled.status_code, disabled.json()["error"]) == (403, "disabled")
        for response in (expired, disabled):
            assert "value" not in response.text
            assert len(response.json()["request_id"]) == 32  # made up for a request without one
        assert client.get("/tenants/tenant-0/secrets/tls/key", headers=caller("svc")).json()["encoding"] == "base64"


BAD_REQUESTS = [
    # path, headers, status, error code
    ("/tenants/tenant-0/secrets/db/password", {}, 401, "caller_required"),
    ("/tenants/tenant-0/secrets/db/password", {"X-Caller": ""}, 401, "caller_required"),
    ("/tenants/bad%20tenant/secrets/db/password", {"X-Caller": "svc"}, 400, "bad_name"),
    ("/tenants/tenant-0/secrets/bad%00name", {"X-Caller": "svc"}, 400, "bad_name"),
    ("/tenants/tenant-0/secrets/db//password", {"X-Caller": "svc"}, 404, "not_found"),
    ("/tenants/tenant-0/secrets/" + "n" * 300, {"X-Caller": "svc"}, 400, "bad_name"),
    ("/tenants/" + "t" * 200 + "/secrets/db/password", {"X-Caller": "svc"}, 400, "bad_name"),
    ("/tenants/tenant-0/secrets/db/password", {"X-Caller": "c" * 300}, 400, "bad_header"),
    ("/tenants/tenant-0/secrets/db/password", {"X-Caller": "svc", "X-Request-Id": "r" * 2000}, 400, "bad_header"),
]


def test_bad_requests_are_refused_and_read_nothing(start_service: Any, seed: Seed) -> None:
    service = start_service()
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for path, headers, status, error in BAD_REQUESTS:
            response = client.get(path, headers=headers)
            assert (response.status_code, response.json()["error"]) == (status, error), (path[:60], list(headers))
            assert seed.values[("tenant-0", "db/password")] not in response.text
    service.stop()
    with kmsbox.open_store(seed.url, kek=seed.kek) as store:
        assert store.info("db/password", namespace="tenant-0").access_count == 0
        assert not [e for e in store.iter_audit_events() if e.action == "read" and e.result == "success"]


def test_a_write_is_refused(start_service: Any, seed: Seed) -> None:
    service = start_service()
    with httpx.Client(base_url=service.url, timeout=30) as client:
        response = client.put("/tenants/tenant-0/secrets/db/password", headers=caller("svc"), content=b"x")
    assert response.status_code == 405


def test_a_kek_that_cannot_open_the_store_stops_the_service_at_start(
    start_service: Any, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.not-a-token")
    with pytest.raises(AssertionError, match="exited at start") as failed:
        start_service()
    assert "ConfigError" in str(failed.value) and "Application startup failed" in str(failed.value)
    assert "hvs.not-a-token" not in str(failed.value)
