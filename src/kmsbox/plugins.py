"""The plugin manager: hook specs, entry points, default plugins and registries.

Built-in pieces are plain plugins listed in ``DEFAULT_PLUGINS`` and registered
through the same hooks as a third party's. Setting ``KMSBOX_PLUGINS`` to a
comma-separated list of plugin names restricts which plugins load (default
plugins are named ``local``, ``memory`` and ``sqlite``; third-party plugins by
their entry-point name). An empty value loads none.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from kmsbox import hookspecs
from kmsbox.errors import PluginError

__all__ = [
    "load_lazily",
    "DEFAULT_PLUGINS",
    "audit_sink_factories",
    "KNOWN_PACKAGES",
    "PLUGINS_ENV",
    "Registration",
    "fake_servers",
    "get_plugin_manager",
    "kek_factories",
    "plugin_summary",
    "reset_plugin_manager",
    "scheme_of",
    "storage_factories",
]

PLUGINS_ENV = "KMSBOX_PLUGINS"

#: (name, module) of the built-in plugins.
DEFAULT_PLUGINS: list[tuple[str, str]] = [
    ("local", "kmsbox.providers.local"),
    ("memory", "kmsbox.storage.memory"),
    ("sqlite", "kmsbox.storage.sqlite"),
    ("audit-sinks", "kmsbox.store.sinks"),
]

#: Schemes served by kmsbox's own optional packages, named in "not installed" errors.
KNOWN_PACKAGES: dict[str, str] = {
    "aws-kms": "kmsbox-aws",
    "gcp-kms": "kmsbox-gcp",
    "hcvault": "kmsbox-vault",
    "postgresql": "kmsbox-postgres",
    "postgres": "kmsbox-postgres",
}


@dataclass(frozen=True)
class Registration:
    """One thing a plugin registered: a scheme (or fake name) and its factory."""

    key: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""


@dataclass
class _Registry:
    kek: dict[str, Registration] = field(default_factory=dict)
    storage: dict[str, Registration] = field(default_factory=dict)
    fakes: dict[str, Registration] = field(default_factory=dict)
    sinks: dict[str, Registration] = field(default_factory=dict)


_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None
_registry: _Registry | None = None


def _allowed() -> set[str] | None:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading plugins on first use."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = _build_plugin_manager()
        return _pm


def _build_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    allowed = _allowed()
    try:
        for name, module_name in DEFAULT_PLUGINS:
            if allowed is None or name in allowed:
                pm.register(importlib.import_module(module_name), name=name)
        if allowed is None:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
        else:
            # Loading by name (not ep.load()) keeps the distribution info `kmsbox plugins` shows.
            for name in sorted(allowed):
                pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a kmsbox plugin's hook does not match its specification: {exc}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a kmsbox plugin implements an unknown hook: {exc}") from exc
    return pm


def reset_plugin_manager() -> None:
    """Forget loaded plugins (tests use this after changing ``KMSBOX_PLUGINS``)."""
    global _pm, _registry
    with _lock:
        _pm = None
        _registry = None


def _collect(pm: pluggy.PluginManager, hook_name: str, target: dict[str, Registration]) -> None:
    hook = getattr(pm.hook, hook_name)
    # pluggy calls implementations last-registered first; honour that order so a
    # third-party plugin can override a default (the defaults are trylast).
    for impl in reversed(hook.get_hookimpls()):
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

        def register(
            key: str, factory: Callable[..., Any], description: str = "", *, _plugin: str = plugin_name
        ) -> None:
            if not isinstance(key, str) or not key:
                raise PluginError(f"plugin {_plugin!r} registered an empty or non-string name")
            if key not in target:
                target[key] = Registration(key, factory, _plugin, description)

        impl.function(register=register)


def _get_registry() -> _Registry:
    global _registry
    pm = get_plugin_manager()
    with _lock:
        if _registry is None:
            registry = _Registry()
            _collect(pm, "register_kek_providers", registry.kek)
            _collect(pm, "register_storage_backends", registry.storage)
            _collect(pm, "register_fake_servers", registry.fakes)
            _collect(pm, "register_audit_sinks", registry.sinks)
            _registry = registry
        return _registry


def kek_factories() -> dict[str, Registration]:
    """KEK provider registrations keyed by URI scheme."""
    return dict(_get_registry().kek)


def storage_factories() -> dict[str, Registration]:
    """Storage backend registrations keyed by URL scheme."""
    return dict(_get_registry().storage)


def fake_servers() -> dict[str, Registration]:
    """Fake KMS server registrations keyed by name."""
    return dict(_get_registry().fakes)


def audit_sink_factories() -> dict[str, Registration]:
    """Audit sink registrations keyed by URL scheme."""
    return dict(_get_registry().sinks)


def scheme_of(uri: str, what: str) -> str:
    """Return the scheme of ``uri`` or raise ConfigError naming ``what`` it was."""
    from kmsbox.errors import ConfigError

    if not isinstance(uri, str) or "://" not in uri:
        raise ConfigError(f"{what} must be a URI of the form scheme://..., got a value without a scheme")
    scheme = uri.split("://", 1)[0].lower()
    if not scheme:
        raise ConfigError(f"{what} has an empty scheme")
    return scheme


def missing_scheme_error(scheme: str, what: str, known: dict[str, Registration]) -> PluginError:
    """Build the error for a scheme no loaded plugin serves."""
    package = KNOWN_PACKAGES.get(scheme)
    served = ", ".join(sorted(known)) or "none"
    if package:
        return PluginError(
            f"no {what} for scheme {scheme!r}: install the {package!r} package "
            f"(pip install {package}); schemes available now: {served}"
        )
    return PluginError(f"no {what} for scheme {scheme!r}; schemes available now: {served}")


def plugin_summary() -> list[dict[str, Any]]:
    """Each loaded plugin with the KEK schemes, storage schemes and fakes it serves."""
    pm = get_plugin_manager()
    registry = _get_registry()
    rows: list[dict[str, Any]] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = None
        for d_plugin, d in pm.list_plugin_distinfo():
            if d_plugin is plugin:
                dist = f"{d.project_name} {d.version}"
        rows.append(
            {
                "name": name,
                "default": any(name == n for n, _ in DEFAULT_PLUGINS),
                "distribution": dist,
                "kek_schemes": sorted(k for k, r in registry.kek.items() if r.plugin == name),
                "storage_schemes": sorted(k for k, r in registry.storage.items() if r.plugin == name),
                "fake_servers": sorted(k for k, r in registry.fakes.items() if r.plugin == name),
                "audit_sinks": sorted(k for k, r in registry.sinks.items() if r.plugin == name),
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            }
        )
    return rows


def load_lazily(module: str, homes: Mapping[str, str], name: str) -> Any:
    """A plugin package's name from the submodule ``homes`` says it lives in, imported on
    first use (PEP 562): ``def __getattr__(name): return load_lazily(__name__, HOMES, name)``.

    kmsbox loads every installed plugin in every process, so a plugin package that imports
    its SDK (boto3, hvac, SQLAlchemy, a web stack) at import time puts it in the heap of
    every service, where each full garbage collection walks it. AttributeError for a name
    not in ``homes``.
    """
    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
