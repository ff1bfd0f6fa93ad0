"""Decoding the rows the SQL backends read back.

Anything can be written into a table through the database itself: text in a number
column, a float where a version belongs, an unknown status, broken or deeply nested
JSON, a blob for a name. Each decoder here accepts exactly what kmsbox writes and
turns anything else into :class:`~kmsbox.storage.base.MalformedRow` (an
``IntegrityError``), never a ``TypeError`` somewhere further on. The secret decoder
runs on every read, so it checks types by identity first and converts only when
that fails.
"""

from __future__ import annotations

import json
from typing import Any

from kmsbox.limits import MAX_COUNT
from kmsbox.storage.base import AuditRow, JobRow, MalformedRow, SecretRow, SecretVersionRow

__all__ = [
    "DECODE_ERRORS",
    "audit_event",
    "job",
    "mac_bytes",
    "malformed",
    "real",
    "secret",
    "stored_version",
    "text",
    "whole",
]

#: What a conversion of a stored value may raise (deep JSON raises RecursionError).
DECODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
_STATUSES = frozenset(("active", "disabled"))
# Far above any version or count kmsbox writes, and below where ``+ 1`` would overflow
# a 64-bit column: a larger value could only have been written through the database.
_LIMIT = MAX_COUNT + 1
# A name or namespace longer than this cannot go into an AAD (format's field limit).
_LONGEST = 0xFFFF


def whole(value: Any) -> int:
    """An integer column's value, strictly: never truncated, never out of range."""
    if type(value) is int:
        if -_LIMIT < value < _LIMIT:
            return value
    elif type(value) is float and value.is_integer() and abs(value) < _LIMIT:
        return int(value)
    raise ValueError("not a whole number in range")


def _version(value: Any) -> int:
    number = whole(value)
    if number < 1:  # versions start at 1
        raise ValueError("not a version")
    return number


def real(value: Any) -> float:
    """A REAL column's value (an integer one is widened); never infinite or NaN."""
    if type(value) is int:
        value = float(value)
    if type(value) is float and value - value == 0.0:  # false for infinities and NaN
        return value
    raise ValueError("not a finite number")


def _optionalreal(value: Any) -> float | None:
    return None if value is None else real(value)


def text(value: Any) -> str:
    """A text column's value (TypeError for anything else)."""
    if type(value) is not str:
        raise TypeError("not text")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else text(value)


def _key(value: Any) -> str:
    if type(value) is not str or len(value) > _LONGEST:
        raise TypeError("not a name")
    return value


def _json_object(value: Any) -> dict[str, Any]:
    decoded = json.loads(value)
    if type(decoded) is not dict:
        raise TypeError("not a JSON object")
    return decoded


def _labels(value: Any) -> dict[str, str]:
    if value == "{}":
        return {}
    labels = _json_object(value)
    if not all(type(v) is str for v in labels.values()):
        raise TypeError("labels are not an object of strings")
    return labels


def _shown(value: Any) -> str:
    # Names are not secret, but a blob or a megabyte of text has no place in a message.
    if type(value) is str and len(value) <= 200:
        return repr(value)
    return f"<{type(value).__name__} of length {len(value)}>" if hasattr(value, "__len__") else repr(value)


def malformed(namespace: Any, name: Any, version: Any = None, *, what: str = "row") -> MalformedRow:
    """The error for a secret's row (or one version row) that does not decode."""
    try:
        number: int | None = _version(version)
    except DECODE_ERRORS:
        number = None
    return MalformedRow(
        f"the stored {what} of secret {_shown(name)} in namespace {_shown(namespace)} is malformed",
        namespace=namespace if type(namespace) is str else None,
        name=name if type(name) is str else None,
        version=number,
        position=(name, version),
    )


def secret(row: Any) -> SecretRow:
    """A metadata row (its first 13 columns, in ``_SECRET_COLUMNS`` order)."""
    namespace, name, version, status, created, updated = row[0], row[1], row[2], row[3], row[4], row[5]
    expires, category, description, labels, count, last, row_version = (
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
    )
    # The common row, by identity checks alone.
    if (
        labels == "{}"
        and type(version) is int
        and type(row_version) is int
        and type(count) is int
        and type(created) is float
        and type(updated) is float
        and (expires is None or (type(expires) is float and expires - expires == 0.0))
        and (last is None or (type(last) is float and last - last == 0.0))
        and created - created == 0.0
        and updated - updated == 0.0
        and (category is None or type(category) is str)
        and (description is None or type(description) is str)
        and status in _STATUSES
        and 0 < version < _LIMIT
        and 0 < row_version < _LIMIT
        and type(name) is str
        and type(namespace) is str
    ):
        return SecretRow(
            namespace, name, version, status, created, updated, expires, category, description, {}, count, last,
            row_version,
        )  # fmt: skip
    try:
        if status not in _STATUSES:
            raise ValueError("unknown status")
        return SecretRow(
            _key(namespace),
            _key(name),
            _version(version),
            status,
            real(created),
            real(updated),
            _optionalreal(expires),
            _optional_text(category),
            _optional_text(description),
            _labels(labels),
            whole(count),
            _optionalreal(last),
            _version(row_version),
        )
    except DECODE_ERRORS:
        raise malformed(namespace, name) from None


def stored_version(
    namespace: Any, name: Any, version: Any, key_version: Any, created_at: Any, blob: Any
) -> SecretVersionRow:
    """One version's envelope and metadata."""
    # The common row, by identity checks alone.
    if (
        type(blob) is bytes
        and type(key_version) is int
        and type(version) is int
        and type(created_at) is float
        and type(name) is str
        and type(namespace) is str
        and 0 < key_version < _LIMIT
        and 0 < version < _LIMIT
        and created_at - created_at == 0.0
        and len(name) <= _LONGEST
        and len(namespace) <= _LONGEST
    ):
        return SecretVersionRow(namespace, name, version, blob, key_version, created_at)
    try:
        # memoryview, not bytes(): bytes() of an integer would allocate that many zeros.
        data = blob if type(blob) is bytes else bytes(memoryview(blob))
        return SecretVersionRow(
            _key(namespace), _key(name), _version(version), data, _version(key_version), real(created_at)
        )
    except DECODE_ERRORS:
        raise malformed(namespace, name, version, what="version row") from None


def audit_event(row: Any) -> AuditRow:
    """An event; one altered through the database comes back marked ``malformed``
    (so that ``verify`` reports it and goes on) rather than raising."""
    try:
        return AuditRow(
            seq=whole(row[0]),
            time=real(row[1]),
            namespace=_optional_text(row[2]),
            name=_optional_text(row[3]),
            secret_version=None if row[4] is None else whole(row[4]),
            action=text(row[5]),
            result=text(row[6]),
            actor=_optional_text(row[7]),
            context=_json_object(row[8]),
            detail=_json_object(row[9]),
            audit_key_version=whole(row[10]),
            mac=mac_bytes(row[11]),
        )
    except DECODE_ERRORS:
        return AuditRow(int(row[0]), 0.0, None, None, None, "", "", None, {}, {}, 0, mac_bytes(row[11]), malformed=True)


def job(row: Any) -> JobRow:
    """A job checkpoint row."""
    try:
        return JobRow(text(row[0]), text(row[1]), text(row[2]), real(row[3]))
    except DECODE_ERRORS:
        raise MalformedRow(f"the stored checkpoint of job {_shown(row[0])} is malformed") from None


def mac_bytes(value: Any) -> bytes:
    """An audit MAC as bytes, whatever is stored, the same way each time.

    The chain then goes on from an altered MAC (the next append and ``verify`` both
    see these bytes) instead of refusing every later write.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")
