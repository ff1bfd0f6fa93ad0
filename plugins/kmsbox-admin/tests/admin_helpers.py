"""Helpers of the kmsbox-admin tests: seeding a store, serving the app on a real
uvicorn server on a loopback socket (in a thread with its own event loop, on which
the async store is opened), and waiting for jobs."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from kmsbox_admin.app import create_app
from kmsbox_admin.operations import Caller, JobSpec, Progress, StoreOperations
from kmsbox_admin.server import bind_socket, make_server
from kmsbox_admin.settings import AdminSettings
from kmsbox_admin.tokens import TokenEntry
from starlette.applications import Starlette

import kmsbox

KEK_VAR = "KMSBOX_ADMIN_TEST_KEK"
KEK_URI = f"env://{KEK_VAR}"
NAMESPACES = ("app:production", "tenant-7")


@dataclass
class Seed:
    """A store with known secrets: its URL, the KEK hex and every value put into it."""

    url: str
    kek_hex: str = field(repr=False)  # a failing test's report must not print key material or values
    values: list[str] = field(repr=False)
    names: dict[str, list[str]]

    def open(self) -> kmsbox.SecretStore:
        """Open the store directly (for checks behind the API's back)."""
        return kmsbox.open_store(self.url, kek=KEK_URI)


@dataclass
class Tokens:
    """One admin token (alice) and one viewer token (victor), and their config entries."""

    admin: str = field(repr=False)
    viewer: str = field(repr=False)
    entries: list[TokenEntry]


@dataclass
class Server:
    """A running admin server and what it was started with."""

    url: str
    settings: AdminSettings
    operations: StoreOperations
    tokens: Tokens
    uvicorn: uvicorn.Server
    app: Starlette
    clients: list[httpx.Client] = field(default_factory=list)
    verify: Any = True

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on the server, with a bearer token if given (closed after the test)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=self.verify, **kwargs)
        self.clients.append(client)
        return client

    def admin(self) -> httpx.Client:
        """A client with alice's admin token."""
        return self.client(self.tokens.admin)

    def viewer(self) -> httpx.Client:
        """A client with victor's viewer token."""
        return self.client(self.tokens.viewer)


def seed_store(url: str, kek: str, *, per_namespace: int = 3) -> Seed:
    """Put secrets with random values into ``url`` (two namespaces, one label and category each)."""
    values: list[str] = []
    names: dict[str, list[str]] = {}
    with kmsbox.open_store(url, kek=KEK_URI) as store:
        for ns in NAMESPACES:
            names[ns] = []
            for index in range(per_namespace):
                value = f"value-{secrets.token_hex(16)}"
                name = f"svc/secret-{index:04d}"
                store.put(
                    name,
                    value,
                    namespace=ns,
                    category="db" if index % 2 == 0 else "api",
                    labels={"team": "payments" if index % 2 == 0 else "search"},
                    description="seeded by the admin tests",
                )
                values.append(value)
                names[ns].append(name)
            store.get(names[ns][0], namespace=ns)  # a read event in the audit log
    return Seed(url, kek, values, names)


class GatedOperations(StoreOperations):
    """The real operations, with gates a test uses to order events deterministically.

    ``before_job`` (a threading.Event the test opens) holds a job before its first store
    call. After :meth:`hold_after_first_batch`, a second SQLite connection takes the
    write lock right after the job's first committed batch, as another writer could: the
    job's next write then waits for it off the event loop (the server keeps answering)
    until :meth:`release`.
    """

    db_path: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_job = threading.Event()
        self.before_job.set()
        self.first_batch_done = threading.Event()
        self._hold = False
        self._lock: sqlite3.Connection | None = None

    def hold_after_first_batch(self) -> None:
        """Take the SQLite write lock after the next job's first batch."""
        assert self.db_path is not None, "the hold is a SQLite write lock"
        self._hold = True

    def release(self) -> None:
        """Give the write lock back (and hold no later job)."""
        self._hold = False
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.execute("ROLLBACK")
            lock.close()

    def open_all(self) -> None:
        """Open every gate (at the end of a test)."""
        self.before_job.set()
        self.release()

    async def close(self) -> None:
        """The other writer lets the lock go first (a batch waiting for it may then commit)."""
        self.open_all()
        await super().close()

    async def run_job(
        self, caller: Caller, spec: JobSpec, progress: Progress, started: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        # Waited for off the loop: the test opens the gate from its own thread.
        opened = await asyncio.get_running_loop().run_in_executor(None, self.before_job.wait, 30)
        assert opened, "gate never opened"

        def gated(done: int, total: int | None) -> None:
            progress(done, total)
            if not self.first_batch_done.is_set():
                if self._hold and self.db_path is not None:
                    lock = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
                    lock.execute("BEGIN IMMEDIATE")
                    self._lock = lock
                self.first_batch_done.set()

        return await super().run_job(caller, spec, gated, started)


OpenOperations = Callable[[], Awaitable[StoreOperations]]


def serve(
    settings: AdminSettings,
    open_operations: OpenOperations,
    tokens: Tokens,
    *,
    verify: Any = True,
    app_opens: bool = False,
    running_jobs: int = 2,
) -> tuple[Server, Callable[[], None]]:
    """Serve the app on a fresh loopback port from a thread running its own event loop, as
    ``kmsbox admin serve`` does: the operations are opened on that loop first (or, with
    ``app_opens``, by the app's start-up). Returns the server and its stop function."""
    sock = bind_socket(settings.host, 0)
    port = sock.getsockname()[1]
    box: dict[str, Any] = {}

    async def main() -> None:
        operations: StoreOperations | None = None
        if not app_opens:
            operations = await open_operations()
            box["operations"] = operations

        async def opened_by_app() -> StoreOperations:
            box["operations"] = await open_operations()
            return box["operations"]  # type: ignore[no-any-return]

        try:
            app = create_app(settings, operations or opened_by_app, running_jobs=running_jobs)
            server = make_server(app, settings, log_level="warning")
            box.update(app=app, server=server)
            await server.serve(sockets=[sock])
        finally:
            if operations is not None:
                await operations.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while "server" not in box or not box["server"].started:
        if "error" in box:
            raise box["error"]
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the admin server did not start")
        time.sleep(0.01)
    scheme = "https" if settings.tls else "http"
    running = Server(
        f"{scheme}://127.0.0.1:{port}", settings, box["operations"], tokens, box["server"], box["app"], verify=verify
    )

    def stop() -> None:
        for client in running.clients:
            client.close()
        box["server"].should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "the admin server did not stop"
        if "error" in box:
            raise box["error"]

    return running, stop


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll a job until it has finished; its final state."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/admin/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "stopped"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
        time.sleep(0.05)
