"""``kmsbox demo``: a guided walk through the store on the embedded default.

Each step is recorded as a small dict of outcomes (never a value); people see them
as rich text as they happen, ``--json`` prints them all as one document at the end.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.panel import Panel

from kmsbox.cli.files import file_problem
from kmsbox.cli.main import Settings, pass_settings
from kmsbox.cli.output import console, emit_json, fmt_time, table
from kmsbox.errors import SecretDisabled, SecretExpired
from kmsbox.providers.local import generate_keyring
from kmsbox.store.config import open_store

__all__ = ["register", "run_demo"]

_NAMESPACE = "app:production"


class _Narrator:
    """Prints the tour for people, or stays silent when the result is JSON."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def step(self, text: str) -> None:
        if not self.quiet:
            console.print(f"\n[bold cyan]▸ {text}[/]")

    def say(self, text: Any) -> None:
        if not self.quiet:
            console.print(text)

    def table(self, columns: list[str], rows: list[list[Any]]) -> None:
        if not self.quiet:
            table(None, columns, rows)


def _prepare(folder: Path) -> tuple[str, str]:
    # The folder and keyring are the user's (--dir): an OS error is theirs to fix, in one line.
    try:
        folder.mkdir(parents=True, exist_ok=True)
        keyring = folder / "keyring.json"
        kek = generate_keyring(keyring) if not keyring.exists() else f"file://{keyring.absolute()}"
    except OSError as exc:
        raise file_problem("write in", folder, exc) from None
    return f"sqlite:///{(folder / 'secrets.db').absolute()}", kek


def run_demo(folder: Path, *, quiet: bool = False, kept: bool = True) -> dict[str, Any]:
    """Create a keyring and an SQLite store in ``folder``, exercise them, and return each step's outcome.

    The returned dict holds the store URL, the KEK URI, whether the folder is ``kept``
    after the run (False for the temporary folder the caller removes) and one entry per
    step with versions, counts, statuses and audit results: metadata only, never a value.
    """
    url, kek = _prepare(folder)
    tour = _Narrator(quiet)
    steps: list[dict[str, Any]] = []
    tour.say(Panel.fit(f"store  {url}\nKEK    {kek}  (a local keyring, mode 0600)", title="kmsbox demo"))
    with open_store(url, kek) as store:
        tour.step(f"put: two secrets in namespace {_NAMESPACE}, one expiring in 1 second")
        stored = [
            store.put(
                "db/password",
                "correct horse battery staple",
                namespace=_NAMESPACE,
                category="database",
                labels={"team": "payments"},
            ),
            store.put(
                "api/openai", "sk-demo-not-a-real-key", namespace=_NAMESPACE, category="api", description="OpenAI key"
            ),
            store.put("session/token", "short-lived", namespace=_NAMESPACE, expires=_dt.timedelta(seconds=1)),
        ]
        steps.append({"step": "put", "stored": [{"name": i.name, "version": i.version} for i in stored]})
        tour.step("put again: a new version of db/password")
        again = store.put("db/password", "a newer passphrase", namespace=_NAMESPACE)
        steps.append({"step": "put_again", "name": again.name, "version": again.version})
        tour.step("get: values come back as they went in; repr never shows them")
        with store.namespace(_NAMESPACE):
            secret = store.get("db/password")
            older = store.get("db/password", version=1)
            tour.say(f"  {secret!r}")
            tour.say(
                f"  value length {len(secret.value)}, version {secret.version}; version 1 is still readable: {older.version}"
            )
            steps.append(
                {
                    "step": "get",
                    "name": "db/password",
                    "repr": repr(secret),
                    "value_length": len(secret.value),
                    "version": secret.version,
                    "older_version_readable": older.version,
                }
            )
            tour.step("list: metadata only, never values")
            items = list(store.iter_secrets())
            tour.table(
                ["name", "version", "category", "expires", "reads"],
                [[i.name, i.version, i.category, fmt_time(i.expires_at), i.access_count] for i in items],
            )
            steps.append({"step": "list", "items": [i.to_dict() for i in items]})
            tour.step("expiry: wait for session/token to expire")
            time.sleep(1.1)
            expired: dict[str, Any] = {"step": "expiry", "name": "session/token", "error": None}
            try:
                store.get("session/token")
            except SecretExpired as exc:
                tour.say(f"  SecretExpired: {exc}")
                expired["error"] = {"type": "SecretExpired", "message": str(exc)}
            expired["cleaned_up"] = store.cleanup_expired()
            tour.say(f"  cleanup removed {expired['cleaned_up']} expired secret(s)")
            steps.append(expired)
            tour.step("disable: reads are denied until enabled")
            store.disable("api/openai")
            result = store.try_get("api/openai")
            tour.say(f"  try_get -> ok={result.ok} reason={result.reason}")
            with contextlib.suppress(SecretDisabled):
                store.get("api/openai")
            enabled = store.enable("api/openai")
            steps.append(
                {
                    "step": "disable",
                    "name": "api/openai",
                    "try_get": {"ok": result.ok, "reason": result.reason},
                    "status_after_enable": enabled.status,
                }
            )
        tour.step("audit trail: every write and read, chained by HMAC")
        events, _ = store.audit_events(limit=100)
        tour.table(
            ["seq", "time", "namespace", "name", "action", "result"],
            [[e.seq, fmt_time(e.time), e.namespace, e.name, e.action, e.result] for e in events],
        )
        report = store.verify_audit()
        tour.say(f"  audit verify: {'intact' if report.ok else 'BROKEN'} ({report.events_checked} events)")
        steps.append(
            {
                "step": "audit",
                "events": [
                    {
                        "seq": e.seq,
                        "time": e.time,
                        "namespace": e.namespace,
                        "name": e.name,
                        "action": e.action,
                        "result": e.result,
                    }
                    for e in events
                ],
                "verify": {"ok": report.ok, "events_checked": report.events_checked},
            }
        )
    if kept:
        tour.say(
            f"\nTry it yourself:\n  export KMSBOX_STORE={url}\n  export KMSBOX_KEK={kek}\n  kmsbox list {_NAMESPACE}"
        )
    else:
        tour.say("\nThe temporary folder is removed now; run kmsbox demo --dir FOLDER to keep the store and try it.")
    return {"store": url, "kek": kek, "kept": kept, "steps": steps, "env": {"KMSBOX_STORE": url, "KMSBOX_KEK": kek}}


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the store and keyring (default: a new temporary folder).",
)
@pass_settings
def demo_cmd(settings: Settings, folder: Path | None) -> None:
    """Walk through put, get, list, expiry and the audit trail on SQLite with a local key.

    Without --dir the store lives in a temporary folder that is removed when the demo
    ends, also when it fails or is interrupted.
    """
    if folder is not None:
        outcome = run_demo(folder, quiet=settings.as_json)
    else:
        with tempfile.TemporaryDirectory(prefix="kmsbox-demo-") as temporary:
            outcome = run_demo(Path(temporary), quiet=settings.as_json, kept=False)
    if settings.as_json:
        emit_json(outcome)


def register(cli: click.Group) -> None:
    """Add the demo command."""
    cli.add_command(demo_cmd)
