"""Storage backends: the protocol, the public SQL base, and the default plugins."""

from __future__ import annotations

import inspect

from kmsbox.plugins import missing_scheme_error, scheme_of, storage_factories
from kmsbox.storage.base import StorageBackend

__all__ = ["StorageBackend", "open_storage"]


def open_storage(url: str, *, create: bool = True) -> StorageBackend:
    """Open the backend that serves ``url``'s scheme (migrating its schema).

    With ``create`` False, a store that does not exist yet is a ConfigError instead of a
    new, empty store (for backends whose factory takes ``create``; a server database's
    plugin that does not is asked to open as usual). Raises ConfigError for a malformed
    URL, an unreadable store or a schema newer than this code, and PluginError when no
    plugin serves the scheme.
    """
    scheme = scheme_of(url, "storage URL")
    factories = storage_factories()
    registration = factories.get(scheme)
    if registration is None:
        raise missing_scheme_error(scheme, "storage backend", factories)
    factory = registration.factory
    try:
        takes_create = "create" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or a callable without a signature
        takes_create = False
    backend: StorageBackend = factory(url, create=create) if takes_create else factory(url)
    return backend
