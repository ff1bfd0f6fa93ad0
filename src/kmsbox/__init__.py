"""kmsbox: envelope encryption and a secret store over pluggable KMS providers.

The public face only; see the docs for concepts.
"""

from kmsbox.engine import Envelope
from kmsbox.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    KeyUnavailable,
    KmsboxError,
    NamespaceNotFound,
    PluginError,
    ProviderError,
    SecretDisabled,
    SecretExpired,
    SecretNotFound,
    StorageError,
)
from kmsbox.kek import BaseKekProvider, KekProvider, WrappedKey, open_kek
from kmsbox.keys import KeyCache

__version__ = "0.1.0"

__all__ = [
    "Envelope",
    "KeyCache",
    "BaseKekProvider",
    "KekProvider",
    "WrappedKey",
    "open_kek",
    "KmsboxError",
    "ConfigError",
    "PluginError",
    "ProviderError",
    "KeyUnavailable",
    "IntegrityError",
    "SecretNotFound",
    "NamespaceNotFound",
    "SecretExpired",
    "SecretDisabled",
    "ConflictError",
    "StorageError",
    "__version__",
]

from kmsbox.store.audit import AuditEvent, AuditVerification, Checkpoint
from kmsbox.store.config import open_store
from kmsbox.store.models import GetResult, Page, Secret, SecretInfo, SecretVersionInfo
from kmsbox.store.service import NEVER, SecretStore

__all__ += [
    "open_store",
    "SecretStore",
    "NEVER",
    "Secret",
    "SecretInfo",
    "SecretVersionInfo",
    "GetResult",
    "Page",
    "AuditEvent",
    "AuditVerification",
    "Checkpoint",
]
