"""``kmsbox sqlalchemy``: the real command line in a subprocess, on a SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kmsbox_sqlalchemy as ks
import pytest
from sa_models import Base, User
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

HERE = Path(__file__).parent


def _kmsbox(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from kmsbox.cli import main; main()", *args],
        env=os.environ | env | {"PYTHONPATH": str(HERE)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_rotates_a_column_and_manages_index_keys(tmp_path: Path) -> None:
    v1, v2 = os.urandom(32).hex(), os.urandom(32).hex()
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    os.environ["ORM_CLI_KEK"] = f"v1:{v1}"
    try:
        config = ks.configure("env://ORM_CLI_KEK", engine=engine)
        Base.metadata.create_all(engine)
        config.create_tables()
    finally:
        del os.environ["ORM_CLI_KEK"]
    env = {"ORM_CLI_KEK": f"v1:{v1}", "KMSBOX_KEK": "env://ORM_CLI_KEK", "KMSBOX_SQLALCHEMY_URL": url}
    created = _kmsbox("--json", "sqlalchemy", "index-keys", "create", "sa_models:Base", env=env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"created": ["users.email"]}
    os.environ["ORM_CLI_KEK"] = f"v1:{v1}"
    try:
        ks.configure("env://ORM_CLI_KEK", engine=engine)
        with Session(engine) as session:
            session.add_all(User(name=str(i), api_key=f"k{i}", email=f"{i}@x.io") for i in range(50))
            session.commit()
    finally:
        del os.environ["ORM_CLI_KEK"]
    env["ORM_CLI_KEK"] = f"v2:{v2},v1:{v1}"
    status = _kmsbox("sqlalchemy", "status", "sa_models:User.api_key", "--json", env=env)
    assert json.loads(status.stdout)["kek_versions"] == {"v1": 50}, status.stderr
    rotated = _kmsbox("--json", "sqlalchemy", "rewrite", "sa_models:User.api_key", "--batch-size", "20", env=env)
    assert rotated.returncode == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    assert (report["written"], report["reasons"], report["batches"]) == (50, {"old-kek": 50}, 3)
    human = _kmsbox("sqlalchemy", "rewrite", "sa_models:User.api_key", env=env)
    assert "wrote 0 (nothing to do), unchanged 50" in human.stdout
    rotate = _kmsbox("--json", "sqlalchemy", "index-keys", "rotate", "users.email", "--grace", "0", env=env)
    assert json.loads(rotate.stdout) == {"index": "users.email", "version": 2}
    reindex = _kmsbox("--json", "sqlalchemy", "rewrite", "sa_models:User.email", env=env)
    # Each row's value (old KEK) and index (old index key) are rewritten together, counted by the value.
    assert json.loads(reindex.stdout)["reasons"] == {"old-kek": 50}
    status = _kmsbox("sqlalchemy", "status", "sa_models:User.email", "--json", env=env)
    assert json.loads(status.stdout)["index_versions"] == {"2": 50}
    refused = _kmsbox("sqlalchemy", "index-keys", "retire", "users.email", "1", env=env)
    assert refused.returncode == 2
    retired = _kmsbox("--json", "sqlalchemy", "index-keys", "retire", "users.email", "1", "--yes", env=env)
    assert [k["retired"] for k in json.loads(retired.stdout)] == [False, True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sqlalchemy", "rewrite", "no_colon", "--url", "sqlite://"], "must look like package.module:Model.attribute"),
        (["sqlalchemy", "rewrite", "sa_models:User.name", "--url", "sqlite://"], "is not an Encrypted column"),
        (["sqlalchemy", "rewrite", "nowhere_module:User.x", "--url", "sqlite://"], "cannot import"),
        (["sqlalchemy", "status", "sa_models:User.api_key", "--url", "sqlite+aiosqlite://"], "give a sync URL"),
        (["sqlalchemy", "status", "sa_models:User.api_key", "--url", "nonsense"], "bad database URL"),
    ],
)
def test_cli_bad_arguments_are_one_line_usage_errors(args: list[str], message: str) -> None:
    result = _kmsbox(*args, env={"ORM_CLI_KEK": os.urandom(32).hex(), "KMSBOX_KEK": "env://ORM_CLI_KEK"})
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_cli_without_a_kek_is_a_config_error() -> None:
    result = _kmsbox("sqlalchemy", "status", "sa_models:User.api_key", "--url", "sqlite://", env={"KMSBOX_KEK": ""})
    assert result.returncode == 7 and "no KEK" in result.stderr
