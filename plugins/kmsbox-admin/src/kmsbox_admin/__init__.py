"""kmsbox-admin: an admin HTTP API and web console for a kmsbox store.

``kmsbox admin serve`` runs it; :func:`create_app` builds the ASGI app over a
:class:`StoreOperations` (an async store on the server's loop, or a factory the app
opens at start-up) for embedding or tests. The names below load on first
use, so that loading the plugin (for ``kmsbox --help``) imports no web stack.
"""

from __future__ import annotations

from typing import Any

from kmsbox.plugins import load_lazily

__all__ = ["AdminSettings", "StoreOperations", "create_app", "hash_token", "mint_token"]

_HOMES = {
    "AdminSettings": "kmsbox_admin.settings",
    "StoreOperations": "kmsbox_admin.operations",
    "create_app": "kmsbox_admin.app",
    "hash_token": "kmsbox_admin.tokens",
    "mint_token": "kmsbox_admin.tokens",
}


def __getattr__(name: str) -> Any:
    return load_lazily(__name__, _HOMES, name)
