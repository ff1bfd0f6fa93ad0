"""Django's own test runner over testapp, on SQLite and on PostgreSQL; a job process killed
at random points; the ``kmsbox django`` commands."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kmsbox_orm.testing import postgres_test_url, require_postgres

PROJECT = Path(__file__).with_name("djproject")


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_django_test_runner_passes(database: str) -> None:
    if database == "postgres":
        require_postgres()
    result = subprocess.run(
        [sys.executable, "runtests.py", database], cwd=PROJECT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "\nOK" in result.stderr, result.stderr[-3000:]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A database several processes share: a SQLite file, or a fresh schema on the server."""
    env = {
        "KMSBOX_DJANGO_TEST_KEK": f"v1:{secrets.token_hex(32)}",
        "KMSBOX_DJANGO_TEST_SECRET_KEY": secrets.token_hex(25),
    }
    if request.param == "sqlite":
        yield "sqlite", env | {"KMSBOX_DJANGO_DB_DIR": str(tmp_path)}
        return
    import psycopg

    url = require_postgres()
    schema = f"kmsbox_dj_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield "postgres", env | {"KMSBOX_DJANGO_PG_SCHEMA": schema, "KMSBOX_TEST_POSTGRES_URL": postgres_test_url()}
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _runner(database: str, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "dj_job_runner.py", database, *args],
        cwd=PROJECT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


@pytest.mark.slow
def test_django_job_killed_at_random_points_loses_nothing(shared_db: tuple[str, dict[str, str]]) -> None:
    database, env = shared_db
    _runner(database, env, "setup", "2000")
    expected = {str(pk): v for pk, v in json.loads(_runner(database, env, "check").stdout)["values"].items()}
    assert len(expected) == 2000
    env = env | {"KMSBOX_DJANGO_TEST_KEK": f"v2:{secrets.token_hex(32)},{env['KMSBOX_DJANGO_TEST_KEK']}"}
    rng = random.Random(11)
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "dj_job_runner.py", database, "rewrite", "100", "0.05"],
            cwd=PROJECT,
            env=os.environ | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdout is not None
        # Kill at a random point after this run's first batch has committed.
        for line in child.stdout:
            if line.startswith("progress ") and int(line.split()[1]) > 0:
                break
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        state = json.loads(_runner(database, env, "check").stdout)
        assert state["values"] == expected
        if round_ == 0:
            # Killed part-way: committed batches and their checkpoint, the rest still old.
            assert state["scan"]["current"] > 0 and state["scan"]["old_kek"] > 0 and state["checkpoint"]
    final = json.loads(_runner(database, env, "rewrite", "500", "0").stdout.splitlines()[-1])
    assert final["finished"] and final["failed"] == 0
    state = json.loads(_runner(database, env, "check").stdout)
    assert state["values"] == expected
    assert (state["scan"]["current"], state["scan"]["old_kek"], state["checkpoint"]) == (2000, 0, False)


def test_kmsbox_django_commands(tmp_path: Path) -> None:
    env = {
        "KMSBOX_DJANGO_TEST_KEK": f"v1:{secrets.token_hex(32)}",
        "KMSBOX_DJANGO_TEST_SECRET_KEY": secrets.token_hex(25),
        "KMSBOX_DJANGO_DB_DIR": str(tmp_path),
    }
    _runner("sqlite", env, "setup", "30")

    def kmsbox(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from kmsbox.cli import main; main()", *args],
            env=os.environ | env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    django = ["django", "--settings", "settings_sqlite", "--pythonpath", str(PROJECT)]
    status = kmsbox("--json", *django, "status", "testapp.Person.ssn")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["kek_versions"] == {"v1": 30}
    env["KMSBOX_DJANGO_TEST_KEK"] = f"v2:{secrets.token_hex(32)},{env['KMSBOX_DJANGO_TEST_KEK']}"
    rewrite = kmsbox(*django, "rewrite", "testapp.Person.ssn", "--batch-size", "7")
    assert rewrite.returncode == 0, rewrite.stderr
    assert "wrote 30 (old-kek 30)" in rewrite.stdout and "5 batches" in rewrite.stdout
    keys = kmsbox("--json", *django, "index-keys", "list")
    assert [k["index"] for k in json.loads(keys.stdout)] == ["testapp_person.email"]
    bad = kmsbox(*django, "rewrite", "testapp.Person.name")
    assert bad.returncode == 2 and "is not an encrypted field" in bad.stderr
    missing = kmsbox("django", "--settings", "no_such_settings", "status", "testapp.Person.ssn")
    assert missing.returncode == 2 and "cannot import the Django settings" in missing.stderr
    # A row that cannot be read: reported, left as it was, exit status 1 (from kmsbox and from django-admin).
    import sqlite3

    with sqlite3.connect(tmp_path / "app.db") as db:
        db.execute("UPDATE testapp_person SET ssn = x'00' WHERE id = 3")
    failed = kmsbox(*django, "rewrite", "testapp.Person.ssn", "--force")
    assert failed.returncode == 1 and "failed row 3: IntegrityError" in failed.stdout, failed.stderr
    admin = subprocess.run(
        [sys.executable, "-m", "django", "kmsbox_rewrite", "testapp.Person.ssn", "--settings", "settings_sqlite"],
        cwd=PROJECT,
        env=os.environ | env | {"PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert admin.returncode == 1 and "CommandError: 1 row(s) could not be rewritten" in admin.stderr, admin.stderr
    with sqlite3.connect(tmp_path / "app.db") as db:
        assert db.execute("SELECT ssn FROM testapp_person WHERE id = 3").fetchone()[0] == b"\x00"
