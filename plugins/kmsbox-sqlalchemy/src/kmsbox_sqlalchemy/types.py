"""The column types: ``Encrypted(String | LargeBinary | JSON)`` and ``BlindIndex(source)``.

A value is encrypted when its row is flushed and decrypted when its row is loaded (see
:mod:`kmsbox_sqlalchemy.events`): only then is the row's primary key known, and the
value is bound to it. So the types themselves only carry stored values: a value written
through a Core statement, or compared in SQL, is refused with a clear error instead of
being stored unbound or compared uselessly (every encryption of a value differs).
"""

from __future__ import annotations

from typing import Any, Literal

from kmsbox_orm.blind import DEFAULT_INDEX_LENGTH, Blind, BlindIndexSpec
from kmsbox_orm.codecs import DEFAULT_MAX_BYTES, CodecKind, ValueCodec
from kmsbox_orm.column import EncryptedColumn, Sealed, StoredAs
from kmsbox_orm.errors import WrongValueType
from kmsbox_orm.legacy import LegacyFormat
from sqlalchemy import JSON, LargeBinary, MetaData, String, Text, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.types import TypeDecorator

from kmsbox.errors import ConfigError
from kmsbox_sqlalchemy.config import EncryptionConfig, get_default

__all__ = ["BlindIndex", "Encrypted", "blind_index_names"]


def _kind_of(value_type: Any) -> CodecKind:
    if value_type in ("text", "bytes", "json"):
        return value_type  # type: ignore[no-any-return]
    instance = value_type() if isinstance(value_type, type) else value_type
    if isinstance(instance, JSON):
        return "json"
    if isinstance(instance, LargeBinary):
        return "bytes"
    if isinstance(instance, String):
        return "text"
    raise ValueError("Encrypted() takes String/Text/Unicode, LargeBinary or JSON (or 'text', 'bytes', 'json')")


class Encrypted(TypeDecorator[Any]):
    """A column whose values are encrypted with the engine, each bound to its table, column and row.

    ``Encrypted(String)`` holds str, ``Encrypted(LargeBinary)`` bytes, ``Encrypted(JSON)``
    JSON values; None is SQL NULL. ``max_bytes`` bounds the plaintext (ValueTooLarge);
    ``stored_as="text"`` keeps the ciphertext as base64 text (for a column that must stay
    text); ``legacy`` reads values still in a format migrated from (for example
    :class:`kmsbox_orm.SqlalchemyUtilsFormat`); ``config`` overrides the default settings.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(
        self,
        value_type: Any = String,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        stored_as: StoredAs = "binary",
        legacy: LegacyFormat | None = None,
        config: EncryptionConfig | None = None,
    ) -> None:
        super().__init__()
        if stored_as not in ("binary", "text"):
            raise ValueError("stored_as must be 'binary' or 'text'")
        if legacy is not None and not isinstance(legacy, LegacyFormat):
            raise ValueError("legacy must be a kmsbox_orm legacy format (SqlalchemyUtilsFormat, ...)")
        self.kind = _kind_of(value_type)
        self.codec = ValueCodec(self.kind, max_bytes)
        self.max_bytes = max_bytes
        self.stored_as = stored_as
        self.legacy = legacy
        self.config = config

    def __repr__(self) -> str:
        return f"Encrypted({self.kind!r}, max_bytes={self.max_bytes}, stored_as={self.stored_as!r})"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """LargeBinary, or Text for ``stored_as="text"``."""
        return dialect.type_descriptor(Text() if self.stored_as == "text" else LargeBinary())

    def resolved_config(self) -> EncryptionConfig:
        """The config this column uses (its own, else the default)."""
        return self.config or get_default()

    def column(self, table: str, column: str) -> EncryptedColumn:
        """The ORM-neutral description of this column in ``table``."""
        return EncryptedColumn(
            table, column, self.codec, self.resolved_config().encryption, self.stored_as, self.legacy
        )

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Pass sealed values through; refuse a plaintext (it would be stored unbound)."""
        if value is None:
            return None
        if isinstance(value, Sealed):
            return value.stored
        raise WrongValueType(
            "an encrypted column's value is encrypted with its row's key when the row is flushed: "
            "set it on a mapped object, not in a Core insert/update or bulk statement"
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        """Wrap the stored value; the row's load event decrypts it with the row's key."""
        if value is None:
            return None
        return Sealed(value if isinstance(value, str) else bytes(value))

    def compare_values(self, x: Any, y: Any) -> bool:
        """Plain equality (a Sealed value never equals a plaintext)."""
        return bool(x == y)

    class comparator_factory(TypeDecorator.Comparator[Any]):
        """Only IS NULL / IS NOT NULL: equal plaintexts have unequal ciphertexts."""

        def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
            """Allow NULL tests; refuse the rest with a pointer to blind indexes."""
            if op in (operators.is_, operators.is_not) or (
                op in (operators.eq, operators.ne) and len(other) == 1 and other[0] is None
            ):
                return super().operate(op, *other, **kwargs)
            raise WrongValueType(
                "an encrypted column cannot be compared in SQL (each encryption differs): "
                "add a BlindIndex column and compare it with blind(value)"
            )


class BlindIndex(TypeDecorator[bytes]):
    """A companion column holding an HMAC of the encrypted column ``source``'s normalised value.

    ``source`` is the encrypted column's name in the same table. ``length`` is how many HMAC
    bytes to keep (1-32; see docs/orm.md on choosing it); ``normalize`` is ``nfc`` (default),
    ``exact``, ``casefold`` or ``email``; ``name`` is the index key's name (default
    ``"<table>.<source>"``; columns that share a name can be joined on their indexes).
    Query it with ``Model.email_index == blind("a@b.c")``.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(
        self,
        source: str,
        *,
        length: int = DEFAULT_INDEX_LENGTH,
        normalize: Literal["nfc", "exact", "casefold", "email"] = "nfc",
        name: str | None = None,
        config: EncryptionConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(source, str) or not source:
            raise ValueError("BlindIndex needs the name of its encrypted source column")
        self.source = source
        self.length = length
        self.normalize = normalize
        self.name = name
        self.config = config
        BlindIndexSpec(name or "check", length=length, normalize=normalize)  # validate early

    def __repr__(self) -> str:
        return f"BlindIndex({self.source!r}, length={self.length}, normalize={self.normalize!r})"

    def spec(self, table: str) -> BlindIndexSpec:
        """The ORM-neutral description, for ``table`` (its full name)."""
        return BlindIndexSpec(self.name or f"{table}.{self.source}", length=self.length, normalize=self.normalize)

    def resolved_config(self) -> EncryptionConfig:
        """The config this index uses (its own, else the default)."""
        return self.config or get_default()

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Index values are computed at flush; a Blind marker belongs in a comparison."""
        if isinstance(value, Blind):
            raise WrongValueType("compare a blind index with ==/in_() and blind(value); it cannot be assigned")
        return value

    class comparator_factory(TypeDecorator.Comparator[bytes]):
        """``== blind(x)`` and ``in_([blind(x), ...])`` match every readable index-key version."""

        def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
            """Expand blind values into the digests of every readable index-key version."""
            if op is operators.eq and len(other) == 1 and isinstance(other[0], Blind):
                return self._match([other[0]])
            if (
                op is operators.in_op
                and len(other) == 1
                and isinstance(other[0], (list, tuple))
                and other[0]
                and all(isinstance(v, Blind) for v in other[0])
            ):
                return self._match(list(other[0]))
            if any(isinstance(v, Blind) for v in other):
                raise WrongValueType("a blind value can only be compared with == or in_()")
            return super().operate(op, *other, **kwargs)

        def _match(self, values: list[Blind]) -> ColumnElement[Any]:
            column = self.expr
            index_type: BlindIndex = column.type  # type: ignore[assignment]
            table = getattr(column, "table", None)
            if table is None or index_type.source not in table.c:
                raise ConfigError(f"blind index source column {index_type.source!r} is not in the same table")
            source_type = table.c[index_type.source].type
            if not isinstance(source_type, Encrypted):
                raise ConfigError(f"blind index source {index_type.source!r} is not an Encrypted column")
            spec = index_type.spec(table.fullname)
            codec = source_type.codec

            def digests() -> list[bytes]:
                # Computed when the statement runs (inside the asyncio bridge for AsyncSession),
                # so the keyring can reload and the compiled statement stays cacheable.
                keyring = index_type.resolved_config().keyring
                return [d for v in values for d in spec.digests(keyring, codec, v)]

            param = bindparam(None, callable_=digests, expanding=True, type_=LargeBinary())
            return column.in_(param)


def blind_index_names(metadata: MetaData) -> list[str]:
    """The index-key names of every BlindIndex column in ``metadata``."""
    names: list[str] = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, BlindIndex):
                names.append(column.type.spec(table.fullname).name)
    return names


# The mapper events that seal and open these columns, registered with the types however
# they are imported (events imports this module's names, so it comes last).
from kmsbox_sqlalchemy import events as _events  # noqa: E402, F401
