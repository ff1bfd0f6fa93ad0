"""Key lifecycle: KEK rewrap, namespace-key rotation, DEK rewrap, re-encryption,
compromise, retirement, multi-KEK migration and status.

Every long job runs in committed batches. Each batch is idempotent and guarded
by compare-and-set, so a job killed at any point (SIGKILL included) is resumed
by running it again, and reads and writes keep working while it runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from kmsbox import format as fmt
from kmsbox._crypto import Aead, random_key
from kmsbox.errors import ConflictError, IntegrityError, KeyUnavailable
from kmsbox.kek import KekProvider, WrappedKey, open_kek
from kmsbox.keys import open_secret, rewrap_secret, seal_secret
from kmsbox.limits import MAX_COUNT, check_count, seconds_of
from kmsbox.storage.base import JobRow, MalformedRow, NamespaceKeyRow, SecretVersionRow, Transaction
from kmsbox.store.core import StoreCore
from kmsbox.store.jobs import JobReport, Progress
from kmsbox.store.keyring import ACTIVE, AUDIT_NAMESPACE, COMPROMISED, RETIRED, ROTATING
from kmsbox.store.names import validate_namespace

if TYPE_CHECKING:
    pass

__all__ = ["LifecycleMixin"]

T = TypeVar("T")
#: Namespace-key versions per KEK batch call (rewrap and migration).
_KEK_BATCH = 1000
_MAX_BATCH = 100_000


class LifecycleMixin(StoreCore):
    """Key maintenance for :class:`~kmsbox.store.service.SecretStore`."""

    def _audit_job(
        self, action: str, namespace: str | None, detail: Mapping[str, Any], result: str = "success"
    ) -> None:
        who, req = self._who(None, None)
        self._write(
            lambda tx: self.audit.append(
                tx,
                action=action,
                result=result,
                namespace=None if namespace == AUDIT_NAMESPACE else namespace,
                actor=who,
                context=req,
                detail=dict(detail),
            )
        )

    # --- KEK rotation: rewrap namespace keys ----------------------------------------------

    def rewrap_namespace_keys(
        self,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        force: bool = False,
        progress: Progress | None = None,
    ) -> JobReport:
        """Rewrap every namespace key under each configured KEK's current primary version.

        Touches no secret row. Costs one KEK call per namespace-key version that
        needs it, batched per namespace where the provider batches. A version with
        no wrap under a configured KEK gets one (unwrapped through another KEK).
        ``force`` rewraps even wraps already at the primary version: for KMSs
        whose rotation keeps the version name (AWS KMS key ARNs), where the KMS's
        own re-encrypt moves a wrap to the newest key material.
        """
        report = JobReport("rewrap-namespace-keys", namespace, dry_run=dry_run)
        targets = self._targets(namespace, include_audit=namespace is None)
        group: list[NamespaceKeyRow] = []
        for index, ns in enumerate(targets):
            group += [r for r in self._keys(ns) if r.status != RETIRED or r.wraps]
            # Namespaces are gathered into groups so that one batch call per KEK
            # covers many of them, while memory stays bounded by the group size.
            if len(group) >= _KEK_BATCH or index == len(targets) - 1:
                self._rewrap_group(group, report, force=force, dry_run=dry_run)
                group = []
            if progress:
                progress(index + 1, len(targets))
        if not dry_run:
            self._audit_job(
                "rewrap",
                namespace,
                {"job": "namespace-keys", "rewrapped": report.processed, "kek_calls": report.kek_calls},
            )
        return report.finish()

    def _rewrap_group(self, rows: list[NamespaceKeyRow], report: JobReport, *, force: bool, dry_run: bool) -> None:
        """Rewrap a group of namespace-key versions: per KEK, one batch rewrap of the
        stale wraps and one batch wrap of the missing ones, then one transaction."""
        for kek in self.keyring.keks:
            primary = kek.primary_version()
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
            new_wraps: list[tuple[NamespaceKeyRow, WrappedKey]] = []
            if stale:
                items = [(w, fmt.namespace_key_context(r.namespace, r.version)) for r, w in stale]
                report.kek_calls += 1
                try:
                    new_wraps += list(zip([r for r, _ in stale], kek.rewrap_many(items), strict=True))
                except (KeyUnavailable, IntegrityError):
                    # A wrap under a lost KEK version must not block the others: unwrap
                    # each through any KEK that can and wrap it anew below.
                    missing = [r for r, _ in stale] + missing
            if missing:
                keys: list[bytes] = []
                opened: list[NamespaceKeyRow] = []
                for row in missing:
                    report.kek_calls += 1
                    try:
                        keys.append(self.keyring.unwrap_bytes(row))
                        opened.append(row)
                    except KeyUnavailable:
                        report.details.setdefault("unavailable", []).append(f"{row.namespace} v{row.version}")
                if opened:
                    contexts = [fmt.namespace_key_context(r.namespace, r.version) for r in opened]
                    wrapped = kek.wrap_many(list(zip(keys, contexts, strict=True)))
                    report.kek_calls += 1
                    new_wraps += list(zip(opened, wrapped, strict=True))
            if not new_wraps:
                continue
            now = time.time()

            def op(
                tx: Transaction, new_wraps: list[tuple[NamespaceKeyRow, WrappedKey]] = new_wraps, now: float = now
            ) -> None:
                for row, wrapped in new_wraps:
                    tx.put_wrap(row.namespace, row.version, wrapped, now)

            self._write(op)
            report.processed += len(new_wraps)
            report.remaining -= len(new_wraps)
            report.batches += 1

    # --- namespace-key rotation --------------------------------------------------------------

    def _rotate_in(
        self, tx: Transaction, ns: str, version: int, wraps: list[WrappedKey], who: str | None, req: dict[str, str]
    ) -> bool:
        """Inside ``tx``: make ``version`` the active key, the active one ``rotating``.

        False (nothing written) if that version exists already: another rotation
        got there first, and these wraps are bound to a version number it took.
        """
        now = time.time()
        current = tx.namespace_keys(ns)
        if any(row.version >= version for row in current):
            return False
        for row in current:
            if row.status == ACTIVE:
                tx.set_namespace_key_status(ns, row.version, ROTATING, now)
        tx.insert_namespace_key(NamespaceKeyRow(ns, version, ACTIVE, now, now, wraps))
        self.audit.append(
            tx, action="rotate", result="success", namespace=ns, actor=who, context=req, detail={"new_version": version}
        )
        return True

    def _batch_size(self, batch_size: int | None) -> int:
        """The store's batch size, or a caller's: an int from 1 to 100,000 (memory stays bounded)."""
        if batch_size is None:
            return self.batch_size
        if type(batch_size) is not int or not 1 <= batch_size <= _MAX_BATCH:
            raise ValueError(f"batch_size must be an integer from 1 to {_MAX_BATCH}")
        return batch_size

    def rotate_namespace_key(self, namespace: str, *, dry_run: bool = False) -> int:
        """Make a new active namespace-key version; the old active one becomes ``rotating``.

        Returns the new version (or, with ``dry_run``, the version it would create).
        Existing DEKs move with :meth:`rewrap_deks`. Raises ConflictError if another
        rotation of the namespace committed first.
        """
        ns = validate_namespace(namespace)
        version = max((r.version for r in self._keys(ns)), default=0) + 1
        if dry_run:
            return version
        key = random_key()
        wraps = self.keyring.wrap_all(ns, version, key)
        who, req = self._who(None, None)
        if not self._write(lambda tx: self._rotate_in(tx, ns, version, wraps, who, req)):
            raise ConflictError(f"namespace {ns!r} was rotated concurrently; run the command again")
        self.keyring.cache.put((ns, version), Aead(key))
        return version

    def rewrap_deks(
        self, namespace: str, *, dry_run: bool = False, batch_size: int | None = None, progress: Progress | None = None
    ) -> JobReport:
        """Rewrap the DEKs under ``rotating`` namespace-key versions to the active one.

        No value ciphertext is rewritten. A version nothing references any more is
        marked ``retired``. Compromised versions are left to :meth:`reencrypt`.
        """
        ns = validate_namespace(namespace)
        size = self._batch_size(batch_size)
        report = JobReport("rewrap-deks", ns, dry_run=dry_run)
        rows = self._keys(ns)
        active = [r for r in rows if r.status == ACTIVE]
        with self.backend.read() as tx:
            counts = tx.count_versions_by_key(ns)
        sources = [r for r in rows if r.status == ROTATING]
        total = sum(counts.get(r.version, 0) for r in sources)
        report.remaining = total
        if dry_run or not sources:
            return report.finish()
        if not active:
            raise KeyUnavailable(f"namespace {ns!r} has no active key: rotate one in first")
        target = active[-1]
        new_key = self.keyring.unwrap_row(target)
        for source in sources:
            old_key = self.keyring.unwrap_row(source)
            after: tuple[str, int] | None = None
            moved_this_pass = 0
            while True:
                with self.backend.read() as tx:
                    batch = tx.versions_under_key(ns, source.version, after, size)
                if not batch:
                    # One more pass from the start catches a version a writer committed
                    # under the old key behind the cursor (it began before the rotation).
                    if after is None or not moved_this_pass:
                        break
                    after, moved_this_pass = None, 0
                    continue
                after = (batch[-1].name, batch[-1].version)
                updates = [
                    (v, rewrap_secret(v.blob, old_key, new_key, target.version, ns, v.name, v.version)) for v in batch
                ]

                def op(
                    tx: Transaction, updates: list[tuple[SecretVersionRow, bytes]] = updates, src: int = source.version
                ) -> int:
                    moved = 0
                    for v, blob in updates:
                        moved += tx.update_version_blob(ns, v.name, v.version, blob, target.version, src)
                    self.audit.append(
                        tx,
                        action="rewrap",
                        result="success",
                        namespace=ns,
                        detail={"from_version": src, "to_version": target.version, "count": moved},
                    )
                    return moved

                moved = self._write(op)
                moved_this_pass += moved
                report.processed += moved
                report.remaining = max(0, report.remaining - moved)
                report.batches += 1
                if progress:
                    progress(report.processed, total)
        report.details["retired"] = self._retire_unreferenced(ns)
        return report.finish()

    def _retire_unreferenced(self, ns: str) -> list[int]:
        retired: list[int] = []

        def op(tx: Transaction) -> None:
            counts = tx.count_versions_by_key(ns)
            now = time.time()
            for row in tx.namespace_keys(ns):
                if row.status == ROTATING and counts.get(row.version, 0) == 0:
                    tx.set_namespace_key_status(ns, row.version, RETIRED, now)
                    self.audit.append(
                        tx, action="retire", result="success", namespace=ns, detail={"version": row.version}
                    )
                    retired.append(row.version)

        self._write(op)
        return retired

    def reencrypt(
        self, namespace: str, *, dry_run: bool = False, batch_size: int | None = None, progress: Progress | None = None
    ) -> JobReport:
        """Give every secret version of ``namespace`` a fresh DEK and a new ciphertext
        under the active namespace key (after a suspected DEK leak or a compromise).

        Resumable: a checkpoint is committed with each batch.
        """
        ns = validate_namespace(namespace)
        size = self._batch_size(batch_size)
        report = JobReport("reencrypt", ns, dry_run=dry_run)
        with self.backend.read() as tx:
            counts = tx.count_versions_by_key(ns)
            try:
                job = tx.get_job(f"reencrypt:{ns}")
                resume = None if job is None else _reencrypt_checkpoint(job.state)
                discard = job is not None and resume is None
            except MalformedRow:
                resume, discard = None, True
        total = sum(counts.values())
        report.remaining = total
        if dry_run:
            return report.finish()
        rows = self._keys(ns)
        active = [r for r in rows if r.status == ACTIVE]
        if not active:
            raise KeyUnavailable(f"namespace {ns!r} has no active key: rotate one in first")
        target = active[-1]
        new_key = self.keyring.unwrap_row(target)
        started = time.time()
        after: tuple[str, int] | None = None
        if discard:
            # Starting over is safe, only slower: nothing is lost by re-encrypting twice.
            report.details["checkpoint_discarded"] = "malformed"
        elif resume is not None:
            after, started = resume
            report.details["resumed_after"] = list(after) if after else None
        while True:
            with self.backend.read() as tx:
                batch = tx.versions_in_namespace(ns, after, size)
                lookup = self.keyring.key_for(tx, ns)
                updates = []
                for v in batch:
                    if v.created_at >= started and v.namespace_key_version == target.version:
                        report.skipped += 1  # written after the job began: already fresh
                        continue
                    payload = open_secret(v.blob, lookup, ns, v.name, v.version)
                    updates.append((v, seal_secret(new_key, target.version, ns, v.name, v.version, payload)))
                    del payload
            if not batch:
                break
            last = (batch[-1].name, batch[-1].version)

            def op(
                tx: Transaction, updates: list[tuple[SecretVersionRow, bytes]] = updates, last: tuple[str, int] = last
            ) -> tuple[int, tuple[str, int]]:
                moved = 0
                checkpoint = last
                for v, blob in updates:
                    if tx.update_version_blob(ns, v.name, v.version, blob, target.version, v.namespace_key_version):
                        moved += 1
                    elif checkpoint == last:
                        # Changed under us (a concurrent rewrap): resume just before it so
                        # the next batch re-reads and re-encrypts it.
                        checkpoint = (v.name, v.version - 1)
                tx.put_job(
                    JobRow(
                        f"reencrypt:{ns}",
                        "reencrypt",
                        json.dumps({"name": checkpoint[0], "version": checkpoint[1], "started": started}),
                        time.time(),
                    )
                )
                self.audit.append(
                    tx,
                    action="reencrypt",
                    result="success",
                    namespace=ns,
                    detail={"count": moved, "to_version": target.version},
                )
                return moved, checkpoint

            moved, last = self._write(op)
            report.processed += moved
            report.batches += 1
            report.remaining = max(0, total - report.processed - report.skipped)
            after = last
            if progress:
                progress(report.processed + report.skipped, total)

        def finish(tx: Transaction) -> list[int]:
            tx.delete_job(f"reencrypt:{ns}")
            counts = tx.count_versions_by_key(ns)
            now = time.time()
            retired = []
            for row in tx.namespace_keys(ns):
                if row.status == ROTATING and counts.get(row.version, 0) == 0:
                    tx.set_namespace_key_status(ns, row.version, RETIRED, now)
                    retired.append(row.version)
            return retired

        report.details["retired"] = self._write(finish)
        report.remaining = 0
        return report.finish()

    def mark_compromised(self, namespace: str, version: int, *, rotate: bool = True) -> int | None:
        """Mark a namespace-key version compromised: it never wraps anything new.

        If it was the active version and ``rotate`` is true, a new version is
        rotated in. Run :meth:`reencrypt` next to move every secret off it.
        Returns the new active version if one was made.
        """
        ns = validate_namespace(namespace)
        check_count(version, "namespace-key version")
        rows = {r.version: r for r in self._keys(ns)}
        if version not in rows:
            raise ValueError(f"namespace {ns!r} has no key version {version}")
        was_active = rows[version].status == ACTIVE
        who, req = self._who(None, None)
        new_version = max(rows) + 1
        # The replacement key is made before the transaction so that marking and
        # rotating commit together: never a moment with no active key.
        new_key = random_key() if was_active and rotate else None
        wraps = self.keyring.wrap_all(ns, new_version, new_key) if new_key is not None else []

        def op(tx: Transaction) -> bool:
            if new_key is not None and not self._rotate_in(tx, ns, new_version, wraps, who, req):
                return False
            tx.set_namespace_key_status(ns, version, COMPROMISED, time.time())
            self.audit.append(
                tx,
                action="compromise",
                result="success",
                namespace=ns,
                actor=who,
                context=req,
                detail={"version": version},
            )
            return True

        if not self._write(op):
            raise ConflictError(f"namespace {ns!r} was rotated concurrently; run the command again")
        if new_key is None:
            return None
        self.keyring.cache.put((ns, new_version), Aead(new_key))
        return new_version

    def cleanup_retired_keys(
        self, older_than: _dt.timedelta | float = 0.0, *, namespace: str | None = None, dry_run: bool = False
    ) -> JobReport:
        """Delete retired (and compromised) key versions that nothing references,
        retired for longer than ``older_than``. A version still referenced is
        refused and listed in ``details['refused']``. ``older_than`` is a timedelta or
        seconds (finite, not negative); ValueError otherwise.
        """
        seconds = seconds_of(older_than, "older_than", allow_zero=True)
        report = JobReport("cleanup-retired-keys", namespace, dry_run=dry_run)
        cutoff = time.time() - seconds
        refused: list[dict[str, Any]] = []
        deleted: list[dict[str, Any]] = []
        for ns in self._targets(namespace):

            def op(tx: Transaction, ns: str = ns) -> None:
                counts = tx.count_versions_by_key(ns)
                for row in tx.namespace_keys(ns):
                    if row.status not in (RETIRED, COMPROMISED) or row.updated_at > cutoff:
                        continue
                    refs = counts.get(row.version, 0)
                    if refs:
                        refused.append({"namespace": ns, "version": row.version, "references": refs})
                        continue
                    deleted.append({"namespace": ns, "version": row.version})
                    if not dry_run:
                        tx.delete_namespace_key(ns, row.version)
                        self.audit.append(
                            tx, action="retire", result="success", namespace=ns, detail={"deleted_version": row.version}
                        )

            self._write(op)
        report.processed = len(deleted)
        report.skipped = len(refused)
        report.details = {"deleted": deleted, "refused": refused}
        return report.finish()

    # --- several KEKs: migration ------------------------------------------------------------

    def migrate_kek(
        self,
        to: str | KekProvider,
        *,
        drop_old: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> JobReport:
        """Wrap every namespace key under the KEK ``to`` (any provider), optionally
        dropping every other KEK's wraps afterwards. No secret is re-encrypted.

        The old wraps are dropped only once every key has a wrap under ``to`` that
        unwraps. Reopen the store with ``to`` as its (first) KEK afterwards.
        """
        target = open_kek(to) if isinstance(to, str) else to
        report = JobReport("kek-migrate", None, dry_run=dry_run)
        report.details["to"] = target.uri
        targets = self._targets(None, include_audit=True)
        group: list[NamespaceKeyRow] = []
        for index, ns in enumerate(targets):
            rows = self._keys(ns)
            need = [r for r in rows if not any(w.kek_uri == target.uri for w in r.wraps)]
            report.skipped += len(rows) - len(need)
            report.remaining += len(need)
            group += need
            # One batch wrap per group of namespaces; memory stays bounded by the group.
            if not dry_run and group and (len(group) >= _KEK_BATCH or index == len(targets) - 1):
                self._wrap_group_under(target, group, report)
                group = []
            if progress:
                progress(index + 1, len(targets))
        if dry_run:
            report.details["would_drop"] = drop_old
            return report.finish()
        if drop_old:
            dropped = 0
            # Prove every key has a new wrap that opens before deleting any old one.
            checks: list[tuple[WrappedKey, dict[str, str]]] = []
            for index, ns in enumerate(targets):
                for row in self._keys(ns):
                    mine = next((w for w in row.wraps if w.kek_uri == target.uri), None)
                    if mine is None:
                        raise KeyUnavailable(
                            f"namespace key {ns!r} v{row.version} has no wrap under {target.uri}; not dropping"
                        )
                    checks.append((mine, fmt.namespace_key_context(row.namespace, row.version)))
                if checks and (len(checks) >= _KEK_BATCH or index == len(targets) - 1):
                    target.unwrap_many(checks)
                    report.kek_calls += 1
                    checks = []
            for ns in targets:

                def drop(tx: Transaction, ns: str = ns) -> int:
                    count = 0
                    for row in tx.namespace_keys(ns):
                        if not any(w.kek_uri == target.uri for w in row.wraps):
                            # Rotated in since the check: never delete a key's only usable wrap.
                            raise KeyUnavailable(
                                f"namespace key {ns!r} v{row.version} has no wrap under {target.uri}; not dropping"
                            )
                        for w in row.wraps:
                            if w.kek_uri != target.uri:
                                tx.delete_wrap(ns, row.version, w.kek_uri)
                                count += 1
                    return count

                dropped += self._write(drop)
            report.details["dropped_wraps"] = dropped
        self._audit_job("migrate", None, {"to": target.uri, "wrapped": report.processed, "drop_old": drop_old})
        if target not in self.keyring.keks and isinstance(to, str):
            target.close()
        return report.finish()

    def _wrap_group_under(self, target: KekProvider, rows: list[NamespaceKeyRow], report: JobReport) -> None:
        """Wrap a group of namespace-key versions under ``target`` (one batch call) and store the wraps."""
        keys = [self.keyring.unwrap_bytes(r) for r in rows]
        report.kek_calls += len(rows)
        wrapped = target.wrap_many(
            [(k, fmt.namespace_key_context(r.namespace, r.version)) for k, r in zip(keys, rows, strict=True)]
        )
        report.kek_calls += 1
        now = time.time()

        def op(tx: Transaction) -> None:
            for row, w in zip(rows, wrapped, strict=True):
                tx.put_wrap(row.namespace, row.version, w, now)

        self._write(op)
        report.processed += len(rows)
        report.remaining -= len(rows)
        report.batches += 1

    # --- status --------------------------------------------------------------------------------

    def status(self, namespace: str | None = None) -> dict[str, Any]:
        """Active key versions, secrets per namespace-key and KEK version, retired and
        compromised keys, and pending work, per namespace. Reads no value."""
        keks = [{"uri": k.uri, "primary_version": k.primary_version(), **k.describe()} for k in self.keyring.keks]
        out: dict[str, Any] = {"keks": keks, "namespaces": {}, "jobs": []}
        with self.backend.read() as tx:
            out["jobs"] = [{"job": j.job_id, "kind": j.kind, "updated_at": j.updated_at} for j in tx.list_jobs()]
        primaries = {k.uri: k.primary_version() for k in self.keyring.keks}
        for ns in self._targets(namespace, include_audit=namespace is None):
            with self.backend.read() as tx:
                rows = tx.namespace_keys(ns)
                counts = tx.count_versions_by_key(ns)
            per_kek: dict[str, int] = {}
            pending: list[str] = []
            for row in rows:
                for w in row.wraps:
                    label = f"{w.kek_uri}#{w.key_version}"
                    per_kek[label] = per_kek.get(label, 0) + counts.get(row.version, 0)
                    if w.kek_uri in primaries and w.key_version != primaries[w.kek_uri]:
                        pending.append(
                            f"v{row.version}: wrap under {w.kek_uri} is at {w.key_version}, primary is {primaries[w.kek_uri]} (rewrap-namespace-keys)"
                        )
                for uri in primaries:
                    if not any(w.kek_uri == uri for w in row.wraps):
                        pending.append(f"v{row.version}: no wrap under configured KEK {uri} (rewrap-namespace-keys)")
                if row.status == ROTATING and counts.get(row.version, 0):
                    pending.append(
                        f"v{row.version}: {counts[row.version]} secret versions still under a rotating key (rewrap-deks)"
                    )
                if row.status == COMPROMISED and counts.get(row.version, 0):
                    pending.append(
                        f"v{row.version}: {counts[row.version]} secret versions under a compromised key (reencrypt)"
                    )
            out["namespaces"][ns] = {
                "active_versions": [r.version for r in rows if r.status == ACTIVE],
                "keys": [
                    {
                        "version": r.version,
                        "status": r.status,
                        "secret_versions": counts.get(r.version, 0),
                        "wraps": [{"kek_uri": w.kek_uri, "kek_version": w.key_version} for w in r.wraps],
                    }
                    for r in rows
                ],
                "secret_versions_per_namespace_key": {str(v): c for v, c in sorted(counts.items())},
                "secret_versions_per_kek_version": per_kek,
                "retired": [r.version for r in rows if r.status == RETIRED],
                "compromised": [r.version for r in rows if r.status == COMPROMISED],
                "pending": pending,
            }
        return out


def _reencrypt_checkpoint(state: str) -> tuple[tuple[str, int] | None, float] | None:
    """The cursor and start time of an interrupted re-encryption; None if the stored checkpoint is malformed."""
    try:
        data = json.loads(state)
        name, version, started = data.get("name"), data.get("version"), float(data["started"])
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError):
        return None
    if name is None:
        return None, started
    if type(name) is not str or type(version) is not int or not 0 <= version <= MAX_COUNT:
        return None
    return (name, version), started
