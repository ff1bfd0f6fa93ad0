"""Key maintenance: KEK rewrap, namespace-key rotation, DEK rewrap, re-encryption,
compromise, retirement, multi-KEK migration and status.

Every long job runs in committed batches. Each batch is idempotent and guarded by
compare-and-set on what it read (an envelope's header, a wrap's ciphertext), so a job
killed at any point (SIGKILL included) is resumed by running it again, and reads and
writes keep working while it runs. Jobs decide from the authenticated envelope header
and the sealed key state, never from a copied column. A key-state change holds the
namespace's state exclusively for one short transaction; batches hold it shared, as
puts do, so neither ever waits long on the other.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsbox import format as fmt
from kmsbox._crypto import Aead, random_key
from kmsbox.errors import ConflictError, IntegrityError, KeyUnavailable, NamespaceNotFound
from kmsbox.kek import KekProvider, WrappedKey, open_kek
from kmsbox.keys import open_secret, rewrap_secret, seal_secret
from kmsbox.limits import MAX_COUNT, check_count, seconds_of
from kmsbox.storage.base import (
    JobRow,
    MalformedRow,
    NamespaceKeyRow,
    NamespaceState,
    StateEvent,
    StoredVersion,
)
from kmsbox.store.audit import Event
from kmsbox.store.integrity import Seals
from kmsbox.store.io import Op, Ports
from kmsbox.store.jobs import JobReport, Progress
from kmsbox.store.keyring import ACTIVE, AUDIT_NAMESPACE, COMPROMISED, RETIRED, ROTATING, KeyState
from kmsbox.store.names import validate_namespace
from kmsbox.store.runtime import StoreRuntime

__all__ = ["KeyEdit", "KeyMaintenance"]

#: Namespace-key versions per KEK batch call (rewrap and migration).
_KEK_BATCH = 1000
_MAX_BATCH = 100_000
_PAGE = 500


def resume_after(exc: MalformedRow, after: object) -> tuple[Any, Any]:
    """Where a walk goes on after the malformed row ``exc`` (exactly that row skipped)."""
    if exc.position is None or exc.position == after:
        raise exc  # nothing to step past: report the error rather than loop
    return exc.position


class VersionWalk:
    """A namespace's stored versions in (name, version) order, a batch at a time (only those
    whose header names ``key_version``, when given). A row changed through the database so
    that it does not decode is stepped past, exactly, and kept in ``malformed``: one such row
    never stops a job or sends it round in circles."""

    def __init__(self, ns: str, size: int, *, key_version: int | None = None, after: tuple[Any, Any] | None = None):
        self.ns = ns
        self.size = size
        self.key_version = key_version
        self.after = after
        self.malformed: list[MalformedRow] = []
        self._step = size

    def next(self, io: Ports) -> Op[list[StoredVersion]]:
        """The next batch (empty at the end)."""
        while True:
            after, step = self.after, self._step

            def body(t: Ports, after: Any = after, step: int = step) -> Op[list[StoredVersion]]:
                batch: list[StoredVersion] = yield t.tx.versions(self.ns, after, step, key_version=self.key_version)
                return batch

            try:
                batch: list[StoredVersion] = yield io.transact(False, body, read=True)
            except MalformedRow as exc:
                if self._step > 1:
                    self._step = 1  # one row at a time up to the malformed one, so no good row is skipped
                    continue
                self.after = resume_after(exc, self.after)
                self.malformed.append(exc)
                self._step = self.size
                continue
            if batch:
                self.after = (batch[-1].name, batch[-1].version)
            return batch


@dataclass
class KeyEdit:
    """A change of a namespace's key state: rows to write (with all their wraps), versions to
    delete, the audit event's detail, and what the change returns."""

    upsert: list[NamespaceKeyRow] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    result: Any = None


class KeyMaintenance:
    """The key lifecycle operations of a store."""

    def __init__(self, rt: StoreRuntime) -> None:
        self.rt = rt

    # --- shared steps ---------------------------------------------------------------------------

    def batch_size(self, batch_size: int | None) -> int:
        """The store's batch size, or a caller's: an int from 1 to 100,000 (memory stays bounded)."""
        if batch_size is None:
            return self.rt.settings.batch_size
        if type(batch_size) is not int or not 1 <= batch_size <= _MAX_BATCH:
            raise ValueError(f"batch_size must be an integer from 1 to {_MAX_BATCH}")
        return batch_size

    def targets(self, io: Ports, namespace: str | None, *, include_audit: bool = False) -> Op[list[str]]:
        """One namespace (NamespaceNotFound if it does not exist), or every namespace (and
        the audit key's, if asked).

        Only existence is checked here, as for every namespace: whether its key state can be
        trusted is for each job to find out (diagnose reports it, the other jobs refuse)."""
        if namespace is not None:
            ns = validate_namespace(namespace)

            def exists(t: Ports) -> Op[bool]:
                state: NamespaceState | None = yield t.tx.namespace_state(ns)
                return state is not None

            if not (yield io.transact(False, exists, read=True)):
                raise NamespaceNotFound(f"namespace {ns!r} does not exist")
            return [ns]
        names: list[str] = []
        after: str | None = None
        while True:

            def body(t: Ports, after: str | None = after) -> Op[list[str]]:
                page: list[str] = yield t.tx.namespaces(after, _PAGE)
                return page

            page: list[str] = yield io.transact(False, body, read=True)
            names += page
            if len(page) < _PAGE:
                break
            after = page[-1]
        return [n for n in names if include_audit or n != AUDIT_NAMESPACE]

    def state(self, io: Ports, ns: str) -> Op[KeyState]:
        """A namespace's key state, read and verified now (NamespaceNotFound if none)."""
        state = yield from self.rt.keyring.state(io, ns, fresh=True)
        if state is None:
            raise NamespaceNotFound(f"namespace {ns!r} does not exist")
        return state

    def counts(self, io: Ports, ns: str) -> Op[dict[int, int]]:
        """Secret versions per namespace-key version, by envelope header."""

        def body(t: Ports) -> Op[dict[int, int]]:
            counts: dict[int, int] = yield t.tx.versions_per_key(ns)
            return counts

        counts: dict[int, int] = yield io.transact(False, body, read=True)
        return counts

    def change_keys(
        self,
        io: Ports,
        ns: str,
        action: str,
        edit: Callable[[Ports, KeyState], Op[KeyEdit | None]],
        *,
        actor: str | None = None,
        request: Mapping[str, str] | None = None,
    ) -> Op[Any]:
        """Change a namespace's key state in one transaction that holds it exclusively: the
        state is read again and verified, ``edit`` decides (None: nothing to do), and the new
        state is sealed, stored and audited with its generation and seal."""
        rt = self.rt
        who, req = rt.who(actor, request)

        def body(t: Ports) -> Op[Any]:
            state: NamespaceState | None = yield t.tx.namespace_state(ns, change=True)
            if state is None:
                raise NamespaceNotFound(f"namespace {ns!r} does not exist")
            rows: list[NamespaceKeyRow] = yield t.tx.namespace_keys(ns)
            last: StateEvent | None = yield t.tx.last_state(ns, None)
            current = rt.keyring.check(state, rows, last)
            change = yield from edit(t, current)
            if change is None:
                return None
            changed = {r.version: r for r in change.upsert}
            rows = [changed.pop(r.version, r) for r in rows if r.version not in change.delete]
            rows += list(changed.values())
            generation = state.generation + 1
            sealed = NamespaceState(
                ns, generation, state.created_at, rt.seals.key_state(ns, generation, state.created_at, rows)
            )
            yield t.tx.save_namespace_keys(sealed, change.upsert, change.delete)
            yield from rt.audit.append(
                t,
                [
                    Event(
                        action,
                        namespace=ns,
                        actor=who,
                        context=req,
                        detail=change.detail,
                        row_version=generation,
                        state=sealed.seal,
                    )
                ],
            )
            return change.result

        try:
            result = yield io.transact(True, body)
        finally:
            rt.keyring.forget(ns)
        return result

    def replace_wraps(
        self, io: Ports, ns: str, decide: Callable[[list[NamespaceKeyRow]], list[NamespaceKeyRow]]
    ) -> Op[int]:
        """Change wraps only (no key-state change): holds the state exclusively, reads the rows
        again, and stores the rows ``decide`` returns with their new wraps; the count."""
        rt = self.rt

        def body(t: Ports) -> Op[int]:
            state: NamespaceState | None = yield t.tx.namespace_state(ns, change=True)
            if state is None:
                return 0
            rows: list[NamespaceKeyRow] = yield t.tx.namespace_keys(ns)
            last: StateEvent | None = yield t.tx.last_state(ns, None)
            rt.keyring.check(state, rows, last)
            changed = decide(rows)
            if changed:
                yield t.tx.save_namespace_keys(state, changed, [])
            return len(changed)

        try:
            count: int = yield io.transact(True, body)
        finally:
            rt.keyring.forget(ns)
        return count

    def audit_job(self, io: Ports, action: str, namespace: str | None, detail: Mapping[str, Any]) -> Op[None]:
        """Record a job that changed no key state (one event in its own transaction)."""
        who, req = self.rt.who(None, None)
        shown = None if namespace == AUDIT_NAMESPACE else namespace

        def body(t: Ports) -> Op[None]:
            yield from self.rt.audit.append(
                t, [Event(action, namespace=shown, actor=who, context=req, detail=dict(detail))]
            )

        yield io.transact(True, body)

    # --- KEK rotation: rewrap namespace keys ------------------------------------------------------

    def rewrap_namespace_keys(
        self,
        io: Ports,
        namespace: str | None,
        *,
        dry_run: bool = False,
        force: bool = False,
        progress: Progress | None = None,
    ) -> Op[JobReport]:
        """Rewrap every namespace key under each configured KEK's current primary version (see
        ``SecretStore.rewrap_namespace_keys``)."""
        report = JobReport("rewrap-namespace-keys", namespace, dry_run=dry_run)
        targets = yield from self.targets(io, namespace, include_audit=namespace is None)
        group: list[NamespaceKeyRow] = []
        for index, ns in enumerate(targets):
            state = yield from self.state(io, ns)
            group += [r for r in state.rows if r.status != RETIRED or r.wraps]
            # Namespaces are gathered into groups so that one batch call per KEK covers many
            # of them, while memory stays bounded by the group size.
            if len(group) >= _KEK_BATCH or index == len(targets) - 1:
                yield from self._rewrap_group(io, group, report, force=force, dry_run=dry_run)
                group = []
            if progress:
                progress(index + 1, len(targets))
        if not dry_run:
            yield from self.audit_job(
                io,
                "rewrap",
                namespace,
                {"job": "namespace-keys", "rewrapped": report.processed, "kek_calls": report.kek_calls},
            )
        return report.finish()

    def _rewrap_group(
        self, io: Ports, rows: list[NamespaceKeyRow], report: JobReport, *, force: bool, dry_run: bool
    ) -> Op[None]:
        """Per KEK: one batch rewrap of the stale wraps and one batch wrap of the missing ones,
        then one transaction per namespace (each wrap replaced only if it is still the one
        read, so a concurrent change is never overwritten)."""
        keyring = self.rt.keyring
        for kek in keyring.keks:
            primary = yield io.kek(kek).primary_version()
            stale: list[tuple[NamespaceKeyRow, WrappedKey]] = []
            missing: list[NamespaceKeyRow] = []
            for row in rows:
                wrap = next((w for w in row.wraps if w.kek_uri == kek.uri), None)
                if wrap is None:
                    missing.append(row)
                elif force or wrap.key_version != primary:
                    stale.append((row, wrap))
                else:
                    report.skipped += 1
            report.remaining += len(stale) + len(missing)
            if dry_run or not (stale or missing):
                continue
            new_wraps: list[tuple[NamespaceKeyRow, WrappedKey | None, WrappedKey]] = []
            if stale:
                items = [(w, fmt.namespace_key_context(r.namespace, r.version)) for r, w in stale]
                report.kek_calls += 1
                try:
                    rewrapped: list[WrappedKey] = yield io.kek(kek).rewrap_many(items)
                    new_wraps += [(r, old, new) for (r, old), new in zip(stale, rewrapped, strict=True)]
                except (KeyUnavailable, IntegrityError):
                    # A wrap under a lost KEK version must not block the others: unwrap each
                    # through any KEK that can and wrap it anew below.
                    missing = [r for r, _ in stale] + missing
            if missing:
                keys: list[bytes] = []
                opened: list[NamespaceKeyRow] = []
                for row in missing:
                    report.kek_calls += 1
                    try:
                        keys.append((yield from keyring.unwrap_bytes(io, row)))
                        opened.append(row)
                    except KeyUnavailable:
                        report.details.setdefault("unavailable", []).append(f"{row.namespace} v{row.version}")
                if opened:
                    contexts = [fmt.namespace_key_context(r.namespace, r.version) for r in opened]
                    wrapped: list[WrappedKey] = yield io.kek(kek).wrap_many(list(zip(keys, contexts, strict=True)))
                    report.kek_calls += 1
                    for row, new in zip(opened, wrapped, strict=True):
                        old = next((w for w in row.wraps if w.kek_uri == kek.uri), None)
                        new_wraps.append((row, old, new))
            stored = yield from self._store_wraps(io, new_wraps)
            report.processed += stored
            report.remaining -= stored
            report.batches += 1

    def _store_wraps(
        self, io: Ports, new_wraps: list[tuple[NamespaceKeyRow, WrappedKey | None, WrappedKey]]
    ) -> Op[int]:
        """Store new wraps per namespace; each replaces the wrap it was made from (or fills a
        gap) only if that is still what is stored."""
        by_ns: dict[str, list[tuple[NamespaceKeyRow, WrappedKey | None, WrappedKey]]] = {}
        for item in new_wraps:
            by_ns.setdefault(item[0].namespace, []).append(item)
        stored = 0
        for ns in sorted(by_ns):
            wanted = {(row.version, new.kek_uri): (old, new) for row, old, new in by_ns[ns]}

            def decide(
                rows: list[NamespaceKeyRow], wanted: dict[tuple[int, str], Any] = wanted
            ) -> list[NamespaceKeyRow]:
                changed: list[NamespaceKeyRow] = []
                for row in rows:
                    touched = False
                    for (version, uri), (old, new) in wanted.items():
                        if version != row.version:
                            continue
                        current = next((w for w in row.wraps if w.kek_uri == uri), None)
                        if current != old:
                            continue  # changed since it was read: leave it
                        row.wraps = [w for w in row.wraps if w.kek_uri != uri] + [new]
                        touched = True
                    if touched:
                        changed.append(row)
                return changed

            stored += yield from self.replace_wraps(io, ns, decide)
        return stored

    # --- namespace-key rotation -----------------------------------------------------------------

    def rotate_namespace_key(
        self, io: Ports, namespace: str, *, dry_run: bool = False, create: bool = False
    ) -> Op[int]:
        """Make a new active namespace-key version; the old active one becomes ``rotating``.

        Returns the new version (with ``dry_run``, the version it would create).
        NamespaceNotFound for a namespace that does not exist, unless ``create`` (then its
        first key, version 1, is made). ConflictError if another rotation committed first.
        """
        ns = validate_namespace(namespace)
        state = yield from self.rt.keyring.state(io, ns, fresh=True)
        if state is None:
            if not create:
                raise NamespaceNotFound(f"namespace {ns!r} does not exist: pass create=True to make it")
            if dry_run:
                return 1
            made = yield from self.rt.keyring.create(io, ns)
            return made.newest()
        version = state.newest() + 1
        if dry_run:
            return version
        key = random_key()
        wraps = yield from self.rt.keyring.wrap_all(io, ns, version, key)

        def edit(t: Ports, current: KeyState) -> Op[KeyEdit | None]:
            if current.newest() >= version:
                raise ConflictError(f"namespace {ns!r} was rotated concurrently; run the command again")
            yield from ()
            now = time.time()
            upsert = [_with(r, ROTATING, now) for r in current.rows if r.status == ACTIVE]
            upsert.append(NamespaceKeyRow(ns, version, ACTIVE, now, now, wraps))
            return KeyEdit(upsert, [], {"new_version": version}, version)

        yield from self.change_keys(io, ns, "rotate", edit)
        self.rt.keyring.cache.put((ns, version), Aead(key))
        return version

    # --- DEK rewrap ------------------------------------------------------------------------------

    def rewrap_deks(
        self,
        io: Ports,
        namespace: str,
        *,
        dry_run: bool = False,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Op[JobReport]:
        """Rewrap the DEKs under ``rotating`` namespace-key versions to the active one (see
        ``SecretStore.rewrap_deks``)."""
        ns = validate_namespace(namespace)
        size = self.batch_size(batch_size)
        report = JobReport("rewrap-deks", ns, dry_run=dry_run)
        state = yield from self.state(io, ns)
        counts = yield from self.counts(io, ns)
        sources = [r for r in state.rows if r.status == ROTATING]
        total = sum(counts.get(r.version, 0) for r in sources)
        report.remaining = total
        if dry_run or not sources:
            return report.finish()
        target = state.active()
        if target is None:
            raise KeyUnavailable(f"namespace {ns!r} has no active key: rotate one in first")
        new_key = yield from self.rt.keyring.key(io, ns, target.version, target)
        for source in sources:
            try:
                old_key = yield from self.rt.keyring.key(io, ns, source.version, source)
            except KeyUnavailable as exc:
                report.details.setdefault("unavailable", []).append(f"v{source.version}: {exc}")
                continue
            moved = yield from self._rewrap_source(
                io, ns, source.version, old_key, target.version, new_key, state, size, report, total, progress
            )
            if moved is None:
                # The key state changed under the job (a rotation or a compromise): start
                # over against the new state; what moved stays moved.
                return (yield from self._restart(io, ns, report, batch_size, progress))
        report.details["retired"] = yield from self.retire_unreferenced(io, ns)
        return report.finish()

    def _restart(
        self, io: Ports, ns: str, report: JobReport, batch_size: int | None, progress: Progress | None
    ) -> Op[JobReport]:
        again = yield from self.rewrap_deks(io, ns, batch_size=batch_size, progress=progress)
        report.add(again)
        report.details.update(again.details)
        return report.finish()

    def _rewrap_source(
        self,
        io: Ports,
        ns: str,
        source: int,
        old_key: Aead,
        target: int,
        new_key: Aead,
        state: KeyState,
        size: int,
        report: JobReport,
        total: int,
        progress: Progress | None,
    ) -> Op[int | None]:
        walk = VersionWalk(ns, size, key_version=source)
        who, req = self.rt.who(None, None)
        moved_this_pass = 0
        while True:
            batch = yield from walk.next(io)
            _note_malformed(report, walk)
            if not batch:
                # One more pass from the start catches a version a writer committed under the
                # old key behind the cursor (it began before the rotation).
                if walk.after is None or not moved_this_pass:
                    return report.processed
                walk.after, moved_this_pass = None, 0
                continue
            updates: list[tuple[StoredVersion, bytes]] = []
            for v in batch:
                try:
                    updates.append((v, rewrap_secret(v.blob, old_key, new_key, target, ns, v.name, v.version)))
                except IntegrityError:
                    report.details.setdefault("corrupt", []).append(f"{v.name} v{v.version}")

            def write(t: Ports, updates: list[tuple[StoredVersion, bytes]] = updates) -> Op[int | None]:
                held: NamespaceState | None = yield t.tx.namespace_state(ns)
                if held is None or held.seal != state.state.seal:
                    return None
                moved = 0
                for v, blob in updates:
                    moved += bool((yield t.tx.replace_envelope(ns, v.name, v.version, blob, source)))
                yield from self.rt.audit.append(
                    t,
                    [
                        Event(
                            "rewrap",
                            namespace=ns,
                            actor=who,
                            context=req,
                            detail={"from_version": source, "to_version": target, "count": moved},
                        )
                    ],
                )
                return moved

            moved = yield io.transact(True, write)
            if moved is None:
                return None
            moved_this_pass += moved
            report.processed += moved
            report.remaining = max(0, report.remaining - moved)
            report.batches += 1
            if progress:
                progress(report.processed, total)

    def retire_unreferenced(self, io: Ports, ns: str) -> Op[list[int]]:
        """Mark ``rotating`` versions that no envelope names any more ``retired``."""

        def edit(t: Ports, current: KeyState) -> Op[KeyEdit | None]:
            counts: dict[int, int] = yield t.tx.versions_per_key(ns)
            now = time.time()
            retired = [r for r in current.rows if r.status == ROTATING and counts.get(r.version, 0) == 0]
            if not retired:
                return None
            versions = [r.version for r in retired]
            return KeyEdit([_with(r, RETIRED, now) for r in retired], [], {"retired": versions}, versions)

        retired = yield from self.change_keys(io, ns, "retire", edit)
        return retired or []

    # --- re-encryption -------------------------------------------------------------------------

    def reencrypt(
        self,
        io: Ports,
        namespace: str,
        *,
        dry_run: bool = False,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Op[JobReport]:
        """Give every secret version of ``namespace`` a fresh DEK and a new ciphertext under
        the active namespace key. Resumable: a checkpoint is committed with each batch."""
        rt = self.rt
        ns = validate_namespace(namespace)
        size = self.batch_size(batch_size)
        report = JobReport("reencrypt", ns, dry_run=dry_run)
        state = yield from self.state(io, ns)
        job_id = f"reencrypt:{ns}"

        def read_job(t: Ports) -> Op[tuple[dict[int, int], JobRow | bool | None]]:
            counts: dict[int, int] = yield t.tx.versions_per_key(ns)
            try:
                job: JobRow | None = yield t.tx.get_job(job_id)
            except MalformedRow:
                return counts, False
            return counts, job

        counts, job = yield io.transact(False, read_job, read=True)
        total = sum(counts.values())
        report.remaining = total
        if dry_run:
            return report.finish()
        target = state.active()
        if target is None:
            raise KeyUnavailable(f"namespace {ns!r} has no active key: rotate one in first")
        new_key = yield from rt.keyring.key(io, ns, target.version, target)
        started = time.time()
        after: tuple[Any, Any] | None = None
        if job is not None:
            resume = _reencrypt_checkpoint(rt.seals, job_id, target.version, None if job is False else job.state)
            if isinstance(resume, str):
                # Starting over is safe, only slower: nothing is lost by re-encrypting twice.
                report.details["checkpoint_discarded"] = resume
            else:
                after, started = resume
                report.details["resumed_after"] = list(after) if after else None
        walk = VersionWalk(ns, size, after=after)
        who, req = rt.who(None, None)
        while True:
            batch = yield from walk.next(io)
            _note_malformed(report, walk)
            if not batch:
                break
            updates: list[tuple[StoredVersion, int, bytes]] = []
            for v in batch:
                try:
                    header = v.namespace_key_version
                except IntegrityError:
                    report.details.setdefault("corrupt", []).append(f"{v.name} v{v.version}")
                    continue
                if v.created_at >= started and header == target.version:
                    report.skipped += 1  # written after the job began: already fresh
                    continue
                try:
                    key = yield from rt.keyring.key(io, ns, header)  # IntegrityError: a version never made
                    payload = open_secret(v.blob, _only(key), ns, v.name, v.version)
                except IntegrityError:
                    report.details.setdefault("corrupt", []).append(f"{v.name} v{v.version}")
                    continue
                updates.append((v, header, seal_secret(new_key, target.version, ns, v.name, v.version, payload)))
                del payload
            last = (batch[-1].name, batch[-1].version)

            def write(
                t: Ports, updates: list[tuple[StoredVersion, int, bytes]] = updates, last: tuple[str, int] = last
            ) -> Op[tuple[int, tuple[str, int]] | None]:
                held: NamespaceState | None = yield t.tx.namespace_state(ns)
                if held is None or held.seal != state.state.seal:
                    return None
                moved = 0
                checkpoint = last
                for v, header, blob in updates:
                    if (yield t.tx.replace_envelope(ns, v.name, v.version, blob, header)):
                        moved += 1
                    elif checkpoint == last:
                        # Changed under us (a concurrent rewrap): resume just before it so the
                        # next batch re-reads and re-encrypts it.
                        checkpoint = (v.name, v.version - 1)
                state_text = _reencrypt_state(rt.seals, job_id, target.version, checkpoint, started)
                yield t.tx.put_job(JobRow(job_id, "reencrypt", state_text, time.time()))
                yield from rt.audit.append(
                    t,
                    [
                        Event(
                            "reencrypt",
                            namespace=ns,
                            actor=who,
                            context=req,
                            detail={"count": moved, "to_version": target.version},
                        )
                    ],
                )
                return moved, checkpoint

            written = yield io.transact(True, write)
            if written is None:
                # The key state changed under the job: resume from the checkpoint against it.
                again = yield from self.reencrypt(io, ns, batch_size=batch_size, progress=progress)
                report.add(again)
                report.details.update(again.details)
                return report.finish()
            moved, walk.after = written
            report.processed += moved
            report.batches += 1
            report.remaining = max(0, total - report.processed - report.skipped)
            if progress:
                progress(report.processed + report.skipped, total)

        def finish(t: Ports) -> Op[None]:
            yield t.tx.delete_job(job_id)

        yield io.transact(True, finish)
        report.details["retired"] = yield from self.retire_unreferenced(io, ns)
        report.remaining = 0
        return report.finish()

    # --- compromise ------------------------------------------------------------------------------

    def mark_compromised(self, io: Ports, namespace: str, version: int, *, rotate: bool = True) -> Op[int | None]:
        """Mark a namespace-key version compromised: it never wraps anything new (see
        ``SecretStore.mark_compromised``)."""
        ns = validate_namespace(namespace)
        check_count(version, "namespace-key version")
        state = yield from self.state(io, ns)
        row = state.row(version)
        if row is None:
            raise ValueError(f"namespace {ns!r} has no key version {version}")
        new_version = state.newest() + 1
        # The replacement key is made before the transaction so that marking and rotating
        # commit together: never a moment with no active key.
        new_key = random_key() if row.status == ACTIVE and rotate else None
        wraps = (yield from self.rt.keyring.wrap_all(io, ns, new_version, new_key)) if new_key is not None else []

        def edit(t: Ports, current: KeyState) -> Op[KeyEdit | None]:
            yield from ()
            target = current.row(version)
            if target is None:
                raise ValueError(f"namespace {ns!r} has no key version {version}")
            if new_key is not None and current.newest() >= new_version:
                raise ConflictError(f"namespace {ns!r} was rotated concurrently; run the command again")
            now = time.time()
            upsert = [_with(target, COMPROMISED, now)]
            detail: dict[str, Any] = {"version": version}
            if new_key is not None and target.status == ACTIVE:
                upsert.append(NamespaceKeyRow(ns, new_version, ACTIVE, now, now, wraps))
                detail["new_version"] = new_version
                return KeyEdit(upsert, [], detail, new_version)
            return KeyEdit(upsert, [], detail, None)

        result: int | None = yield from self.change_keys(io, ns, "compromise", edit)
        if result is not None and new_key is not None:
            self.rt.keyring.cache.put((ns, result), Aead(new_key))
        return result

    def cleanup_retired_keys(
        self,
        io: Ports,
        older_than: _dt.timedelta | float,
        *,
        namespace: str | None = None,
        dry_run: bool = False,
    ) -> Op[JobReport]:
        """Delete retired (and compromised) key versions no envelope names, retired for longer
        than ``older_than`` (see ``SecretStore.cleanup_retired_keys``).

        An envelope header is authenticated only when it is used, so before a version is
        deleted every envelope of the namespace is checked: one whose DEK does not open under
        the key its header names (its header was changed through the database, or it is
        corrupt) keeps every candidate version it might need (see :meth:`hidden_references`).
        """
        seconds = seconds_of(older_than, "older_than", allow_zero=True)
        report = JobReport("cleanup-retired-keys", namespace, dry_run=dry_run)
        cutoff = time.time() - seconds
        refused: list[dict[str, Any]] = []
        deleted: list[dict[str, Any]] = []
        targets = yield from self.targets(io, namespace)
        for ns in targets:

            def decide(
                current: KeyState, counts: dict[int, int], hidden: dict[int, int] | None, ns: str = ns
            ) -> tuple[list[int], list[dict[str, Any]]]:
                """Candidates (by header counts alone when ``hidden`` is None) and versions kept."""
                doomed: list[int] = []
                kept: list[dict[str, Any]] = []
                for row in current.rows:
                    if row.status not in (RETIRED, COMPROMISED) or row.updated_at > cutoff:
                        continue
                    refs = counts.get(row.version, 0)
                    unchecked = hidden is not None and row.version not in hidden
                    hides = 0 if hidden is None else hidden.get(row.version, 0)
                    if refs or hides:
                        entry = {"namespace": ns, "version": row.version, "references": refs}
                        if hides:
                            entry["unauthenticated_envelopes"] = hides
                        kept.append(entry)
                    elif not unchecked:  # a candidate that appeared after the check waits for the next run
                        doomed.append(row.version)
                return doomed, kept

            state = yield from self.state(io, ns)
            counts = yield from self.counts(io, ns)
            candidates, kept = decide(state, counts, None)
            if not candidates:
                refused += kept
                continue
            hidden = yield from self.hidden_references(io, ns, state, candidates)
            if dry_run:
                doomed, kept = decide(state, counts, hidden)
                refused += kept
                deleted += [{"namespace": ns, "version": v} for v in doomed]
                continue

            def edit(t: Ports, current: KeyState, ns: str = ns, hidden: dict[int, int] = hidden) -> Op[KeyEdit | None]:
                counts: dict[int, int] = yield t.tx.versions_per_key(ns)
                doomed, kept = decide(current, counts, hidden, ns)
                refused.extend(kept)  # noqa: B023 (runs within this iteration)
                if not doomed:
                    return None
                return KeyEdit([], doomed, {"deleted_versions": doomed}, doomed)

            gone = yield from self.change_keys(io, ns, "retire", edit)
            deleted += [{"namespace": ns, "version": v} for v in gone or []]
        if dry_run:
            report.remaining = len(deleted)
            report.details = {"would_delete": deleted, "refused": refused}
        else:
            report.processed = len(deleted)
            report.details = {"deleted": deleted, "refused": refused}
        report.skipped = len(refused)
        return report.finish()

    def hidden_references(self, io: Ports, ns: str, state: KeyState, candidates: list[int]) -> Op[dict[int, int]]:
        """Per candidate version (each present, 0 when none): the envelopes of ``ns`` that may
        need it though their header does not name it.

        ``versions_per_key`` counts envelopes by a header anyone with database access can
        rewrite; the AEAD binds the header's key version to the wrapped DEK, so an envelope
        whose DEK opens under the key its header names needs no other key. Any other one
        (rewritten header, corrupt or malformed row) counts for each candidate whose key
        opens its DEK, and for each candidate that cannot be unwrapped or tried.
        """
        keys: dict[int, Aead | None] = {}
        for row in state.rows:
            try:
                keys[row.version] = yield from self.rt.keyring.key(io, ns, row.version, row)
            except KeyUnavailable:
                keys[row.version] = None
        found = dict.fromkeys(candidates, 0)
        walk = VersionWalk(ns, self.rt.settings.batch_size)
        while True:
            batch = yield from walk.next(io)
            for _ in walk.malformed:  # a row that does not decode may need any of them
                for c in candidates:
                    found[c] += 1
            walk.malformed.clear()
            if not batch:
                return found
            for v in batch:
                try:
                    env: fmt.SecretEnvelope | None = fmt.parse_secret(v.blob)
                except IntegrityError:
                    env = None
                if env is not None and _dek_opens(keys.get(env.namespace_key_version), v, env, None):
                    continue
                for c in candidates:
                    if env is None or keys.get(c) is None or _dek_opens(keys[c], v, env, c):
                        found[c] += 1

    # --- several KEKs: migration -----------------------------------------------------------------

    def migrate_kek(
        self,
        io: Ports,
        to: str | KekProvider,
        *,
        drop_old: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> Op[JobReport]:
        """Wrap every namespace key under the KEK ``to``, optionally dropping every other KEK's
        wraps afterwards (see ``SecretStore.migrate_kek``)."""
        target = open_kek(to) if isinstance(to, str) else to
        keyring = self.rt.keyring
        report = JobReport("kek-migrate", None, dry_run=dry_run)
        report.details["to"] = target.uri
        try:
            targets = yield from self.targets(io, None, include_audit=True)
            group: list[NamespaceKeyRow] = []
            for index, ns in enumerate(targets):
                state = yield from self.state(io, ns)
                need = [r for r in state.rows if not any(w.kek_uri == target.uri for w in r.wraps)]
                report.skipped += len(state.rows) - len(need)
                report.remaining += len(need)
                group += need
                # One batch wrap per group of namespaces; memory stays bounded by the group.
                if not dry_run and group and (len(group) >= _KEK_BATCH or index == len(targets) - 1):
                    keys = []
                    for row in group:
                        keys.append((yield from keyring.unwrap_bytes(io, row)))
                    report.kek_calls += len(group)
                    wrapped: list[WrappedKey] = yield io.kek(target).wrap_many(
                        [
                            (k, fmt.namespace_key_context(r.namespace, r.version))
                            for k, r in zip(keys, group, strict=True)
                        ]
                    )
                    report.kek_calls += 1
                    stored = yield from self._store_wraps(
                        io, [(r, None, w) for r, w in zip(group, wrapped, strict=True)]
                    )
                    report.processed += stored
                    report.remaining -= stored
                    report.batches += 1
                    group = []
                if progress:
                    progress(index + 1, len(targets))
            if dry_run:
                report.details["would_drop"] = drop_old
                return report.finish()
            if drop_old:
                report.details["dropped_wraps"] = yield from self._drop_other_wraps(io, target, targets, report)
            dropped = sorted({k.uri for k in keyring.keks} - {target.uri}) if drop_old else []
            yield from self.audit_job(
                io,
                "migrate",
                None,
                {"to": target.uri, "wrapped": report.processed, "drop_old": drop_old, "dropped": dropped},
            )
            return report.finish()
        finally:
            if isinstance(to, str) and target not in keyring.keks:
                target.close()

    def _drop_other_wraps(self, io: Ports, target: KekProvider, targets: list[str], report: JobReport) -> Op[int]:
        # Prove every key has a new wrap that opens before deleting any old one.
        checks: list[tuple[WrappedKey, dict[str, str]]] = []
        for index, ns in enumerate(targets):
            state = yield from self.state(io, ns)
            for row in state.rows:
                mine = next((w for w in row.wraps if w.kek_uri == target.uri), None)
                if mine is None:
                    raise KeyUnavailable(
                        f"namespace key {ns!r} v{row.version} has no wrap under {target.uri}; not dropping"
                    )
                checks.append((mine, fmt.namespace_key_context(row.namespace, row.version)))
            if checks and (len(checks) >= _KEK_BATCH or index == len(targets) - 1):
                yield io.kek(target).unwrap_many(checks)
                report.kek_calls += 1
                checks = []
        dropped = 0
        for ns in targets:
            removed: dict[int, int] = {}

            def decide(
                rows: list[NamespaceKeyRow], ns: str = ns, removed: dict[int, int] = removed
            ) -> list[NamespaceKeyRow]:
                removed.clear()  # the transaction may run again after a lost race
                changed = []
                for row in rows:
                    if not any(w.kek_uri == target.uri for w in row.wraps):
                        # Rotated in since the check: never delete a key's only usable wrap.
                        raise KeyUnavailable(
                            f"namespace key {ns!r} v{row.version} has no wrap under {target.uri}; not dropping"
                        )
                    if len(row.wraps) > 1:
                        removed[row.version] = len(row.wraps) - 1
                        row.wraps = [w for w in row.wraps if w.kek_uri == target.uri]
                        changed.append(row)
                return changed

            yield from self.replace_wraps(io, ns, decide)
            dropped += sum(removed.values())
        return dropped

    # --- status --------------------------------------------------------------------------------

    def status(self, io: Ports, namespace: str | None = None) -> Op[dict[str, Any]]:
        """Active key versions, secrets per namespace-key and KEK version, retired and
        compromised keys, and pending work, per namespace. Reads no value."""
        keks = []
        primaries: dict[str, str] = {}
        for k in self.rt.keyring.keks:
            primary: str = yield io.kek(k).primary_version()
            described: dict[str, str] = yield io.kek(k).describe()
            primaries[k.uri] = primary
            keks.append({"uri": k.uri, "primary_version": primary, **described})
        out: dict[str, Any] = {"keks": keks, "namespaces": {}, "jobs": []}

        def jobs_body(t: Ports) -> Op[list[JobRow]]:
            jobs: list[JobRow] = yield t.tx.list_jobs()
            return jobs

        jobs: list[JobRow] = yield io.transact(False, jobs_body, read=True)
        out["jobs"] = [{"job": j.job_id, "kind": j.kind, "updated_at": j.updated_at} for j in jobs]
        targets = yield from self.targets(io, namespace, include_audit=namespace is None)
        for ns in targets:
            try:
                state = yield from self.state(io, ns)
            except IntegrityError as exc:
                out["namespaces"][ns] = {"error": str(exc), "pending": [f"{exc} (kmsbox diagnose)"]}
                continue
            counts = yield from self.counts(io, ns)
            out["namespaces"][ns] = _namespace_status(state, counts, primaries)
        return out


def _namespace_status(state: KeyState, counts: dict[int, int], primaries: dict[str, str]) -> dict[str, Any]:
    rows = state.rows
    ns = state.namespace
    per_kek: dict[str, int] = {}
    pending: list[str] = []
    for row in rows:
        for w in row.wraps:
            label = f"{w.kek_uri}#{w.key_version}"
            per_kek[label] = per_kek.get(label, 0) + counts.get(row.version, 0)
            if w.kek_uri in primaries and w.key_version != primaries[w.kek_uri]:
                pending.append(
                    f"v{row.version}: wrap under {w.kek_uri} is at {w.key_version}, primary is "
                    f"{primaries[w.kek_uri]} (kmsbox rewrap-namespace-keys)"
                )
        for uri in primaries:
            if not any(w.kek_uri == uri for w in row.wraps):
                pending.append(
                    f"v{row.version}: no wrap under configured KEK {uri} (if that KEK is new: kmsbox "
                    "rewrap-namespace-keys; if the store was migrated away from it: stop configuring it)"
                )
        refs = counts.get(row.version, 0)
        if row.status == ROTATING and refs:
            pending.append(
                f"v{row.version}: {refs} secret versions still under a rotating key (kmsbox rewrap-deks {ns})"
            )
        if row.status == COMPROMISED and refs:
            pending.append(f"v{row.version}: {refs} secret versions under a compromised key (kmsbox reencrypt {ns})")
    return {
        "active_versions": [r.version for r in rows if r.status == ACTIVE],
        "keys": [
            {
                "version": r.version,
                "status": r.status,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
                "secret_versions": counts.get(r.version, 0),
                "wraps": [{"kek_uri": w.kek_uri, "kek_version": w.key_version} for w in r.wraps],
            }
            for r in rows
        ],
        "generation": state.state.generation,
        "secret_versions_per_namespace_key": {str(v): c for v, c in sorted(counts.items())},
        "secret_versions_per_kek_version": per_kek,
        "retired": [r.version for r in rows if r.status == RETIRED],
        "compromised": [r.version for r in rows if r.status == COMPROMISED],
        "pending": pending,
    }


def _note_malformed(report: JobReport, walk: VersionWalk) -> None:
    """List the rows a walk stepped past in the job's report (once each)."""
    if not walk.malformed:
        return
    shown = report.details.setdefault("malformed", [])
    for exc in walk.malformed:
        where = f"{exc.name} v{exc.version}" if exc.name is not None else str(exc.position)
        if where not in shown:
            shown.append(where)
    walk.malformed.clear()


def _dek_opens(key: Aead | None, v: StoredVersion, env: fmt.SecretEnvelope, as_version: int | None) -> bool:
    """Whether ``env``'s DEK authenticates under ``key`` as namespace-key version
    ``as_version`` (None: the version its header names). The DEK itself is dropped."""
    if key is None:
        return False
    version = env.namespace_key_version if as_version is None else as_version
    try:
        key.open(env.dek_nonce, env.wrapped_dek, fmt.dek_aad(v.namespace, v.name, v.version, version))
    except IntegrityError:
        return False
    return True


def _only(key: Aead) -> Callable[[int], Aead]:
    """A namespace-key lookup that knows one key (the one the header named)."""

    def lookup(version: int) -> Aead:
        return key

    return lookup


def _with(row: NamespaceKeyRow, status: str, now: float) -> NamespaceKeyRow:
    return NamespaceKeyRow(
        row.namespace, row.version, status, row.created_at, max(now, row.updated_at), list(row.wraps)
    )


def _reencrypt_state(seals: Seals, job_id: str, to_version: int, after: tuple[str, int], started: float) -> str:
    """A re-encryption's checkpoint, sealed: the database holds it but cannot move it."""
    fields = (to_version, after[0], after[1], started)
    seal = seals.job(job_id, "reencrypt", fields)
    data = {"to_version": to_version, "name": after[0], "version": after[1], "started": started, "seal": seal.hex()}
    return json.dumps(data)


def _reencrypt_checkpoint(
    seals: Seals, job_id: str, to_version: int, state: str | None
) -> tuple[tuple[str, int], float] | str:
    """The cursor and start time of an interrupted re-encryption, or why it is not resumed:
    ``malformed``, ``unauthenticated`` (not sealed by kmsbox for this job: an edited or
    copied row would make the job skip secrets) or ``stale`` (it re-encrypted to a key
    version that is no longer the active one)."""
    if state is None:
        return "malformed"
    try:
        data = json.loads(state)
        name, version, started = data["name"], data["version"], data["started"]
        target, seal = data["to_version"], bytes.fromhex(data["seal"])
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError):
        return "malformed"
    if (
        type(name) is not str
        or type(version) is not int
        or type(target) is not int
        or type(started) is not float
        or not 0 <= version <= MAX_COUNT
    ):
        return "malformed"
    if not seals.job_ok(job_id, "reencrypt", (target, name, version, started), seal):
        return "unauthenticated"
    if target != to_version:
        return "stale"
    return (name, version), started
