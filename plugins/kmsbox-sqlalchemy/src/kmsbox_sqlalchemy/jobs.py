"""The rewrite job and the column scan over SQLAlchemy Core: re-encrypt a mapped column in place.

>>> report = rewrite_column(engine, User.api_key)                      # doctest: +SKIP
>>> report.written, report.reasons                                     # doctest: +SKIP
(10000, {'old-kek': 10000})

Reads go through plain LargeBinary/Text columns (no ORM, no decryption at load), so a
batch costs one SELECT and one executemany UPDATE; see :mod:`kmsbox_orm.rewrite` for how
the job decides, stays safe beside the application's writes and resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kmsbox_orm.index_keys import IndexKeyring
from kmsbox_orm.rewrite import (
    DEFAULT_BATCH_SIZE,
    ColumnScan,
    Progress,
    RewriteJob,
    RewriteReport,
    RowChange,
    StoredRow,
)
from sqlalchemy import (
    Column,
    Engine,
    LargeBinary,
    Table,
    Text,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    table,
    tuple_,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from kmsbox_sqlalchemy.schema import checkpoints, create_tables
from kmsbox_sqlalchemy.types import BlindIndex, Encrypted

__all__ = ["SqlRewriteTarget", "rewrite_column", "scan_column"]


class SqlRewriteTarget:
    """The rows of one encrypted column (and its blind index) as raw stored bytes, over ``engine``."""

    def __init__(self, engine: Engine, source: Table, value: Column[Any], index: Column[Any] | None = None) -> None:
        pk = list(source.primary_key.columns)
        if not pk:
            raise ValueError(f"table {source.fullname} has no primary key: rows cannot be bound or walked")
        raw_type = Text() if isinstance(value.type, Encrypted) and value.type.stored_as == "text" else LargeBinary()
        cols = [column(c.name, c.type) for c in pk]
        self._pk_names = [c.name for c in pk]
        self._value = column(value.name, raw_type)
        self._index = column(index.name, LargeBinary()) if index is not None else None
        # A lightweight table of plain types: no TypeDecorator runs on the job's path.
        extra = [self._value] + ([self._index] if self._index is not None else [])
        self._table = table(source.name, *cols, *extra, schema=source.schema)
        self._pk = [self._table.c[name] for name in self._pk_names]
        self.engine = engine
        self._job = f"{source.fullname}.{value.name}"
        self._update = self._cas_update()

    def __repr__(self) -> str:
        return f"SqlRewriteTarget({self._job!r})"

    @property
    def job_name(self) -> str:
        """``table.column``."""
        return self._job

    def _after(self, after: tuple[Any, ...]) -> ColumnElement[bool]:
        if len(self._pk) == 1:
            single: ColumnElement[bool] = self._pk[0] > after[0]
            return single
        return tuple_(*self._pk) > tuple_(*after)

    def _cas_update(self) -> Any:
        where = [c == bindparam(f"k_{c.name}") for c in self._pk]
        where.append(self._value == bindparam("old_value", type_=self._value.type))
        values: dict[Any, Any] = {self._value: bindparam("new_value", type_=self._value.type)}
        if self._index is not None:
            where.append(self._index.is_not_distinct_from(bindparam("old_index", type_=LargeBinary())))
            values[self._index] = bindparam("new_index", type_=LargeBinary())
        return update(self._table).where(and_(*where)).values(values)

    def count_rows(self) -> int:
        """Rows in the table."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self._table)).scalar_one())

    def read_batch(self, after: tuple[Any, ...] | None, limit: int) -> list[StoredRow]:
        """The next ``limit`` rows in key order."""
        cols = [*self._pk, self._value] + ([self._index] if self._index is not None else [])
        query = select(*cols).order_by(*self._pk).limit(limit)
        if after is not None:
            query = query.where(self._after(after))
        n = len(self._pk)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out: list[StoredRow] = []
        for r in rows:
            value = r[n]
            out.append(
                StoredRow(
                    tuple(r[:n]),
                    value if value is None or isinstance(value, str) else bytes(value),
                    bytes(r[n + 1]) if self._index is not None and r[n + 1] is not None else None,
                )
            )
        return out

    def write_batch(self, changes: Sequence[RowChange], checkpoint: Callable[[int], bytes | None]) -> int:
        """Compare-and-set every change and store the checkpoint, in one committed transaction."""
        changed = 0
        with self.engine.begin() as conn:
            if changes:
                params = []
                for change in changes:
                    p: dict[str, Any] = {
                        f"k_{name}": part for name, part in zip(self._pk_names, change.key, strict=True)
                    }
                    p["old_value"], p["new_value"] = change.old_value, change.new_value
                    if self._index is not None:
                        p["old_index"], p["new_index"] = change.old_index, change.new_index
                    params.append(p)
                changed = conn.execute(self._update, params).rowcount
            sealed = checkpoint(changed)
            if sealed is None:
                conn.execute(delete(checkpoints).where(checkpoints.c.job == self._job))
            elif (
                conn.execute(update(checkpoints).where(checkpoints.c.job == self._job).values(sealed=sealed)).rowcount
                == 0
            ):
                conn.execute(insert(checkpoints).values(job=self._job, sealed=sealed))
        return changed

    def read_checkpoint(self) -> bytes | None:
        """This job's checkpoint, if an unfinished run left one."""
        with self.engine.connect() as conn:
            sealed = conn.execute(select(checkpoints.c.sealed).where(checkpoints.c.job == self._job)).scalar()
        return bytes(sealed) if sealed is not None else None


def _resolve(
    attribute: InstrumentedAttribute[Any] | Column[Any],
) -> tuple[Table, Column[Any], Encrypted, Column[Any] | None]:
    col = attribute.property.columns[0] if isinstance(attribute, InstrumentedAttribute) else attribute
    if not isinstance(col.type, Encrypted):
        raise ValueError(f"{col} is not an Encrypted column")
    source = col.table
    if not isinstance(source, Table):
        raise ValueError(f"{col} does not belong to a table")
    index = next((c for c in source.columns if isinstance(c.type, BlindIndex) and c.type.source == col.name), None)
    return source, col, col.type, index


def _job(
    engine: Engine, attribute: Any, *, force: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[RewriteJob, SqlRewriteTarget, bool]:
    source, col, col_type, index_col = _resolve(attribute)
    create_tables(engine)
    target = SqlRewriteTarget(engine, source, col, index_col)
    spec = keyring = None
    if index_col is not None:
        index_type: BlindIndex = index_col.type  # type: ignore[assignment]
        spec = index_type.spec(source.fullname)
        keyring_: IndexKeyring = index_type.resolved_config().keyring
        keyring = keyring_
    job = RewriteJob(
        col_type.column(source.fullname, col.name),
        target,
        index=spec,
        keyring=keyring,
        force=force,
        batch_size=batch_size,
    )
    return job, target, index_col is not None


def rewrite_column(
    engine: Engine,
    attribute: InstrumentedAttribute[Any] | Column[Any],
    *,
    force: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    resume: bool = True,
    dry_run: bool = False,
    progress: Progress | None = None,
    max_batches: int | None = None,
) -> RewriteReport:
    """Re-encrypt an ``Encrypted`` column (``User.api_key``) in place, and recompute its blind index.

    Rewrites legacy values, values under an older KEK or KEK version and (with ``force``)
    every value; see :class:`kmsbox_orm.RewriteJob` for the rest. Safe while the
    application writes; resumes after its last committed batch unless ``resume=False``.
    """
    job, _target, _ = _job(engine, attribute, force=force, batch_size=batch_size)
    return job.run(resume=resume, dry_run=dry_run, progress=progress, max_batches=max_batches)


def scan_column(
    engine: Engine, attribute: InstrumentedAttribute[Any] | Column[Any], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> ColumnScan:
    """Count a column's values by state and KEK version, and its index values by version (nothing decrypted)."""
    job, target, has_index = _job(engine, attribute, batch_size=batch_size)
    return ColumnScan.run(job.column, target, has_index=has_index, batch_size=batch_size)
