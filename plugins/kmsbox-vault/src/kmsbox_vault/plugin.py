"""Hook implementations of the kmsbox-vault plugin: the ``hcvault`` scheme and the ``vault`` fake."""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_fake_servers", "register_kek_providers"]


@hookimpl
def register_kek_providers(register: Any) -> None:
    """Register ``hcvault://HOST:PORT/MOUNT/keys/NAME``."""
    from kmsbox_vault.provider import open_vault_kek

    register("hcvault", open_vault_kek, "HashiCorp Vault transit key (hvac)")


@hookimpl
def register_fake_servers(register: Any) -> None:
    """Register the local fake of Vault's transit engine as ``vault``."""
    from kmsbox_vault.fake import start_vault_fake

    register("vault", start_vault_fake, "HTTP fake of HashiCorp Vault's transit secrets engine")
