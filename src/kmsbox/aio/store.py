"""The AsyncSecretStore: the store's public face for asyncio.

Every method is a coroutine (listings are also async iterators) over the same parts and
runtime as :class:`kmsbox.SecretStore`: the same rules, checks, errors, audit events and
messages; only the waiting differs (:mod:`kmsbox.aio.ports`). The long operations (jobs,
imports, diagnosis, audit verification) run their steps on the store's thread pool, so the
loop keeps serving other tasks between their batches. Open it with
:func:`kmsbox.aio.open_store`.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as _dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kmsbox.aio.ports import AsyncPorts, drive, drive_off_loop, on_loop
from kmsbox.errors import StorageError
from kmsbox.storage.base import AuditFilter
from kmsbox.store.audit import AuditEvent, AuditVerification, Checkpoint
from kmsbox.store.diagnosis import DiagnosisReport, RepairReport
from kmsbox.store.io import Op
from kmsbox.store.jobs import JobReport, Progress
from kmsbox.store.models import GetResult, Page, Secret, SecretInfo, SecretVersionInfo
from kmsbox.store.names import validate_namespace
from kmsbox.store.runtime import StoreRuntime
from kmsbox.store.service import StoreFace, StoreParts
from kmsbox.store.values import Expiry

__all__ = ["AsyncSecretStore"]

T = TypeVar("T")


class AsyncSecretStore(StoreFace):
    """A secret store for asyncio code: ``async with await kmsbox.aio.open_store(...) as store``.

    Each method does what :class:`kmsbox.SecretStore`'s method of the same name does (see
    its docstring for arguments and errors), without ever blocking the event loop. Use one
    store from one event loop.
    """

    def __init__(
        self,
        runtime: StoreRuntime,
        executor: ThreadPoolExecutor,
        *,
        own_executor: bool = True,
        connections: int | None = None,
    ) -> None:
        self._rt = runtime
        self._parts = StoreParts(runtime)
        self._executor = executor
        self._own_executor = own_executor
        self._io = AsyncPorts(
            runtime.backend, executor, blocking_sinks=lambda: bool(runtime.sinks), connections=connections
        )
        self._closed = False

    async def _open(self) -> None:
        await drive(self._rt.open(self._io))

    def __repr__(self) -> str:
        return f"AsyncSecretStore(storage={self._rt.backend.describe()!r}, keks={[k.uri for k in self._rt.keyring.keks]!r})"

    async def __aenter__(self) -> AsyncSecretStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, op: Op[T]) -> T:
        result = await drive(op)
        if self._parts.checkpoint_due():
            await drive(self._parts.auto_checkpoint(self._io))
        return result

    async def _job(self, make: Callable[[Any], Op[T]]) -> T:
        """Run ``make(ports)``'s operation with its steps on the pool (see :func:`drive_off_loop`)."""
        if self._io.closed:
            raise StorageError("storage backend is closed")
        result = await drive_off_loop(make(self._io.jobs), self._executor)
        if self._parts.checkpoint_due():
            await drive(self._parts.auto_checkpoint(self._io))
        return result

    @staticmethod
    def _on_loop(progress: Progress | None) -> Progress | None:
        return on_loop(progress, asyncio.get_running_loop())

    # --- secrets ------------------------------------------------------------------------------

    async def put(
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
        """See :meth:`kmsbox.SecretStore.put`."""
        ns = self._parts.namespace(namespace)
        return await self._run(
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

    async def get(
        self,
        name: str,
        *,
        namespace: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> Secret:
        """See :meth:`kmsbox.SecretStore.get`."""
        ns = self._parts.namespace(namespace)
        return await self._run(
            self._parts.secrets.get(self._io, ns, name, version=version, actor=actor, request=request)
        )

    async def try_get(
        self,
        name: str,
        *,
        namespace: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> GetResult:
        """See :meth:`kmsbox.SecretStore.try_get`."""
        ns = self._parts.namespace(namespace)
        return await self._run(
            self._parts.secrets.try_get(self._io, ns, name, version=version, actor=actor, request=request)
        )

    async def info(self, name: str, *, namespace: str | None = None) -> SecretInfo:
        """See :meth:`kmsbox.SecretStore.info`."""
        return await self._run(self._parts.secrets.info(self._io, self._parts.namespace(namespace), name))

    async def list(
        self,
        *,
        namespace: str | None = None,
        category: str | None = None,
        label: Any = None,
        limit: int = 100,
        cursor: str | None = None,
        all_namespaces: bool = False,
    ) -> Page[SecretInfo]:
        """See :meth:`kmsbox.SecretStore.list`."""
        ns = None if all_namespaces else self._parts.namespace(namespace)
        return await self._run(
            self._parts.secrets.list(self._io, ns, category=category, label=label, limit=limit, cursor=cursor)
        )

    async def iter_secrets(
        self,
        *,
        namespace: str | None = None,
        category: str | None = None,
        label: Any = None,
        all_namespaces: bool = False,
    ) -> AsyncIterator[SecretInfo]:
        """Every secret's metadata, streamed page by page (``async for``)."""
        ns = None if all_namespaces else self._parts.namespace(namespace)
        cursor: str | None = None
        while True:
            page = await self._run(
                self._parts.secrets.list(
                    self._io, ns, category=category, label=label, limit=self._rt.settings.batch_size, cursor=cursor
                )
            )
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def history(self, name: str, *, namespace: str | None = None) -> builtins.list[SecretVersionInfo]:
        """See :meth:`kmsbox.SecretStore.history`."""
        return await self._run(self._parts.secrets.history(self._io, self._parts.namespace(namespace), name))

    async def delete(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> int:
        """See :meth:`kmsbox.SecretStore.delete`."""
        ns = self._parts.namespace(namespace)
        return await self._run(self._parts.secrets.delete(self._io, ns, name, actor=actor, request=request))

    async def disable(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """See :meth:`kmsbox.SecretStore.disable`."""
        ns = self._parts.namespace(namespace)
        return await self._run(
            self._parts.secrets.set_status(self._io, ns, name, "disabled", "disable", actor, request)
        )

    async def enable(
        self,
        name: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """See :meth:`kmsbox.SecretStore.enable`."""
        ns = self._parts.namespace(namespace)
        return await self._run(self._parts.secrets.set_status(self._io, ns, name, "active", "enable", actor, request))

    async def cleanup_expired(self, retention: _dt.timedelta | float = 0.0, *, actor: str | None = None) -> int:
        """See :meth:`kmsbox.SecretStore.cleanup_expired`."""
        return await self._job(lambda io: self._parts.secrets.cleanup_expired(io, retention, actor))

    # --- namespaces and read counts ------------------------------------------------------------

    async def namespaces(self) -> builtins.list[str]:
        """See :meth:`kmsbox.SecretStore.namespaces`."""
        return await self._run(self._parts.namespaces(self._io))

    async def namespace_exists(self, namespace: str) -> bool:
        """See :meth:`kmsbox.SecretStore.namespace_exists`."""
        return (await self._run(self._rt.keyring.state(self._io, validate_namespace(namespace)))) is not None

    async def create_namespace(self, namespace: str) -> bool:
        """See :meth:`kmsbox.SecretStore.create_namespace`."""
        ns = validate_namespace(namespace)
        if await self.namespace_exists(ns):
            return False
        await self._run(self._rt.keyring.create(self._io, ns))
        return True

    async def flush_access(self) -> None:
        """See :meth:`kmsbox.SecretStore.flush_access`."""
        await self._run(self._rt.access.flush(self._io))

    # --- key maintenance ----------------------------------------------------------------------

    async def rotate_namespace_key(self, namespace: str, *, dry_run: bool = False, create: bool = False) -> int:
        """See :meth:`kmsbox.SecretStore.rotate_namespace_key`."""
        return await self._run(
            self._parts.maintenance.rotate_namespace_key(self._io, namespace, dry_run=dry_run, create=create)
        )

    async def rewrap_deks(
        self, namespace: str, *, dry_run: bool = False, batch_size: int | None = None, progress: Progress | None = None
    ) -> JobReport:
        """See :meth:`kmsbox.SecretStore.rewrap_deks` (``progress`` is called on the loop, and
        the job waits for it)."""
        progress = self._on_loop(progress)
        return await self._job(
            lambda io: self._parts.maintenance.rewrap_deks(
                io, namespace, dry_run=dry_run, batch_size=batch_size, progress=progress
            )
        )

    async def rewrap_namespace_keys(
        self,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        force: bool = False,
        progress: Progress | None = None,
    ) -> JobReport:
        """See :meth:`kmsbox.SecretStore.rewrap_namespace_keys`."""
        progress = self._on_loop(progress)
        return await self._job(
            lambda io: self._parts.maintenance.rewrap_namespace_keys(
                io, namespace, dry_run=dry_run, force=force, progress=progress
            )
        )

    async def reencrypt(
        self, namespace: str, *, dry_run: bool = False, batch_size: int | None = None, progress: Progress | None = None
    ) -> JobReport:
        """See :meth:`kmsbox.SecretStore.reencrypt`."""
        progress = self._on_loop(progress)
        return await self._job(
            lambda io: self._parts.maintenance.reencrypt(
                io, namespace, dry_run=dry_run, batch_size=batch_size, progress=progress
            )
        )

    async def mark_compromised(self, namespace: str, version: int, *, rotate: bool = True) -> int | None:
        """See :meth:`kmsbox.SecretStore.mark_compromised`."""
        return await self._run(self._parts.maintenance.mark_compromised(self._io, namespace, version, rotate=rotate))

    async def cleanup_retired_keys(
        self, older_than: _dt.timedelta | float = 0.0, *, namespace: str | None = None, dry_run: bool = False
    ) -> JobReport:
        """See :meth:`kmsbox.SecretStore.cleanup_retired_keys`."""
        return await self._job(
            lambda io: self._parts.maintenance.cleanup_retired_keys(
                io, older_than, namespace=namespace, dry_run=dry_run
            )
        )

    async def migrate_kek(
        self, to: Any, *, drop_old: bool = False, dry_run: bool = False, progress: Progress | None = None
    ) -> JobReport:
        """See :meth:`kmsbox.SecretStore.migrate_kek`."""
        progress = self._on_loop(progress)
        return await self._job(
            lambda io: self._parts.maintenance.migrate_kek(
                io, to, drop_old=drop_old, dry_run=dry_run, progress=progress
            )
        )

    async def status(self, namespace: str | None = None) -> dict[str, Any]:
        """See :meth:`kmsbox.SecretStore.status`."""
        return await self._job(lambda io: self._parts.maintenance.status(io, namespace))

    async def diagnose(self, namespace: str | None = None, *, check_secrets: bool = True) -> DiagnosisReport:
        """See :meth:`kmsbox.SecretStore.diagnose`."""
        return await self._job(lambda io: self._parts.diagnosis.diagnose(io, namespace, check_secrets=check_secrets))

    async def repair(
        self, namespace: str | None = None, *, dry_run: bool = True, confirm_delete: bool = False
    ) -> RepairReport:
        """See :meth:`kmsbox.SecretStore.repair`."""
        return await self._job(
            lambda io: self._parts.diagnosis.repair(io, namespace, dry_run=dry_run, confirm_delete=confirm_delete)
        )

    async def import_secrets(
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
        """See :meth:`kmsbox.SecretStore.import_secrets` (``items`` is read on the store's
        thread pool; ``progress`` is called on the loop)."""
        progress = self._on_loop(progress)
        return await self._job(
            lambda io: self._parts.importer.import_secrets(
                io,
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

    async def import_rows(
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
        """See :meth:`kmsbox.SecretStore.import_rows` (``rows`` and ``decrypt`` run on the
        store's thread pool, one row at a time; ``progress`` is called on the loop)."""
        progress = self._on_loop(progress)
        return await self._job(
            lambda io: self._parts.importer.import_rows(
                io,
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

    async def audit_events(
        self, filters: AuditFilter | None = None, *, after: str | int | None = None, limit: int = 100
    ) -> tuple[builtins.list[AuditEvent], str | None]:
        """See :meth:`kmsbox.SecretStore.audit_events`."""
        return await self._run(self._rt.audit.events(self._io, filters, after, limit))

    async def iter_audit_events(self, filters: AuditFilter | None = None) -> AsyncIterator[AuditEvent]:
        """Every matching event, streamed in batches (``async for``)."""
        after: str | None = None
        while True:
            events, after = await self.audit_events(filters, after=after, limit=500)
            for event in events:
                yield event
            if after is None:
                return

    async def verify_audit(
        self, checkpoint: Checkpoint | None = None, *, cross_check: bool = True
    ) -> AuditVerification:
        """See :meth:`kmsbox.SecretStore.verify_audit`."""
        return await self._job(lambda io: self._rt.audit.verify(io, checkpoint, cross_check=cross_check))

    async def verify_audit_copy(self, lines: Iterable[str]) -> AuditVerification:
        """See :meth:`kmsbox.SecretStore.verify_audit_copy` (``lines`` is read on the store's thread pool)."""
        return await self._job(lambda io: self._rt.audit.verify_against(io, lines))

    async def audit_checkpoint(self) -> Checkpoint:
        """See :meth:`kmsbox.SecretStore.audit_checkpoint`."""
        return await self._run(self._rt.audit.checkpoint(self._io))

    async def close(self) -> None:
        """Write and fold read counts, close the backend, the KEK clients and the thread pool."""
        if self._closed:
            return
        self._closed = True
        try:
            await drive(self._rt.access.fold(self._io))
        except Exception:
            pass
        finally:
            self._io.closed = True
            if self._rt.data_keys is not None:
                self._rt.data_keys.clear()
            if self._io.native is not None:
                await self._io.native.close()
            rt = self._rt
            loop = asyncio.get_running_loop()

            def close_blocking() -> None:
                rt.sinks.close()
                rt.backend.close()
                for kek in rt.keyring.keks:
                    kek.close()

            await loop.run_in_executor(self._executor, close_blocking)
            if self._own_executor:
                self._executor.shutdown(wait=False)
