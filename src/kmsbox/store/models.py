"""What the store returns: secrets (value hidden in repr), metadata, results, pages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["GetResult", "Page", "Secret", "SecretInfo", "SecretVersionInfo"]

T = TypeVar("T")
_new = object.__new__
_set = object.__setattr__


@dataclass(frozen=True)
class SecretInfo:
    """A secret's metadata, never its value."""

    namespace: str
    name: str
    version: int
    status: str
    created_at: float
    updated_at: float
    expires_at: float | None
    category: str | None
    description: str | None
    labels: dict[str, str]
    access_count: int
    last_accessed_at: float | None

    @classmethod
    def _of(cls, values: dict[str, Any]) -> SecretInfo:
        """Build from a complete field mapping, skipping the frozen ``__init__``
        (about six times slower; this runs on every get)."""
        info = _new(cls)
        _set(info, "__dict__", values)
        return info

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the metadata."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "category": self.category,
            "description": self.description,
            "labels": dict(self.labels),
            "access_count": self.access_count,
            "last_accessed_at": self.last_accessed_at,
        }


@dataclass(frozen=True, repr=False)
class Secret:
    """A secret read from the store. ``repr`` and ``str`` never show the value."""

    info: SecretInfo
    version: int
    value: str | bytes = field(repr=False)

    @property
    def namespace(self) -> str:
        """The namespace."""
        return self.info.namespace

    @property
    def name(self) -> str:
        """The secret's name."""
        return self.info.name

    @classmethod
    def _of(cls, info: SecretInfo, version: int, value: str | bytes) -> Secret:
        """Build without the frozen ``__init__`` (see :meth:`SecretInfo._of`)."""
        secret = _new(cls)
        _set(secret, "__dict__", {"info": info, "version": version, "value": value})
        return secret

    def __repr__(self) -> str:
        return f"Secret(namespace={self.info.namespace!r}, name={self.info.name!r}, version={self.version}, value=***)"

    __str__ = __repr__


@dataclass(frozen=True)
class SecretVersionInfo:
    """One entry of a secret's history."""

    version: int
    created_at: float
    namespace_key_version: int
    current: bool


@dataclass(frozen=True, repr=False)
class GetResult:
    """The non-raising form of ``get``: ``ok`` and the secret, or a ``reason``.

    Reasons (each error class's ``reason``): ``not_found``, ``namespace_not_found``,
    ``expired``, ``disabled``, ``key_unavailable``, ``integrity``, ``provider_error``.
    """

    ok: bool
    secret: Secret | None = None
    reason: str | None = None
    message: str | None = None

    def __repr__(self) -> str:
        return f"GetResult(ok={self.ok}, secret={self.secret!r}, reason={self.reason!r})"


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of results and the cursor of the next page (None at the end)."""

    items: list[T]
    next_cursor: str | None
