"""The models the tests use (importable by name, for the CLI and the job subprocess)."""

from __future__ import annotations

import uuid
from typing import Any

from kmsbox_sqlalchemy import BlindIndex, Encrypted
from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates


class Base(DeclarativeBase):
    """The test models' base."""


class User(Base):
    """A database-generated integer key, text/bytes/JSON values and a blind index."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), default="")
    api_key: Mapped[str | None] = mapped_column(Encrypted(String, max_bytes=1024))
    email: Mapped[str | None] = mapped_column(Encrypted(String))
    email_index: Mapped[bytes | None] = mapped_column(BlindIndex("email", normalize="email"), index=True)
    avatar: Mapped[bytes | None] = mapped_column(Encrypted(LargeBinary))
    prefs: Mapped[Any] = mapped_column(Encrypted(JSON), nullable=True)

    @validates("email")
    def _check_email(self, key: str, value: str | None) -> str | None:
        # The application's own validation sees plaintext only (never a sealed value at flush).
        if value is not None and "@" not in value:
            raise ValueError("an email address has an @")
        return value


class Card(Base):
    """A key the application assigns (UUID), so values are sealed before the INSERT."""

    __tablename__ = "cards"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    number: Mapped[str] = mapped_column(Encrypted(String))
    note: Mapped[str | None] = mapped_column(Encrypted(String))


class Grant(Base):
    """A composite key."""

    __tablename__ = "grants"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    token: Mapped[str] = mapped_column(Encrypted(String))
