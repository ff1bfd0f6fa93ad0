"""kmsbox-vault: a HashiCorp Vault transit KEK provider for kmsbox, and a local fake of Vault.

Key URIs look like ``hcvault://vault.example.com:8200/transit/keys/kmsbox``. The
names below load on first use, so that loading the plugin does not import hvac.
"""

from __future__ import annotations

from typing import Any

from kmsbox.plugins import load_lazily

__all__ = ["VaultFake", "VaultKekProvider", "VaultKeyRef", "open_vault_kek", "parse_key_uri", "start_vault_fake"]

_HOMES = {
    "VaultFake": "kmsbox_vault.fake",
    "start_vault_fake": "kmsbox_vault.fake",
    "VaultKekProvider": "kmsbox_vault.provider",
    "open_vault_kek": "kmsbox_vault.provider",
    "VaultKeyRef": "kmsbox_vault.uri",
    "parse_key_uri": "kmsbox_vault.uri",
}


def __getattr__(name: str) -> Any:
    return load_lazily(__name__, _HOMES, name)
