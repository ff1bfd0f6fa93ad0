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

    [audit]
    chains = 32                                   # hash chains events are spread over
    sinks = ["jsonl:///var/log/kmsbox/audit.jsonl"]   # copies outside the database
    sink_failure = "fail"                         # or "ignore" (count, do not fail)
    checkpoint_file = "/var/lib/kmsbox/checkpoint.json"
    checkpoint_every = 10000                      # events between automatic checkpoints
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
from kmsbox.storage.base import StorageBackend
from kmsbox.store.runtime import StoreRuntime
from kmsbox.store.runtime import StoreSettings as RuntimeSettings
from kmsbox.store.service import SecretStore
from kmsbox.store.sinks import SINK_FAILURE_MODES, SinkSet, open_sink
from kmsbox.store.values import DEFAULT_MAX_VALUE_SIZE

__all__ = ["PreparedStore", "StoreSettings", "load_settings", "open_store", "opening_error", "prepare_store"]

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
    audit: dict[str, Any] = field(default_factory=dict)


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
    "audit": ("chains", "sinks", "sink_failure", "checkpoint_file", "checkpoint_every"),
}
#: Tables that belong to plugins (their own settings, read by them): passed over here.
PLUGIN_TABLES = ("admin",)
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


def _sections(data: dict[str, Any], path: Path | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    unknown = sorted(set(data) - set(_KNOWN) - set(PLUGIN_TABLES))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown top-level settings {unknown} (known tables: [store], [cache] and [audit])"
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
    return sections[0], sections[1], sections[2]


def _audit_settings(section: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """The [audit] table, checked (the message names the key, never a value)."""
    out: dict[str, Any] = {}
    if "chains" in section:
        chains = section["chains"]
        if type(chains) is not int or not 1 <= chains <= 4096:
            raise ConfigError(f"config file {path}: [audit] chains must be an integer from 1 to 4096")
        out["chains"] = chains
    if "sinks" in section:
        sinks = section["sinks"]
        if not isinstance(sinks, list) or not all(isinstance(u, str) and u.strip() for u in sinks):
            raise ConfigError(f"config file {path}: [audit] sinks must be an array of sink URLs")
        out["sinks"] = list(sinks)
    if "sink_failure" in section:
        mode = section["sink_failure"]
        if mode not in SINK_FAILURE_MODES:
            raise ConfigError(
                f"config file {path}: [audit] sink_failure must be one of {', '.join(SINK_FAILURE_MODES)}"
            )
        out["sink_failure"] = mode
    if "checkpoint_file" in section:
        target = section["checkpoint_file"]
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"config file {path}: [audit] checkpoint_file must be a file path")
        out["checkpoint_file"] = target
    if "checkpoint_every" in section:
        every = section["checkpoint_every"]
        if type(every) is not int or not 0 <= every <= MAX_COUNT:
            raise ConfigError(f"config file {path}: [audit] checkpoint_every must be an integer from 0 to {MAX_COUNT}")
        out["checkpoint_every"] = every
    if out.get("checkpoint_every") and "checkpoint_file" not in out:
        raise ConfigError(f"config file {path}: [audit] checkpoint_every needs a checkpoint_file")
    return out


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
    store_section, cache_section, audit_section = _sections(data, path)
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
        keks = _given_keks(kek)
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
    audit = _audit_settings(audit_section, path)
    return StoreSettings(chosen_url, keks, reads, max_value, cache, source, audit)


def _given_keks(kek: object) -> list[str | KekProvider]:
    """The KEK argument: a URI, a provider, or a list of them (ConfigError for anything else)."""
    if isinstance(kek, (str, KekProvider)):
        return [kek]
    if not isinstance(kek, (list, tuple)):
        raise ConfigError(f"kek must be a key URI, a KEK provider or a list of them, got {type(kek).__name__}")
    for index, item in enumerate(kek, start=1):
        if not isinstance(item, (str, KekProvider)):
            raise ConfigError(f"kek entry {index} must be a key URI or a KEK provider, got {type(item).__name__}")
    return list(kek)


@dataclass
class PreparedStore:
    """What opening a store needs, opened (providers, backend, sinks) but not yet its keys."""

    backend: StorageBackend
    providers: list[KekProvider]
    settings: StoreSettings
    runtime_settings: RuntimeSettings
    cache: KeyCache[Any]
    sinks: SinkSet

    def close(self) -> None:
        """Close everything opened (after a failure to open)."""
        self.sinks.close()
        self.backend.close()
        for provider in self.providers:
            provider.close()


def prepare_store(
    url: str | None = None,
    kek: str | KekProvider | Sequence[str | KekProvider] | None = None,
    *,
    audit_reads: bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
    cache: KeyCache[Any] | None = None,
    create: bool = True,
    audit_chains: int | None = None,
    audit_sinks: Sequence[str] | None = None,
) -> PreparedStore:
    """Resolve the settings and open the KEK providers, the sinks and the backend (which
    migrates the schema): everything but the keys. Blocking; shared by the sync and the
    async ``open_store``. Raises as ``open_store`` does; closes what it opened on failure."""
    settings = load_settings(url, kek, audit_reads=audit_reads, config_file=config_file)
    providers: list[KekProvider] = []
    backend = None
    sinks: SinkSet | None = None
    try:
        for item in settings.keks:
            providers.append(open_kek(item) if isinstance(item, str) else item)
        uris = [p.uri for p in providers]
        if len(set(uris)) != len(uris):
            raise ConfigError("the same KEK URI is given twice")
        audit = settings.audit
        chains = audit.get("chains", 32) if audit_chains is None else audit_chains
        if type(chains) is not int or not 1 <= chains <= 4096:
            raise ConfigError("audit_chains must be an integer from 1 to 4096")
        sink_urls = audit.get("sinks", []) if audit_sinks is None else list(audit_sinks)
        sinks = SinkSet([open_sink(u) for u in sink_urls], audit.get("sink_failure", "fail"))
        backend = open_storage(settings.url, create=create)
        key_cache = cache or KeyCache(
            max_age=settings.cache.get("max_age", 300.0),
            max_uses=int(settings.cache.get("max_uses", 1 << 24)),
            max_entries=int(settings.cache.get("max_entries", 4096)),
        )
        runtime = RuntimeSettings(
            audit_reads=settings.audit_reads,
            max_value_size=settings.max_value_size,
            data_key_cache_size=int(settings.cache.get("data_keys", 4096)),
            audit_chains=chains,
            checkpoint_file=audit.get("checkpoint_file"),
            checkpoint_every=audit.get("checkpoint_every", 0),
        )
        return PreparedStore(backend, providers, settings, runtime, key_cache, sinks)
    except BaseException:
        if sinks is not None:
            sinks.close()
        if backend is not None:
            backend.close()
        for provider in providers:
            provider.close()
        raise


def opening_error(exc: KmsboxError) -> KmsboxError:
    """What a failure to open the store's keys is to the caller: a KMS outage stays a
    ProviderError (not a mistake), anything else is a ConfigError (fail closed)."""
    if isinstance(exc, (ConfigError, PluginError, ProviderError)):
        return exc
    error = ConfigError(f"the store's keys cannot be opened with the configured KEK(s): {exc}")
    error.__cause__ = exc
    return error


def open_store(
    url: str | None = None,
    kek: str | KekProvider | Sequence[str | KekProvider] | None = None,
    *,
    audit_reads: bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
    cache: KeyCache[Any] | None = None,
    create: bool = True,
    audit_chains: int | None = None,
    audit_sinks: Sequence[str] | None = None,
) -> SecretStore:
    """Open a :class:`SecretStore`, failing closed.

    ``kmsbox.open_store("sqlite:///secrets.db", kek="env://KMSBOX_MASTER_KEY")``.
    Several KEKs may be given: the first is primary, the others hold escrow copies of
    every namespace key. With ``create`` False a store that does not exist yet is a
    ConfigError instead of a new one. ``audit_chains`` and ``audit_sinks`` override the
    ``[audit]`` settings. Raises ConfigError when the settings, a KEK or the store are
    not usable, ProviderError when the KMS cannot be reached (an outage, not a mistake),
    and PluginError when a scheme's plugin is missing. From asyncio code use
    :func:`kmsbox.aio.open_store`.
    """
    prepared = prepare_store(
        url,
        kek,
        audit_reads=audit_reads,
        config_file=config_file,
        cache=cache,
        create=create,
        audit_chains=audit_chains,
        audit_sinks=audit_sinks,
    )
    try:
        return SecretStore.from_runtime(
            StoreRuntime(
                prepared.backend,
                prepared.providers,
                cache=prepared.cache,
                settings=prepared.runtime_settings,
                sinks=prepared.sinks,
            )
        )
    except KmsboxError as exc:
        prepared.close()
        raise opening_error(exc) from exc.__cause__
    except BaseException:
        prepared.close()
        raise
