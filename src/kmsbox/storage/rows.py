"""Decoding the rows a backend reads back.

Anything can be written into a table through the database itself: text in a number
column, a float where a version belongs, an unknown status, broken or deeply nested
JSON, a blob for a name. Each decoder here accepts exactly what kmsbox writes and
turns anything else into :class:`~kmsbox.storage.base.MalformedRow` (an
``IntegrityError``), never a ``TypeError`` somewhere further on. The secret decoder
runs on every read, so it checks types by identity first and converts only when
that fails. Public: a third party's backend decodes its rows with these too.
"""

from __future__ import annotations

import json
from typing import Any

from kmsbox.limits import MAX_COUNT
from kmsbox.storage.base import (
    KEY_STATUSES,
    SECRET_STATUSES,
    AuditRow,
    ChainHead,
    JobRow,
    MalformedRow,
    NamespaceKeyRow,
    NamespaceState,
    SecretRow,
    StateEvent,
    StoredVersion,
)

__all__ = [
    "DECODE_ERRORS",
    "audit_event",
    "blob_bytes",
    "chain_head",
    "job",
    "malformed",
    "namespace_key",
    "namespace_state",
    "real",
    "secret",
    "state_event",
    "stored_version",
    "text",
    "whole",
]

#: What a conversion of a stored value may raise (deep JSON raises RecursionError).
DECODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
_SECRET_STATUSES = frozenset(SECRET_STATUSES)
_KEY_STATUSES = frozenset(KEY_STATUSES)
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


def _counter(value: Any) -> int:
    # A count or a microsecond time: a 64-bit integer kmsbox wrote, never negative.
    if type(value) is int and 0 <= value < 2**63:
        return value
    if type(value) is float and value.is_integer() and 0 <= value < 2**53:
        return int(value)
    raise ValueError("not a count")


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


def _optional_real(value: Any) -> float | None:
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


def blob_bytes(value: Any) -> bytes:
    """A BLOB column's value as bytes (TypeError for text or numbers)."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError("not bytes")


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


def secret(row: Any, offset: int = 0) -> SecretRow:
    """A secret row from 15 columns: namespace, name, version, status, created_at,
    updated_at, expires_at, category, description, labels, row_version,
    version_created_at, seal, access count, last access (from ``offset``)."""
    (
        namespace, name, version, status, created, updated, expires, category, description, labels,
        row_version, version_created, seal, count, last,
    ) = row[offset : offset + 15]  # fmt: skip
    # The common row, by identity checks alone.
    if (
        labels == "{}"
        and type(version) is int
        and type(row_version) is int
        and type(created) is float
        and type(updated) is float
        and type(version_created) is float
        and type(seal) is bytes
        and (count is None or (type(count) is int and count >= 0))
        and (expires is None or (type(expires) is float and expires - expires == 0.0))
        and (last is None or (type(last) is float and last - last == 0.0))
        and created - created == 0.0
        and updated - updated == 0.0
        and version_created - version_created == 0.0
        and (category is None or type(category) is str)
        and (description is None or type(description) is str)
        and status in _SECRET_STATUSES
        and 0 < version < _LIMIT
        and 0 < row_version < _LIMIT
        and type(name) is str
        and type(namespace) is str
    ):
        return SecretRow(
            namespace, name, version, status, created, updated, expires, category, description, {}, row_version,
            version_created, seal, count or 0, last,
        )  # fmt: skip
    try:
        if status not in _SECRET_STATUSES:
            raise ValueError("unknown status")
        return SecretRow(
            _key(namespace),
            _key(name),
            _version(version),
            status,
            real(created),
            real(updated),
            _optional_real(expires),
            _optional_text(category),
            _optional_text(description),
            _labels(labels),
            _version(row_version),
            real(version_created),
            b"" if seal is None else blob_bytes(seal),
            0 if count is None else _counter(count),
            _optional_real(last),
        )
    except DECODE_ERRORS:
        raise malformed(namespace, name) from None


def stored_version(namespace: Any, name: Any, version: Any, created_at: Any, blob: Any) -> StoredVersion:
    """One version's envelope."""
    # The common row, by identity checks alone.
    if (
        type(blob) is bytes
        and type(version) is int
        and type(created_at) is float
        and type(name) is str
        and type(namespace) is str
        and 0 < version < _LIMIT
        and created_at - created_at == 0.0
        and len(name) <= _LONGEST
        and len(namespace) <= _LONGEST
    ):
        return StoredVersion(namespace, name, version, blob, created_at)
    try:
        return StoredVersion(_key(namespace), _key(name), _version(version), blob_bytes(blob), real(created_at))
    except DECODE_ERRORS:
        raise malformed(namespace, name, version, what="version row") from None


def namespace_key(namespace: Any, version: Any, status: Any, created_at: Any, updated_at: Any) -> NamespaceKeyRow:
    """A namespace-key row (without its wraps); an unknown status is malformed."""
    try:
        if status not in _KEY_STATUSES:
            raise ValueError("unknown key status")
        return NamespaceKeyRow(_key(namespace), _version(version), status, real(created_at), real(updated_at), [])
    except DECODE_ERRORS:
        raise MalformedRow(
            f"a namespace-key row of namespace {_shown(namespace)} is malformed (changed through the database)",
            namespace=namespace if type(namespace) is str else None,
        ) from None


def namespace_state(namespace: Any, generation: Any, created_at: Any, seal: Any) -> NamespaceState:
    """A namespace's key-state row."""
    try:
        return NamespaceState(
            _key(namespace), _counter(generation), real(created_at), b"" if seal is None else blob_bytes(seal)
        )
    except DECODE_ERRORS:
        raise MalformedRow(
            f"the key-state row of namespace {_shown(namespace)} is malformed (changed through the database)",
            namespace=namespace if type(namespace) is str else None,
        ) from None


def chain_head(chain: Any, seq: Any, at: Any, mac: Any, seal: Any) -> ChainHead:
    """An audit chain's head row."""
    try:
        return ChainHead(
            _counter(chain), _counter(seq), _counter(at), blob_bytes(mac), b"" if seal is None else blob_bytes(seal)
        )
    except DECODE_ERRORS:
        raise MalformedRow(f"the head row of audit chain {_shown(chain)} is malformed") from None


def audit_event(row: Any) -> AuditRow:
    """An event from 17 columns (chain, seq, at, time, namespace, name, secret_version,
    action, result, actor, context, detail, key_version, mac, record, row_version,
    state). One altered through the database comes back marked ``malformed`` (so that
    ``verify`` reports it and goes on) rather than raising."""
    try:
        record = whole(row[14])
        if record not in (1, 2):
            raise ValueError("unknown record format")
        return AuditRow(
            chain=_counter(row[0]),
            seq=_counter(row[1]),
            at=_counter(row[2]),
            time=real(row[3]),
            namespace=_optional_text(row[4]),
            name=_optional_text(row[5]),
            secret_version=None if row[6] is None else whole(row[6]),
            action=text(row[7]),
            result=text(row[8]),
            actor=_optional_text(row[9]),
            context=_json_object(row[10]),
            detail=_json_object(row[11]),
            key_version=whole(row[12]),
            mac=blob_bytes(row[13]),
            record=record,
            row_version=None if row[15] is None else _counter(row[15]),
            state=None if row[16] is None else blob_bytes(row[16]),
        )
    except DECODE_ERRORS:
        return AuditRow(
            _position_part(row[0]), _position_part(row[1]), _position_part(row[2]), 0.0, None, None, None, "", "",
            None, {}, {}, 0, _mac(row[13]), malformed=True,
        )  # fmt: skip


def _position_part(value: Any) -> int:
    try:
        return _counter(value)
    except DECODE_ERRORS:
        return 0


def _mac(value: Any) -> bytes:
    # Whatever is stored, the same bytes each time, so the chain walk can go on.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def state_event(
    namespace: Any,
    name: Any,
    row_version: Any,
    action: Any,
    state: Any,
    secret_version: Any,
    at: Any,
    chain: Any,
    seq: Any,
) -> StateEvent:
    """A state-changing event, as ``verify`` reads it."""
    try:
        return StateEvent(
            _key(namespace),
            None if name is None else _key(name),
            _counter(row_version),
            text(action),
            None if state is None else blob_bytes(state),
            None if secret_version is None else whole(secret_version),
            (_counter(at), _counter(chain), _counter(seq)),
        )
    except DECODE_ERRORS:
        raise MalformedRow("an audit event that records a state is malformed; audit verify reports it") from None


def job(row: Any) -> JobRow:
    """A job checkpoint row."""
    try:
        return JobRow(text(row[0]), text(row[1]), text(row[2]), real(row[3]))
    except DECODE_ERRORS:
        raise MalformedRow(f"the stored checkpoint of job {_shown(row[0])} is malformed") from None
