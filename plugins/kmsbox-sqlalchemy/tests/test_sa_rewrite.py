"""The rewrite job on real SQLite and PostgreSQL: KEK rotation, another KMS, resume, bad rows,
a concurrent writer, and a job process killed at random points."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import kmsbox_sqlalchemy as ks
import pytest
from sa_helpers import Database
from sa_models import Base, User
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

import kmsbox

RUNNER = Path(__file__).with_name("sa_job_runner.py")


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Two KEK versions generated for the test; $ORM_KEK starts with v1 only."""
    keys = {"v1": os.urandom(32).hex(), "v2": os.urandom(32).hex()}
    monkeypatch.setenv("ORM_KEK", f"v1:{keys['v1']}")
    return keys


def _fill(engine: Engine, n: int) -> dict[int, str]:
    Base.metadata.create_all(engine)
    ks.get_default().create_tables()
    ks.get_default().ensure_index_keys(Base.metadata)
    with Session(engine) as session:
        users = [User(name=f"u{i}", api_key=f"key-{i}") for i in range(n)]
        session.add_all(users)
        session.commit()
        return {u.id: f"key-{i}" for i, u in enumerate(users)}


def _read_all(engine: Engine) -> dict[int, str | None]:
    with Session(engine) as session:
        return {u.id: u.api_key for u in session.scalars(select(User))}


def test_kek_rotation_rewrites_old_rows_and_reports_it(
    keys: dict[str, str], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks.configure("env://ORM_KEK", engine=engine)
    expected = _fill(engine, 1200)
    with Session(engine) as session:
        session.add(User(name="nul"))
        session.commit()
    monkeypatch.setenv("ORM_KEK", f"v2:{keys['v2']},v1:{keys['v1']}")
    ks.configure("env://ORM_KEK", engine=engine)
    assert ks.scan_column(engine, User.api_key).to_dict()["kek_versions"] == {"v1": 1200}
    dry = ks.rewrite_column(engine, User.api_key, dry_run=True)
    assert dry.reasons == {"old-kek": 1200} and dry.written == 0
    report = ks.rewrite_column(engine, User.api_key, batch_size=500)
    assert (report.written, report.reasons, report.null, report.failed, report.batches) == (
        1200,
        {"old-kek": 1200},
        1,
        0,
        3,
    )
    scan = ks.scan_column(engine, User.api_key)
    assert (scan.current, scan.old_kek, scan.kek_versions) == (1200, 0, {"v2": 1200})
    again = ks.rewrite_column(engine, User.api_key)
    assert again.written == 0 and again.unchanged == 1200
    # v1 can go now: everything reads under v2 alone.
    monkeypatch.setenv("ORM_KEK", f"v2:{keys['v2']}")
    ks.configure("env://ORM_KEK", engine=engine)
    assert {k: v for k, v in _read_all(engine).items() if v is not None} == expected
    forced = ks.rewrite_column(engine, User.api_key, force=True)
    assert forced.reasons == {"forced": 1200}


def test_moving_to_another_kms_keeps_old_rows_readable_until_rewritten(
    keys: dict[str, str], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks.configure("env://ORM_KEK", engine=engine)
    expected = _fill(engine, 300)
    # A second KEK of another provider (the in-process fake KMS), first: it wraps new data keys.
    from kmsbox.testing.fake_kek import FakeKek

    other = FakeKek()
    ks.configure([other, "env://ORM_KEK"], engine=engine)
    assert _read_all(engine) == expected
    report = ks.rewrite_column(engine, User.api_key)
    assert report.reasons == {"old-kek": 300}
    ks.configure([other], engine=engine)
    assert _read_all(engine) == expected


def test_rows_that_fail_are_reported_and_left_as_they_were(
    keys: dict[str, str], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks.configure("env://ORM_KEK", engine=engine)
    _fill(engine, 20)
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET api_key = (SELECT api_key FROM users WHERE name = 'u1') WHERE name = 'u2'"))
        conn.execute(text("UPDATE users SET api_key = :v WHERE name = 'u3'"), {"v": b"garbage"})
    with engine.connect() as conn:
        before = {
            r[0]: bytes(r[1]) for r in conn.execute(text("SELECT name, api_key FROM users WHERE name IN ('u2', 'u3')"))
        }
    monkeypatch.setenv("ORM_KEK", f"v2:{keys['v2']},v1:{keys['v1']}")
    ks.configure("env://ORM_KEK", engine=engine)
    report = ks.rewrite_column(engine, User.api_key)
    assert report.failed == 2 and report.written == 18
    assert sorted(f["error"] for f in report.failed_rows) == ["IntegrityError", "IntegrityError"]
    with engine.connect() as conn:
        after = {
            r[0]: bytes(r[1]) for r in conn.execute(text("SELECT name, api_key FROM users WHERE name IN ('u2', 'u3')"))
        }
    assert after == before


def test_a_forged_checkpoint_is_refused(keys: dict[str, str], engine: Engine) -> None:
    ks.configure("env://ORM_KEK", engine=engine)
    _fill(engine, 30)
    ks.rewrite_column(engine, User.api_key, force=True, batch_size=10, max_batches=1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE kmsbox_orm_checkpoints SET sealed = :v"), {"v": b"KB\x01\x01forged"})
    with pytest.raises(kmsbox.IntegrityError):
        ks.rewrite_column(engine, User.api_key)
    report = ks.rewrite_column(engine, User.api_key, resume=False, force=True)
    assert report.finished and report.written == 30


def test_job_beside_a_concurrent_writer_loses_nothing(
    keys: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = database.engine(pool_size=5) if database.name == "postgres" else database.engine()
    if database.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    ks.configure("env://ORM_KEK", engine=engine)
    expected = _fill(engine, 2000)
    monkeypatch.setenv("ORM_KEK", f"v2:{keys['v2']},v1:{keys['v1']}")
    ks.configure("env://ORM_KEK", engine=engine)
    stop = threading.Event()
    written: dict[int, str] = {}
    errors: list[BaseException] = []

    def writer() -> None:
        rng = random.Random(7)
        ids = sorted(expected)
        try:
            while not stop.is_set():
                with Session(engine) as session:
                    for _ in range(20):
                        user_id = rng.choice(ids)
                        value = f"app-{rng.random()}"
                        session.get(User, user_id).api_key = value  # type: ignore[union-attr]
                        session.commit()
                        written[user_id] = value
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        report = ks.rewrite_column(engine, User.api_key, batch_size=100)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert report.finished and report.failed == 0 and len(written) > 20
    assert report.written + report.conflicts + report.unchanged == 2000
    assert _read_all(engine) == expected | written
    scan = ks.scan_column(engine, User.api_key)
    assert scan.old_kek == 0 and scan.current == 2000
    engine.dispose()


@pytest.mark.slow
def test_job_killed_at_random_points_resumes_and_loses_nothing(
    keys: dict[str, str], database: Database, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks.configure("env://ORM_KEK", engine=engine)
    expected = _fill(engine, 3000)
    rotated = f"v2:{keys['v2']},v1:{keys['v1']}"
    monkeypatch.setenv("ORM_KEK", rotated)
    ks.configure("env://ORM_KEK", engine=engine)
    search_path = database.connect_args.get("options", "").removeprefix("-csearch_path=")
    env = os.environ | {"KMSBOX_KEK": "env://ORM_KEK", "ORM_KEK": rotated}
    env["PYTHONPATH"] = str(RUNNER.parent)
    rng = random.Random(3)
    kills = 0
    for round_ in range(4):
        child = subprocess.Popen(
            [sys.executable, str(RUNNER), database.url, search_path, "100", "0.05"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        # Kill at a random point after the first batch of this run has committed (or when it ends).
        for line in child.stdout:
            if line.startswith("progress ") and int(line.split()[1]) > 0:
                break
        time.sleep(rng.uniform(0.0, 0.6))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
        child.stdout.close()
        # Reads work between kills, whatever was committed.
        assert _read_all(engine) == expected
        if round_ == 0:
            # Killed part-way: some batches committed with their checkpoint, the rest still old.
            scan = ks.scan_column(engine, User.api_key)
            assert scan.current > 0 and scan.old_kek > 0
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM kmsbox_orm_checkpoints")).scalar_one() == 1
    assert kills >= 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM kmsbox_orm_checkpoints")).scalar_one() in (0, 1)
    final = subprocess.run(
        [sys.executable, str(RUNNER), database.url, search_path, "500", "0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(final.stdout.strip().splitlines()[-1])
    assert report["finished"] and report["failed"] == 0
    scan = ks.scan_column(engine, User.api_key)
    assert (scan.current, scan.old_kek) == (3000, 0)
    assert _read_all(engine) == expected
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM kmsbox_orm_checkpoints")).scalar_one() == 0
