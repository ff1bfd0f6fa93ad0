"""Console sessions: made by logging in with a token, each with its own CSRF token.

A session lives in this process only (a restart logs everyone out), ends after
``idle`` seconds without a request or ``lifetime`` seconds in all, and at most
``limit`` exist at once (the least recently used goes first). The cookie holds a
random 256-bit session id; the server keeps only its SHA-256, so the table of
sessions in memory cannot be replayed as cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Session", "SessionStore"]


@dataclass(slots=True)
class Session:
    """A logged-in console: who, with which role, its CSRF token and its times."""

    actor: str
    role: str
    csrf_token: str
    created_at: float
    last_seen: float

    def __repr__(self) -> str:
        return f"Session(actor={self.actor!r}, role={self.role!r}, csrf_token=***)"

    def csrf_matches(self, presented: str | None) -> bool:
        """Whether ``presented`` is this session's CSRF token (compared in constant time)."""
        if not presented:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.csrf_token.encode("ascii"))


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """The sessions of one server."""

    def __init__(self, *, idle: float = 1800.0, lifetime: float = 12 * 3600.0, limit: int = 1000) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, actor: str, role: str) -> tuple[str, Session]:
        """A new session; returns the id for the cookie (kept nowhere else) and the session."""
        now = time.time()
        session_id = secrets.token_urlsafe(32)
        session = Session(actor, role, secrets.token_urlsafe(32), now, now)
        self._sessions[_key(session_id)] = session
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (its idle clock restarted), else None."""
        if not session_id or len(session_id) > 128:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = time.time()
        if now - session.last_seen > self.idle or now - session.created_at > self.lifetime:
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def end(self, session_id: str | None) -> None:
        """Log a session out (nothing happens for an unknown id)."""
        if session_id:
            self._sessions.pop(_key(session_id), None)
