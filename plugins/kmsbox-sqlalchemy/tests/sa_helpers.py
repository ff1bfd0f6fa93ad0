"""Test helpers: a database under test (sync and asyncio URLs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


@dataclass
class Database:
    """One database under test."""

    name: str
    url: str
    async_url: str
    connect_args: dict[str, Any]

    def engine(self, **kwargs: Any) -> Engine:
        return create_engine(self.url, connect_args=self.connect_args, **kwargs)

    def async_engine(self, **kwargs: Any) -> AsyncEngine:
        return create_async_engine(self.async_url, connect_args=self.connect_args, **kwargs)
