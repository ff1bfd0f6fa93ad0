"""The SQL storage base: a public, documented way to put kmsbox on an SQL engine.

A backend plugin gives an :class:`SqlEngine` (connections, transactions, its errors)
with an :class:`SqlDialect` (how the engine spells types, placeholders and row locks),
and gets a complete :class:`~kmsbox.storage.base.StorageBackend` from
:class:`SqlBackend`: every statement of the store, the schema migrations and the
thread and process handling. The SQLite backend and the ``kmsbox-postgres`` plugin are
built on exactly this. ``docs/plugins.md`` walks through writing one.
"""

from kmsbox.storage.sql.backend import SqlBackend, SqlEngine, SqlTransaction, Statement
from kmsbox.storage.sql.dialect import Execute, SqlDialect
from kmsbox.storage.sql.schema import MIGRATIONS, SCHEMA_VERSION, TABLES
from kmsbox.storage.sql.statements import SqlStatements

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "Execute",
    "SqlBackend",
    "SqlDialect",
    "SqlEngine",
    "SqlStatements",
    "SqlTransaction",
    "Statement",
]
