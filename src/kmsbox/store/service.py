"""The SecretStore: put, get, list, history, delete, disable/enable and expiry.

Key maintenance (rotation, rewrap, re-encryption, migration), diagnosis and
repair live in :mod:`kmsbox.store.lifecycle` and :mod:`kmsbox.store.diagnosis`
and are mixed in here.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, TypeVar

from kmsbox._crypto import Aead
from kmsbox.errors import (
    ConflictError,
    IntegrityError,
    KeyUnavailable,
    KmsboxError,
    ProviderError,
    SecretDisabled,
    SecretExpired,
    SecretNotFound,
)
from kmsbox.kek import KekProvider
from kmsbox.keys import KeyCache, open_secret
from kmsbox.limits import LONGEST_SPAN, check_count, check_text, seconds_of
from kmsbox.storage.base import AuditFilter, MalformedRow, SecretRow, StorageBackend, Transaction
from kmsbox.store.audit import AuditEvent, AuditLog, AuditVerification, Checkpoint
from kmsbox.store.context import audit_context, current_namespace, namespace_block
from kmsbox.store.core import drop_passed_expiry, failure_reason
from kmsbox.store.diagnosis import DiagnosisMixin
from kmsbox.store.importing import ImportMixin
from kmsbox.store.keyring import AUDIT_NAMESPACE, NamespaceKeyring
from kmsbox.store.models import GetResult, Page, Secret, SecretInfo, SecretVersionInfo
from kmsbox.store.names import validate_name, validate_namespace

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "NEVER", "SecretStore"]

#: Largest value accepted by ``put`` unless the store is opened with another limit.
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024
_TYPE_BYTES = b"b"
_TYPE_STR = b"s"
_WRITE_RETRIES = 20
_ACCESS_FLUSH_ENTRIES = 16384
_ACCESS_FLUSH_SECONDS = 1.0
_RECENT_NAMES = 16384
_MAX_LABELS = 64
T = TypeVar("T")


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


def _info(row: SecretRow, access_count: int | None = None, last_accessed_at: float | None = None) -> SecretInfo:
    return SecretInfo._of(
        {
            "namespace": row.namespace,
            "name": row.name,
            "version": row.version,
            "status": row.status,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "expires_at": row.expires_at,
            "category": row.category,
            "description": row.description,
            "labels": dict(row.labels) if row.labels else {},
            "access_count": row.access_count if access_count is None else access_count,
            "last_accessed_at": row.last_accessed_at if last_accessed_at is None else last_accessed_at,
        }
    )


def _expiry_time(expires: Expiry, now: float) -> float | None:
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


def _encode_value(value: str | bytes | bytearray | memoryview, limit: int) -> bytes:
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


def _decode_value(payload: bytes) -> str | bytes:
    tag, body = payload[:1], payload[1:]
    if tag == _TYPE_STR:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise IntegrityError("malformed or unauthentic ciphertext") from None
    if tag == _TYPE_BYTES:
        return body
    raise IntegrityError("malformed or unauthentic ciphertext")


def _check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ValueError(f"labels must be a mapping of strings to strings, got {type(labels).__name__}")
    if len(labels) > _MAX_LABELS:
        raise ValueError(f"a secret has at most {_MAX_LABELS} labels")
    out: dict[str, str] = {}
    for key, value in labels.items():
        check_text(key, "a label key", 128)
        if not key:
            raise ValueError("a label key is empty")
        out[key] = check_text(value, f"label {key!r}", 512)
    return out


def _check_text(value: str | None, what: str, limit: int) -> str | None:
    # An empty string clears the field (stored as no value).
    return None if value is None or value == "" else check_text(value, what, limit)


class _Failure(NamedTuple):
    """Why a read failed, and the secret version it was of (when known)."""

    error: KmsboxError
    version: int | None


class SecretStore(DiagnosisMixin, ImportMixin):
    """A tenant-aware secret store over a storage backend and one or more KEKs.

    Open it with :func:`kmsbox.open_store`. Thread-safe; close it when done (or
    use it as a context manager).
    """

    def __init__(
        self,
        backend: StorageBackend,
        keks: Sequence[KekProvider],
        *,
        audit_reads: bool = True,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        cache: KeyCache[Aead] | None = None,
        batch_size: int = 500,
        data_key_cache_size: int = 4096,
    ) -> None:
        self.backend = backend
        self.keyring = NamespaceKeyring(backend, keks, cache or KeyCache(max_age=300.0, max_entries=4096))
        # Unwrapped DEKs of recent reads, each used only while the namespace key that
        # unwrapped it is still the cached one (which is in memory anyway); 0 turns it off.
        key_cache = self.keyring.cache
        self.data_keys: KeyCache[tuple[Aead, Aead]] | None = (
            KeyCache(max_age=key_cache.max_age, max_uses=key_cache.max_uses, max_entries=data_key_cache_size)
            if data_key_cache_size
            else None
        )
        self.audit_reads = audit_reads
        self.max_value_size = max_value_size
        self.batch_size = batch_size
        self._access: dict[tuple[str, str], tuple[int, float]] = {}
        self._recent: dict[tuple[str, str], None] = {}  # names known to exist (bounded)
        self._access_lock = threading.Lock()
        self._access_flushed = time.time()
        self._closed = False
        self.audit = AuditLog(backend, self._audit_key())

    def __repr__(self) -> str:
        return f"SecretStore(storage={self.backend.describe()!r}, keks={[k.uri for k in self.keyring.keks]!r})"

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------

    def _audit_key(self) -> bytes:
        with self.backend.read() as tx:
            rows = tx.namespace_keys(AUDIT_NAMESPACE)
        if not rows:  # a new store: create the key, then read what won a concurrent race
            self.keyring.ensure(AUDIT_NAMESPACE)
            with self.backend.read() as tx:
                rows = tx.namespace_keys(AUDIT_NAMESPACE)
        return self.keyring.unwrap_bytes(rows[0])

    def _namespace(self, namespace: str | None) -> str:
        chosen = namespace if namespace is not None else current_namespace()
        if chosen is None:
            raise ValueError("no namespace: pass namespace=... or use `with store.namespace(...)`")
        return validate_namespace(chosen)

    def namespace(self, namespace: str) -> AbstractContextManager[str]:
        """``with store.namespace("tenant-123"): ...`` sets the default namespace for the block."""
        return namespace_block(namespace)

    def audit_context(self, actor: str | None = None, **request: str) -> AbstractContextManager[None]:
        """``with store.audit_context(actor="deploy-bot", request_id="r1"): ...``"""
        return audit_context(actor, **request)

    # --- writes -------------------------------------------------------------------------

    def put(
        self,
        name: str,
        value: str | bytes | bytearray | memoryview,
        *,
        namespace: str | None = None,
        expires: Expiry = None,
        category: str | None = None,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """Create or update a secret; every put makes a new secret version.

        ``expires`` is a timezone-aware datetime (which may have passed), a positive
        timedelta or number of seconds from now, or :data:`NEVER` to remove an expiry.
        Metadata not given keeps its previous value on update (an expiry that has
        already passed is not kept); an empty ``category`` or ``description`` clears
        it, and ``labels`` replaces them all. Raises ValueError for a bad name,
        namespace, value size or metadata; KeyUnavailable or ProviderError when the
        namespace key cannot be had (nothing is written, and the failure is audited).
        """
        ns = self._namespace(namespace)
        validate_name(name)
        payload = _encode_value(value, self.max_value_size)
        clean_labels = None if labels is None else _check_labels(labels)
        clean_category = _check_text(category, "category", 128)
        clean_description = _check_text(description, "description", 1024)
        now = time.time()
        expires_at = _expiry_time(expires, now)
        who, req = self._who(actor, request)

        def written(tx: Transaction, row: SecretRow, action: str, nk_version: int) -> SecretInfo:
            self._remember(ns, name)
            self.audit.append(
                tx,
                action=action,
                result="success",
                namespace=ns,
                name=name,
                secret_version=row.version,
                actor=who,
                context=req,
                detail={"namespace_key_version": nk_version},
            )
            return _info(row)

        def op(tx: Transaction) -> SecretInfo:
            fresh = SecretRow(
                ns, name, 1, "active", now, now, expires_at, clean_category, clean_description, clean_labels or {}
            )
            # A name this store has not just seen is most likely new: try the one-statement create.
            if (ns, name) not in self._recent:
                created = self._create(tx, fresh, payload, now)
                if created is not None:
                    return written(tx, fresh, "create", created)
            active, existing = tx.secret_for_write(ns, name)
            nk_version, nk = self.keyring.active_key(tx, ns, active)
            if existing is not None:
                # Metadata not given keeps its previous value (but see drop_passed_expiry).
                if expires is not None:
                    existing.expires_at = expires_at
                else:
                    drop_passed_expiry(existing, time.time())
                if category is not None:
                    existing.category = clean_category
                if description is not None:
                    existing.description = clean_description
                if clean_labels is not None:
                    existing.labels = clean_labels
            row, action = self._write_version(tx, existing, fresh, payload, (nk_version, nk), now)
            return written(tx, row, action, nk_version)

        try:
            self.keyring.ensure(ns)
            return self._write(op)
        except (KeyUnavailable, ProviderError, IntegrityError, ConflictError) as exc:
            self._audit_write_failure(ns, name, None, who, req, exc)
            raise

    def _set_status(
        self,
        name: str,
        namespace: str | None,
        status: str,
        action: str,
        actor: str | None,
        request: Mapping[str, str] | None,
    ) -> SecretInfo:
        ns = self._namespace(namespace)
        validate_name(name)
        who, req = self._who(actor, request)

        def op(tx: Transaction) -> SecretInfo | None:
            row = tx.get_secret(ns, name, for_update=True)
            if row is None:
                self.audit.append(
                    tx,
                    action=action,
                    result="failure",
                    namespace=ns,
                    name=name,
                    actor=who,
                    context=req,
                    detail={"reason": "not_found"},
                )
                return None
            expected = row.row_version
            row.status = status
            row.updated_at = time.time()
            row.row_version += 1
            tx.update_secret(row, expected)
            self.audit.append(
                tx,
                action=action,
                result="success",
                namespace=ns,
                name=name,
                secret_version=row.version,
                actor=who,
                context=req,
            )
            return _info(row)

        info = self._write(op)
        if info is None:
            raise SecretNotFound(f"no secret {name!r} in namespace {ns!r}")
        return info

    def disable(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """Disable a secret: reads raise SecretDisabled until it is enabled."""
        return self._set_status(name, namespace, "disabled", "disable", actor, request)

    def enable(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """Enable a disabled secret."""
        return self._set_status(name, namespace, "active", "enable", actor, request)

    def delete(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> int:
        """Delete a secret and all its versions; return how many versions went.

        Raises SecretNotFound if there is no such secret.
        """
        ns = self._namespace(namespace)
        validate_name(name)
        who, req = self._who(actor, request)

        def op(tx: Transaction) -> int:
            version: int | None
            try:
                row = tx.get_secret(ns, name, for_update=True)
                version = None if row is None else row.version
            except MalformedRow:  # a row changed through the database can still be deleted
                version = -1
            if version is None:
                self.audit.append(
                    tx,
                    action="delete",
                    result="failure",
                    namespace=ns,
                    name=name,
                    actor=who,
                    context=req,
                    detail={"reason": "not_found"},
                )
                return -1
            count = tx.delete_secret(ns, name)
            self.audit.append(
                tx,
                action="delete",
                result="success",
                namespace=ns,
                name=name,
                secret_version=None if version < 0 else version,
                actor=who,
                context=req,
                detail={"versions": count} if version >= 0 else {"versions": count, "malformed": True},
            )
            return count

        count = self._write(op)
        if count < 0:
            raise SecretNotFound(f"no secret {name!r} in namespace {ns!r}")
        return count

    def cleanup_expired(self, retention: _dt.timedelta | float = 0.0, *, actor: str | None = None) -> int:
        """Delete secrets that expired more than ``retention`` ago, in batches; return the count.

        ``retention`` is a timedelta or seconds (finite, not negative); ValueError otherwise.
        A secret renewed by a concurrent put while the batch runs is left alone.
        """
        seconds = seconds_of(retention, "retention", allow_zero=True)
        who, req = self._who(actor, None)
        cutoff = time.time() - seconds
        total = 0
        while True:

            def op(tx: Transaction) -> tuple[int, int]:
                rows = tx.expired_secrets(cutoff, self.batch_size)
                deleted = 0
                for row in rows:
                    # Read again under the row's lock: a put may have renewed it since
                    # the batch was listed (PostgreSQL lists without locking).
                    current = tx.get_secret(row.namespace, row.name, for_update=True)
                    if current is None or current.expires_at is None or current.expires_at >= cutoff:
                        continue
                    count = tx.delete_secret(row.namespace, row.name)
                    deleted += 1
                    self.audit.append(
                        tx,
                        action="expire",
                        result="success",
                        namespace=current.namespace,
                        name=current.name,
                        secret_version=current.version,
                        actor=who,
                        context=req,
                        detail={"versions": count, "expired_at": current.expires_at},
                    )
                return len(rows), deleted

            listed, deleted = self._write(op)
            total += deleted
            if listed < self.batch_size:
                return total

    # --- reads --------------------------------------------------------------------------

    def get(
        self,
        name: str,
        *,
        namespace: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> Secret:
        """Read a secret (its latest version, or ``version``).

        Raises SecretNotFound, SecretExpired, SecretDisabled, KeyUnavailable,
        IntegrityError (a corrupted or moved row) or ProviderError (the KMS failed to
        unwrap the namespace key); each of these failures is audited. ValueError for
        bad arguments, StorageError when the store itself fails.
        """
        ns = self._namespace(namespace)
        validate_name(name)
        if version is not None:
            check_count(version, "version")
        if self.audit_reads:
            who, req = self._who(actor, request)
            outcome = self._write(lambda tx: self._read(tx, ns, name, version, who, req, audited=True))
        else:
            if actor is not None or request is not None:
                self._who(actor, request)  # the same checks as when reads are audited
            with self.backend.read() as tx:
                outcome = self._read(tx, ns, name, version, None, {}, audited=False)
            if isinstance(outcome, _Failure):
                # Failures are audited even when successful reads are not.
                who, req = self._who(actor, request)
                failure = outcome
                self._write(lambda tx: self._audit_failure(tx, ns, name, failure, who, req))
        if isinstance(outcome, _Failure):
            raise outcome.error
        # Access counts are buffered and written in batches (the audit event, when
        # reads are audited, is the durable record of this read).
        self._note_access(ns, name)
        self._remember(ns, name)
        return outcome

    def _read(
        self,
        tx: Transaction,
        ns: str,
        name: str,
        version: int | None,
        who: str | None,
        req: dict[str, str],
        *,
        audited: bool,
    ) -> Secret | _Failure:
        """One read inside ``tx``: the secret, or the failure (audited here when ``audited``)."""
        outcome: KmsboxError
        try:
            found = tx.get_secret_with_blob(ns, name, version)
        except IntegrityError as exc:  # a malformed stored row
            failure = _Failure(exc, version)
        else:
            ver = None if found is None else found[1]
            if found is None:
                outcome = SecretNotFound(f"no secret {name!r} in namespace {ns!r}")
            elif ver is None:
                outcome = SecretNotFound(
                    f"secret {name!r} in namespace {ns!r} has no readable current version"
                    if version is None
                    else f"secret {name!r} in namespace {ns!r} has no version {version}"
                )
            else:
                row = found[0]
                now = time.time()
                if row.status == "disabled":
                    outcome = SecretDisabled(f"secret {name!r} in namespace {ns!r} is disabled")
                elif row.expires_at is not None and row.expires_at <= now:
                    outcome = SecretExpired(f"secret {name!r} in namespace {ns!r} expired")
                else:
                    try:
                        payload = open_secret(
                            ver.blob, self.keyring.key_for(tx, ns), ns, name, ver.version, self.data_keys
                        )
                        value = _decode_value(payload)
                    except (IntegrityError, KeyUnavailable, ProviderError) as exc:
                        outcome = exc
                    else:
                        if audited:
                            self.audit.append(
                                tx,
                                action="read",
                                result="success",
                                namespace=ns,
                                name=name,
                                secret_version=ver.version,
                                actor=who,
                                context=req,
                            )
                        counted = row.access_count + 1 + self._pending_access(ns, name)
                        return Secret._of(_info(row, counted, now), ver.version, value)
            failure = _Failure(outcome, version if ver is None else ver.version)
        if audited:
            self._audit_failure(tx, ns, name, failure, who, req)
        return failure

    def _audit_failure(
        self, tx: Transaction, ns: str, name: str, failure: _Failure, who: str | None, req: dict[str, str]
    ) -> None:
        error = failure.error
        result = "denied" if isinstance(error, (SecretDisabled, SecretExpired)) else "failure"
        self.audit.append(
            tx,
            action="read",
            result=result,
            namespace=ns,
            name=name,
            secret_version=failure.version,
            actor=who,
            context=req,
            detail={"reason": failure_reason(error)},
        )

    def try_get(
        self,
        name: str,
        *,
        namespace: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> GetResult:
        """Like :meth:`get` but returns a :class:`GetResult` instead of raising for a missing,
        expired, disabled, undecryptable or corrupted secret, or a KMS that failed to
        give its key (``reason`` says which). Still raises ValueError for bad arguments
        and StorageError when the store itself fails."""
        try:
            return GetResult(True, self.get(name, namespace=namespace, version=version, actor=actor, request=request))
        except (SecretNotFound, SecretExpired, SecretDisabled, KeyUnavailable, IntegrityError, ProviderError) as exc:
            return GetResult(False, None, failure_reason(exc), str(exc))

    def info(self, name: str, *, namespace: str | None = None) -> SecretInfo:
        """A secret's metadata (no value, not counted as a read). SecretNotFound if missing."""
        ns = self._namespace(namespace)
        validate_name(name)
        self.flush_access()  # so counts include this process's buffered reads
        with self.backend.read() as tx:
            row = tx.get_secret(ns, name)
        if row is None:
            raise SecretNotFound(f"no secret {name!r} in namespace {ns!r}")
        return _info(row)

    def list(
        self,
        *,
        namespace: str | None = None,
        category: str | None = None,
        label: tuple[str, str] | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[SecretInfo]:
        """A page of secret metadata ordered by name; never values.

        ``label`` is ``(key, value)`` or ``"key=value"``. Pass the returned
        ``next_cursor`` as ``cursor`` for the next page.
        """
        ns = self._namespace(namespace)
        if type(limit) is not int or not 1 <= limit <= 10_000:
            raise ValueError("limit must be an integer from 1 to 10000")
        if category is not None:
            check_text(category, "category", 128)
        if cursor is not None:
            validate_name(cursor)  # a cursor is the last name of the page before
        label_pair = _parse_label(label)
        self.flush_access()  # so counts include this process's buffered reads
        with self.backend.read() as tx:
            rows = tx.list_secrets(ns, category=category, label=label_pair, after=cursor, limit=limit)
        return Page([_info(r) for r in rows], rows[-1].name if len(rows) == limit else None)

    def iter_secrets(
        self, *, namespace: str | None = None, category: str | None = None, label: tuple[str, str] | str | None = None
    ) -> Iterator[SecretInfo]:
        """Every secret's metadata in a namespace, streamed page by page."""
        ns = self._namespace(namespace)
        cursor: str | None = None
        while True:
            page = self.list(namespace=ns, category=category, label=label, limit=self.batch_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def history(self, name: str, *, namespace: str | None = None) -> builtins.list[SecretVersionInfo]:
        """Every version of a secret, oldest first (no values). SecretNotFound if missing."""
        ns = self._namespace(namespace)
        validate_name(name)
        with self.backend.read() as tx:
            row = tx.get_secret(ns, name)
            if row is None:
                raise SecretNotFound(f"no secret {name!r} in namespace {ns!r}")
            versions = tx.list_versions(ns, name)
        return [
            SecretVersionInfo(v.version, v.created_at, v.namespace_key_version, v.version == row.version)
            for v in versions
        ]

    # --- access tracking ----------------------------------------------------------------

    def _remember(self, ns: str, name: str) -> None:
        # Only a hint for put (which path to try first); cleared whole when full.
        if len(self._recent) >= _RECENT_NAMES:
            self._recent.clear()
        self._recent[(ns, name)] = None

    def _pending_access(self, ns: str, name: str) -> int:
        # A lock-free peek (one dict read is atomic): the count is for display only.
        entry = self._access.get((ns, name))
        return 0 if entry is None else entry[0]

    def _note_access(self, ns: str, name: str) -> None:
        # Counts are buffered and flushed in one write per batch (or per second).
        key = (ns, name)
        now = time.time()
        with self._access_lock:
            entry = self._access.get(key)
            self._access[key] = (1, now) if entry is None else (entry[0] + 1, now)
            # Wall time (read once per get anyway); a clock stepped back flushes too.
            elapsed = now - self._access_flushed
            due = len(self._access) >= _ACCESS_FLUSH_ENTRIES or not 0 <= elapsed < _ACCESS_FLUSH_SECONDS
        if due:
            self.flush_access()

    def flush_access(self) -> None:
        """Write buffered access counts (done automatically; call before reading counts)."""
        with self._access_lock:
            pending, self._access = self._access, {}
            self._access_flushed = time.time()
        if not pending:
            return

        def op(tx: Transaction) -> None:
            for (ns, name), (count, at) in pending.items():
                tx.record_access(ns, name, count, at)

        self._write(op)

    # --- audit --------------------------------------------------------------------------

    def audit_events(
        self, filters: AuditFilter | None = None, *, after: int = 0, limit: int = 100
    ) -> tuple[builtins.list[AuditEvent], int | None]:
        """A page of audit events after cursor ``after``."""
        return self.audit.events(filters, after=after, limit=limit)

    def verify_audit(self, checkpoint: Checkpoint | None = None) -> AuditVerification:
        """Verify the audit chain (and a saved checkpoint)."""
        return self.audit.verify(checkpoint)

    def audit_checkpoint(self) -> Checkpoint:
        """The current head of the audit chain, to keep outside the database."""
        return self.audit.checkpoint()

    def close(self) -> None:
        """Flush access counts and close the backend and KEK clients."""
        if self._closed:
            return
        try:
            self.flush_access()
        finally:
            self._closed = True
            if self.data_keys is not None:
                self.data_keys.clear()
            self.backend.close()
            for kek in self.keyring.keks:
                kek.close()


def _parse_label(label: tuple[str, str] | str | None) -> tuple[str, str] | None:
    if label is None:
        return None
    if isinstance(label, str):
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise ValueError("label filter must look like key=value")
    elif isinstance(label, tuple) and len(label) == 2:
        key, value = label
    else:
        raise ValueError("label filter must be (key, value) or 'key=value'")
    return check_text(key, "a label filter key", 128), check_text(value, "a label filter value", 512)


_ = Any
