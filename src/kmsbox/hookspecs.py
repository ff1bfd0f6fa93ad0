"""Hook specifications of kmsbox and the ``hookimpl`` marker for plugins.

Each registration hook hands the plugin a ``register`` callback (the pattern of
``llm``); the host collects what is registered. Hooks are called with keywords,
so a specification can grow new arguments without breaking older plugins.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "kmsbox"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_kek_providers(register: Any) -> None:
    """Register KEK providers by URI scheme.

    Call ``register(scheme, factory, description="")`` once per scheme, where
    ``factory(uri: str) -> KekProvider`` opens a provider for a key URI such as
    ``env://KMSBOX_MASTER_KEY`` or ``aws-kms://arn:aws:kms:...``.
    """


@hookspec
def register_storage_backends(register: Any) -> None:
    """Register storage backends by URL scheme.

    Call ``register(scheme, factory, description="")`` once per scheme, where
    ``factory(url: str) -> StorageBackend`` opens a backend for a URL such as
    ``sqlite:///secrets.db``.
    """


@hookspec
def register_fake_servers(register: Any) -> None:
    """Register local fakes of a KMS for ``kmsbox fake-kms serve`` and tests.

    Call ``register(name, factory, description="")``, where ``factory(**options)``
    returns a started :class:`kmsbox.testing.fakes.FakeServer` (options include
    ``latency`` in seconds and ``fault_rate``).
    """


@hookspec
def register_audit_sinks(register: Any) -> None:
    """Register audit sinks (copies of every audit event outside the database) by URL scheme.

    Call ``register(scheme, factory, description="")``, where ``factory(url: str)`` returns
    a :class:`kmsbox.store.sinks.AuditSink` for a URL such as
    ``jsonl:///var/log/kmsbox/audit.jsonl``: it must make each batch of events durable
    before ``emit`` returns (raising if it cannot), and note an ``abort`` of events whose
    transaction rolled back.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``kmsbox`` click group ``cli``."""
