"""The kmsbox pytest plugin (``pytest11`` entry point): fixtures for users' tests.

Fixtures:

- ``kmsbox_local_kek``: a ``env://`` KEK with a key generated for the test.
- ``kmsbox_fake_kek``: an in-process :class:`~kmsbox.testing.fake_kek.FakeKek` with
  fault injection, no server needed.
- ``kmsbox_fake``: a factory, ``kmsbox_fake("aws")``, that starts (once per
  session) the fake of an installed plugin and returns it with faults cleared.
- ``fake_aws_kms``, ``fake_gcp_kms``, ``fake_vault``: the same for each cloud.

A fake whose plugin is missing skips the test with the package to install, except
under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kmsbox.plugins import fake_servers
from kmsbox.testing.aio import kmsbox_async_store, kmsbox_async_store_factory  # noqa: F401 (fixtures: see kmsbox.testing.aio)
from kmsbox.testing.fake_kek import FakeKek

__all__ = ["fake_aws_kms", "fake_gcp_kms", "fake_vault", "kmsbox_fake", "kmsbox_fake_kek", "kmsbox_local_kek"]

_PACKAGES = {"aws": "kmsbox-aws", "gcp": "kmsbox-gcp", "vault": "kmsbox-vault"}


@pytest.fixture
def kmsbox_local_kek(monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``env://`` KEK URI whose key is generated for this test."""
    monkeypatch.setenv("KMSBOX_TEST_KEK", os.urandom(32).hex())
    return "env://KMSBOX_TEST_KEK"


@pytest.fixture
def kmsbox_fake_kek(monkeypatch: pytest.MonkeyPatch) -> FakeKek:
    """An in-process fake KEK (versions, rotation, destroy, injected faults)."""
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "3")  # short retry budget for fault tests
    return FakeKek()


@pytest.fixture(scope="session")
def _kmsbox_fake_servers() -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def kmsbox_fake(_kmsbox_fake_servers: dict[str, Any]) -> Callable[[str], Any]:
    """Start (once per session) and return the fake KMS registered under a name."""

    def start(name: str) -> Any:
        if name not in _kmsbox_fake_servers:
            registration = fake_servers().get(name)
            if registration is None:
                reason = f"fake {name!r} is not installed (pip install {_PACKAGES.get(name, 'its plugin')})"
                if os.environ.get("CI") == "true":
                    pytest.fail(reason)
                pytest.skip(reason)
            _kmsbox_fake_servers[name] = registration.factory()
        server = _kmsbox_fake_servers[name]
        server.faults.clear()
        return server

    return start


@pytest.fixture
def fake_aws_kms(kmsbox_fake: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The moto-backed fake AWS KMS, with its environment exported for the test."""
    return _with_env(kmsbox_fake("aws"), monkeypatch)


@pytest.fixture
def fake_gcp_kms(kmsbox_fake: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The gRPC fake of Cloud KMS, with its environment exported for the test."""
    return _with_env(kmsbox_fake("gcp"), monkeypatch)


@pytest.fixture
def fake_vault(kmsbox_fake: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The HTTP fake of Vault's transit engine, with its environment exported for the test."""
    return _with_env(kmsbox_fake("vault"), monkeypatch)


def _with_env(server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    # Short retry budget so fault tests finish quickly.
    monkeypatch.setenv("KMSBOX_KMS_DEADLINE", "3")
    monkeypatch.setenv("KMSBOX_KMS_TIMEOUT", "5")
    return server
