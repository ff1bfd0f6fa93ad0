"""Diagnosis and repair of key drift and tampering. Neither ever decrypts or shows a value.

``diagnose`` unwraps namespace keys and DEKs (never value ciphertexts) to find what can
no longer be opened, and checks every row's seal; ``repair`` fixes what it can without
loss and, only with an explicit confirmation, deletes what is unrecoverable, after
checking again, under the row's hold, that it still cannot be opened: no repair ever
deletes a secret that can be read. Every suggested action is a real command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kmsbox import format as fmt
from kmsbox._crypto import Aead
from kmsbox.errors import IntegrityError, KeyUnavailable, ProviderError
from kmsbox.storage.base import (
    MalformedRow,
    NamespaceKeyRow,
    NamespaceState,
    SecretFilter,
    SecretRow,
    StateEvent,
    StoredVersion,
)
from kmsbox.store.audit import Event
from kmsbox.store.io import Op, Ports
from kmsbox.store.keyring import ACTIVE, AUDIT_NAMESPACE, COMPROMISED, RETIRED, ROTATING, KeyState
from kmsbox.store.maintenance import KeyMaintenance, VersionWalk, resume_after
from kmsbox.store.runtime import StoreRuntime

__all__ = ["SEVERITIES", "Diagnosis", "DiagnosisReport", "Issue", "RepairReport"]

SEVERITIES = ("critical", "warning", "info")
_RESTORE = "restore the row from a backup"


@dataclass(frozen=True)
class Issue:
    """One finding: a code, a severity, a message and the suggested repair action."""

    code: str
    severity: str
    message: str
    action: str
    namespace: str | None = None
    key_version: int | None = None
    secret: str | None = None
    secret_version: int | None = None
    destructive: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            k: getattr(self, k)
            for k in (
                "code",
                "severity",
                "message",
                "action",
                "namespace",
                "key_version",
                "secret",
                "secret_version",
                "destructive",
            )
        }


@dataclass
class DiagnosisReport:
    """Every issue found, worst first."""

    issues: list[Issue] = field(default_factory=list)
    namespaces_checked: int = 0
    secret_versions_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing critical or warning-level was found."""
        return not any(i.severity in ("critical", "warning") for i in self.issues)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "ok": self.ok,
            "namespaces_checked": self.namespaces_checked,
            "secret_versions_checked": self.secret_versions_checked,
            "issues": [i.to_dict() for i in self.issues],
        }


@dataclass
class RepairReport:
    """What repair did (or would do, in a dry run) and what remains."""

    dry_run: bool
    done: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    needs_confirmation: list[str] = field(default_factory=list)
    remaining: list[Issue] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "dry_run": self.dry_run,
            "done": self.done,
            "planned": self.planned,
            "needs_confirmation": self.needs_confirmation,
            "remaining": [i.to_dict() for i in self.remaining],
        }


def _malformed_issue(ns: str, exc: MalformedRow, *, version_row: bool) -> Issue:
    """A secret's row (``secret_malformed``) or one version row (``version_malformed``)
    changed through the database to values kmsbox never writes."""
    code = "version_malformed" if version_row else "secret_malformed"
    if exc.name is None:
        return Issue(code, "critical", f"namespace {ns!r}: {exc}", _RESTORE, ns)
    if not version_row:
        action = f"{_RESTORE}, or kmsbox repair --apply --confirm-delete to delete the secret"
    elif exc.version is not None:
        action = (
            f"{_RESTORE}, or kmsbox repair --apply --confirm-delete to delete that version "
            "(the whole secret if it is the current one)"
        )
    else:
        action = f"{_RESTORE}, or delete the secret (kmsbox delete {ns} {exc.name})"
    where = f" v{exc.version}" if version_row and exc.version is not None else ""
    return Issue(
        code,
        "critical",
        f"secret {ns}/{exc.name}{where}: its stored row holds values kmsbox never writes (changed through the database)",
        action,
        ns,
        secret=exc.name,
        secret_version=exc.version if version_row else None,
        destructive=not version_row or exc.version is not None,
    )


class Diagnosis:
    """Diagnose and repair for a store."""

    def __init__(self, rt: StoreRuntime, maintenance: KeyMaintenance) -> None:
        self.rt = rt
        self.maintenance = maintenance

    # --- diagnosis -------------------------------------------------------------------------------

    def _key_issues(
        self, io: Ports, ns: str, rows: list[NamespaceKeyRow], counts: dict[int, int], forged: set[int]
    ) -> Op[tuple[list[Issue], dict[int, Aead]]]:
        issues: list[Issue] = []
        usable: dict[int, Aead] = {}
        keyring = self.rt.keyring
        configured = {k.uri: k for k in keyring.keks}
        primaries: dict[str, str] = {}
        for uri, kek in configured.items():
            primaries[uri] = yield io.kek(kek).primary_version()
        shown = None if ns == AUDIT_NAMESPACE else ns
        if ns != AUDIT_NAMESPACE and rows and not any(r.status == ACTIVE for r in rows):
            issues.append(
                Issue(
                    "no_active_key",
                    "critical",
                    f"namespace {ns!r} has no active key; writes fail",
                    f"kmsbox rotate {ns}",
                    shown,
                )
            )
        for row in rows:
            refs = counts.get(row.version, 0)
            try:
                usable[row.version] = yield from keyring.key(io, ns, row.version, row)
            except KeyUnavailable as exc:
                issues.append(
                    Issue(
                        "namespace_key_unavailable",
                        "critical",
                        f"namespace key {ns!r} v{row.version} cannot be unwrapped by any configured KEK ({exc}); "
                        f"{refs} secret versions depend on it",
                        "restore the KEK version, or kmsbox repair --apply --confirm-delete to delete what depends on it",
                        shown,
                        row.version,
                        destructive=True,
                    )
                )
            for wrapped in row.wraps:
                wrapper = configured.get(wrapped.kek_uri)
                if wrapper is None:
                    issues.append(
                        Issue(
                            "unknown_kek_wrap",
                            "info",
                            f"namespace key {ns!r} v{row.version} has a wrap under a KEK this store was not opened "
                            f"with: {wrapped.kek_uri}",
                            "none needed; kmsbox kek migrate --to A_CONFIGURED_KEK --drop-old removes it",
                            shown,
                            row.version,
                        )
                    )
                    continue
                try:
                    available = yield io.kek(wrapper).version_available(wrapped.key_version)
                except ProviderError:
                    available = None
                if available is False:
                    issues.append(
                        Issue(
                            "kek_version_gone",
                            "critical" if row.version not in usable else "warning",
                            f"KEK {wrapper.uri} no longer has version {wrapped.key_version}, which wraps namespace key "
                            f"{ns!r} v{row.version}",
                            "kmsbox rewrap-namespace-keys (if another wrap still opens)",
                            shown,
                            row.version,
                        )
                    )
                elif wrapped.key_version != primaries[wrapper.uri]:
                    issues.append(
                        Issue(
                            "stale_kek_version",
                            "info",
                            f"namespace key {ns!r} v{row.version} is wrapped under {wrapper.uri} version "
                            f"{wrapped.key_version}, not the primary {primaries[wrapper.uri]}",
                            "kmsbox rewrap-namespace-keys",
                            shown,
                            row.version,
                        )
                    )
            for uri in configured:
                if not any(w.kek_uri == uri for w in row.wraps):
                    issues.append(
                        Issue(
                            "missing_wrap",
                            "warning",
                            f"namespace key {ns!r} v{row.version} has no wrap under configured KEK {uri}",
                            f"if {uri} is new: kmsbox rewrap-namespace-keys; if the store was migrated away from it "
                            "(kmsbox kek migrate --drop-old): stop configuring it",
                            shown,
                            row.version,
                        )
                    )
            if ns == AUDIT_NAMESPACE:
                continue
            if row.status == ROTATING and refs == 0:
                issues.append(
                    Issue(
                        "unused_key",
                        "info",
                        f"namespace key {ns!r} v{row.version} is rotating but nothing uses it",
                        f"kmsbox rewrap-deks {ns} (marks it retired)",
                        shown,
                        row.version,
                    )
                )
            elif row.status == RETIRED and refs == 0:
                issues.append(
                    Issue(
                        "retired_key",
                        "info",
                        f"namespace key {ns!r} v{row.version} is retired and unused",
                        f"kmsbox cleanup-keys --namespace {ns}",
                        shown,
                        row.version,
                    )
                )
            elif row.status == ROTATING and refs:
                issues.append(
                    Issue(
                        "pending_rewrap",
                        "info",
                        f"{refs} secret versions of {ns!r} are still under rotating key v{row.version}",
                        f"kmsbox rewrap-deks {ns}",
                        shown,
                        row.version,
                    )
                )
            elif row.status == COMPROMISED and refs:
                issues.append(
                    Issue(
                        "compromised_key_in_use",
                        "critical",
                        f"{refs} secret versions of {ns!r} are under compromised key v{row.version}",
                        f"kmsbox reencrypt {ns}",
                        shown,
                        row.version,
                    )
                )
        for version, refs in counts.items():
            # A version the namespace never had is named only by envelopes changed through the
            # database: each is reported as corrupt, not as a key to delete secrets for.
            if version and refs and version not in forged and not any(r.version == version for r in rows):
                issues.append(
                    Issue(
                        "missing_namespace_key",
                        "critical",
                        f"{refs} secret versions of {ns!r} name namespace key v{version} in their envelope, which "
                        "does not exist",
                        "kmsbox repair --apply --confirm-delete to delete them",
                        shown,
                        version,
                        destructive=True,
                    )
                )
        return issues, usable

    def diagnose(self, io: Ports, namespace: str | None = None, *, check_secrets: bool = True) -> Op[DiagnosisReport]:
        """Report key drift and tampering without decrypting any value (see ``SecretStore.diagnose``)."""
        report = DiagnosisReport()
        targets = yield from self.maintenance.targets(io, namespace, include_audit=namespace is None)
        for ns in targets:
            report.namespaces_checked += 1
            shown = None if ns == AUDIT_NAMESPACE else ns

            def load(
                t: Ports, ns: str = ns
            ) -> Op[tuple[NamespaceState | None, list[NamespaceKeyRow], StateEvent | None, dict[int, int]]]:
                state: NamespaceState | None = yield t.tx.namespace_state(ns)
                rows: list[NamespaceKeyRow] = yield t.tx.namespace_keys(ns)
                last: StateEvent | None = yield t.tx.last_state(ns, None)
                counts: dict[int, int] = yield t.tx.versions_per_key(ns)
                return state, rows, last, counts

            try:
                state, rows, last, counts = yield io.transact(False, load, read=True)
            except MalformedRow as exc:
                report.issues.append(
                    Issue(
                        "key_row_malformed",
                        "critical",
                        f"namespace {ns!r}: {exc}; its secrets cannot be opened",
                        "restore the namespace-key rows from a backup",
                        shown,
                    )
                )
                continue
            if state is not None:
                try:
                    self.rt.keyring.check(state, rows, last)
                except IntegrityError as exc:
                    report.issues.append(
                        Issue(
                            "key_state_altered",
                            "critical",
                            f"{exc}; no secret is written under it until it is restored",
                            "restore the namespace-key rows from a backup (kmsbox audit verify shows what changed)",
                            shown,
                        )
                    )
            had = None if state is None else KeyState(state, rows, 0.0)
            forged = {v for v in counts if v and had is not None and had.never_had(v)}
            issues, usable = yield from self._key_issues(io, ns, rows, counts, forged)
            report.issues += issues
            if not check_secrets or ns == AUDIT_NAMESPACE:
                continue
            report.issues += yield from self._secret_rows(io, ns)
            report.issues += yield from self._envelopes(io, ns, usable, forged, report)
        order = {s: i for i, s in enumerate(SEVERITIES)}
        report.issues.sort(key=lambda i: (order.get(i.severity, 9), i.namespace or "", i.code))
        yield from self.maintenance.audit_job(
            io,
            "diagnose",
            namespace,
            {"issues": len(report.issues), "critical": sum(i.severity == "critical" for i in report.issues)},
        )
        return report

    def _secret_rows(self, io: Ports, ns: str) -> Op[list[Issue]]:
        """The secrets of ``ns`` whose row does not decode or does not match its seal."""
        found: list[Issue] = []
        after: Any = None
        size = self.rt.settings.batch_size
        while True:

            def body(t: Ports, after: Any = after) -> Op[list[SecretRow]]:
                page: list[SecretRow] = yield t.tx.list_secrets(ns, SecretFilter(), after, size)
                return page

            try:
                page: list[SecretRow] = yield io.transact(False, body, read=True)
            except MalformedRow as exc:
                resume = resume_after(exc, (after or (ns, ""))[1])
                after = (ns, resume[0])
                found.append(_malformed_issue(ns, exc, version_row=False))
                continue
            for row in page:
                if not self.rt.seals.secret_ok(row):
                    found.append(
                        Issue(
                            "secret_altered",
                            "critical",
                            f"secret {ns}/{row.name}: its row (status, expiry, version or metadata) was changed "
                            "through the database; reads of it fail",
                            f"{_RESTORE} (kmsbox audit verify shows the last state recorded), or kmsbox delete {ns} {row.name}",
                            ns,
                            secret=row.name,
                        )
                    )
            if len(page) < size:
                return found
            after = (ns, page[-1].name)

    def _envelopes(
        self, io: Ports, ns: str, usable: dict[int, Aead], forged: set[int], report: DiagnosisReport
    ) -> Op[list[Issue]]:
        """Every version whose DEK cannot be unwrapped (its envelope named a key that is gone,
        or was corrupted or moved, or names a key version the namespace never had)."""
        issues: list[Issue] = []
        walk = VersionWalk(ns, self.rt.settings.batch_size)
        while True:
            batch = yield from walk.next(io)
            issues += [_malformed_issue(ns, exc, version_row=True) for exc in walk.malformed]
            walk.malformed.clear()
            if not batch:
                return issues
            for v in batch:
                report.secret_versions_checked += 1
                problem = _unopenable(v, usable, forged)
                if problem == "key":
                    issues.append(
                        Issue(
                            "secret_key_unavailable",
                            "critical",
                            f"secret {ns}/{v.name} v{v.version}: its namespace key v{_header(v)} cannot be unwrapped",
                            "restore the KEK version, or kmsbox repair --apply --confirm-delete",
                            ns,
                            _header(v),
                            v.name,
                            v.version,
                            destructive=True,
                        )
                    )
                elif problem == "corrupt":
                    issues.append(
                        Issue(
                            "secret_corrupt",
                            "critical",
                            f"secret {ns}/{v.name} v{v.version}: its stored envelope is corrupt, was moved, or its "
                            "row's columns disagree with it",
                            f"{_RESTORE}, or kmsbox repair --apply --confirm-delete",
                            ns,
                            _header(v),
                            v.name,
                            v.version,
                            destructive=True,
                        )
                    )

    # --- repair ----------------------------------------------------------------------------------

    def repair(
        self, io: Ports, namespace: str | None = None, *, dry_run: bool = True, confirm_delete: bool = False
    ) -> Op[RepairReport]:
        """Fix what ``diagnose`` finds. Dry run by default (see ``SecretStore.repair``)."""
        diagnosis = yield from self.diagnose(io, namespace)
        report = RepairReport(dry_run=dry_run)
        codes = {i.code for i in diagnosis.issues}
        namespaces = sorted({i.namespace for i in diagnosis.issues if i.namespace})
        maintenance = self.maintenance
        # A missing wrap is left to the operator: it may be a KEK migrated away from on purpose.
        if codes & {"stale_kek_version", "kek_version_gone"}:
            report.planned.append("rewrap namespace keys under the configured KEKs' primary versions")
            if not dry_run:
                job = yield from maintenance.rewrap_namespace_keys(io, namespace)
                report.done.append(f"rewrapped {job.processed} namespace-key wraps")
        for ns in namespaces:
            ns_codes = {i.code for i in diagnosis.issues if i.namespace == ns}
            steps: list[tuple[str, str, Callable[[], Op[str]]]] = []

            def rewrap(ns: str = ns) -> Op[str]:
                job = yield from maintenance.rewrap_deks(io, ns)
                return f"rewrapped {job.processed} DEKs in {ns}"

            def reencrypt(ns: str = ns) -> Op[str]:
                job = yield from maintenance.reencrypt(io, ns)
                return f"re-encrypted {job.processed} secret versions in {ns}"

            if ns_codes & {"pending_rewrap", "unused_key"}:
                steps.append((f"rewrap DEKs of {ns}", f"rewrap DEKs of {ns} to its active key", rewrap))
            if "compromised_key_in_use" in ns_codes:
                steps.append((f"re-encrypt {ns}", f"re-encrypt {ns} off its compromised key", reencrypt))
            for what, plan, step in steps:
                report.planned.append(plan)
                if dry_run:
                    continue
                try:
                    report.done.append((yield from step()))
                except KeyUnavailable as exc:
                    # A key no KEK can open must not block the rest (nor the confirmed deletion).
                    report.done.append(f"skipped {what}: {exc}")
        doomed = [i for i in diagnosis.issues if i.destructive and i.secret is not None]
        dead_keys = [
            i
            for i in diagnosis.issues
            if i.code in ("namespace_key_unavailable", "missing_namespace_key") and i.namespace
        ]
        for issue in doomed:
            report.needs_confirmation.append(
                f"delete malformed secret {issue.namespace}/{issue.secret} (every version)"
                if issue.secret_version is None
                else f"delete unrecoverable secret {issue.namespace}/{issue.secret} v{issue.secret_version}"
            )
        for issue in dead_keys:
            if issue.code == "namespace_key_unavailable":
                report.needs_confirmation.append(
                    f"delete namespace key {issue.namespace} v{issue.key_version} (no KEK can unwrap it)"
                )
        if not dry_run and confirm_delete and (doomed or dead_keys):
            report.done += yield from self._delete_unrecoverable(io, doomed, dead_keys)
            report.needs_confirmation = []
        yield from maintenance.audit_job(
            io,
            "repair",
            namespace,
            {
                "dry_run": dry_run,
                "confirm_delete": confirm_delete,
                "done": len(report.done),
                "planned": len(report.planned),
            },
        )
        if not dry_run:
            after = yield from self.diagnose(io, namespace)
            report.remaining = [i for i in after.issues if i.severity != "info"]
        else:
            report.remaining = [i for i in diagnosis.issues if i.severity != "info"]
        return report

    def _delete_unrecoverable(self, io: Ports, doomed: list[Issue], dead_keys: list[Issue]) -> Op[list[str]]:
        done: list[str] = []
        rt = self.rt
        who, req = rt.who(None, None)
        usable: dict[str, dict[int, Aead]] = {}
        for issue in doomed:
            ns, name, version = issue.namespace, issue.secret, issue.secret_version
            assert ns is not None and name is not None
            if ns not in usable:
                usable[ns] = yield from self._usable_keys(io, ns)
            keys = usable[ns]

            def body(
                t: Ports,
                ns: str = ns,
                name: str = name,
                version: int | None = version,
                code: str = issue.code,
                keys: dict[int, Aead] = keys,
            ) -> Op[str]:
                try:
                    row: SecretRow | None = yield t.tx.get_secret(ns, name)
                except MalformedRow:
                    row = None
                    malformed = True
                else:
                    malformed = False
                    if row is None:
                        return f"{ns}/{name} already gone"
                    if code == "secret_malformed":
                        return f"kept {ns}/{name}: its row reads again"
                    if version is not None:
                        try:
                            found = yield t.tx.read_secret(ns, name, version)
                        except MalformedRow:
                            found = None
                        stored = None if found is None else found[1]
                        # Checked again under the hold: a version that opens now is never deleted.
                        if stored is not None and _unopenable(stored, keys) is None:
                            return f"kept {ns}/{name} v{version}: it can be opened"
                last: StateEvent | None = yield t.tx.last_state(ns, name)
                if row is None or version is None or row.version == version:
                    count = yield t.tx.delete_secret(ns, name)
                    why = (
                        "its stored row was malformed"
                        if malformed or version is None
                        else "its current version was unrecoverable"
                    )
                    what = f"deleted secret {ns}/{name} ({count} versions; {why})"
                    row_version = max(row.row_version if row else 0, last.row_version if last else 0) + 1
                    # The highest version known, so that a new life of the name starts above it.
                    known = (version, row.version if row else None, last.secret_version if last else None)
                    recorded = max((v for v in known if v is not None), default=None)
                else:
                    yield t.tx.delete_version(ns, name, version)
                    what = f"deleted unrecoverable version {ns}/{name} v{version}"
                    row_version, recorded = None, version
                yield from rt.audit.append(
                    t,
                    [
                        Event(
                            "repair",
                            namespace=ns,
                            name=name,
                            secret_version=recorded,
                            actor=who,
                            context=req,
                            detail={"deleted": True, "whole_secret": row_version is not None},
                            row_version=row_version,
                        )
                    ],
                )
                return what

            done.append((yield io.transact(True, body)))
        for issue in dead_keys:
            ns, version = issue.namespace, issue.key_version
            assert ns is not None and version is not None
            if issue.code != "namespace_key_unavailable":
                continue

            def edit(t: Ports, current: Any, ns: str = ns, version: int = version) -> Op[Any]:
                from kmsbox.store.maintenance import KeyEdit

                counts: dict[int, int] = yield t.tx.versions_per_key(ns)
                if counts.get(version, 0) or current.row(version) is None:
                    return None
                return KeyEdit([], [version], {"deleted_key_version": version}, version)

            gone = yield from self.maintenance.change_keys(io, ns, "repair", edit, actor=who, request=req)
            done.append(
                f"deleted namespace key {ns} v{version}"
                if gone is not None
                else f"kept namespace key {ns} v{version}: secrets still name it"
            )
        return done

    def _usable_keys(self, io: Ports, ns: str) -> Op[dict[int, Aead]]:
        state = yield from self.rt.keyring.state(io, ns, fresh=True)
        keys: dict[int, Aead] = {}
        for row in [] if state is None else state.rows:
            try:
                keys[row.version] = yield from self.rt.keyring.key(io, ns, row.version, row)
            except (KeyUnavailable, IntegrityError):
                continue
        return keys


def _header(version: StoredVersion) -> int | None:
    try:
        return version.namespace_key_version
    except IntegrityError:
        return None


def _unopenable(
    v: StoredVersion, usable: dict[int, Aead], forged: frozenset[int] | set[int] = frozenset()
) -> str | None:
    """Why a version's DEK cannot be unwrapped (``key`` or ``corrupt``), or None if it can.
    ``forged``: key versions the namespace never had (an envelope naming one is corrupt)."""
    try:
        env = fmt.parse_secret(v.blob)
    except IntegrityError:
        return "corrupt"
    key = usable.get(env.namespace_key_version)
    if key is None:
        return "corrupt" if env.namespace_key_version in forged else "key"
    try:
        key.open(env.dek_nonce, env.wrapped_dek, fmt.dek_aad(v.namespace, v.name, v.version, env.namespace_key_version))
    except IntegrityError:
        return "corrupt"
    return None
