"""Opening a store: arguments, then ``KMSBOX_STORE`` / ``KMSBOX_KEK``, then ``kmsbox.toml``.

Opening fails closed: no usable KEK, an unreadable store or a schema newer than
the code raise :class:`~kmsbox.errors.ConfigError` before anything is served.

``kmsbox.toml`` (in the working folder, or the file named by ``KMSBOX_CONFIG``)::

    [store]
    url = "sqlite:///secrets.db"
    kek = ["env://KMSBOX_MASTER_KEY"]       # first is primary; more are escrow copies
    audit_reads = true
    max_value_size = 1048576

    [cache]
    max_age = 300          # seconds an unwrapped namespace key is kept
    max_uses = 16777216    # uses before it is unwrapped again
    max_entries = 4096
    data_keys = 4096       # DEKs of recent reads kept; 0 turns that cache off
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmsbox.errors import ConfigError, KmsboxError, PluginError, ProviderError
from kmsbox.kek import KekProvider, open_kek
from kmsbox.keys import KeyCache
from kmsbox.limits import MAX_COUNT
from kmsbox.storage import open_storage
from kmsbox.store.service import DEFAULT_MAX_VALUE_SIZE, SecretStore

__all__ = ["StoreSettings", "load_settings", "open_store"]

STORE_ENV = "KMSBOX_STORE"
KEK_ENV = "KMSBOX_KEK"
CONFIG_ENV = "KMSBOX_CONFIG"
CONFIG_FILE = "kmsbox.toml"


@dataclass
class StoreSettings:
    """Resolved settings for opening a store."""

    url: str
    keks: list[str | KekProvider]
    audit_reads: bool = True
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    cache: dict[str, float] = field(default_factory=dict)
    source: str = "arguments"


def _split_keks(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _read_toml(path: Path) -> dict[str, Any]:
    problem: ConfigError
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        problem = ConfigError(f"config file {path} does not exist")
    except UnicodeDecodeError:
        # The codec's message quotes the offending bytes: name the file and the rule only.
        problem = ConfigError(f"config file {path} is not UTF-8 text (TOML must be UTF-8)")
    except tomllib.TOMLDecodeError as exc:
        problem = ConfigError(f"config file {path} is not valid TOML: {exc}")
    except OSError as exc:
        problem = ConfigError(f"config file {path} cannot be read: {exc.strerror}")
    # Raised outside the handlers: the file may hold a URL with a password, and a decode
    # error holds its bytes; neither may ride along as __context__.
    raise problem


def _config_file() -> Path | None:
    named = os.environ.get(CONFIG_ENV)
    if named:
        return Path(named)
    default = Path.cwd() / CONFIG_FILE
    return default if default.is_file() else None


#: The settings a config file may hold, by table.
_KNOWN = {
    "store": ("url", "kek", "audit_reads", "max_value_size"),
    "cache": ("max_age", "max_uses", "max_entries", "data_keys"),
}
_MAX_VALUE_SIZE = 64 * 1024 * 1024

_TOML_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    list: "an array",
    dict: "a table",
}


def _toml_type(value: Any) -> str:
    # Name the type, never the value: a URL may carry a password.
    for kind, name in _TOML_TYPES.items():
        if type(value) is kind:
            return name
    return f"a {type(value).__name__}"


def _sections(data: dict[str, Any], path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    unknown = sorted(set(data) - set(_KNOWN))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown top-level settings {unknown} (known tables: [store] and [cache])"
        )
    sections: list[dict[str, Any]] = []
    for table, known in _KNOWN.items():
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: {table} must be a table ([{table}]), got {_toml_type(section)}")
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ConfigError(f"config file {path}: unknown [{table}] settings {unknown}")
        sections.append(section)
    return sections[0], sections[1]


def _file_url(store_section: dict[str, Any], path: Path | None) -> str:
    raw = store_section["url"]
    if not isinstance(raw, str):
        raise ConfigError(f"config file {path}: [store] url must be a string (a storage URL), got {_toml_type(raw)}")
    if not raw.strip():
        raise ConfigError(f"config file {path}: [store] url is empty")
    return raw


def _file_keks(store_section: dict[str, Any], path: Path | None) -> list[str | KekProvider]:
    raw = store_section["kek"]
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise ConfigError(
            f"config file {path}: [store] kek must be a URI string or an array of URI strings, got {_toml_type(raw)}"
        )
    if not items:
        raise ConfigError(f"config file {path}: [store] kek is an empty array (give at least one KEK URI)")
    for index, item in enumerate(items, start=1):
        if not isinstance(item, str):
            raise ConfigError(
                f"config file {path}: [store] kek entry {index} must be a URI string, got {_toml_type(item)}"
            )
        if not item.strip():
            raise ConfigError(f"config file {path}: [store] kek entry {index} is empty")
    return list(items)


def _cache_setting(key: str, value: Any, path: Path | None) -> float:
    # max_uses, max_entries and data_keys are counts: a fraction would truncate (0.5 -> 0) past this check.
    if key == "max_age":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(
                f"config file {path}: [cache] max_age must be a number of seconds, got {_toml_type(value)}"
            )
        # nan passes every comparison and inf never expires: both are mistakes.
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"config file {path}: [cache] max_age must be a finite number of seconds above 0")
        return float(value)
    lowest = 0 if key == "data_keys" else 1  # data_keys = 0 turns that cache off
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"config file {path}: [cache] {key} must be an integer, got {_toml_type(value)}")
    if not lowest <= value <= MAX_COUNT:
        raise ConfigError(f"config file {path}: [cache] {key} must be an integer from {lowest} to {MAX_COUNT}")
    return value


def load_settings(
    url: str | None = None,
    kek: str | KekProvider | Sequence[str | KekProvider] | None = None,
    *,
    audit_reads: bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> StoreSettings:
    """Resolve settings: explicit arguments win, then the environment, then the config file.

    Raises ConfigError when no URL or KEK is found anywhere, and for a config file
    that cannot be read, is not UTF-8 TOML, has an unknown table or key, or a value
    of the wrong type or range (the message names the key and the type expected).
    """
    data: dict[str, Any] = {}
    path = Path(config_file) if config_file is not None else _config_file()
    if path is not None:
        data = _read_toml(path)
    store_section, cache_section = _sections(data, path)
    # Every key in the file is checked, even one that an argument overrides: a typo never hides.
    file_url = _file_url(store_section, path) if "url" in store_section else None
    file_keks = _file_keks(store_section, path) if "kek" in store_section else None

    source = "arguments"
    chosen_url = url
    if chosen_url is None and os.environ.get(STORE_ENV):
        chosen_url, source = os.environ[STORE_ENV], STORE_ENV
    if chosen_url is None and file_url is not None:
        chosen_url, source = file_url, str(path)
    if not isinstance(chosen_url, str) or not chosen_url:
        raise ConfigError(f"no store URL: pass one, set {STORE_ENV}, or put [store] url in {CONFIG_FILE}")

    keks: list[str | KekProvider]
    if kek is not None:
        keks = [kek] if isinstance(kek, (str, KekProvider)) else list(kek)
    elif os.environ.get(KEK_ENV):
        keks = list(_split_keks(os.environ[KEK_ENV]))
    elif file_keks is not None:
        keks = file_keks
    else:
        keks = []
    if not keks:
        raise ConfigError(f"no KEK: pass kek=..., set {KEK_ENV}, or put [store] kek in {CONFIG_FILE}")

    file_reads = store_section.get("audit_reads", True)
    if not isinstance(file_reads, bool):
        raise ConfigError(
            f"config file {path}: [store] audit_reads must be true or false, got {_toml_type(file_reads)}"
        )
    reads = file_reads if audit_reads is None else audit_reads
    max_value = store_section.get("max_value_size", DEFAULT_MAX_VALUE_SIZE)
    if not isinstance(max_value, int) or isinstance(max_value, bool):
        raise ConfigError(
            f"config file {path}: [store] max_value_size must be an integer (bytes), got {_toml_type(max_value)}"
        )
    if not 1 <= max_value <= _MAX_VALUE_SIZE:
        raise ConfigError(f"config file {path}: [store] max_value_size must be an integer from 1 to {_MAX_VALUE_SIZE}")
    cache = {key: _cache_setting(key, value, path) for key, value in cache_section.items()}
    return StoreSettings(chosen_url, keks, reads, max_value, cache, source)


def open_store(
    url: str | None = None,
    kek: str | KekProvider | Sequence[str | KekProvider] | None = None,
    *,
    audit_reads: bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
    cache: KeyCache[Any] | None = None,
) -> SecretStore:
    """Open a :class:`SecretStore`, failing closed.

    ``kmsbox.open_store("sqlite:///secrets.db", kek="env://KMSBOX_MASTER_KEY")``.
    Several KEKs may be given: the first is primary, the others hold escrow
    copies of every namespace key. Raises ConfigError when the settings, a KEK or
    the store are not usable, and PluginError when a scheme's plugin is missing.
    """
    settings = load_settings(url, kek, audit_reads=audit_reads, config_file=config_file)
    providers: list[KekProvider] = []
    backend = None
    try:
        for item in settings.keks:
            providers.append(open_kek(item) if isinstance(item, str) else item)
        uris = [p.uri for p in providers]
        if len(set(uris)) != len(uris):
            raise ConfigError("the same KEK URI is given twice")
        backend = open_storage(settings.url)
        key_cache = cache or KeyCache(
            max_age=settings.cache.get("max_age", 300.0),
            max_uses=int(settings.cache.get("max_uses", 1 << 24)),
            max_entries=int(settings.cache.get("max_entries", 4096)),
        )
        try:
            return SecretStore(
                backend,
                providers,
                audit_reads=settings.audit_reads,
                max_value_size=settings.max_value_size,
                cache=key_cache,
                data_key_cache_size=int(settings.cache.get("data_keys", 4096)),
            )
        except (ConfigError, PluginError):
            raise
        except ProviderError as exc:
            raise ConfigError(f"KEK {providers[0].uri} is not usable: {exc}") from exc
        except KmsboxError as exc:
            raise ConfigError(f"the store's keys cannot be opened with the configured KEK(s): {exc}") from exc
    except BaseException:
        if backend is not None:
            backend.close()
        for provider in providers:
            provider.close()
        raise
