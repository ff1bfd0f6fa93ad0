"""Fixtures for the kmsbox-admin tests: a seeded SQLite store, tokens, and the app
served by a real uvicorn server on a loopback socket, talked to with httpx."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from admin_helpers import KEK_URI, KEK_VAR, GatedOperations, Seed, Server, Tokens, seed_store, serve
from kmsbox_admin.operations import StoreOperations
from kmsbox_admin.settings import AdminSettings
from kmsbox_admin.tokens import TokenEntry, hash_token, mint_token


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No kmsbox settings from the environment or a kmsbox.toml of the working folder."""
    monkeypatch.chdir(tmp_path)
    for var in ("KMSBOX_STORE", "KMSBOX_KEK", "KMSBOX_CONFIG", "KMSBOX_DEBUG"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def kek_hex(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> str:
    """A fresh local KEK in the environment, made at run time."""
    value = os.urandom(32).hex()
    monkeypatch.setenv(KEK_VAR, value)
    return value


@pytest.fixture
def seeded(tmp_path: Path, kek_hex: str) -> Seed:
    """A SQLite store with three secrets in each of two namespaces."""
    return seed_store(f"sqlite:///{tmp_path}/store.db", kek_hex)


@pytest.fixture
def tokens() -> Tokens:
    """Tokens minted at run time; only their hashes go into the settings."""
    admin, viewer = mint_token(), mint_token()
    return Tokens(
        admin,
        viewer,
        [TokenEntry("alice", "admin", hash_token(admin)), TokenEntry("victor", "viewer", hash_token(viewer))],
    )


@pytest.fixture
def start_server(seeded: Seed, tokens: Tokens) -> Iterator[Callable[..., Server]]:
    """Start a server over the seeded store; keyword arguments override settings
    (``operations_class`` picks the operations, ``verify`` the client's TLS check,
    ``running_jobs`` how many jobs run at once).
    A GatedOperations server gets its SQLite path, and every gate opened at the end."""
    started: list[tuple[Server, Callable[[], None]]] = []

    def start(
        operations_class: type[StoreOperations] = StoreOperations,
        verify: Any = True,
        running_jobs: int = 2,
        **overrides: Any,
    ) -> Server:
        settings = replace(AdminSettings(tokens=tokens.entries, host="127.0.0.1", port=0), **overrides)

        async def open_operations() -> StoreOperations:
            operations = await operations_class.open(seeded.url, [KEK_URI], kek_targets=settings.kek_targets)
            if isinstance(operations, GatedOperations):
                operations.db_path = seeded.url.removeprefix("sqlite:///")
            return operations

        started.append(serve(settings, open_operations, tokens, verify=verify, running_jobs=running_jobs))
        return started[-1][0]

    yield start
    for server, stop in started:
        if isinstance(server.operations, GatedOperations):
            server.operations.open_all()
        stop()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    """A server with default settings."""
    return start_server()
