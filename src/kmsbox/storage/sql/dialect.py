"""What differs between SQL engines, and the one request a statement makes.

The store's SQL (:mod:`kmsbox.storage.sql.statements`) is written once, with ``?``
placeholders, as generators that yield :class:`Execute` requests; a driver runs each
on a sync or an async cursor and sends the result back. A :class:`SqlDialect` fills
in what the engines spell differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL", "COUNT", "NONE", "ONE", "Execute", "SqlDialect"]

#: What a driver sends back for an :class:`Execute`: the first row (or None), every
#: row, the number of rows changed, or nothing.
ONE, ALL, COUNT, NONE = "one", "all", "count", "none"


@dataclass(frozen=True, slots=True)
class Execute:
    """Run ``sql`` (already in the engine's placeholder style) with ``params``.

    ``many`` runs it once per parameter tuple in ``params`` (which is then a list).
    """

    sql: str
    params: Any = ()
    fetch: str = NONE
    many: bool = False


@dataclass(frozen=True)
class SqlDialect:
    """An SQL engine's spelling of what kmsbox's statements need.

    ``hold_shared`` and ``hold_exclusive`` are the row-lock clauses a ``SELECT`` takes
    for the storage protocol's holds (empty where write transactions run one at a time,
    as on SQLite); ``greatest`` is the two-argument maximum function.

    ``namespace_queue_shared`` and ``namespace_queue_exclusive`` are one-row ``SELECT`` statements
    (one ``?``: the namespace) that a write transaction's statement holding a namespace's
    key state, shared or exclusively, joins in first (no extra round trip). An engine whose
    row locks let new shared holders overtake a waiting exclusive one without end
    (PostgreSQL's ``FOR SHARE`` does: a key rotation waited a minute behind a steady stream
    of puts) takes a lock with a fair queue there, so that the exclusive hold waits only
    for the holds already granted. Empty where not needed.
    """

    name: str
    placeholder: str = "?"
    blob: str = "BLOB"
    real: str = "REAL"
    bigint: str = "INTEGER"
    without_rowid: str = ""
    hold_shared: str = ""
    hold_exclusive: str = ""
    greatest: str = "MAX"
    namespace_queue_shared: str = ""
    namespace_queue_exclusive: str = ""
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, text: str) -> str:
        """Rewrite ``?`` placeholders for this engine (cached)."""
        out = self._cache.get(text)
        if out is None:
            out = text if self.placeholder == "?" else text.replace("?", self.placeholder)
            out = out.replace("GREATEST(", f"{self.greatest}(")
            self._cache[text] = out
        return out

    def ddl(self, text: str) -> str:
        """Fill the type placeholders of a migration statement."""
        return text.format(blob=self.blob, real=self.real, bigint=self.bigint, without_rowid=self.without_rowid)
