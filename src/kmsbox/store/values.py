"""What a caller may pass a store: values, expiry, labels and metadata, checked.

Each check raises ValueError (or TypeError for a value of the wrong type) before
anything is stored, and no message ever quotes a value.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping

from kmsbox.errors import IntegrityError
from kmsbox.limits import LONGEST_SPAN, check_text, seconds_of

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "MAX_LABELS",
    "NEVER",
    "Expiry",
    "check_labels",
    "check_optional_text",
    "decode_value",
    "encode_value",
    "expiry_time",
    "parse_label_filters",
]

#: Largest value accepted by ``put`` unless the store is opened with another limit.
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024
MAX_LABELS = 64
_TYPE_BYTES = b"b"
_TYPE_STR = b"s"


class _Never:
    """The type of :data:`NEVER`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "kmsbox.NEVER"

    def __reduce__(self) -> str:
        # Pickled or copied (multiprocessing, deepcopy), it stays the one NEVER.
        return "NEVER"


#: ``put(..., expires=NEVER)`` removes a secret's expiry (``None`` keeps what it has).
NEVER = _Never()

Expiry = _dt.datetime | _dt.timedelta | float | int | _Never | None


def expiry_time(expires: Expiry, now: float) -> float | None:
    """Seconds since the epoch of an expiry given in any of the accepted forms."""
    if expires is None or expires is NEVER:
        return None
    if isinstance(expires, _dt.datetime):
        # An absolute time may have passed already (an import of what has expired).
        if expires.tzinfo is None:
            raise ValueError("expires must be timezone-aware (or a timedelta, or seconds from now)")
        at = expires.timestamp()
        if not at - now <= LONGEST_SPAN:
            raise ValueError("expires must be at most 1000 years ahead")
        return at
    if not isinstance(expires, (_dt.timedelta, int, float)) or isinstance(expires, bool):
        raise ValueError("expires must be a datetime, a timedelta, seconds from now or kmsbox.NEVER")
    return now + seconds_of(expires, "expires from now", allow_zero=False)


def encode_value(value: str | bytes | bytearray | memoryview, limit: int) -> bytes:
    """The payload a value is stored as: a type tag, then the bytes."""
    if isinstance(value, str):
        try:
            encoded: bytes | None = value.encode("utf-8")
        except UnicodeEncodeError:
            encoded = None
        if encoded is None:
            # Raised outside the handler: the codec's error quotes the value and must not
            # even ride along as __context__.
            raise ValueError("secret value is a str that is not valid UTF-8 (a lone surrogate)")
        payload = _TYPE_STR + encoded
    elif isinstance(value, (bytes, bytearray, memoryview)):
        payload = _TYPE_BYTES + bytes(value)
    else:
        raise TypeError(f"secret value must be str or bytes, got {type(value).__name__}")
    if len(payload) - 1 > limit:
        raise ValueError(f"secret value is {len(payload) - 1} bytes; the limit is {limit}")
    return payload


def decode_value(payload: bytes) -> str | bytes:
    """The value a payload holds (IntegrityError for one kmsbox never writes)."""
    tag, body = payload[:1], payload[1:]
    if tag == _TYPE_STR:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise IntegrityError("malformed or unauthentic ciphertext") from None
    if tag == _TYPE_BYTES:
        return body
    raise IntegrityError("malformed or unauthentic ciphertext")


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Labels as a plain dict of bounded strings."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ValueError(f"labels must be a mapping of strings to strings, got {type(labels).__name__}")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"a secret has at most {MAX_LABELS} labels")
    out: dict[str, str] = {}
    for key, value in labels.items():
        check_text(key, "a label key", 128)
        if not key:
            raise ValueError("a label key is empty")
        out[key] = check_text(value, f"label {key!r}", 512)
    return out


def check_optional_text(value: str | None, what: str, limit: int) -> str | None:
    """A category or description: an empty string clears it (stored as no value)."""
    return None if value is None or value == "" else check_text(value, what, limit)


def parse_label_filters(
    label: tuple[str, str] | str | Mapping[str, str] | list[str] | list[tuple[str, str]] | None,
) -> dict[str, str]:
    """Label filters, all of which must match: ``"key=value"``, ``(key, value)``, a
    mapping, or a list of either."""
    if label is None:
        return {}
    if isinstance(label, Mapping):
        items: list[tuple[str, str] | str] = list(label.items())
    elif isinstance(label, list):
        items = list(label)
    else:
        items = [label]
    if len(items) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} label filters")
    out: dict[str, str] = {}
    for item in items:
        if isinstance(item, str):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError("label filter must look like key=value")
        elif isinstance(item, tuple) and len(item) == 2:
            key, value = item
        else:
            raise ValueError("label filter must be (key, value) or 'key=value'")
        key = check_text(key, "a label filter key", 128)
        value = check_text(value, "a label filter value", 512)
        if key in out and out[key] != value:
            raise ValueError(f"label filter {key!r} is given twice with different values")
        out[key] = value
    return out
