"""The ``KMSBOX_ORM`` setting and the configuration built from it (one per process, rebuilt when settings change).

KMSBOX_ORM = {
    "KEK": ["aws-kms://arn:aws:kms:...", "env://KMSBOX_OLD_KEK"],  # default: $KMSBOX_KEK
    "SCOPE": None,                 # bound into every value's context when set
    "DATABASE": "default",         # where the index keys live
    "INDEX_REFRESH": 60,           # seconds between index-key reloads
    "INDEX_GRACE": 300,            # seconds before a rotated index key indexes new values
    "CREATE_INDEX_KEYS_ON_MIGRATE": True,
}
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import IntegrityError as DbIntegrityError
from django.db import transaction
from kmsbox_orm.encryption import ColumnEncryption
from kmsbox_orm.index_keys import DEFAULT_GRACE, DEFAULT_REFRESH, IndexKeyRecord, IndexKeyring

from kmsbox.errors import ConfigError

__all__ = ["KEK_ENV", "DjangoIndexKeyStore", "OrmConfig", "get_config", "orm_settings", "reset_config"]

KEK_ENV = "KMSBOX_KEK"
_KNOWN = {"KEK", "SCOPE", "DATABASE", "INDEX_REFRESH", "INDEX_GRACE", "CREATE_INDEX_KEYS_ON_MIGRATE"}


def orm_settings() -> dict[str, Any]:
    """``settings.KMSBOX_ORM`` checked for unknown keys (ConfigError)."""
    raw = getattr(settings, "KMSBOX_ORM", {}) or {}
    if not isinstance(raw, dict):
        raise ConfigError("KMSBOX_ORM must be a dict")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise ConfigError(f"KMSBOX_ORM has unknown keys: {', '.join(sorted(unknown))}")
    return raw


class DjangoIndexKeyStore:
    """Index-key rows in ``kmsbox_orm_index_keys`` through the Django ORM on one database alias.

    Create and rotate keys outside a transaction (migrate, the management commands do):
    inside one, a rollback would take the new key row with it.
    """

    def __init__(self, database: str) -> None:
        self.database = database

    def __repr__(self) -> str:
        return f"DjangoIndexKeyStore({self.database!r})"

    def load_index_keys(self) -> list[IndexKeyRecord]:
        """Every row."""
        from kmsbox_django.models import IndexKey

        rows = IndexKey.objects.using(self.database).values_list(
            "name", "version", "active_from", "retired", "sealed_key"
        )
        return [IndexKeyRecord(n, int(v), int(a), bool(r), bytes(k)) for n, v, a, r, k in rows]

    def add_index_key(self, record: IndexKeyRecord) -> bool:
        """Insert; False when (name, version) exists."""
        from kmsbox_django.models import IndexKey

        try:
            with transaction.atomic(using=self.database):
                IndexKey.objects.using(self.database).create(
                    name=record.name,
                    version=record.version,
                    active_from=record.active_from,
                    retired=record.retired,
                    sealed_key=record.sealed_key,
                )
        except DbIntegrityError:
            return False
        return True

    def replace_index_key(self, old: IndexKeyRecord, new: IndexKeyRecord) -> bool:
        """Compare-and-set on the sealed key."""
        from kmsbox_django.models import IndexKey

        with transaction.atomic(using=self.database):
            rows = IndexKey.objects.using(self.database).filter(name=old.name, version=old.version)
            current = rows.select_for_update().values_list("sealed_key", flat=True).first()
            if current is None or bytes(current) != old.sealed_key:
                return False
            rows.update(active_from=new.active_from, retired=new.retired, sealed_key=new.sealed_key)
        return True


class OrmConfig:
    """The engine settings and index keyring the fields use."""

    def __init__(self, kek: list[Any], *, scope: str | None, database: str, refresh: float, grace: float) -> None:
        self.encryption = ColumnEncryption(kek, scope=scope)
        self.database = database
        self.keyring = IndexKeyring(self.encryption, DjangoIndexKeyStore(database), refresh=refresh, grace=grace)

    def __repr__(self) -> str:
        return f"OrmConfig({self.encryption!r}, database={self.database!r})"


_config: OrmConfig | None = None
_lock = threading.Lock()
_override: list[Any] | None = None


def get_config() -> OrmConfig:
    """The configuration from settings (built on first use; ConfigError when no KEK is set)."""
    global _config
    config = _config
    if config is not None:
        return config
    with _lock:
        if _config is None:
            raw = orm_settings()
            kek = (
                _override or raw.get("KEK") or [k.strip() for k in os.environ.get(KEK_ENV, "").split(",") if k.strip()]
            )
            if not kek:
                raise ConfigError(f"no KEK for encrypted fields: set KMSBOX_ORM['KEK'] or {KEK_ENV}")
            _config = OrmConfig(
                [kek] if isinstance(kek, str) else list(kek),
                scope=raw.get("SCOPE"),
                database=raw.get("DATABASE", "default"),
                refresh=float(raw.get("INDEX_REFRESH", DEFAULT_REFRESH)),
                grace=float(raw.get("INDEX_GRACE", DEFAULT_GRACE)),
            )
        return _config


def reset_config(kek: list[Any] | None = None) -> None:
    """Forget the configuration (rebuilt from settings on next use); ``kek`` overrides the setting (the CLI's --kek)."""
    global _config, _override
    with _lock:
        _config = None
        _override = kek


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "KMSBOX_ORM":
        reset_config()


setting_changed.connect(_on_setting_changed, dispatch_uid="kmsbox_django.conf")
