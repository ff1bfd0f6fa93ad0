"""Every call the admin server makes into kmsbox, as coroutines over :mod:`kmsbox.aio`.

This is the one module that touches the store: a :class:`kmsbox.aio.AsyncSecretStore`
opened on the server's event loop, which never blocks it (PostgreSQL natively async,
SQLite on the loop without waiting, sync KMS clients on the store's bounded pool).
Each call runs inside ``store.audit_context`` with the caller's actor and request
context, so every audit event the store writes for it names the token's actor.
Results are JSON-ready mappings, never values.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kmsbox.aio
from kmsbox import Checkpoint, NamespaceNotFound
from kmsbox.aio import AsyncSecretStore
from kmsbox.storage.base import AuditFilter
from kmsbox.store.audit import ACTIONS, RESULTS
from kmsbox.store.names import validate_namespace
from kmsbox_admin.errors import NotAllowed

__all__ = [
    "AUDIT_ACTIONS",
    "AUDIT_RESULTS",
    "JOB_KINDS",
    "Caller",
    "JobSpec",
    "Progress",
    "StoreOperations",
]

#: ``progress(done, total_or_None)``, called on the event loop after every committed batch of a job.
Progress = Callable[[int, int | None], None]

#: The audit log's actions and results (the filters ``kmsbox audit list`` accepts).
AUDIT_ACTIONS: tuple[str, ...] = tuple(ACTIONS)
AUDIT_RESULTS: tuple[str, ...] = tuple(RESULTS)

#: Job kinds, with whether each works on one namespace (True), the whole store
#: (False) or either (None: a namespace is optional).
JOB_KINDS: dict[str, bool | None] = {
    "rotate": True,
    "rewrap-deks": True,
    "reencrypt": True,
    "rewrap-namespace-keys": None,
    "migrate-kek": False,
    "repair": None,
}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the token's actor and role, and the request context for audit events."""

    actor: str
    role: str
    request: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a job is to do; checked by :meth:`StoreOperations.check_job` before it starts."""

    kind: str
    namespace: str | None = None
    dry_run: bool = False
    to: str | None = None
    drop_old: bool = False
    confirm_delete: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the parameters."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "dry_run": self.dry_run,
            "to": self.to,
            "drop_old": self.drop_old,
            "confirm_delete": self.confirm_delete,
        }


def _legacy(keys: Sequence[Mapping[str, Any]]) -> int:
    """Secret versions under a key that is not the active one (rotating, retired or compromised)."""
    return sum(int(k["secret_versions"]) for k in keys if k["status"] != "active")


class StoreOperations:
    """The admin server's view of one async store. Use it from the event loop the store
    was opened on (the server's)."""

    def __init__(
        self,
        store: AsyncSecretStore,
        *,
        kek_targets: Sequence[str] = (),
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._store = store
        self._kek_targets = frozenset(kek_targets)
        # A pool made by open() for the store, shut down here after the store closes.
        self._executor = executor

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        keks: Sequence[str] = (),
        *,
        config_file: str | os.PathLike[str] | None = None,
        kek_targets: Sequence[str] = (),
        threads: int | None = None,
    ) -> StoreOperations:
        """Open the store on the running event loop the way the CLI does (arguments,
        environment, config file; kmsbox passes over the file's ``[admin]`` table).

        ``threads`` sizes the store's pool for what cannot be awaited natively (a sync KMS
        client's calls, a SQLite write waiting for the lock); by default kmsbox.aio's.
        Raises ConfigError, PluginError or ProviderError as :func:`kmsbox.aio.open_store`
        does; ValueError for ``threads`` outside 1 to 64.
        """
        if threads is not None and not 1 <= threads <= 64:
            raise ValueError("threads must be from 1 to 64")
        executor = None if threads is None else ThreadPoolExecutor(threads, thread_name_prefix="kmsbox-admin")
        try:
            store = await kmsbox.aio.open_store(url, list(keks) or None, config_file=config_file, executor=executor)
        except BaseException:
            if executor is not None:
                executor.shutdown(wait=False)
            raise
        return cls(store, kek_targets=kek_targets, executor=executor)

    async def close(self) -> None:
        """Close the store (and the pool :meth:`open` made for it)."""
        try:
            await self._store.close()
        finally:
            if self._executor is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    @contextmanager
    def _as(self, caller: Caller) -> Iterator[None]:
        """Audit events written inside the block name the caller (a contextvar: per task)."""
        with self._store.audit_context(actor=caller.actor, **dict(caller.request)):
            yield

    async def _require_namespace(self, namespace: str) -> str:
        """``namespace`` if valid and in the store: ValueError, else NamespaceNotFound."""
        ns = validate_namespace(namespace)
        if not await self._store.namespace_exists(ns):
            # The store's own wording (a listing of a namespace that does not exist is empty there).
            raise NamespaceNotFound(f"namespace {ns!r} does not exist")
        return ns

    # --- reads ----------------------------------------------------------------------------

    async def status(self, caller: Caller, namespace: str | None = None) -> dict[str, Any]:
        """What ``kmsbox --json status [NAMESPACE]`` prints (NamespaceNotFound for an unknown one)."""
        with self._as(caller):
            return await self._store.status(namespace)

    async def namespaces(self, caller: Caller) -> list[str]:
        """Every namespace that exists, sorted."""
        with self._as(caller):
            return sorted(await self._store.namespaces())

    async def overview(self, caller: Caller, namespace: str) -> dict[str, Any]:
        """The console's cards for one namespace: active key version, secret versions,
        those under older keys (legacy rows), pending work and the keys themselves."""
        ns = validate_namespace(namespace)
        with self._as(caller):
            data = await self._store.status(ns)
        info = data["namespaces"][ns]
        active = info["active_versions"]
        return {
            "namespace": ns,
            "active_version": active[-1] if active else None,
            "secret_versions": sum(int(k["secret_versions"]) for k in info["keys"]),
            "legacy_secret_versions": _legacy(info["keys"]),
            "pending": info["pending"],
            "keys": info["keys"],
            "keks": data["keks"],
            "unfinished_jobs": data["jobs"],
        }

    async def key_history(self, caller: Caller, namespace: str) -> list[dict[str, Any]]:
        """Every key version of a namespace, oldest first: status, secret versions, wraps,
        when it was made (``created_at``: rotated in) and when it took its status (``updated_at``)."""
        ns = validate_namespace(namespace)
        with self._as(caller):
            data = await self._store.status(ns)
        keys: list[dict[str, Any]] = data["namespaces"][ns]["keys"]
        return sorted(keys, key=lambda k: int(k["version"]))

    async def list_secrets(
        self,
        caller: Caller,
        namespace: str,
        *,
        category: str | None = None,
        label: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page of secret metadata (``kmsbox list``); never values."""
        with self._as(caller):
            ns = await self._require_namespace(namespace)
            found = await self._store.list(namespace=ns, category=category, label=label, limit=limit, cursor=cursor)
        return {"items": [i.to_dict() for i in found.items], "next_cursor": found.next_cursor}

    async def secret_info(self, caller: Caller, namespace: str, name: str) -> dict[str, Any]:
        """One secret's metadata (``kmsbox info``); not counted as a read."""
        with self._as(caller):
            return (await self._store.info(name, namespace=namespace)).to_dict()

    async def secret_history(self, caller: Caller, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every version of a secret, oldest first (``kmsbox history``); no values."""
        with self._as(caller):
            versions = await self._store.history(name, namespace=namespace)
        return [
            {
                "version": v.version,
                "created_at": v.created_at,
                "namespace_key_version": v.namespace_key_version,
                "current": v.current,
            }
            for v in versions
        ]

    async def audit_events(
        self,
        caller: Caller,
        *,
        namespace: str | None = None,
        name: str | None = None,
        action: str | None = None,
        result: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """A page of audit events with ``kmsbox audit list``'s filters, in the store-wide
        order (time, chain, seq). ``after`` is an opaque cursor from an earlier page;
        ValueError for one that is not."""
        if action is not None and action not in AUDIT_ACTIONS:
            raise ValueError(f"action must be one of {list(AUDIT_ACTIONS)}")
        if result is not None and result not in AUDIT_RESULTS:
            raise ValueError(f"result must be one of {list(AUDIT_RESULTS)}")
        filters = AuditFilter(namespace, name, action, result, since, until)
        with self._as(caller):
            events, next_cursor = await self._store.audit_events(filters, after=after, limit=limit)
        return {"events": [e.to_dict() for e in events], "next_cursor": next_cursor}

    async def audit_checkpoint(self, caller: Caller) -> dict[str, Any]:
        """Every audit chain's head now (``kmsbox audit checkpoint``)."""
        with self._as(caller):
            return (await self._store.audit_checkpoint()).to_dict()

    async def verify_audit(self, caller: Caller, checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Verify every chain, cross-check secrets and namespaces against their last recorded
        state, and a checkpoint saved earlier (``kmsbox audit verify``). ValueError for a
        malformed checkpoint."""
        parsed = None if checkpoint is None else Checkpoint.from_dict(checkpoint)
        with self._as(caller):
            return (await self._store.verify_audit(parsed)).to_dict()

    async def diagnose(
        self, caller: Caller, namespace: str | None = None, *, keys_only: bool = False
    ) -> dict[str, Any]:
        """Key drift with a suggested command per issue (``kmsbox diagnose``); never decrypts a value."""
        with self._as(caller):
            return (await self._store.diagnose(namespace, check_secrets=not keys_only)).to_dict()

    async def repair_plan(self, caller: Caller, namespace: str | None = None) -> dict[str, Any]:
        """What ``kmsbox repair`` would do (a dry run: nothing changes)."""
        with self._as(caller):
            return (await self._store.repair(namespace, dry_run=True)).to_dict()

    # --- jobs -----------------------------------------------------------------------------

    async def check_job(self, caller: Caller, spec: JobSpec) -> None:
        """Refuse a job that cannot start: ValueError for bad parameters,
        NamespaceNotFound, NotAllowed for a KEK target not in ``kek_targets``."""
        scoped = JOB_KINDS.get(spec.kind, "unknown")
        if scoped == "unknown":
            raise ValueError(f"kind must be one of {sorted(JOB_KINDS)}")
        if scoped is True and spec.namespace is None:
            raise ValueError(f"a {spec.kind} job needs a namespace")
        if scoped is False and spec.namespace is not None:
            raise ValueError(f"a {spec.kind} job works on the whole store: give no namespace")
        if spec.kind == "migrate-kek":
            if not spec.to:
                raise ValueError("a migrate-kek job needs 'to', the KEK URI to wrap every namespace key under")
            if spec.to not in self._kek_targets:
                # Opening an arbitrary URI would let a token holder make the server read
                # files and environment variables, or call hosts of their choosing.
                raise NotAllowed("that KEK is not in [admin] kek_targets; add it there to allow migrating to it")
        elif spec.to is not None or spec.drop_old:
            raise ValueError("'to' and 'drop_old' are for migrate-kek jobs only")
        if spec.confirm_delete and spec.kind != "repair":
            raise ValueError("'confirm_delete' is for repair jobs only")
        if spec.kind == "repair" and spec.dry_run:
            raise ValueError("a repair dry run is not a job: POST /v1/admin/repair with dry_run true")
        if spec.namespace is not None:
            with self._as(caller):
                await self._require_namespace(spec.namespace)

    async def _job(self, spec: JobSpec, progress: Progress) -> dict[str, Any]:
        store, ns = self._store, spec.namespace
        if spec.kind == "rotate":
            assert ns is not None
            # As `kmsbox rotate`: a new key version, then the DEKs rewrapped to it.
            version = await store.rotate_namespace_key(ns, dry_run=spec.dry_run)
            report = await store.rewrap_deks(ns, dry_run=spec.dry_run, progress=progress)
            return {"namespace": ns, "new_version": version, "dry_run": spec.dry_run, "rewrap": report.to_dict()}
        if spec.kind == "rewrap-deks":
            assert ns is not None
            return (await store.rewrap_deks(ns, dry_run=spec.dry_run, progress=progress)).to_dict()
        if spec.kind == "reencrypt":
            assert ns is not None
            return (await store.reencrypt(ns, dry_run=spec.dry_run, progress=progress)).to_dict()
        if spec.kind == "rewrap-namespace-keys":
            return (await store.rewrap_namespace_keys(ns, dry_run=spec.dry_run, progress=progress)).to_dict()
        if spec.kind == "migrate-kek":
            assert spec.to is not None
            report = await store.migrate_kek(spec.to, drop_old=spec.drop_old, dry_run=spec.dry_run, progress=progress)
            return report.to_dict()
        if spec.kind == "repair":
            return (await store.repair(ns, dry_run=False, confirm_delete=spec.confirm_delete)).to_dict()
        raise ValueError(f"kind must be one of {sorted(JOB_KINDS)}")

    async def run_job(
        self, caller: Caller, spec: JobSpec, progress: Progress, started: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Run a checked job (await it in a task of its own). ``started`` is called before
        its first store call, ``progress`` on the loop after each committed batch.

        Cancelling the task stops the job: a batch in flight commits whole or not at all,
        every batch before it stays committed, and running the same job again resumes it.
        """
        with self._as(caller):
            if started is not None:
                started()
            return await self._job(spec, progress)
