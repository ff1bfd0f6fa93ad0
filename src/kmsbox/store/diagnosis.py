"""Diagnosis and repair of key drift. Neither ever decrypts or shows a value.

``diagnose`` unwraps namespace keys and DEKs (never value ciphertexts) to find
what can no longer be opened; ``repair`` fixes what it can without loss and,
only with an explicit confirmation, deletes what is unrecoverable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kmsbox import format as fmt
from kmsbox._crypto import Aead
from kmsbox.errors import IntegrityError, KeyUnavailable, ProviderError
from kmsbox.storage.base import MalformedRow, NamespaceKeyRow, Transaction
from kmsbox.store.keyring import ACTIVE, AUDIT_NAMESPACE, COMPROMISED, RETIRED, ROTATING
from kmsbox.store.lifecycle import LifecycleMixin

__all__ = ["DiagnosisMixin", "DiagnosisReport", "Issue", "RepairReport"]

T = TypeVar("T")


def _reads(tx: Transaction, ns: str, name: str, version: int | None) -> bool:
    """Whether a version row decodes now."""
    try:
        tx.get_secret_with_blob(ns, name, version)
    except MalformedRow:
        return False
    return True


def _resume_after(exc: MalformedRow, after: object) -> tuple[Any, Any]:
    """Where a walk goes on after the malformed row ``exc`` (exactly that row skipped)."""
    if exc.position is None or exc.position == after:
        raise exc  # nothing to step past: report the error rather than loop
    return exc.position


def _malformed_issue(ns: str, exc: MalformedRow, *, version_row: bool) -> Issue:
    """A secret's metadata row (``secret_malformed``) or one version row (``version_malformed``)
    changed through the database to values kmsbox never writes."""
    code = "version_malformed" if version_row else "secret_malformed"
    if exc.name is None:
        return Issue(code, "critical", f"namespace {ns!r}: {exc}", "restore the row from a backup", ns)
    if not version_row:
        action = "restore the row from a backup, or repair --confirm-delete to delete the secret"
    elif exc.version is not None:
        action = (
            "restore the row from a backup, or repair --confirm-delete to delete that version "
            "(the whole secret if it is the current one)"
        )
    else:
        action = f"restore the row from a backup, or delete the secret (kmsbox delete {ns} {exc.name})"
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


SEVERITIES = ("critical", "warning", "info")


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


class DiagnosisMixin(LifecycleMixin):
    """Diagnosis and repair for :class:`~kmsbox.store.service.SecretStore`."""

    # --- diagnosis -------------------------------------------------------------------------

    def _key_issues(
        self, ns: str, rows: list[NamespaceKeyRow], counts: dict[int, int]
    ) -> tuple[list[Issue], dict[int, Aead]]:
        issues: list[Issue] = []
        usable: dict[int, Aead] = {}
        configured = {k.uri: k for k in self.keyring.keks}
        shown_ns = None if ns == AUDIT_NAMESPACE else ns
        if ns != AUDIT_NAMESPACE and rows and not any(r.status == ACTIVE for r in rows):
            issues.append(
                Issue(
                    "no_active_key",
                    "critical",
                    f"namespace {ns!r} has no active key; writes fail",
                    "rotate-namespace-key",
                    shown_ns,
                )
            )
        for row in rows:
            refs = counts.get(row.version, 0)
            try:
                usable[row.version] = self.keyring.unwrap_row(row)
            except KeyUnavailable as exc:
                issues.append(
                    Issue(
                        "namespace_key_unavailable",
                        "critical",
                        f"namespace key {ns!r} v{row.version} cannot be unwrapped by any configured KEK ({exc}); {refs} secret versions depend on it",
                        "restore the KEK version, or repair --confirm-delete to delete what depends on it",
                        shown_ns,
                        row.version,
                        destructive=True,
                    )
                )
            for wrapped in row.wraps:
                kek = configured.get(wrapped.kek_uri)
                if kek is None:
                    issues.append(
                        Issue(
                            "unknown_kek_wrap",
                            "info",
                            f"namespace key {ns!r} v{row.version} has a wrap under a KEK this store was not opened with: {wrapped.kek_uri}",
                            "none, or kek migrate --drop-old to remove it",
                            shown_ns,
                            row.version,
                        )
                    )
                    continue
                try:
                    available = kek.version_available(wrapped.key_version)
                except ProviderError:
                    available = None
                if available is False:
                    issues.append(
                        Issue(
                            "kek_version_gone",
                            "critical" if row.version not in usable else "warning",
                            f"KEK {kek.uri} no longer has version {wrapped.key_version}, which wraps namespace key {ns!r} v{row.version}",
                            "rewrap-namespace-keys (if another wrap still opens)",
                            shown_ns,
                            row.version,
                        )
                    )
                elif wrapped.key_version != kek.primary_version():
                    issues.append(
                        Issue(
                            "stale_kek_version",
                            "info",
                            f"namespace key {ns!r} v{row.version} is wrapped under {kek.uri} version {wrapped.key_version}, not the primary {kek.primary_version()}",
                            "rewrap-namespace-keys",
                            shown_ns,
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
                            "rewrap-namespace-keys",
                            shown_ns,
                            row.version,
                        )
                    )
            if ns == AUDIT_NAMESPACE:
                continue
            if row.status in (ROTATING, RETIRED) and refs == 0 and row.status == ROTATING:
                issues.append(
                    Issue(
                        "unused_key",
                        "info",
                        f"namespace key {ns!r} v{row.version} is rotating but nothing uses it",
                        "rewrap-deks (marks it retired)",
                        shown_ns,
                        row.version,
                    )
                )
            elif row.status == RETIRED and refs == 0:
                issues.append(
                    Issue(
                        "retired_key",
                        "info",
                        f"namespace key {ns!r} v{row.version} is retired and unused",
                        "cleanup-retired-keys",
                        shown_ns,
                        row.version,
                    )
                )
            elif row.status == ROTATING and refs:
                issues.append(
                    Issue(
                        "pending_rewrap",
                        "info",
                        f"{refs} secret versions of {ns!r} are still under rotating key v{row.version}",
                        "rewrap-deks",
                        shown_ns,
                        row.version,
                    )
                )
            elif row.status == COMPROMISED and refs:
                issues.append(
                    Issue(
                        "compromised_key_in_use",
                        "critical",
                        f"{refs} secret versions of {ns!r} are under compromised key v{row.version}",
                        "reencrypt",
                        shown_ns,
                        row.version,
                    )
                )
        for version, refs in counts.items():
            if refs and not any(r.version == version for r in rows):
                issues.append(
                    Issue(
                        "missing_namespace_key",
                        "critical",
                        f"{refs} secret versions of {ns!r} reference namespace key v{version}, which does not exist",
                        "repair --confirm-delete to delete them",
                        shown_ns,
                        version,
                        destructive=True,
                    )
                )
        return issues, usable

    def diagnose(self, namespace: str | None = None, *, check_secrets: bool = True) -> DiagnosisReport:
        """Report key drift without decrypting any value.

        Finds namespace keys no KEK can unwrap, KEK versions that are gone, wraps
        missing under a configured KEK, unused keys, compromised keys in use, and
        (with ``check_secrets``) every secret version whose DEK cannot be unwrapped.
        """
        report = DiagnosisReport()
        for ns in self._targets(namespace, include_audit=namespace is None):
            report.namespaces_checked += 1
            try:
                with self.backend.read() as tx:
                    rows = tx.namespace_keys(ns)
                    counts = tx.count_versions_by_key(ns)
            except MalformedRow as exc:
                report.issues.append(
                    Issue(
                        "key_row_malformed",
                        "critical",
                        f"namespace {ns!r}: {exc}; its secrets cannot be opened",
                        "restore the namespace-key rows from a backup",
                        None if ns == AUDIT_NAMESPACE else ns,
                    )
                )
                continue
            issues, usable = self._key_issues(ns, rows, counts)
            report.issues += issues
            if not check_secrets or ns == AUDIT_NAMESPACE:
                continue
            report.issues += self._malformed_secrets(ns)
            after: tuple[Any, Any] | None = None
            step = self.batch_size
            while True:
                try:
                    with self.backend.read() as tx:
                        batch = tx.versions_in_namespace(ns, after, step)
                except MalformedRow as exc:
                    if step > 1:
                        step = 1  # one row at a time up to the malformed one, so no good row is skipped
                        continue
                    after, step = _resume_after(exc, after), self.batch_size
                    report.issues.append(_malformed_issue(ns, exc, version_row=True))
                    continue
                if not batch:
                    break
                for v in batch:
                    report.secret_versions_checked += 1
                    key = usable.get(v.namespace_key_version)
                    if key is None:
                        report.issues.append(
                            Issue(
                                "secret_key_unavailable",
                                "critical",
                                f"secret {ns}/{v.name} v{v.version}: its namespace key v{v.namespace_key_version} cannot be unwrapped",
                                "restore the KEK version, or repair --confirm-delete",
                                ns,
                                v.namespace_key_version,
                                v.name,
                                v.version,
                                destructive=True,
                            )
                        )
                        continue
                    try:
                        env = fmt.parse_secret(v.blob)
                        if env.namespace_key_version != v.namespace_key_version:
                            raise IntegrityError("header and row disagree")
                        key.open(
                            env.dek_nonce,
                            env.wrapped_dek,
                            fmt.dek_aad(ns, v.name, v.version, env.namespace_key_version),
                        )
                    except IntegrityError:
                        report.issues.append(
                            Issue(
                                "secret_corrupt",
                                "critical",
                                f"secret {ns}/{v.name} v{v.version}: its stored envelope is corrupt or was moved",
                                "restore the row from a backup, or repair --confirm-delete",
                                ns,
                                v.namespace_key_version,
                                v.name,
                                v.version,
                                destructive=True,
                            )
                        )
                after = (batch[-1].name, batch[-1].version)
        order = {s: i for i, s in enumerate(SEVERITIES)}
        report.issues.sort(key=lambda i: (order.get(i.severity, 9), i.namespace or "", i.code))
        self._audit_diag(
            "diagnose",
            namespace,
            {"issues": len(report.issues), "critical": sum(i.severity == "critical" for i in report.issues)},
        )
        return report

    def _malformed_secrets(self, ns: str) -> list[Issue]:
        """The secrets of ``ns`` whose metadata row does not decode (one page at a time)."""
        found: list[Issue] = []
        after: Any = None
        while True:
            try:
                with self.backend.read() as tx:
                    page = tx.list_secrets(ns, category=None, label=None, after=after, limit=self.batch_size)
            except MalformedRow as exc:
                after = _resume_after(exc, (after, None))[0]
                found.append(_malformed_issue(ns, exc, version_row=False))
                continue
            if len(page) < self.batch_size:
                return found
            after = page[-1].name

    def _audit_diag(self, action: str, namespace: str | None, detail: dict[str, Any]) -> None:
        who, req = self._who(None, None)
        self._write(
            lambda tx: self.audit.append(
                tx, action=action, result="success", namespace=namespace, actor=who, context=req, detail=detail
            )
        )

    # --- repair -------------------------------------------------------------------------------

    def repair(
        self, namespace: str | None = None, *, dry_run: bool = True, confirm_delete: bool = False
    ) -> RepairReport:
        """Fix what ``diagnose`` finds. Dry run by default.

        Non-destructive steps (rewrap namespace keys, rewrap DEKs, re-encrypt off
        compromised keys, retire unused keys) run when ``dry_run`` is False.
        Destructive steps (delete secret versions or keys that can never be opened
        again) also need ``confirm_delete=True``; when a secret's current version
        is unrecoverable the whole secret is deleted (a later put recreates it).
        """
        diagnosis = self.diagnose(namespace)
        report = RepairReport(dry_run=dry_run)
        codes = {i.code for i in diagnosis.issues}
        namespaces = sorted({i.namespace for i in diagnosis.issues if i.namespace})
        if codes & {"missing_wrap", "stale_kek_version", "kek_version_gone"}:
            report.planned.append("rewrap namespace keys under the configured KEKs")
            if not dry_run:
                job = self.rewrap_namespace_keys(namespace)
                report.done.append(f"rewrapped {job.processed} namespace-key wraps")
        for ns in namespaces:
            ns_codes = {i.code for i in diagnosis.issues if i.namespace == ns}
            steps: list[tuple[str, str, Callable[[], str]]] = []

            def rewrap(ns: str = ns) -> str:
                return f"rewrapped {self.rewrap_deks(ns).processed} DEKs in {ns}"

            def reencrypt(ns: str = ns) -> str:
                return f"re-encrypted {self.reencrypt(ns).processed} secret versions in {ns}"

            if ns_codes & {"pending_rewrap", "unused_key"}:
                steps.append((f"rewrap DEKs of {ns}", f"rewrap DEKs of {ns} to its active key", rewrap))
            if "compromised_key_in_use" in ns_codes:
                steps.append((f"re-encrypt {ns}", f"re-encrypt {ns} off its compromised key", reencrypt))
            for what, plan, step in steps:
                report.planned.append(plan)
                if dry_run:
                    continue
                try:
                    report.done.append(step())
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
            report.needs_confirmation.append(
                f"delete namespace key {issue.namespace} v{issue.key_version} (no KEK can unwrap it)"
            )
        if not dry_run and confirm_delete and (doomed or dead_keys):
            report.done += self._delete_unrecoverable(doomed, dead_keys)
            report.needs_confirmation = []
        self._audit_diag(
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
            after = self.diagnose(namespace)
            report.remaining = [i for i in after.issues if i.severity != "info"]
        else:
            report.remaining = [i for i in diagnosis.issues if i.severity != "info"]
        return report

    def _delete_unrecoverable(self, doomed: list[Issue], dead_keys: list[Issue]) -> list[str]:
        done: list[str] = []
        who, req = self._who(None, None)
        for issue in doomed:
            ns, name, version = issue.namespace, issue.secret, issue.secret_version
            assert ns is not None and name is not None

            def op(
                tx: Transaction, ns: str = ns, name: str = name, version: int | None = version, code: str = issue.code
            ) -> str:
                try:
                    row = tx.get_secret(ns, name, for_update=True)
                except MalformedRow:
                    row = None
                else:
                    if row is None:
                        return f"{ns}/{name} already gone"
                    # Checked again under the lock: a row fixed (or rewritten) since the
                    # diagnosis is kept.
                    if code == "secret_malformed" or (code == "version_malformed" and _reads(tx, ns, name, version)):
                        return f"kept {ns}/{name}: its row reads again"
                if row is None or version is None:
                    count = tx.delete_secret(ns, name)
                    what = f"deleted secret {ns}/{name} ({count} versions; its stored row was malformed)"
                elif row.version == version:
                    count = tx.delete_secret(ns, name)
                    what = f"deleted secret {ns}/{name} ({count} versions; its current version was unrecoverable)"
                else:
                    tx.delete_version(ns, name, version)
                    what = f"deleted unrecoverable version {ns}/{name} v{version}"
                self.audit.append(
                    tx,
                    action="repair",
                    result="success",
                    namespace=ns,
                    name=name,
                    secret_version=version,
                    actor=who,
                    context=req,
                    detail={"deleted": True},
                )
                return what

            done.append(self._write(op))
        for issue in dead_keys:
            ns, version = issue.namespace, issue.key_version
            assert ns is not None and version is not None

            def drop(tx: Transaction, ns: str = ns, version: int = version) -> str:
                if tx.count_versions_by_key(ns).get(version, 0):
                    return f"kept namespace key {ns} v{version}: secrets still reference it"
                tx.delete_namespace_key(ns, version)
                self.audit.append(
                    tx,
                    action="repair",
                    result="success",
                    namespace=ns,
                    actor=who,
                    context=req,
                    detail={"deleted_key_version": version},
                )
                return f"deleted namespace key {ns} v{version}"

            done.append(self._write(drop))
        return done
