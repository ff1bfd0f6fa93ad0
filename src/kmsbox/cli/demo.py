"""``kmsbox demo``: a guided walk through the store on the embedded default."""

from __future__ import annotations

import contextlib
import datetime as _dt
import tempfile
import time
from pathlib import Path

import click
from rich.panel import Panel

from kmsbox.cli.output import console, fmt_time, table
from kmsbox.errors import SecretDisabled, SecretExpired
from kmsbox.providers.local import generate_keyring
from kmsbox.store.config import open_store

__all__ = ["register", "run_demo"]


def _step(text: str) -> None:
    console.print(f"\n[bold cyan]▸ {text}[/]")


def run_demo(folder: Path) -> None:
    """Create a keyring and an SQLite store in ``folder`` and exercise them."""
    folder.mkdir(parents=True, exist_ok=True)
    keyring = folder / "keyring.json"
    kek = generate_keyring(keyring) if not keyring.exists() else f"file://{keyring.absolute()}"
    url = f"sqlite:///{(folder / 'secrets.db').absolute()}"
    console.print(Panel.fit(f"store  {url}\nKEK    {kek}  (a local keyring, mode 0600)", title="kmsbox demo"))
    with open_store(url, kek) as store:
        _step("put: two secrets in namespace app:production, one expiring in 1 second")
        store.put(
            "db/password",
            "correct horse battery staple",
            namespace="app:production",
            category="database",
            labels={"team": "payments"},
        )
        store.put(
            "api/openai", "sk-demo-not-a-real-key", namespace="app:production", category="api", description="OpenAI key"
        )
        store.put("session/token", "short-lived", namespace="app:production", expires=_dt.timedelta(seconds=1))
        _step("put again: a new version of db/password")
        store.put("db/password", "a newer passphrase", namespace="app:production")
        _step("get: values come back as they went in; repr never shows them")
        with store.namespace("app:production"):
            secret = store.get("db/password")
            console.print(f"  {secret!r}")
            console.print(
                f"  value length {len(secret.value)}, version {secret.version}; version 1 is still readable: {store.get('db/password', version=1).version}"
            )
            _step("list: metadata only, never values")
            table(
                None,
                ["name", "version", "category", "expires", "reads"],
                [[i.name, i.version, i.category, fmt_time(i.expires_at), i.access_count] for i in store.iter_secrets()],
            )
            _step("expiry: wait for session/token to expire")
            time.sleep(1.1)
            try:
                store.get("session/token")
            except SecretExpired as exc:
                console.print(f"  SecretExpired: {exc}")
            console.print(f"  cleanup removed {store.cleanup_expired()} expired secret(s)")
            _step("disable: reads are denied until enabled")
            store.disable("api/openai")
            result = store.try_get("api/openai")
            console.print(f"  try_get -> ok={result.ok} reason={result.reason}")
            with contextlib.suppress(SecretDisabled):
                store.get("api/openai")
            store.enable("api/openai")
        _step("audit trail: every write and read, chained by HMAC")
        events, _ = store.audit_events(limit=100)
        table(
            None,
            ["seq", "time", "namespace", "name", "action", "result"],
            [[e.seq, fmt_time(e.time), e.namespace, e.name, e.action, e.result] for e in events],
        )
        report = store.verify_audit()
        console.print(f"  audit verify: {'intact' if report.ok else 'BROKEN'} ({report.events_checked} events)")
    console.print(
        f"\nTry it yourself:\n  export KMSBOX_STORE={url}\n  export KMSBOX_KEK={kek}\n  kmsbox list app:production"
    )


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the store and keyring (default: a new temporary folder).",
)
def demo_cmd(folder: Path | None) -> None:
    """Walk through put, get, list, expiry and the audit trail on SQLite with a local key."""
    run_demo(folder if folder is not None else Path(tempfile.mkdtemp(prefix="kmsbox-demo-")))


def register(cli: click.Group) -> None:
    """Add the demo command."""
    cli.add_command(demo_cmd)
