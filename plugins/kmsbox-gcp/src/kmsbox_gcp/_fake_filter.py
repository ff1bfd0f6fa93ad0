"""The ``filter`` and ``order_by`` of Cloud KMS list calls, for the fake.

Cloud KMS's documented language ("Sorting and filtering list results"): comparisons
``=``, ``!=``, ``<``, ``>``, ``<=``, ``>=`` (also written ``=>``) and ``:`` (a
case-insensitive substring, or "has key" on a map such as ``labels``), on any field of
the listed resource by dotted path (``primary.state``, ``labels.team``); ``AND`` (or a
space), ``OR`` (which binds tighter than ``AND``), ``NOT`` or ``-``, and parentheses.
Enum fields compare by name (``state = ENABLED``), times as RFC 3339 strings, durations
as ``86400s``. ``order_by`` is a comma-separated list of fields, each optionally
followed by ``asc`` or ``desc``. A field the resource does not have, or text that does
not parse, is an :class:`FilterError` (the fake answers INVALID_ARGUMENT).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["FilterError", "compile_filter", "sort_resources"]

T = TypeVar("T")
Predicate = Callable[[Any], bool]

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<paren>[()])
  | (?P<op><=|>=|=>|!=|=|<|>|:)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<word>[^\s()<>=!:"]+)
    """,
    re.VERBOSE,
)
_DURATION_RE = re.compile(r"^(-?\d+(?:\.\d+)?)s$")


class FilterError(ValueError):
    """A filter or order_by that does not parse or names a field the resource does not have."""


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise FilterError(f"unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            value = match.group()
            tokens.append((kind, value[1:-1].replace('\\"', '"') if kind == "string" else value))
        position = match.end()
    return tokens


def _check_path(message_type: Any, path: str) -> None:
    """FilterError unless ``path`` names a field of ``message_type`` (any key below a map)."""
    current = message_type
    for part in path.split("."):
        fields = getattr(getattr(current, "meta", None), "fields", None)
        if fields is None:
            return  # below a map: any key
        field = fields.get(part)
        if field is None:
            raise FilterError(f"{type_name(message_type)} has no field {path!r}")
        current = field.message
        if current is None or _is_map_entry(current):
            return


def _is_map_entry(message_type: Any) -> bool:
    """True for the entry type of a map field (``labels``): any key may follow it in a path."""
    try:
        return bool(message_type.meta.pb.DESCRIPTOR.GetOptions().map_entry)
    except AttributeError:
        return False


def type_name(message_type: Any) -> str:
    """The resource type's short name, for messages."""
    return str(getattr(message_type, "__name__", "resource"))


def _resolve(resource: Any, path: str) -> Any:
    """The value at a dotted path (None when unset or missing)."""
    value = resource
    for part in path.split("."):
        if value is None:
            return None
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
    return value


def _as_comparable(value: Any, literal: str) -> tuple[Any, Any] | None:
    """``(field value, literal)`` in one comparable type, or None when they cannot compare."""
    if isinstance(value, enum.Enum):
        return value.name, literal
    if isinstance(value, bool):
        return (value, literal.lower() == "true") if literal.lower() in ("true", "false") else None
    if isinstance(value, int):
        try:
            return value, int(literal)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        try:
            parsed = dt.datetime.fromisoformat(literal.replace("Z", "+00:00"))
        except ValueError:
            return None
        return value, parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.timedelta):
        match = _DURATION_RE.match(literal)
        return (value, dt.timedelta(seconds=float(match.group(1)))) if match else None
    return str(value), literal


def _comparison(path: str, op: str, literal: str) -> Predicate:
    def holds(resource: Any) -> bool:
        value = _resolve(resource, path)
        if op == ":":
            if isinstance(value, Mapping):
                return literal in value
            return value is not None and literal.lower() in str(getattr(value, "name", value)).lower()
        if value is None or (isinstance(value, str) and value == "" and op != "="):
            return op == "!="
        pair = _as_comparable(value, literal)
        if pair is None:
            return op == "!="
        left, right = pair
        if op == "=":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        try:
            return bool({"<": left < right, ">": left > right, "<=": left <= right}.get(op, left >= right))
        except TypeError:
            return False

    return holds


class _Parser:
    """``expr := conjunct (AND? conjunct)*; conjunct := unary (OR unary)*; unary := (NOT|-)? term``."""

    def __init__(self, text: str, message_type: Any) -> None:
        self._tokens = _tokens(text)
        self._at = 0
        self._type = message_type

    def parse(self) -> Predicate:
        """The predicate of the whole filter; FilterError for anything left over."""
        predicate = self._expression()
        if self._at != len(self._tokens):
            raise FilterError(f"unexpected {self._tokens[self._at][1]!r}")
        return predicate

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _expression(self) -> Predicate:
        parts = [self._disjunction()]
        while (token := self._peek()) is not None and token != ("paren", ")"):
            if token == ("word", "AND"):
                self._at += 1
            parts.append(self._disjunction())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def _disjunction(self) -> Predicate:
        parts = [self._unary()]
        while self._peek() == ("word", "OR"):
            self._at += 1
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def _unary(self) -> Predicate:
        token = self._peek()
        if token == ("word", "NOT"):
            self._at += 1
            inner = self._unary()
            return lambda r: not inner(r)
        if token is not None and token[0] == "word" and token[1].startswith("-") and len(token[1]) > 1:
            self._tokens[self._at] = ("word", token[1][1:])
            inner = self._unary()
            return lambda r: not inner(r)
        return self._term()

    def _term(self) -> Predicate:
        token = self._peek()
        if token is None:
            raise FilterError("the filter ends too early")
        if token == ("paren", "("):
            self._at += 1
            inner = self._expression()
            if self._peek() != ("paren", ")"):
                raise FilterError("a '(' is not closed")
            self._at += 1
            return inner
        if token[0] != "word" or token[1] in ("AND", "OR"):
            raise FilterError(f"expected a field name, found {token[1]!r}")
        self._at += 1
        operator = self._peek()
        if operator is None or operator[0] != "op":
            raise FilterError(f"expected a comparison after {token[1]!r}")
        self._at += 1
        value = self._peek()
        if value is None or value[0] not in ("word", "string"):
            raise FilterError(f"expected a value after {token[1]} {operator[1]}")
        self._at += 1
        _check_path(self._type, token[1])
        return _comparison(token[1], ">=" if operator[1] == "=>" else operator[1], value[1])


def compile_filter(text: str, message_type: Any) -> Predicate:
    """A predicate over resources of ``message_type`` for a Cloud KMS filter ("" keeps everything)."""
    if not text.strip():
        return lambda resource: True
    return _Parser(text, message_type).parse()


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, enum.IntEnum):
        return (1, int(value))
    if isinstance(value, dt.timedelta):
        return (1, value.total_seconds())
    if isinstance(value, dt.datetime):
        return (1, value.timestamp())
    return (1, value) if isinstance(value, int | float | bool) else (2, str(value))


def sort_resources(resources: Sequence[T], order_by: str, message_type: Any) -> list[T]:
    """``resources`` in the order ``order_by`` asks ("": as given)."""
    items = list(resources)
    if not order_by.strip():
        return items
    clauses = []
    for clause in order_by.split(","):
        words = clause.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise FilterError(f"order_by clause {clause.strip()!r} must be 'FIELD [asc|desc]'")
        _check_path(message_type, words[0])
        clauses.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    for path, descending in reversed(clauses):  # stable sorts, least significant clause first

        def key(resource: T, path: str = path) -> tuple[int, Any]:
            return _sort_key(_resolve(resource, path))

        items.sort(key=key, reverse=descending)
    return items
