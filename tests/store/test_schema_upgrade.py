"""Stores written by earlier releases (schema 1 and 2: one audit chain, no seals) open
under schema 3 with nothing lost: every value, version, status, label and read count
kept, every old audit event still verifying, and every row sealed on that first open."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import kmsbox
from kmsbox.errors import IntegrityError, SecretDisabled
from kmsbox.storage.sql import SCHEMA_VERSION

STORES = Path(__file__).parent.parent / "vectors" / "stores"


def _kek_hex() -> str:
    spec = importlib.util.spec_from_file_location("legacy_generate", STORES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value: str = module.kek_hex()
    return value


@pytest.fixture
def legacy_kek(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KMSBOX_LEGACY_KEK", _kek_hex())
    return "env://KMSBOX_LEGACY_KEK"


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copyfile(STORES / name, target)
    return target


@pytest.mark.parametrize("fixture", ["schema-1.db", "schema-2.db"])
def test_an_older_store_upgrades_on_open_with_everything_kept(fixture: str, legacy_kek: str, tmp_path: Path) -> None:
    path = _copy(fixture, tmp_path)
    expected = json.loads((STORES / "expected.json").read_text(encoding="utf-8"))
    with kmsbox.open_store(f"sqlite:///{path}", kek=legacy_kek) as store:
        assert store.backend.schema_version() == SCHEMA_VERSION
        for key, value in expected.items():
            ns, name, version = key.split("/")
            if (ns, name) == ("app", "s05"):
                with pytest.raises(SecretDisabled):
                    store.get(name, namespace=ns, version=int(version))
                continue
            assert store.get(name, namespace=ns, version=int(version)).value == value
        assert [v.version for v in store.history("s02", namespace="app")] == [1, 2, 3]
        assert store.info("s05", namespace="app").status == "disabled"
        assert store.info("s01", namespace="app").labels == {"n": "1"}
        assert store.info("s01", namespace="app").access_count >= 3
        # The rotation and rewrap the old release did are still there.
        keys = store.status("app")["namespaces"]["app"]["keys"]
        assert [(k["version"], k["status"]) for k in keys] == [(1, "retired"), (2, "active")]
        report = store.verify_audit()
        assert report.ok, report.problems
        upgrades = [e for e in store.iter_audit_events() if e.action == "upgrade"]
        assert len(upgrades) == 1 and upgrades[0].detail["schema"] == SCHEMA_VERSION
        # And it keeps working: versions go on from where the old release left them.
        assert store.put("s01", "newest", namespace="app").version == 3
        assert store.get("s01", namespace="app").value == "newest"
        assert store.verify_audit().ok


def test_the_first_open_seals_and_a_later_unsealed_row_is_refused(legacy_kek: str, tmp_path: Path) -> None:
    path = _copy("schema-2.db", tmp_path)
    kmsbox.open_store(f"sqlite:///{path}", kek=legacy_kek).close()
    with closing(sqlite3.connect(path)) as conn:
        # What a database-only attacker would try: unseal a row to have it sealed again.
        conn.execute("UPDATE kmsbox_secrets SET seal = NULL, status = 'active' WHERE name = 's05'")
        conn.commit()
    with kmsbox.open_store(f"sqlite:///{path}", kek=legacy_kek) as store:
        with pytest.raises(IntegrityError):
            store.get("s05", namespace="app")
        assert [e for e in store.iter_audit_events() if e.action == "upgrade"].__len__() == 1
        assert not store.verify_audit().ok
