"""ORM columns: per-value cost against raw AES-GCM, in-place rewrite rate, KMS calls to read rows.

A module section of ``python -m benchmarks`` (``--only orm``): ``run(quick)`` measures and
``show(result, console)`` prints. Measured through kmsbox-sqlalchemy (the Django plugin
shares the per-value path and the job logic, ``kmsbox_orm``).

- **values**: ``EncryptedColumn.seal`` / ``open`` of a 256-byte str for a row (the codec,
  the row context and the engine: what each column value costs at flush and load), against
  ``AESGCM.encrypt`` / ``decrypt`` of 256 bytes on one key, in paired rounds. Measured two
  ways: over 50,000 distinct rows (what loading a table does: every row's context is new to
  the engine), and for one row again and again (how the engine section measures, one context).
- **rewrite**: ``rewrite_column`` over a table after a KEK rotation (every row rewritten,
  batches of 2,000), on a SQLite file (default journal settings) and on PostgreSQL.
- **kms_reads**: KEK calls to load 10,000 rows through the ORM on a cold cache, when they
  were written by 10 processes (10 data keys), and again on a warm cache.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from typing import Any

import kmsbox_sqlalchemy as ks
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kmsbox_orm import ColumnEncryption, EncryptedColumn, codec_for
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, Integer, String, create_engine, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import kmsbox
from benchmarks.run import _postgres_url, _ratio, _ratios, rates
from kmsbox.testing.counting import CountingKek

__all__ = ["run", "show"]

_KEK_VAR = "KMSBOX_BENCH_ORM_KEK"


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __tablename__ = "bench_rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    secret: Mapped[str] = mapped_column(ks.Encrypted(String))


def _values(seconds: float, distinct_rows: int) -> dict[str, Any]:
    os.environ[_KEK_VAR] = os.urandom(32).hex()
    column = EncryptedColumn("payments", "card", codec_for("text"), ColumnEncryption(f"env://{_KEK_VAR}"))
    value = "x" * 256
    rows = [str(1_000_000 + i) for i in range(distinct_rows)]
    stored = [column.seal(value, row).stored for row in rows]
    seal_next, open_next = itertools.cycle(range(distinct_rows)), itertools.cycle(range(distinct_rows))
    raw = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    raw_ct = raw.encrypt(nonce, value.encode(), None)

    def seal() -> None:
        column.seal(value, rows[next(seal_next)])

    def open_() -> None:
        i = next(open_next)
        column.open(stored[i], rows[i])

    measured = rates(
        {
            "column_encrypt_per_s": seal,
            "raw_encrypt_per_s": lambda: raw.encrypt(os.urandom(12), value.encode(), None),
            "column_decrypt_per_s": open_,
            "raw_decrypt_per_s": lambda: raw.decrypt(nonce, raw_ct, None),
        },
        seconds=seconds,
        min_ops=200,
    )
    return _ratios(
        measured,
        {
            "encrypt_ratio": ("column_encrypt_per_s", "raw_encrypt_per_s"),
            "decrypt_ratio": ("column_decrypt_per_s", "raw_decrypt_per_s"),
        },
    )


def _fill(engine: Engine, rows: int, column: EncryptedColumn, start: int = 0) -> None:
    with engine.begin() as conn:
        for first in range(start, start + rows, 5000):
            chunk = range(first, min(first + 5000, start + rows))
            conn.execute(insert(_Row), [{"id": i, "secret": column.seal(f"secret-{i}", str(i))} for i in chunk])


def _rewrite(engine: Engine, rows: int) -> dict[str, Any]:
    v1, v2 = os.urandom(32).hex(), os.urandom(32).hex()
    os.environ[_KEK_VAR] = f"v1:{v1}"
    _Base.metadata.drop_all(engine)
    _Base.metadata.create_all(engine)
    config = ks.configure(f"env://{_KEK_VAR}", engine=engine)
    config.create_tables()
    _fill(engine, rows, _Row.__table__.c.secret.type.column("bench_rows", "secret"))
    os.environ[_KEK_VAR] = f"v2:{v2},v1:{v1}"
    ks.configure(f"env://{_KEK_VAR}", engine=engine)
    report = ks.rewrite_column(engine, _Row.secret, batch_size=2000)
    _Base.metadata.drop_all(engine)
    return {"rows": report.written, "seconds": report.seconds, "rows_per_s": report.written / report.seconds}


def _kms_reads(engine: Engine, rows: int, writers: int) -> dict[str, Any]:
    os.environ[_KEK_VAR] = os.urandom(32).hex()
    _Base.metadata.drop_all(engine)
    _Base.metadata.create_all(engine)
    per_writer = rows // writers
    for w in range(writers):
        # Each writer process has its own data key (its own engine cache).
        column = EncryptedColumn("bench_rows", "secret", codec_for("text"), ColumnEncryption(f"env://{_KEK_VAR}"))
        _fill(engine, per_writer, column, start=w * per_writer)
    counting = CountingKek(kmsbox.open_kek(f"env://{_KEK_VAR}"))
    ks.configure(counting, engine=engine)
    with Session(engine) as session:
        loaded = len(session.scalars(select(_Row)).all())
    cold = counting.total
    with Session(engine) as session:
        session.scalars(select(_Row)).all()
    _Base.metadata.drop_all(engine)
    return {"rows": loaded, "writers": writers, "kek_calls": cold, "reread_kek_calls": counting.total - cold}


def _postgres_engine() -> tuple[Engine, str, str] | str:
    try:
        import psycopg
    except ImportError:
        return "psycopg not installed"
    base = _postgres_url().split("?")[0]
    schema = f"kmsbox_bench_orm_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    url = base.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, connect_args={"options": f"-csearch_path={schema}"}), base, schema


def run(quick: bool) -> dict[str, Any]:
    """Measure; PostgreSQL figures are skipped (with the reason) when the server is missing."""
    rows = 5000 if quick else 50_000
    seconds = 0.3 if quick else 1.5
    out: dict[str, Any] = {
        "values": _values(seconds, 50_000),
        "values_one_row": _values(seconds, 1),
        "rewrite": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/orm.db")
        out["rewrite"]["sqlite"] = _rewrite(engine, rows)
        out["kms_reads"] = _kms_reads(engine, 10_000, 10)
        engine.dispose()
    pg = _postgres_engine()
    if isinstance(pg, str):
        out["rewrite"]["postgresql"] = {"skipped": pg}
    else:
        engine, base, schema = pg
        try:
            out["rewrite"]["postgresql"] = _rewrite(engine, rows)
        finally:
            engine.dispose()
            import psycopg

            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    ks.reset_default()
    return out


def show(result: dict[str, Any], console: Console) -> None:
    """Print the section's tables."""
    t = Table(title="ORM column per value vs raw AES-256-GCM (256 B, local KEK, warm cache)")
    for col in ("rows", "op", "column/s", "raw/s", "ratio (range)"):
        t.add_column(col)
    for label, key in (("50,000 distinct", "values"), ("one, repeated", "values_one_row")):
        values = result[key]
        for op, name in (("encrypt", "encrypt"), ("decrypt", "decrypt")):
            t.add_row(
                label,
                op,
                f"{values[f'column_{name}_per_s']:,.0f}",
                f"{values[f'raw_{name}_per_s']:,.0f}",
                _ratio(values, f"{name}_ratio"),
            )
    console.print(t)
    t = Table(title="ORM in-place rewrite after a KEK rotation (rewrite_column, batches of 2,000)")
    for col in ("database", "rows", "seconds", "rows/s"):
        t.add_column(col)
    for name, r in result["rewrite"].items():
        if "skipped" in r:
            t.add_row(name, "skipped", r["skipped"], "")
        else:
            t.add_row(name, f"{r['rows']:,}", f"{r['seconds']:.2f}", f"{r['rows_per_s']:,.0f}")
    console.print(t)
    k = result["kms_reads"]
    console.print(
        f"ORM reads: {k['rows']:,} rows written by {k['writers']} processes load with {k['kek_calls']} KEK calls "
        f"on a cold cache, {k['reread_kek_calls']} on a re-read"
    )
