"""Shared fixtures of the asyncio tests: a local KEK and a sync view of an async store."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from aio_helpers import LoopThread

KEK_VAR = "KMSBOX_MASTER_KEY"


@pytest.fixture
def kek_uri(monkeypatch: pytest.MonkeyPatch) -> str:
    """``env://KMSBOX_MASTER_KEY`` holding a key generated for this test."""
    monkeypatch.setenv(KEK_VAR, os.urandom(32).hex())
    return f"env://{KEK_VAR}"


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """An event loop on its own thread, stopped after the test."""
    thread = LoopThread()
    yield thread
    thread.stop()
