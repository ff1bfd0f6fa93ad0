"""The SecretStore: the public, synchronous face of a store.

It composes the store's parts (secrets, key maintenance, diagnosis, import, audit) over
one :class:`~kmsbox.store.runtime.StoreRuntime` and runs their operations with ports
that answer at once. :class:`kmsbox.aio.AsyncSecretStore` runs the very same operations
with ports that await; so both faces share every rule, check and message.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any, TypeVar

from kmsbox._crypto import Aead
from kmsbox.kek import KekProvider
from kmsbox.keys import KeyCache
from kmsbox.storage.base import AuditFilter, StorageBackend
from kmsbox.store.audit import AuditEvent, AuditVerification, Checkpoint
from kmsbox.store.context import audit_context, current_namespace, namespace_block
from kmsbox.store.diagnosis import Diagnosis, DiagnosisReport, RepairReport
from kmsbox.store.importing import Importer
from kmsbox.store.io import Op, SyncPorts, run
from kmsbox.store.jobs import JobReport, Progress
from kmsbox.store.keyring import AUDIT_NAMESPACE
from kmsbox.store.maintenance import KeyMaintenance
from kmsbox.store.models import GetResult, Page, Secret, SecretInfo, SecretVersionInfo
from kmsbox.store.names import validate_namespace
from kmsbox.store.runtime import StoreRuntime, StoreSettings
from kmsbox.store.secrets import Secrets
from kmsbox.store.sinks import SinkSet
from kmsbox.store.values import DEFAULT_MAX_VALUE_SIZE, NEVER, Expiry

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "NEVER", "SecretStore", "StoreFace", "StoreParts", "write_checkpoint"]

T = TypeVar("T")


class StoreParts:
    """The parts of a store over one runtime (shared by the sync and async faces)."""

    def __init__(self, rt: StoreRuntime) -> None:
        self.rt = rt
        self.secrets = Secrets(rt)
        self.maintenance = KeyMaintenance(rt)
        self.diagnosis = Diagnosis(rt, self.maintenance)
        self.importer = Importer(rt, self.secrets)

    def namespace(self, namespace: str | None) -> str:
        """The namespace of a call: given, else the block's (ValueError if neither)."""
        chosen = namespace if namespace is not None else current_namespace()
        if chosen is None:
            raise ValueError("no namespace: pass namespace=... or use `with store.namespace(...)`")
        return validate_namespace(chosen)

    def namespaces(self, io: Any) -> Op[list[str]]:
        """Every namespace that exists."""
        names: list[str] = yield from self.maintenance.targets(io, None)
        return names

    def checkpoint_due(self) -> bool:
        """Whether enough events were appended since the last automatic checkpoint."""
        settings = self.rt.settings
        if not settings.checkpoint_every or settings.checkpoint_file is None or self.rt._audit is None:
            return False
        return self.rt.audit.appended - self.rt.checkpointed >= settings.checkpoint_every

    def auto_checkpoint(self, io: Any) -> Op[None]:
        """Write a checkpoint to the configured file (after enough events)."""
        path = self.rt.settings.checkpoint_file
        assert path is not None
        self.rt.checkpointed = self.rt.audit.appended
        checkpoint = yield from self.rt.audit.checkpoint(io)
        yield io.blocking(write_checkpoint, path, checkpoint)


def write_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Write a checkpoint to a file atomically (0600, fsynced, then renamed into place)."""
    import json

    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, temp = tempfile.mkstemp(prefix=".kmsbox-checkpoint-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(checkpoint.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class StoreFace:
    """What the sync and async faces of a store share besides its operations: its
    settings, caches and per-block context (both hold ``_rt`` and ``_parts``)."""

    _rt: StoreRuntime
    _parts: StoreParts

    @property
    def backend(self) -> StorageBackend:
        """The storage backend."""
        return self._rt.backend

    @property
    def keks(self) -> list[KekProvider]:
        """The configured KEKs, primary first."""
        return list(self._rt.keyring.keks)

    @property
    def audit_reads(self) -> bool:
        """Whether successful reads are audited."""
        return self._rt.settings.audit_reads

    @audit_reads.setter
    def audit_reads(self, value: bool) -> None:
        self._rt.settings.audit_reads = bool(value)

    @property
    def batch_size(self) -> int:
        """Rows per committed batch of a long job (1 to 100,000)."""
        return self._rt.settings.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._rt.settings.batch_size = self._parts.maintenance.batch_size(value)

    @property
    def max_value_size(self) -> int:
        """The largest value ``put`` accepts, in bytes."""
        return self._rt.settings.max_value_size

    @property
    def key_cache(self) -> KeyCache[Aead]:
        """The cache of unwrapped namespace keys (for its stats and bounds)."""
        return self._rt.keyring.cache

    @property
    def data_key_cache(self) -> KeyCache[tuple[Aead, Aead]] | None:
        """The cache of unwrapped DEKs of recent reads (None when turned off)."""
        return self._rt.data_keys

    def namespace(self, namespace: str) -> AbstractContextManager[str]:
        """``with store.namespace("tenant-123"): ...`` sets the default namespace for the block."""
        return namespace_block(namespace)

    def audit_context(self, actor: str | None = None, **request: str) -> AbstractContextManager[None]:
        """``with store.audit_context(actor="deploy-bot", request_id="r1"): ...``"""
        return audit_context(actor, **request)


class SecretStore(StoreFace):
    """A tenant-aware secret store over a storage backend and one or more KEKs.

    Open it with :func:`kmsbox.open_store`. Thread-safe; close it when done (or use it as
    a context manager). From asyncio code, use :func:`kmsbox.aio.open_store` instead: every
    call here may wait on the database or a KMS.
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
        audit_chains: int = 32,
        sinks: SinkSet | None = None,
        checkpoint_file: str | None = None,
        checkpoint_every: int = 0,
    ) -> None:
        settings = StoreSettings(
            audit_reads=audit_reads,
            max_value_size=max_value_size,
            batch_size=batch_size,
            data_key_cache_size=data_key_cache_size,
            audit_chains=audit_chains,
            checkpoint_file=checkpoint_file,
            checkpoint_every=checkpoint_every,
        )
        self._start(StoreRuntime(backend, keks, cache=cache, settings=settings, sinks=sinks))

    @classmethod
    def from_runtime(cls, runtime: StoreRuntime) -> SecretStore:
        """A store over a runtime that is not open yet (opens it: unwraps the audit key)."""
        store = cls.__new__(cls)
        store._start(runtime)
        return store

    def _start(self, runtime: StoreRuntime) -> None:
        self._rt = runtime
        self._parts = StoreParts(runtime)
        self._io = SyncPorts(runtime.backend)
        self._closed = False
        run(runtime.open(self._io))

    def __repr__(self) -> str:
        return f"SecretStore(storage={self._rt.backend.describe()!r}, keks={[k.uri for k in self._rt.keyring.keks]!r})"

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, op: Op[T]) -> T:
        result = run(op)
        if self._parts.checkpoint_due():
            run(self._parts.auto_checkpoint(self._io))
        return result

    # --- secrets ------------------------------------------------------------------------------

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
        Metadata not given keeps its previous value on update (an expiry that has already
        passed is not kept); an empty ``category`` or ``description`` clears it, and
        ``labels`` replaces them all. Version numbers are never reused, not even after a
        delete. Raises ValueError for a bad name, namespace, value size or metadata;
        KeyUnavailable or ProviderError when the namespace key cannot be had;
        IntegrityError when the secret's row was changed or rolled back through the
        database; ConflictError only after bounded retries of lost races. Nothing is
        written on failure, and the failure is audited.
        """
        ns = self._parts.namespace(namespace)
        return self._run(
            self._parts.secrets.put(
                self._io,
                ns,
                name,
                value,
                expires=expires,
                category=category,
                description=description,
                labels=labels,
                actor=actor,
                request=request,
            )
        )

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

        Raises SecretNotFound (NamespaceNotFound when the namespace itself does not exist),
        SecretExpired, SecretDisabled, KeyUnavailable, IntegrityError (a corrupted or moved
        envelope, or a row changed through the database) or ProviderError (the KMS failed
        to unwrap the namespace key); each of these failures is audited. ValueError for bad
        arguments, StorageError when the store itself fails. Never ConflictError.
        """
        ns = self._parts.namespace(namespace)
        return self._run(self._parts.secrets.get(self._io, ns, name, version=version, actor=actor, request=request))

    def try_get(
        self,
        name: str,
        *,
        namespace: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> GetResult:
        """Like :meth:`get` but returns a :class:`GetResult` instead of raising for a missing
        (``not_found``, or ``namespace_not_found``), expired, disabled, undecryptable or
        corrupted secret, or a KMS that failed to give its key (``reason`` says which).
        Still raises ValueError for bad arguments and StorageError when the store fails."""
        ns = self._parts.namespace(namespace)
        return self._run(self._parts.secrets.try_get(self._io, ns, name, version=version, actor=actor, request=request))

    def info(self, name: str, *, namespace: str | None = None) -> SecretInfo:
        """A secret's metadata (no value, not counted as a read). SecretNotFound if missing
        (NamespaceNotFound when the namespace does not exist); IntegrityError if its row was
        changed through the database."""
        ns = self._parts.namespace(namespace)
        return self._run(self._parts.secrets.info(self._io, ns, name))

    def list(
        self,
        *,
        namespace: str | None = None,
        category: str | None = None,
        label: Any = None,
        limit: int = 100,
        cursor: str | None = None,
        all_namespaces: bool = False,
    ) -> Page[SecretInfo]:
        """A page of secret metadata ordered by name; never values.

        ``label`` is ``"key=value"``, ``(key, value)``, a mapping, or a list of them (all
        must match). Pass the returned ``next_cursor`` as ``cursor`` for the next page.
        ``all_namespaces`` lists across every namespace (ordered by namespace, then name).
        A namespace that does not exist lists as empty (see :meth:`namespace_exists`).
        """
        ns = None if all_namespaces else self._parts.namespace(namespace)
        return self._run(
            self._parts.secrets.list(self._io, ns, category=category, label=label, limit=limit, cursor=cursor)
        )

    def iter_secrets(
        self,
        *,
        namespace: str | None = None,
        category: str | None = None,
        label: Any = None,
        all_namespaces: bool = False,
    ) -> Iterator[SecretInfo]:
        """Every secret's metadata (in a namespace, or in all), streamed page by page."""
        ns = None if all_namespaces else self._parts.namespace(namespace)
        cursor: str | None = None
        while True:
            page = self._run(
                self._parts.secrets.list(
                    self._io, ns, category=category, label=label, limit=self.batch_size, cursor=cursor
                )
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def history(self, name: str, *, namespace: str | None = None) -> builtins.list[SecretVersionInfo]:
        """Every version of a secret, oldest first (no values). SecretNotFound if missing
        (NamespaceNotFound when the namespace does not exist)."""
        ns = self._parts.namespace(namespace)
        return self._run(self._parts.secrets.history(self._io, ns, name))

    def delete(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> int:
        """Delete a secret and all its versions; return how many versions went.

        Raises SecretNotFound if there is no such secret (NamespaceNotFound when the namespace
        does not exist).
        """
        ns = self._parts.namespace(namespace)
        return self._run(self._parts.secrets.delete(self._io, ns, name, actor=actor, request=request))

    def disable(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """Disable a secret: reads raise SecretDisabled until it is enabled."""
        ns = self._parts.namespace(namespace)
        return self._run(self._parts.secrets.set_status(self._io, ns, name, "disabled", "disable", actor, request))

    def enable(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """Enable a disabled secret."""
        ns = self._parts.namespace(namespace)
        return self._run(self._parts.secrets.set_status(self._io, ns, name, "active", "enable", actor, request))

    def cleanup_expired(self, retention: _dt.timedelta | float = 0.0, *, actor: str | None = None) -> int:
        """Delete secrets that expired more than ``retention`` ago, in batches; return the count.

        ``retention`` is a timedelta or seconds (finite, not negative); ValueError otherwise.
        A secret renewed by a concurrent put while the batch runs is left alone.
        """
        return self._run(self._parts.secrets.cleanup_expired(self._io, retention, actor))

    # --- namespaces ---------------------------------------------------------------------------

    def namespaces(self) -> builtins.list[str]:
        """Every namespace that exists (has keys)."""
        return self._run(self._parts.namespaces(self._io))

    def namespace_exists(self, namespace: str) -> bool:
        """Whether a namespace exists (ValueError for an invalid name)."""
        ns = validate_namespace(namespace)
        return self._run(self._rt.keyring.state(self._io, ns)) is not None

    def create_namespace(self, namespace: str) -> bool:
        """Make a namespace with its first key; False if it already existed."""
        ns = validate_namespace(namespace)
        if self.namespace_exists(ns):
            return False
        self._run(self._rt.keyring.create(self._io, ns))
        return True

    # --- access counts ------------------------------------------------------------------------

    def flush_access(self) -> None:
        """Write this store's buffered read counts (done automatically about once a second)."""
        self._run(self._rt.access.flush(self._io))

    # --- key maintenance ----------------------------------------------------------------------

    def rotate_namespace_key(self, namespace: str, *, dry_run: bool = False, create: bool = False) -> int:
        """Make a new active namespace-key version; the old active one becomes ``rotating``.

        Returns the new version (or, with ``dry_run``, the version it would create).
        Existing DEKs move with :meth:`rewrap_deks`. NamespaceNotFound for a namespace that
        does not exist (a typo would otherwise get keys of its own), unless ``create``.
        ConflictError if another rotation of the namespace committed first.
        """
        return self._run(
            self._parts.maintenance.rotate_namespace_key(self._io, namespace, dry_run=dry_run, create=create)
        )

    def rewrap_deks(
        self, namespace: str, *, dry_run: bool = False, batch_size: int | None = None, progress: Progress | None = None
    ) -> JobReport:
        """Rewrap the DEKs under ``rotating`` namespace-key versions to the active one.

        No value ciphertext is rewritten. A version nothing references any more is marked
        ``retired``. Compromised versions are left to :meth:`reencrypt`. A dry run's
        ``remaining`` is what the real run would rewrap.
        """
        return self._run(
            self._parts.maintenance.rewrap_deks(
                self._io, namespace, dry_run=dry_run, batch_size=batch_size, progress=progress
            )
        )

    def rewrap_namespace_keys(
        self,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        force: bool = False,
        progress: Progress | None = None,
    ) -> JobReport:
        """Rewrap every namespace key under each configured KEK's current primary version.

        Touches no secret row. Costs one KEK call per namespace-key version that needs it,
        batched where the provider batches. A version with no wrap under a configured KEK
        gets one (unwrapped through another KEK). ``force`` rewraps even wraps already at
        the primary version: for KMSs whose rotation keeps the version name (AWS KMS key
        ARNs), where the KMS's own re-encrypt moves a wrap to the newest key material.
        """
        return self._run(
            self._parts.maintenance.rewrap_namespace_keys(
                self._io, namespace, dry_run=dry_run, force=force, progress=progress
            )
        )

    def reencrypt(
        self, namespace: str, *, dry_run: bool = False, batch_size: int | None = None, progress: Progress | None = None
    ) -> JobReport:
        """Give every secret version of ``namespace`` a fresh DEK and a new ciphertext under
        the active namespace key (after a suspected DEK leak or a compromise).

        Resumable: a checkpoint is committed with each batch.
        """
        return self._run(
            self._parts.maintenance.reencrypt(
                self._io, namespace, dry_run=dry_run, batch_size=batch_size, progress=progress
            )
        )

    def mark_compromised(self, namespace: str, version: int, *, rotate: bool = True) -> int | None:
        """Mark a namespace-key version compromised: it never wraps anything new.

        If it was the active version and ``rotate`` is true, a new version is rotated in,
        in the same transaction. Run :meth:`reencrypt` next to move every secret off it.
        Returns the new active version if one was made. NamespaceNotFound for a namespace
        that does not exist; ValueError for a version it does not have.
        """
        return self._run(self._parts.maintenance.mark_compromised(self._io, namespace, version, rotate=rotate))

    def cleanup_retired_keys(
        self, older_than: _dt.timedelta | float = 0.0, *, namespace: str | None = None, dry_run: bool = False
    ) -> JobReport:
        """Delete retired (and compromised) key versions that no envelope names, retired for
        longer than ``older_than``. A version still named is refused and listed in
        ``details['refused']``; a dry run lists ``details['would_delete']``. ``older_than``
        is a timedelta or seconds (finite, not negative); ValueError otherwise.
        """
        return self._run(
            self._parts.maintenance.cleanup_retired_keys(self._io, older_than, namespace=namespace, dry_run=dry_run)
        )

    def migrate_kek(
        self,
        to: str | KekProvider,
        *,
        drop_old: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> JobReport:
        """Wrap every namespace key under the KEK ``to`` (any provider), optionally dropping
        every other KEK's wraps afterwards. No secret is re-encrypted.

        The old wraps are dropped only once every key has a wrap under ``to`` that unwraps.
        Reopen the store with ``to`` as its (first) KEK afterwards.
        """
        return self._run(
            self._parts.maintenance.migrate_kek(self._io, to, drop_old=drop_old, dry_run=dry_run, progress=progress)
        )

    def status(self, namespace: str | None = None) -> dict[str, Any]:
        """Active key versions, secrets per namespace-key and KEK version, retired and
        compromised keys, and pending work, per namespace. Reads no value."""
        return self._run(self._parts.maintenance.status(self._io, namespace))

    # --- diagnosis and import -----------------------------------------------------------------

    def diagnose(self, namespace: str | None = None, *, check_secrets: bool = True) -> DiagnosisReport:
        """Report key drift and tampering without decrypting any value.

        Finds namespace keys no KEK can unwrap, KEK versions that are gone, wraps missing
        under a configured KEK, unused keys, compromised keys in use, key rows and secret
        rows changed through the database, and (with ``check_secrets``) every secret
        version whose DEK cannot be unwrapped.
        """
        return self._run(self._parts.diagnosis.diagnose(self._io, namespace, check_secrets=check_secrets))

    def repair(
        self, namespace: str | None = None, *, dry_run: bool = True, confirm_delete: bool = False
    ) -> RepairReport:
        """Fix what ``diagnose`` finds. Dry run by default.

        Non-destructive steps (rewrap stale KEK wraps, rewrap DEKs, re-encrypt off
        compromised keys, retire unused keys) run when ``dry_run`` is False. Destructive
        steps (delete secret versions or keys that can never be opened again) also need
        ``confirm_delete=True``, and each is checked again first: a version that can be
        opened is kept. When a secret's current version is unrecoverable the whole secret
        is deleted (a later put recreates it).
        """
        return self._run(
            self._parts.diagnosis.repair(self._io, namespace, dry_run=dry_run, confirm_delete=confirm_delete)
        )

    def import_secrets(
        self,
        items: Iterable[tuple[Any, ...]] | Mapping[str, str | bytes],
        *,
        namespace: str | None = None,
        on_conflict: str = "skip",
        on_error: str = "stop",
        category: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        source: str = "import",
    ) -> JobReport:
        """Import ``(name, value)`` pairs into ``namespace``, or ``(namespace, name, value)``
        triples into theirs, in committed batches.

        ``on_conflict``: ``skip`` an existing name (so a re-run resumes), make a new version
        (``overwrite``), or raise ValueError (``fail``). ``on_error``: ``stop`` at the first
        bad item with a ValueError naming its position (earlier batches stay committed), or
        ``skip`` it and report it in ``report.failures`` with its typed error.
        """
        return self._run(
            self._parts.importer.import_secrets(
                self._io,
                items,
                namespace=namespace,
                on_conflict=on_conflict,
                on_error=on_error,
                category=category,
                labels=labels,
                progress=progress,
                source=source,
            )
        )

    def import_rows(
        self,
        rows: Iterable[Any],
        decrypt: Callable[[Any], tuple[Any, ...]],
        *,
        namespace: str | None = None,
        on_conflict: str = "skip",
        on_error: str = "stop",
        category: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> JobReport:
        """Move legacy rows into kmsbox: ``decrypt(row)`` returns ``(name, plaintext)`` (into
        ``namespace``) or ``(namespace, name, plaintext)``.

        For a table encrypted under one hand-rolled master key: stream its rows in, with a
        function that decrypts the legacy ciphertext. A row ``decrypt`` fails on stops the
        import (``on_error="stop"``; re-run with ``on_conflict="skip"`` to resume) or is
        reported and passed over (``"skip"``); either way only its position is named.
        """
        return self._run(
            self._parts.importer.import_rows(
                self._io,
                rows,
                decrypt,
                namespace=namespace,
                on_conflict=on_conflict,
                on_error=on_error,
                category=category,
                labels=labels,
                progress=progress,
            )
        )

    # --- audit --------------------------------------------------------------------------------

    def audit_events(
        self, filters: AuditFilter | None = None, *, after: str | int | None = None, limit: int = 100
    ) -> tuple[builtins.list[AuditEvent], str | None]:
        """A page of audit events after cursor ``after`` (None or 0: from the start), in the
        store-wide order; returns (events, next cursor or None)."""
        return self._run(self._rt.audit.events(self._io, filters, after, limit))

    def iter_audit_events(self, filters: AuditFilter | None = None) -> Iterator[AuditEvent]:
        """Every matching event, streamed in batches."""
        after: str | None = None
        while True:
            events, after = self.audit_events(filters, after=after, limit=500)
            yield from events
            if after is None:
                return

    def verify_audit(self, checkpoint: Checkpoint | None = None, *, cross_check: bool = True) -> AuditVerification:
        """Verify every audit chain (and a saved checkpoint), and, with ``cross_check``, every
        secret and namespace against the last state its changes recorded (finds a rollback
        through the database)."""
        return self._run(self._rt.audit.verify(self._io, checkpoint, cross_check=cross_check))

    def verify_audit_copy(self, lines: Iterable[str]) -> AuditVerification:
        """Check a sink's JSON-lines copy of the audit log against the database."""
        return self._run(self._rt.audit.verify_against(self._io, lines))

    def audit_checkpoint(self) -> Checkpoint:
        """Every chain's head at this moment, to keep outside the database."""
        return self._run(self._rt.audit.checkpoint(self._io))

    def close(self) -> None:
        """Write read counts, fold them into the shared totals, and close the backend and KEK clients."""
        if self._closed:
            return
        try:
            with suppress(Exception):
                run(self._rt.access.fold(self._io))
        finally:
            self._closed = True
            if self._rt.data_keys is not None:
                self._rt.data_keys.clear()
            self._rt.sinks.close()
            self._rt.backend.close()
            for kek in self._rt.keyring.keks:
                kek.close()


_ = AUDIT_NAMESPACE
