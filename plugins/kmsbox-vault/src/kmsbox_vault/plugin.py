"""Hook implementations of the kmsbox-vault plugin: the ``hcvault`` scheme and the ``vault`` fake."""

from __future__ import annotations

from typing import Any

from kmsbox.hookspecs import hookimpl

__all__ = ["register_fake_servers", "register_kek_providers"]


def _open_vault_kek(uri: str) -> Any:
    # hvac (with requests) loads only when a Vault key is used, not with the plugin.
    from kmsbox_vault.provider import open_vault_kek

    return open_vault_kek(uri)


def _start_vault_fake(**options: Any) -> Any:
    from kmsbox_vault.fake import start_vault_fake

    return start_vault_fake(**options)


@hookimpl
def register_kek_providers(register: Any) -> None:
    """Register ``hcvault://HOST:PORT/MOUNT/keys/NAME``."""
    register("hcvault", _open_vault_kek, "HashiCorp Vault transit key (hvac)")


@hookimpl
def register_fake_servers(register: Any) -> None:
    """Register the local fake of Vault's transit engine as ``vault``."""
    register("vault", _start_vault_fake, "HTTP fake of HashiCorp Vault's transit secrets engine")
