"""A local fake of Vault's HTTP API (transit engine, mounts, tokens, policies, AppRole) for tests.

The official client (hvac) talks to it over a real loopback socket. Every request
but the unauthenticated ones (``sys/health``, ``sys/seal-status``, ``sys/init``,
AppRole login) needs an ``X-Vault-Token``, and the token's ACL policies decide
what it may do (:mod:`kmsbox_vault.fake_acl`): a token limited to encrypt and
decrypt on one key gets Vault's 403 ``permission denied`` anywhere else; the root
token may do everything. ``X-Vault-Namespace`` namespaces are separate keyspaces
with their own policies. Answers carry Vault's status codes and ``{"errors": [...]}``
bodies. A :class:`~kmsbox.testing.fakes.FaultInjector` sits in front of every
request, by operation name (:data:`OPERATIONS`).

The parts: :mod:`~kmsbox_vault.fake_state` (what the fake knows),
:mod:`~kmsbox_vault.fake_routes` (which handler serves a path),
:mod:`~kmsbox_vault.fake_sys`, :mod:`~kmsbox_vault.fake_auth` and
:mod:`~kmsbox_vault.fake_transit` (the endpoints), :mod:`~kmsbox_vault.fake_http`
(the HTTP server side).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from typing import Any

from kmsbox.testing.fakes import FaultInjector
from kmsbox_vault.fake_auth import policy_names
from kmsbox_vault.fake_http import VaultRequestHandler
from kmsbox_vault.fake_routes import OPERATIONS, Router
from kmsbox_vault.fake_state import VaultState
from kmsbox_vault.fake_transit import VaultHTTPError
from kmsbox_vault.uri import parse_key_uri

__all__ = ["OPERATIONS", "READY_KEY", "VaultFake", "start_vault_fake"]

#: Name of the key created at start, in the ``transit`` mount (a derived aes256-gcm96 key).
READY_KEY = "kmsbox-kek"


class VaultFake:
    """A started fake Vault. Thread-safe; call :meth:`stop` to release the port."""

    name = "vault"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: FaultInjector | None = None,
        timeout_delay: float | None = None,
    ) -> None:
        self._faults = faults or FaultInjector(known_operations=OPERATIONS)
        self._stopping = threading.Event()
        self._timeout_delay = timeout_delay
        self.state = VaultState()
        self.router = Router(self.state)
        self.root_token = self.state.tokens.root.id
        self.state.mount("", "transit")
        self.state.namespaces[""].mounts["transit"].create_key(READY_KEY, {"type": "aes256-gcm96", "derived": True})
        self._server = ThreadingHTTPServer((host, port), VaultRequestHandler)
        self._server.daemon_threads = False  # server_close() then joins every handler thread
        self._server.block_on_close = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="kmsbox-vault-fake", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"VaultFake(address={self.address!r})"

    # -- the FakeServer protocol ----------------------------------------------------

    @property
    def address(self) -> str:
        """``http://HOST:PORT`` of this fake."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def kek_uri(self) -> str:
        """URI of the ready key (works with :meth:`env`)."""
        return self.key_uri(READY_KEY)

    @property
    def faults(self) -> FaultInjector:
        """The fault and latency injector in front of every request."""
        return self._faults

    def key_uri(self, name: str, mount: str = "transit") -> str:
        """The ``hcvault://`` URI of a key in this fake."""
        return f"hcvault://{self.address.removeprefix('http://')}/{mount}/keys/{name}"

    def env(self) -> dict[str, str]:
        """``VAULT_ADDR`` (plain HTTP, so the provider uses HTTP for this host) and the root ``VAULT_TOKEN``."""
        return {"VAULT_ADDR": self.address, "VAULT_TOKEN": self.root_token}

    def create_key(self, name: str, *, derived: bool = True, mount: str = "transit", namespace: str = "") -> str:
        """Create an aes256-gcm96 key (derived by default, as kmsbox recommends) and return its URI."""
        with self.state.lock:
            transit = self.state.namespace(namespace).mounts[mount]
            transit.create_key(name, {"type": "aes256-gcm96", "derived": derived})
        return self.key_uri(name, mount)

    def rotate_key(self, kek_uri: str) -> str:
        """Rotate the key behind ``kek_uri``; return the new version as ``vN``."""
        ref = parse_key_uri(kek_uri)
        with self.state.lock:
            _, data = self.state.namespace("").mounts[ref.mount].rotate_key(ref.name)
        assert data is not None
        return f"v{data['latest_version']}"

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and join every thread."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- operator helpers for tests -------------------------------------------------

    def now(self) -> float:
        """The fake's clock: real time plus what :meth:`advance_clock` added."""
        return self.state.now()

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock forward: tokens expire and keys auto-rotate as if that time had passed."""
        self.state.advance_clock(seconds)

    def create_namespace(self, path: str) -> None:
        """Create a namespace (its own mounts, keys and policies, with a ``transit`` mount)."""
        self.state.create_namespace(path.strip("/"))

    def put_policy(self, name: str, policy: str, *, namespace: str = "") -> None:
        """Write an ACL policy (HCL or JSON), as ``vault policy write NAME FILE`` does.

        ValueError, with Vault's 400 text, for a policy Vault or the fake refuses.
        """
        try:
            self.state.write_policy(namespace.strip("/"), name, policy)
        except VaultHTTPError as exc:
            raise ValueError("; ".join(exc.errors) or str(exc)) from None

    def create_token(
        self,
        policies: Iterable[str],
        *,
        ttl: float | None = None,
        namespace: str = "",
        no_default_policy: bool = False,
    ) -> str:
        """A new token with these policies (plus ``default``), as ``vault token create -policy=...`` makes."""
        with self.state.lock:
            return self.state.tokens.create(
                policy_names(list(policies)),
                namespace.strip("/"),
                ttl=None if ttl is None else int(ttl),
                no_default_policy=no_default_policy,
            ).id

    def create_approle(self, role: str, *, token_ttl: int = 3600, policies: Iterable[str] = ()) -> tuple[str, str]:
        """Create an AppRole role whose tokens carry ``policies`` (and ``default``); return ``(role_id, secret_id)``."""
        approles = self.state.approles
        with self.state.lock:
            approles.write_role(role, {"token_ttl": token_ttl, "token_policies": list(policies)})
            entry = approles.role(role)
            assert entry is not None
            return entry.role_id, approles.new_secret_id(role)

    def expire_tokens(self) -> None:
        """Revoke every token except the root token (AppRole clients must log in again)."""
        with self.state.lock:
            self.state.tokens.revoke_all_but_root()

    def seal(self) -> None:
        """Seal the fake: every request but the health and seal-status checks gets 503 "Vault is sealed"."""
        self.state.sealed = True

    def unseal(self) -> None:
        """Unseal the fake again."""
        self.state.sealed = False

    @property
    def sealed(self) -> bool:
        """True while sealed."""
        return self.state.sealed

    # -- used by the request handler ------------------------------------------------

    def timeout_delay(self) -> float:
        """How long a ``timeout`` fault sleeps: past the client's time-out (KMSBOX_KMS_TIMEOUT + 1 s by default)."""
        if self._timeout_delay is not None:
            return self._timeout_delay
        try:
            return float(os.environ.get("KMSBOX_KMS_TIMEOUT", "10")) + 1.0
        except ValueError:
            return 11.0

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the fake stops."""
        self._stopping.wait(seconds)


def start_vault_fake(
    host: str = "127.0.0.1",
    port: int = 0,
    latency: float = 0.0,
    fault_rate: float = 0.0,
    fault_kind: str = "unavailable",
    *,
    fault_count: int | None = None,
    fault_operations: Iterable[str] = (),
    timeout_delay: float | None = None,
    seed: int | None = None,
    **_ignored: Any,
) -> VaultFake:
    """Start the fake (the ``register_fake_servers`` factory); extra options from newer hosts are ignored.

    ``fault_operations`` limits faults to those operations (:data:`OPERATIONS`: ``decrypt``,
    ``encrypt``, ``keys.read``...); another name is a ValueError.
    """
    faults = FaultInjector(
        latency=latency,
        rate=fault_rate,
        kind=fault_kind,
        seed=seed,
        operations=fault_operations,
        known_operations=OPERATIONS,
    )
    if fault_count is not None:
        faults.configure(count=fault_count)
    return VaultFake(host, port, faults=faults, timeout_delay=timeout_delay)
