"""Storage backends: the protocol, the shared SQL, and the default plugins."""

from __future__ import annotations

from kmsbox.plugins import missing_scheme_error, scheme_of, storage_factories
from kmsbox.storage.base import StorageBackend

__all__ = ["StorageBackend", "open_storage"]


def open_storage(url: str) -> StorageBackend:
    """Open the backend that serves ``url``'s scheme (migrating its schema).

    Raises ConfigError for a malformed URL, an unreadable store or a schema newer
    than this code, and PluginError when no plugin serves the scheme.
    """
    scheme = scheme_of(url, "storage URL")
    factories = storage_factories()
    registration = factories.get(scheme)
    if registration is None:
        raise missing_scheme_error(scheme, "storage backend", factories)
    backend: StorageBackend = registration.factory(url)
    return backend
