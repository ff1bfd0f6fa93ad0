"""The everyday commands and options of item 4 of issue 14: ``namespaces``, ``info``, several
``--label`` filters, a search across namespaces, ``delete`` that asks, and ``import`` with
labels, a JSON hint and a mode that skips bad items (``import_rows`` too)."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Invoke, in_terminal, invoker, isolate, json_of, ok, one_error_line, usage_error

import kmsbox
from kmsbox.errors import KmsboxError, NamespaceNotFound
from kmsbox.store.jobs import ItemFailure


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=True)
    return {k: os.environ[k] for k in ("KMSBOX_STORE", "KMSBOX_KEK", "KMSBOX_CLI_TEST_KEK")}


@pytest.fixture
def run(env: dict[str, str]) -> Invoke:
    """Secrets in three namespaces, labelled by team and tier."""
    invoke = invoker()
    for ns, name, labels in [
        ("app:prod", "db", ["team=pay", "tier=1"]),
        ("app:prod", "cache", ["team=pay", "tier=2"]),
        ("app:prod", "search", ["team=web", "tier=1"]),
        ("app:staging", "db", ["team=pay", "tier=1"]),
        ("billing", "stripe", ["team=pay", "tier=1"]),
    ]:
        args = [arg for label in labels for arg in ("--label", label)]
        ok(invoke("put", ns, name, *args, input=f"value-of-{ns}-{name}"))
    return invoke


def _names(document: dict[str, Any]) -> list[str]:
    return [f"{i['namespace']}/{i['name']}" for i in document["items"]]


def test_namespaces_lists_every_namespace(run: Invoke) -> None:
    assert ok(run("namespaces")).stdout.splitlines() == ["app:prod", "app:staging", "billing"]
    assert json_of(run("--json", "namespaces")) == {"namespaces": ["app:prod", "app:staging", "billing"]}


def test_info_shows_metadata_without_reading_the_value(run: Invoke) -> None:
    ok(run("get", "app:prod", "db"))
    before = json_of(run("--json", "info", "app:prod", "db"))
    assert (before["labels"], before["access_count"], before["version"]) == ({"team": "pay", "tier": "1"}, 1, 1)
    shown = ok(run("info", "app:prod", "db")).stdout
    assert "team=pay,tier=1" in shown and "value-of" not in shown and "value" not in json.dumps(before)
    assert json_of(run("--json", "info", "app:prod", "db"))["access_count"] == 1  # not counted as a read
    reads = json_of(run("--json", "audit", "list", "--namespace", "app:prod", "--name", "db", "--action", "read"))
    assert len(reads["events"]) == 1  # only the get
    assert "no secret 'nope'" in one_error_line(run("info", "app:prod", "nope"), "not_found")


def test_several_labels_must_all_match(run: Invoke) -> None:
    assert _names(json_of(run("--json", "list", "app:prod", "--label", "team=pay"))) == [
        "app:prod/cache",
        "app:prod/db",
    ]
    both = json_of(run("--json", "list", "app:prod", "--label", "team=pay", "--label", "tier=1"))
    assert _names(both) == ["app:prod/db"]
    assert json_of(run("--json", "list", "app:prod", "--label", "team=pay", "--label", "tier=3"))["items"] == []
    clash = one_error_line(run("list", "app:prod", "--label", "team=pay", "--label", "team=web"), "usage")
    assert "label filter 'team' is given twice" in clash
    assert "label" in usage_error(run("list", "app:prod", "--label", "novalue"))


def test_a_label_search_across_namespaces(run: Invoke) -> None:
    found = json_of(run("--json", "list", "--all-namespaces", "--label", "team=pay", "--label", "tier=1"))
    assert _names(found) == ["app:prod/db", "app:staging/db", "billing/stripe"]
    text = ok(run("list", "-A", "--label", "team=web")).stdout
    assert "app:prod" in text and "search" in text and "stripe" not in text
    # Pages across namespaces continue from a NAMESPACE/NAME cursor.
    first = json_of(run("--json", "list", "-A", "--limit", "2"))
    assert (_names(first), first["next_cursor"]) == (["app:prod/cache", "app:prod/db"], "app:prod/db")
    rest = json_of(run("--json", "list", "-A", "--limit", "2", "--cursor", first["next_cursor"]))
    assert _names(rest) == ["app:prod/search", "app:staging/db"]
    everything = json_of(run("--json", "list", "-A", "--all", "--limit", "2"))
    assert len(everything["items"]) == 5 and everything["next_cursor"] is None
    assert "NAMESPACE, or --all-namespaces" in usage_error(run("list"))
    assert "not both" in usage_error(run("list", "app:prod", "--all-namespaces"))


def test_delete_needs_yes_when_nobody_can_answer(run: Invoke) -> None:
    assert "pass --yes" in usage_error(run("delete", "app:prod", "db"))
    assert ok(run("get", "app:prod", "db")).stdout == "value-of-app:prod-db\n"
    assert "deleted app:prod/db (1 version)" in ok(run("delete", "app:prod", "db", "--yes")).stdout


def test_delete_asks_on_a_terminal(run: Invoke, env: dict[str, str], tmp_path: Path) -> None:
    ok(run("put", "app:prod", "db", input="second"))
    code, shown = in_terminal(["delete", "app:prod", "db"], env, tmp_path, typed=b"n\n")
    assert "Delete app:prod/db and all 2 versions? [y/N]" in shown and "Aborted" in shown
    assert code == 1
    assert json_of(run("--json", "info", "app:prod", "db"))["version"] == 2
    code, shown = in_terminal(["delete", "app:prod", "db"], env, tmp_path, typed=b"y\n")
    assert code == 0 and "deleted app:prod/db (2 versions)" in shown
    one_error_line(run("info", "app:prod", "db"), "not_found")


def test_a_secret_whose_row_cannot_be_read_can_still_be_deleted_after_asking(
    run: Invoke, env: dict[str, str], tmp_path: Path
) -> None:
    with closing(sqlite3.connect(tmp_path / "secrets.db", isolation_level=None)) as conn:
        conn.execute("UPDATE kmsbox_secrets SET labels = 'oops' WHERE namespace = 'billing' AND name = 'stripe'")
    one_error_line(run("get", "billing", "stripe"), "integrity")
    dry = json_of(run("--json", "delete", "billing", "stripe", "--dry-run"))
    assert dry["would_delete_versions"] is None
    code, shown = in_terminal(["delete", "billing", "stripe"], env, tmp_path, typed=b"y\n")
    assert "Delete billing/stripe and every version of it (its row cannot be read" in shown
    assert code == 0 and "deleted billing/stripe" in shown
    one_error_line(run("get", "billing", "stripe"), "not_found")


def test_import_labels_every_secret_and_hints_at_json(run: Invoke) -> None:
    report = json_of(
        run("--json", "import", "app:prod", "-", "--label", "source=vault", "--label", "team=pay", input="A=1\nB=2\n")
    )
    assert report["processed"] == 2
    assert _names(json_of(run("--json", "list", "app:prod", "--label", "source=vault"))) == ["app:prod/A", "app:prod/B"]
    line = one_error_line(run("import", "app:prod", "-", input='{"C": "s3cret"}'), "usage")
    assert "(this looks like JSON: use --format json)" in line and "s3cret" not in line
    assert "label" in one_error_line(run("import", "app:prod", "-", "--label", "bad", input="C=1\n"), "usage")


def test_import_can_skip_bad_items_and_report_each(run: Invoke) -> None:
    source = '{"GOOD": "g", "bad name!": "s3cret-1", "ALSO_GOOD": "a", "BIG": "' + "x" * (1024 * 1024 + 1) + '"}'
    stopped = one_error_line(run("import", "app:prod", "-", "--format", "json", input=source), "usage")
    assert "import item 2" in stopped and "s3cret" not in stopped
    text = ok(run("import", "app:prod", "-", "--format", "json", "--on-error", "skip", input=source)).stdout
    assert "imported 2 secrets" in text and "failed: 2 items" in text and "s3cret" not in text
    assert "item 2 app:prod/bad name!: invalid" in text and "item 4 app:prod/BIG: invalid" in text
    assert {"app:prod/GOOD", "app:prod/ALSO_GOOD"} <= set(_names(json_of(run("--json", "list", "app:prod"))))


def test_import_rows_takes_a_namespace_per_row_and_reports_skipped_rows(env: dict[str, str]) -> None:
    legacy = [
        ("tenant-1", "db", "row-1-plain"),
        ("tenant-2", "db", "row-2-plain"),
        ("tenant-2", "db", "undecryptable"),
        ("not a namespace!", "db", "row-4-plain"),
        ("tenant-1", "api", "row-5-plain"),
    ]

    def decrypt(row: tuple[str, str, str]) -> tuple[str, str, str]:
        namespace, name, ciphertext = row
        if ciphertext == "undecryptable":
            raise ValueError(f"bad tag for {ciphertext}")  # a legacy error quoting its input
        return namespace, name, ciphertext.replace("-plain", "-value")

    with kmsbox.open_store(env["KMSBOX_STORE"], kek=env["KMSBOX_KEK"]) as store:
        with pytest.raises(ValueError, match="legacy row 3"):
            store.import_rows(legacy, decrypt)
        report = store.import_rows(legacy, decrypt, on_error="skip", on_conflict="overwrite")
        assert (report.processed, [f.item for f in report.failures]) == (3, [3, 4])
        assert all(
            isinstance(f, ItemFailure) and isinstance(f.error, (ValueError, KmsboxError)) for f in report.failures
        )
        assert [f.reason for f in report.failures] == ["invalid", "invalid"]
        assert "undecryptable" not in json.dumps(report.to_dict()) and "row-4" not in json.dumps(report.to_dict())
        assert store.get("api", namespace="tenant-1").value == "row-5-value"
        assert store.get("db", namespace="tenant-2").value == "row-2-value"
        with pytest.raises(NamespaceNotFound):
            store.get("db", namespace="tenant-3")
