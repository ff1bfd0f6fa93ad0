"""Who is asking: a bearer token, or a console session plus its CSRF token.

- ``Authorization: Bearer <token>``: the token's hash is looked up in the settings.
  A browser never attaches this header on its own, so such requests need no CSRF check.
- The console's session cookie (HttpOnly, SameSite=Strict, Secure under TLS): for every
  request that changes something, the header ``X-CSRF-Token`` must carry the session's
  CSRF token, which only a page of this origin can have read, and a browser's
  ``Origin`` / ``Sec-Fetch-Site`` headers, when sent, must name this origin.

Failed authentications are counted per client address (see :mod:`kmsbox_admin.throttle`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from kmsbox_admin.errors import ApiError
from kmsbox_admin.sessions import Session, SessionStore
from kmsbox_admin.throttle import AuthThrottle
from kmsbox_admin.tokens import ROLES, TokenEntry, find_token

__all__ = ["CSRF_HEADER", "SAFE_METHODS", "Authenticator", "Principal"]

log = logging.getLogger("kmsbox_admin.auth")

CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the actor name audit events carry, and the role."""

    actor: str
    role: str
    via: str  # "token" or "session"

    def can(self, role: str) -> bool:
        """Whether this caller holds ``role`` (an admin holds viewer too)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="kmsbox-admin"'})


class Authenticator:
    """Checks credentials against the configured tokens and the live sessions."""

    def __init__(
        self, tokens: Sequence[TokenEntry], sessions: SessionStore, throttle: AuthThrottle, *, cookie_name: str
    ) -> None:
        self._tokens = list(tokens)
        self.sessions = sessions
        self.throttle = throttle
        self.cookie_name = cookie_name

    @staticmethod
    def client(conn: HTTPConnection) -> str:
        """The client's address (the peer of the TCP connection; no proxy header is trusted)."""
        return conn.client.host if conn.client else "unknown"

    def _check_throttle(self, client: str) -> None:
        wait = self.throttle.retry_after(client)
        if wait:
            raise ApiError(
                429,
                "too_many_failures",
                f"too many failed authentications: retry in {wait} s",
                {"Retry-After": str(wait)},
            )

    def _token(self, client: str, presented: str) -> TokenEntry:
        self._check_throttle(client)
        entry = find_token(self._tokens, presented)
        if entry is None:
            self.throttle.failed(client)
            log.warning("failed authentication from %s", client)  # never the token itself
            raise _unauthorized("unknown token")
        self.throttle.succeeded(client)
        return entry

    def login(self, conn: HTTPConnection, presented: str) -> tuple[str, Session]:
        """Check a token typed into the console; a new session (its id for the cookie)."""
        self._same_origin(conn)
        entry = self._token(self.client(conn), presented)
        return self.sessions.create(entry.actor, entry.role)

    def authenticate(self, conn: HTTPConnection, method: str) -> Principal:
        """The caller of a request, or ApiError: 401 (no or bad credentials), 429
        (throttled), 403 (a session request that fails the CSRF check)."""
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not presented.strip():
                raise _unauthorized("the Authorization header must be 'Bearer <token>'")
            entry = self._token(self.client(conn), presented.strip())
            return Principal(entry.actor, entry.role, "token")
        session = self.sessions.get(conn.cookies.get(self.cookie_name))
        if session is None:
            raise _unauthorized("log in, or send 'Authorization: Bearer <token>'")
        if method not in SAFE_METHODS:
            self._same_origin(conn)
            if not session.csrf_matches(conn.headers.get(CSRF_HEADER)):
                raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token for this session")
        return Principal(session.actor, session.role, "session")

    @staticmethod
    def _same_origin(conn: HTTPConnection) -> None:
        """Refuse a request a browser marks as coming from another site."""
        site = conn.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise ApiError(403, "csrf", "cross-site request refused")
        origin = conn.headers.get("origin")
        if origin is not None:
            own = f"{conn.url.scheme}://{conn.url.netloc}"
            if origin != own:
                raise ApiError(403, "csrf", "request from another origin refused")
