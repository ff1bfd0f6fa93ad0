"""Mapper events that encrypt values at flush and decrypt them at load, bound to each row's primary key.

On flush, each changed encrypted attribute is replaced by its sealed value for the
INSERT/UPDATE and the plaintext is put back (as committed) right after, so the object
always shows plaintext. Blind indexes are recomputed from the plaintext in the same step.

**Keys the database generates.** Before an INSERT, an autoincrement or server-default key
is unknown. Such a row is inserted with an empty placeholder in its encrypted columns, and
the values are sealed and written by an UPDATE of that row right after the INSERT, in the
same transaction (so no other transaction ever sees the placeholder). That costs one
UPDATE per inserted row; a key assigned by the application (a UUID default, a sequence
fetched first) avoids it.

On load (and on refresh of expired or deferred attributes), each sealed value is opened
with the row's key. A value that fails (tampered, moved, its KEK version gone) raises the
kmsbox error from the query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmsbox_orm.column import EncryptedColumn, Sealed
from kmsbox_orm.context import row_id
from sqlalchemy import Column, event, inspect, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import flag_modified, instance_state, set_committed_value
from sqlalchemy.orm.state import InstanceState

from kmsbox_sqlalchemy.types import BlindIndex, Encrypted

__all__ = ["MappedEncryption", "mapped_encryption"]

_PLAIN = "kmsbox_plaintext"
_PENDING = "kmsbox_pending"


@dataclass(eq=False)
class _EncryptedAttr:
    key: str
    column_name: str
    table: str
    type: Encrypted
    _cache: dict[int, EncryptedColumn] = field(default_factory=dict)

    def column(self) -> EncryptedColumn:
        config = self.type.resolved_config()
        cached = self._cache.get(id(config))
        if cached is None or cached.encryption is not config.encryption:
            cached = self.type.column(self.table, self.column_name)
            self._cache = {id(config): cached}
        return cached


@dataclass
class _IndexAttr:
    key: str
    source_key: str
    table: str
    type: BlindIndex
    source: Encrypted


@dataclass
class MappedEncryption:
    """The encrypted and blind-index attributes of one mapper."""

    mapper: Mapper[Any]
    encrypted: list[_EncryptedAttr]
    indexes: list[_IndexAttr]

    def row(self, target: Any) -> str | None:
        """The row id of ``target`` from its current key attributes (None while one is unset)."""
        key = self.mapper.primary_key_from_instance(target)
        if any(part is None for part in key):
            return None
        return row_id(key)


_registry: dict[Mapper[Any], MappedEncryption] = {}


def mapped_encryption(mapper: Mapper[Any]) -> MappedEncryption | None:
    """What the plugin found on ``mapper`` (None when it has no encrypted column)."""
    return _registry.get(mapper)


@event.listens_for(Mapper, "mapper_configured")
def _on_configured(mapper: Mapper[Any], class_: type) -> None:
    encrypted: list[_EncryptedAttr] = []
    indexes: list[tuple[str, Any, BlindIndex]] = []
    by_column: dict[Any, str] = {}
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        by_column[column] = prop.key
        if isinstance(column.type, Encrypted):
            if not isinstance(column, Column):
                raise ValueError(f"{class_.__name__}.{prop.key}: an Encrypted attribute must map a table column")
            encrypted.append(_EncryptedAttr(prop.key, column.name, column.table.fullname, column.type))
        elif isinstance(column.type, BlindIndex):
            indexes.append((prop.key, column, column.type))
    if not encrypted:
        if indexes:
            raise ValueError(
                f"{class_.__name__}: a BlindIndex column needs an Encrypted source column in the same table"
            )
        return
    index_attrs: list[_IndexAttr] = []
    for key, column, index_type in indexes:
        source_column = column.table.c.get(index_type.source)
        if source_column is None or not isinstance(source_column.type, Encrypted):
            raise ValueError(
                f"{class_.__name__}.{key}: BlindIndex source {index_type.source!r} is not an Encrypted column of {column.table.fullname}"
            )
        index_attrs.append(
            _IndexAttr(key, by_column[source_column], column.table.fullname, index_type, source_column.type)
        )
    spec = MappedEncryption(mapper, encrypted, index_attrs)
    _registry[mapper] = spec
    event.listen(mapper, "before_insert", _before_insert)
    event.listen(mapper, "after_insert", _after_insert)
    event.listen(mapper, "before_update", _before_update)
    event.listen(mapper, "after_update", _after_update)
    event.listen(mapper, "load", _on_load)
    event.listen(mapper, "refresh", _on_refresh)
    event.listen(mapper, "refresh_flush", _on_refresh)


def _spec(mapper: Mapper[Any]) -> MappedEncryption:
    return _registry[mapper]


def _stage(target: Any, state: InstanceState[Any], key: str, value: Any) -> None:
    """Put a flush-time value (a sealed value, an index digest) in the row without attribute events.

    ``setattr`` would run the model's ``@validates`` hooks and listeners on a sealed value.
    The dict is what an INSERT reads; ``flag_modified`` makes an UPDATE include the column
    even when the application did not change it (a re-seal for a new key, a new index).
    """
    state.dict[key] = value
    if state.key is not None:
        flag_modified(target, key)


def _set_indexes(spec: MappedEncryption, target: Any, state: InstanceState[Any], changed: set[str] | None) -> None:
    for index in spec.indexes:
        if changed is not None and index.source_key not in changed:
            continue
        value = state.dict.get(index.source_key)
        config = index.type.resolved_config()
        digest = index.type.spec(index.table).digest(config.keyring, index.source.codec, value)
        if state.key is None or state.dict.get(index.key) != digest:
            _stage(target, state, index.key, digest)


def _before_insert(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    spec = _spec(mapper)
    state = inspect(target)
    _set_indexes(spec, target, state, None)
    row = spec.row(target)
    plaintexts: dict[str, Any] = {}
    for attr in spec.encrypted:
        value = state.dict.get(attr.key)
        if value is None:
            continue
        column = attr.column()
        data = column.codec.encode(value)  # type and size errors before any SQL
        plaintexts[attr.key] = value
        if row is None:
            _stage(target, state, attr.key, Sealed("" if column.stored_as == "text" else b""))
        else:
            _stage(target, state, attr.key, column.seal_plaintext(data, row))
    state.info[_PLAIN] = plaintexts
    state.info[_PENDING] = row is None and bool(plaintexts)


def _after_insert(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    spec = _spec(mapper)
    state = inspect(target)
    plaintexts: dict[str, Any] = state.info.pop(_PLAIN, {})
    if state.info.pop(_PENDING, False):
        row = spec.row(target)
        if row is None:
            raise ValueError(
                f"{type(target).__name__}: the database returned no primary key to bind its encrypted values to"
            )
        sealed = {
            attr: attr.column().seal(plaintexts[attr.key], row) for attr in spec.encrypted if attr.key in plaintexts
        }
        _write_sealed(spec, connection, target, sealed)
    for key, value in plaintexts.items():
        set_committed_value(target, key, value)


def _write_sealed(
    spec: MappedEncryption, connection: Connection, target: Any, sealed: dict[_EncryptedAttr, Sealed]
) -> None:
    mapper = spec.mapper
    key = mapper.primary_key_from_instance(target)
    by_table: dict[Any, dict[str, Sealed]] = {}
    for attr, value in sealed.items():
        column = mapper.columns[attr.key]
        by_table.setdefault(column.table, {})[column.name] = value
    for table, values in by_table.items():
        # The key columns of this table, in the mapper's key order (joined inheritance shares key values).
        where = [col == part for col, part in zip(table.primary_key.columns, key, strict=True)]
        connection.execute(update(table).where(*where).values(values))


def _before_update(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    spec = _spec(mapper)
    state = inspect(target)
    key_changed = any(
        state.attrs[mapper.get_property_by_column(c).key].history.has_changes() for c in mapper.primary_key
    )
    changed = {attr.key for attr in spec.encrypted if key_changed or state.attrs[attr.key].history.has_changes()}
    if key_changed:
        missing = [attr.key for attr in spec.encrypted if attr.key not in state.dict]
        if missing:
            raise ValueError(
                f"{type(target).__name__}: changing the primary key re-encrypts every encrypted value for the new key; "
                f"load {', '.join(missing)} first"
            )
    _set_indexes(spec, target, state, changed)
    row = spec.row(target)
    plaintexts: dict[str, Any] = {}
    for attr in spec.encrypted:
        if attr.key not in changed:
            continue
        value = state.dict.get(attr.key)
        if value is None or isinstance(value, Sealed):
            continue
        if row is None:
            raise ValueError(f"{type(target).__name__}: a row without its primary key cannot bind encrypted values")
        plaintexts[attr.key] = value
        _stage(target, state, attr.key, attr.column().seal(value, row))
    state.info[_PLAIN] = plaintexts


def _after_update(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    state = inspect(target)
    for key, value in state.info.pop(_PLAIN, {}).items():
        set_committed_value(target, key, value)


def _open(target: Any, attrs: Any = None, *, loading: bool = False) -> None:
    state = instance_state(target)
    spec = _registry.get(state.mapper)
    if spec is None:
        return
    dict_ = state.dict
    row: str | None = None
    for attr in spec.encrypted:
        if attrs is not None and attr.key not in attrs:
            continue
        value = dict_.get(attr.key)
        if type(value) is not Sealed:
            continue
        if row is None:
            identity = state.identity if state.identity is not None else spec.mapper.primary_key_from_instance(target)
            row = row_id(identity)
        plaintext = attr.column().open(value.stored, row)
        if loading:
            # A row just loaded has no history yet: its dict value is its committed value.
            dict_[attr.key] = plaintext
        else:
            set_committed_value(target, attr.key, plaintext)


def _on_load(target: Any, context: Any) -> None:
    _open(target, loading=True)


def _on_refresh(target: Any, context: Any, attrs: Any) -> None:
    _open(target, attrs)
