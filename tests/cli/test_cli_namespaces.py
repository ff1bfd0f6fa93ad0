"""A typo never becomes an action: unknown namespaces and stores are refused, not made.

Item 1 of issue 14: ``kmsbox rotate shop:prd`` (for ``shop:prod``) used to rotate a brand
new namespace, ``compromise`` then "rotated in" a key nobody uses, and reads with a
mistyped ``--store`` created an empty store file bound to the current KEK.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import Invoke, invoker, isolate, json_of, ok, one_error_line

import kmsbox
from kmsbox.errors import ConfigError, NamespaceNotFound


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """A store with one secret in ``shop:prod`` (and its key), through the CLI."""
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{tmp_path / 'secrets.db'}", kek=True)
    invoke = invoker()
    ok(invoke("put", "shop:prod", "db/password", input="pw-1"))
    return invoke


def _namespaces(run: Invoke) -> list[str]:
    names: list[str] = json_of(run("--json", "namespaces"))["namespaces"]
    return names


def _audited_actions(run: Invoke, namespace: str) -> list[str]:
    return [e["action"] for e in json_of(run("--json", "audit", "list", "--namespace", namespace))["events"]]


@pytest.mark.parametrize(
    "args",
    [
        ["rotate", "shop:prd"],
        ["rotate", "shop:prd", "--dry-run"],
        ["compromise", "shop:prd", "1", "--yes"],
        ["rewrap-deks", "shop:prd"],
        ["reencrypt", "shop:prd"],
        ["rewrap-namespace-keys", "--namespace", "shop:prd"],
        ["cleanup-keys", "--namespace", "shop:prd"],
        ["status", "shop:prd"],
        ["diagnose", "shop:prd"],
        ["repair", "shop:prd", "--apply"],
    ],
)
def test_key_commands_refuse_a_typo_of_a_namespace_and_suggest_the_real_one(run: Invoke, args: list[str]) -> None:
    line = one_error_line(run(*args), "not_found")
    assert "namespace 'shop:prd' does not exist (did you mean 'shop:prod'?)" in line
    assert _namespaces(run) == ["shop:prod"]
    assert _audited_actions(run, "shop:prd") == []


def test_rotate_says_how_to_make_a_namespace_and_create_makes_it(run: Invoke) -> None:
    line = one_error_line(run("rotate", "tenant-7"), "not_found")
    assert line.endswith("namespace 'tenant-7' does not exist; to make it, run the command again with --create")
    assert (
        "would create namespace tenant-7 with key version 1"
        in ok(run("rotate", "tenant-7", "--create", "--dry-run")).stdout
    )
    assert _namespaces(run) == ["shop:prod"]
    made = json_of(run("--json", "rotate", "tenant-7", "--create"))
    assert (made["namespace"], made["new_version"], made["created"]) == ("tenant-7", 1, True)
    assert _namespaces(run) == ["shop:prod", "tenant-7"]
    # Once it exists, --create is a plain rotation.
    assert json_of(run("--json", "rotate", "tenant-7", "--create"))["new_version"] == 2


def test_compromise_of_the_real_namespace_still_works(run: Invoke) -> None:
    marked = json_of(run("--json", "compromise", "shop:prod", "1", "--yes"))
    assert marked == {"namespace": "shop:prod", "compromised": 1, "new_active_version": 2}


def test_a_put_into_a_close_misspelling_needs_create(run: Invoke) -> None:
    line = one_error_line(run("put", "shop:prd", "db/password", input="pw-typo"), "not_found")
    assert "did you mean 'shop:prod'?" in line and "--create" in line and "pw-typo" not in line
    assert _namespaces(run) == ["shop:prod"]
    ok(run("put", "shop:prd", "db/password", "--create", input="pw-typo"))
    assert _namespaces(run) == ["shop:prd", "shop:prod"]
    # A name like no other needs no confirmation: that is how a store gets its first tenants.
    ok(run("put", "billing", "stripe", input="sk"))
    assert "billing" in _namespaces(run)


def test_an_import_into_a_close_misspelling_needs_create(run: Invoke) -> None:
    line = one_error_line(run("import", "shop:prd", "-", input="A=s3cret\n"), "not_found")
    assert "did you mean 'shop:prod'?" in line and "s3cret" not in line
    assert _namespaces(run) == ["shop:prod"]
    assert json_of(run("--json", "import", "shop:prd", "-", "--create", input="A=s3cret\n"))["processed"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["get", "shop:prd", "db/password"],
        ["info", "shop:prd", "db/password"],
        ["history", "shop:prd", "db/password"],
        ["list", "shop:prd"],
        ["disable", "shop:prd", "db/password"],
        ["delete", "shop:prd", "db/password", "--yes"],
    ],
)
def test_reads_of_an_unknown_namespace_say_so_not_no_secret(run: Invoke, args: list[str]) -> None:
    line = one_error_line(run(*args), "not_found")
    assert "namespace 'shop:prd' does not exist (did you mean 'shop:prod'?)" in line
    assert "no secret" not in line


def test_a_missing_name_in_a_real_namespace_is_no_secret(run: Invoke) -> None:
    line = one_error_line(run("get", "shop:prod", "db/pasword"), "not_found")
    assert "no secret 'db/pasword' in namespace 'shop:prod'" in line and "does not exist" not in line


def test_try_get_tells_a_missing_namespace_from_a_missing_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path, store=None, kek=True)
    with kmsbox.open_store(f"sqlite:///{tmp_path / 's.db'}", kek="env://KMSBOX_CLI_TEST_KEK") as store:
        store.put("db/password", "pw", namespace="shop:prod")
        assert store.try_get("db/pasword", namespace="shop:prod").reason == "not_found"
        assert store.try_get("db/password", namespace="shop:prd").reason == "namespace_not_found"
        with pytest.raises(NamespaceNotFound):
            store.get("db/password", namespace="shop:prd")


@pytest.mark.parametrize(
    "args",
    [
        ["get", "ns", "name"],
        ["list", "ns"],
        ["status"],
        ["namespaces"],
        ["audit", "list"],
        ["audit", "verify"],
        ["diagnose"],
        ["delete", "ns", "name", "--yes"],
        ["cleanup"],
        ["rotate", "ns"],
        ["kek", "migrate", "--to", "env://KMSBOX_CLI_TEST_KEK"],
    ],
)
def test_a_command_that_does_not_write_never_creates_a_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str]
) -> None:
    typo = tmp_path / "typo.db"
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{typo}", kek=True)
    line = one_error_line(invoker()(*args), "config")
    assert f"no kmsbox store at {typo}" in line and "kmsbox init" in line
    assert not typo.exists()


def test_init_and_writes_create_a_store_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    isolate(monkeypatch, tmp_path, store=f"sqlite:///{db}", kek=True)
    run = invoker()
    assert ok(run("init")).stdout.strip() == f"created the store: sqlite {db}"
    assert db.exists()
    again = ok(run("init", "--namespace", "app", "--namespace", "app")).stdout.splitlines()
    assert again == [f"the store already exists: sqlite {db}", "created namespace app"]
    assert ok(run("init", "--namespace", "app")).stdout.splitlines()[1] == "namespace app already exists"
    assert _namespaces(run) == ["app"]
    other = tmp_path / "by-put.db"
    ok(run("--store", f"sqlite:///{other}", "put", "app", "s", input="v"))
    assert other.exists()
    one_error_line(run("init", "--namespace", "bad namespace!"), "usage")
    assert _namespaces(run) == ["app"]


def test_open_store_without_create_refuses_a_missing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path, store=None, kek=True)
    missing = tmp_path / "missing.db"
    with pytest.raises(ConfigError, match="no kmsbox store"):
        kmsbox.open_store(f"sqlite:///{missing}", kek="env://KMSBOX_CLI_TEST_KEK", create=False)
    assert not missing.exists()


@pytest.mark.postgres
def test_a_read_never_makes_a_postgresql_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres_url: str, postgres_server_url: str
) -> None:
    import psycopg

    isolate(monkeypatch, tmp_path, store=postgres_url, kek=True)
    run = invoker()
    assert "no kmsbox store" in one_error_line(run("list", "ns"), "config")
    schema = postgres_url.rsplit("schema=", 1)[1]
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
    assert tables == (0,)
    ok(run("init", "--namespace", "ns"))
    assert json_of(run("--json", "list", "ns")) == {"items": [], "next_cursor": None}
    assert "namespace 'nss' does not exist (did you mean 'ns'?)" in one_error_line(run("get", "nss", "x"), "not_found")
