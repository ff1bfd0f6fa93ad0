"""Reading request input: JSON bodies and query parameters, checked strictly.

Every bad value is an :class:`ApiError` 400 (415 for a body that is not JSON, 413
for one too large) that names the parameter, never echoing more than its name.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Collection
from typing import Any

from starlette.requests import Request

from kmsbox_admin.errors import ApiError

__all__ = ["MAX_BODY", "Body", "query_bool", "query_int", "query_text", "query_time", "read_body"]

#: The largest request body accepted (a checkpoint or job parameters are far smaller).
MAX_BODY = 64 * 1024
_MAX_COUNT = 2**53


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


class Body:
    """A JSON object from a request body, read field by field; unknown fields are refused."""

    def __init__(self, data: dict[str, Any], allowed: Collection[str]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise _bad(f"unknown fields {unknown[:10]} (allowed: {sorted(allowed)})")
        self._data = data

    def text(self, key: str, *, required: bool = False, limit: int = 1024) -> str | None:
        """A string field (None when absent and not required)."""
        value = self._data.get(key)
        if value is None:
            if required:
                raise _bad(f"'{key}' is required")
            return None
        if not isinstance(value, str) or not value or len(value) > limit:
            raise _bad(f"'{key}' must be a non-empty string of at most {limit} characters")
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A boolean field (``true``/``false`` only)."""
        value = self._data.get(key, default)
        if type(value) is not bool:
            raise _bad(f"'{key}' must be true or false")
        return value

    def mapping(self, key: str) -> dict[str, Any] | None:
        """An object field (None when absent)."""
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _bad(f"'{key}' must be an object")
        return value


async def read_body(request: Request, allowed: Collection[str]) -> Body:
    """The request's JSON object body: 415 unless ``application/json``, 413 past
    :data:`MAX_BODY`, 400 for malformed JSON or anything but an object. An empty
    body is an empty object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "too_large", f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return Body({}, allowed)
    if kind != "application/json":
        # A form post from another site cannot send this content type without a CORS preflight.
        raise ApiError(415, "unsupported_media_type", "the request body must be application/json")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise _bad("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _bad("the request body must be a JSON object")
    return Body(data, allowed)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def query_text(request: Request, key: str, *, limit: int = 1024) -> str | None:
    """A query parameter as text (None when absent); 400 when empty, too long or repeated."""
    values = request.query_params.getlist(key)
    if not values:
        return None
    if len(values) > 1:
        raise _bad(f"query parameter '{key}' is given more than once")
    value = values[0]
    if not value or len(value) > limit:
        raise _bad(f"query parameter '{key}' must be 1 to {limit} characters")
    return value


def query_int(request: Request, key: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``[low, high]``."""
    text = query_text(request, key, limit=20)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise _bad(f"query parameter '{key}' must be an integer from {low} to {high}")
    return int(text)


def query_bool(request: Request, key: str, default: bool) -> bool:
    """``true`` or ``false``."""
    text = query_text(request, key, limit=5)
    if text is None:
        return default
    if text not in ("true", "false"):
        raise _bad(f"query parameter '{key}' must be true or false")
    return text == "true"


def query_time(request: Request, key: str) -> float | None:
    """An ISO 8601 time (UTC when it has no zone), as ``kmsbox audit list --since`` takes it."""
    text = query_text(request, key, limit=64)
    if text is None:
        return None
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"query parameter '{key}' must be an ISO 8601 time, like 2026-11-25T10:00:00+00:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    seconds = moment.timestamp()
    if not math.isfinite(seconds) or abs(seconds) >= _MAX_COUNT:
        raise _bad(f"query parameter '{key}' is out of range")
    return seconds
