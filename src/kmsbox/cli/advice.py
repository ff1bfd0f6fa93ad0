"""What ``status`` and ``diagnose`` suggest about KEK wraps, in the light of the last migration.

The store sees a wrap missing under a configured KEK, or a wrap under a KEK that is not
configured, but not why. Both happen half-way through moving to another KMS, and the
generic advice would then undo the operator's last step: after ``kek migrate --to NEW
--drop-old`` with both KEKs still configured, "rewrap-namespace-keys" would put the old
wraps back; after ``kek migrate --to NEW`` with only the old KEK configured, dropping
"unknown" wraps would remove the new copies. The audit log records each migration, so
the advice here follows it: one action, and always the next step, never a step back.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from kmsbox.cli.output import fmt_time
from kmsbox.storage.base import AuditFilter
from kmsbox.store.diagnosis import DiagnosisReport, Issue

__all__ = ["Migration", "WrapAdvice", "advise_diagnosis", "advise_issues", "advise_status", "last_migration"]

_MISSING = "no wrap under configured KEK "
_NEEDS_NAMESPACE = re.compile(r"\(kmsbox (rewrap-deks|reencrypt)\)")


@dataclass(frozen=True)
class Migration:
    """The last ``kek migrate`` that completed: its target, whether it dropped the other
    wraps, when, and (if the event records it) which KEKs' wraps it dropped."""

    to: str
    drop_old: bool
    time: float
    dropped: tuple[str, ...] | None = None

    def moved_away_from(self, uri: str) -> bool:
        """Whether this migration took the store off ``uri`` (its wraps were dropped)."""
        if not self.drop_old or self.to == uri:
            return False
        # Without a record of the dropped KEKs, every KEK but the target was dropped.
        return self.dropped is None or uri in self.dropped


def last_migration(store: Any) -> Migration | None:
    """The last completed migration recorded in the audit log (read in batches), or None."""
    found: Migration | None = None
    for event in store.iter_audit_events(AuditFilter(action="migrate", result="success")):
        to, dropped = event.detail.get("to"), event.detail.get("dropped")
        if isinstance(to, str):
            known = tuple(u for u in dropped if isinstance(u, str)) if isinstance(dropped, list) else None
            found = Migration(to, event.detail.get("drop_old") is True, event.time, known)
    return found


class WrapAdvice:
    """The action for a missing or unknown wrap, given the configured KEKs and the last
    migration (looked up once, and only when such a wrap is found)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._configured = [k.uri for k in store.keks]
        self._migration: Migration | None = None
        self._looked = False

    def _last(self) -> Migration | None:
        if not self._looked:
            self._migration, self._looked = last_migration(self._store), True
        return self._migration

    def missing(self, uri: str) -> str:
        """What to do about a key with no wrap under the configured KEK ``uri``."""
        last = self._last()
        if last is not None and last.moved_away_from(uri):
            return (
                f"stop configuring {uri}: the store was moved to {last.to} (kek migrate --drop-old, "
                f"{fmt_time(last.time)} UTC); remove it from --kek, KMSBOX_KEK or [store] kek"
            )
        return f"kmsbox kek migrate --to {uri} (wraps every namespace key under it too; no secret is touched)"

    def unknown(self, uri: str) -> str:
        """What to do about a wrap under ``uri``, a KEK the store was not opened with."""
        last = self._last()
        if last is not None and last.to == uri and not last.drop_old:
            primary = self._configured[0] if self._configured else "THE_OLD_KEK"
            return (
                f"none needed: it is the copy kek migrate made; to finish moving to it, configure it first "
                f"(KMSBOX_KEK={uri},{primary}) and run kmsbox kek migrate --to {uri} --drop-old"
            )
        return "none needed: any one wrap that a configured KEK opens is enough"

    def pending(self, line: str) -> str:
        """A ``status`` pending line, with the advice on a missing wrap replaced."""
        head, found, rest = line.partition(_MISSING)
        if not found:
            return line
        uri = rest.split(" (", 1)[0]
        return f"{head}{_MISSING}{uri}: {self.missing(uri)}"


def advise_issues(issues: list[Issue], advice: WrapAdvice) -> list[Issue]:
    """``issues`` with the actions of ``missing_wrap`` and ``unknown_kek_wrap`` replaced."""
    advised: list[Issue] = []
    for issue in issues:
        uri = _issue_uri(issue)
        if issue.code == "missing_wrap" and uri:
            issue = dataclasses.replace(issue, action=advice.missing(uri))
        elif issue.code == "unknown_kek_wrap" and uri:
            issue = dataclasses.replace(issue, action=advice.unknown(uri))
        advised.append(issue)
    return advised


def advise_diagnosis(report: DiagnosisReport, advice: WrapAdvice) -> DiagnosisReport:
    """``report`` with its wrap issues' actions following the last migration."""
    return dataclasses.replace(report, issues=advise_issues(report.issues, advice))


def advise_status(status: dict[str, Any], advice: WrapAdvice) -> dict[str, Any]:
    """``status`` with every pending line's command complete (the namespace it needs) and
    the advice on missing wraps following the last migration."""
    for ns, info in status["namespaces"].items():
        info["pending"] = [_with_namespace(advice.pending(line), ns) for line in info.get("pending", [])]
    return status


def _with_namespace(line: str, namespace: str) -> str:
    # The store names the job; these two need the namespace to be a command one can run.
    return _NEEDS_NAMESPACE.sub(lambda m: f"(kmsbox {m[1]} {namespace})", line)


def _issue_uri(issue: Issue) -> str | None:
    # The KEK is the message's last word ("... configured KEK URI", "... not opened with: URI").
    words = issue.message.split()
    return words[-1] if words else None
