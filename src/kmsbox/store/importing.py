"""Import for users coming from hand-rolled encryption.

Parsers for dotenv and JSON files, and :class:`Importer`, which moves ``(name, value)``
pairs (into one namespace) or ``(namespace, name, value)`` triples, or legacy rows
through a user-supplied decrypt function, into the store in committed batches. A bad
item stops the import (``on_error="stop"``, earlier batches stay committed) or is passed
over and reported with its typed error (``on_error="skip"``). Values never pass through
a command line, a log or an error message.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kmsbox.errors import ConflictError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.keys import seal_secret
from kmsbox.limits import check_text
from kmsbox.storage.base import NamespaceState, SecretRow, StateEvent, StoredVersion
from kmsbox.store.audit import Event
from kmsbox.store.io import Op, Ports
from kmsbox.store.jobs import ItemFailure, JobReport, Progress
from kmsbox.store.keyring import ActiveKey
from kmsbox.store.names import validate_name, validate_namespace
from kmsbox.store.runtime import StoreRuntime
from kmsbox.store.secrets import Secrets
from kmsbox.store.values import check_labels, check_optional_text, encode_value

__all__ = ["ON_CONFLICT", "ON_ERROR", "Importer", "parse_dotenv", "parse_json_secrets"]

ON_CONFLICT = ("skip", "overwrite", "fail")
ON_ERROR = ("stop", "skip")
R = TypeVar("R")
T = TypeVar("T")
_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unquote(raw: str, line_no: int) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        body, out, i = raw[1:-1], [], 0
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                out.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
                i += 2
                continue
            out.append(ch)
            i += 1
        return "".join(out)
    if raw[:1] in ("'", '"'):
        raise ValueError(f"dotenv line {line_no}: unterminated quote")
    # An unquoted value ends at an inline comment.
    return raw.split(" #", 1)[0].rstrip()


def parse_dotenv(text: str) -> list[tuple[str, str]]:
    """Parse ``KEY=value`` lines (``export``, quotes, ``#`` comments). ValueError on a bad line.

    Error messages name the line number, never its value.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if not match:
            hint = " (this looks like JSON: use --format json)" if line_no == 1 and stripped[:1] in "{[" else ""
            raise ValueError(f"dotenv line {line_no} is not KEY=VALUE{hint}")
        name, raw = match.group(1), match.group(2)
        if name in seen:
            raise ValueError(f"dotenv line {line_no}: {name} is defined twice")
        seen.add(name)
        pairs.append((name, _unquote(raw, line_no)))
    return pairs


def parse_json_secrets(text: str) -> list[tuple[str, str]]:
    """Parse a JSON object of ``{"name": "value"}``. ValueError if it is anything else."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"JSON is malformed at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("JSON import must be an object mapping names to string values")
    pairs: list[tuple[str, str]] = []
    for name, value in data.items():
        if not isinstance(value, str):
            raise ValueError(f"JSON import: the value of {name!r} is not a string")
        pairs.append((name, value))
    return pairs


@dataclass(slots=True)
class _Item:
    index: int
    namespace: str
    name: str
    payload: bytes


_STALE = object()
_SKIPPED = object()  # a legacy row import_rows could not decrypt: already reported


class Importer:
    """Bulk import into a store."""

    def __init__(self, rt: StoreRuntime, secrets: Secrets) -> None:
        self.rt = rt
        self.secrets = secrets

    def import_secrets(
        self,
        io: Ports,
        items: Iterable[tuple[Any, ...]] | Mapping[str, str | bytes],
        *,
        namespace: str | None = None,
        on_conflict: str = "skip",
        on_error: str = "stop",
        category: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        source: str = "import",
    ) -> Op[JobReport]:
        """Import ``(name, value)`` pairs into ``namespace``, or ``(namespace, name, value)``
        triples, in committed batches (see ``SecretStore.import_secrets``)."""
        if on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}")
        default_ns = None if namespace is None else validate_namespace(namespace)
        clean_labels = check_labels(labels)
        clean_category = check_optional_text(category, "category", 128)
        check_text(source, "source", 64)
        pairs = items.items() if isinstance(items, Mapping) else items
        report = JobReport("import", default_ns)
        who, req = self.rt.who(None, None)

        def parsed() -> Iterator[_Item]:
            for index, item in enumerate(pairs, start=1):
                if item is _SKIPPED:
                    continue
                ns: str | None = default_ns
                name: Any = None
                try:
                    if not isinstance(item, tuple) or len(item) not in (2, 3):
                        raise ValueError("an item is (name, value) or (namespace, name, value)")
                    if len(item) == 3:
                        ns = validate_namespace(item[0])
                        name, value = item[1], item[2]
                    else:
                        name, value = item
                        if ns is None:
                            raise ValueError("an item without a namespace needs namespace=...")
                    validate_name(name)
                    payload = encode_value(value, self.rt.settings.max_value_size)
                except (ValueError, TypeError) as exc:
                    # These messages name the item's type or size, never its value.
                    error = ValueError(f"import item {index}: {exc}")
                    if on_error == "stop":
                        raise error from None
                    report.failures.append(ItemFailure(index, ns, name if isinstance(name, str) else None, error))
                    continue
                assert ns is not None
                yield _Item(index, ns, name, payload)

        batch: list[_Item] = []
        for entry in parsed():
            batch.append(entry)
            if len(batch) >= self.rt.settings.batch_size:
                yield from self._batch(
                    io, batch, on_conflict, on_error, clean_category, clean_labels, source, who, req, report
                )
                batch = []
                if progress:
                    progress(report.processed + report.skipped, None)
        if batch:
            yield from self._batch(
                io, batch, on_conflict, on_error, clean_category, clean_labels, source, who, req, report
            )
            if progress:
                progress(report.processed + report.skipped, None)
        return report.finish()

    def _batch(
        self,
        io: Ports,
        batch: list[_Item],
        on_conflict: str,
        on_error: str,
        category: str | None,
        labels: dict[str, str],
        source: str,
        who: str | None,
        req: dict[str, str],
        report: JobReport,
    ) -> Op[None]:
        keyring = self.rt.keyring
        spaces = sorted({i.namespace for i in batch})
        items = sorted(batch, key=lambda i: (i.namespace, i.name))
        fresh = False
        try:
            for _ in range(5):
                keys: dict[str, ActiveKey] = {}
                for ns in spaces:
                    keys[ns] = yield from keyring.active(io, ns, create=True, fresh=fresh, actor=who, request=req)

                def body(t: Ports, chosen: dict[str, ActiveKey] = keys) -> Op[Any]:
                    return self._write(t, items, chosen, on_conflict, on_error, category, labels, source, who, req)

                outcome = yield io.transact(True, body)
                if outcome is not _STALE:
                    break
                for ns in spaces:
                    keyring.forget(ns)
                fresh = True
            else:
                raise ConflictError("namespace keys kept changing during the import; run it again")
        except (KeyUnavailable, ProviderError, IntegrityError, ConflictError) as exc:
            for ns in spaces:
                yield from self.secrets.audit_write_failure(io, ns, None, "import", who, req, exc)
            if on_error == "stop":
                raise exc
            report.failures += [ItemFailure(i.index, i.namespace, i.name, exc) for i in items]
            return
        written, skipped, failures = outcome
        report.processed += written
        report.skipped += skipped
        report.failures += failures
        report.batches += 1
        for item in items:
            self.rt.recent.add(item.namespace, item.name)

    def _write(
        self,
        t: Ports,
        items: list[_Item],
        keys: dict[str, ActiveKey],
        on_conflict: str,
        on_error: str,
        category: str | None,
        labels: dict[str, str],
        source: str,
        who: str | None,
        req: dict[str, str],
    ) -> Op[Any]:
        rt = self.rt
        # Namespace states first, then secrets in (namespace, name) order: the one lock order.
        for ns, active in sorted(keys.items()):
            held: NamespaceState | None = yield t.tx.namespace_state(ns)
            if held is None or held.seal != active.state_seal:
                return _STALE
        written = skipped = 0
        failures: list[ItemFailure] = []
        events: list[Event] = []
        for item in items:
            ns, name = item.namespace, item.name
            active = keys[ns]
            existing: SecretRow | None = yield t.tx.get_secret(ns, name)
            if existing is not None and on_conflict == "skip":
                skipped += 1
                continue
            if existing is not None and on_conflict == "fail":
                raise ValueError(f"secret {name!r} already exists in {ns!r}")
            last: StateEvent | None = yield t.tx.last_state(ns, name)
            try:
                if existing is not None:
                    self.secrets.trust(existing, last)
                elif last is not None and last.action not in ("delete", "expire", "repair"):
                    raise IntegrityError(f"secret {ns}/{name}: the audit log records it, but its row is gone")
            except IntegrityError as exc:
                if on_error == "stop":
                    raise
                failures.append(ItemFailure(item.index, ns, name, exc))
                continue
            now = time.time()
            version, row_version = self.secrets._next_versions(existing, last)
            blob = seal_secret(active.key, active.version, ns, name, version, item.payload)
            if existing is not None:
                now = max(now, existing.updated_at, existing.version_created_at)
                expected = existing.row_version
                row = existing
                if row.expires_at is not None and row.expires_at <= now:
                    row.expires_at = None
                row.version, row.row_version, row.updated_at, row.version_created_at = version, row_version, now, now
                rt.seals.seal_secret(row)
                yield t.tx.update_secret(row, expected, StoredVersion(ns, name, version, blob, now))
            else:
                row = rt.seals.seal_secret(
                    SecretRow(
                        ns, name, version, "active", now, now, None, category, None, dict(labels), row_version, now
                    )
                )
                created = yield t.tx.create_secret(
                    row, StoredVersion(ns, name, version, blob, now), keys_seal=active.state_seal
                )
                if not created:
                    raise ConflictError(f"secret {ns}/{name} was created by a concurrent writer")
            events.append(
                Event(
                    "import",
                    namespace=ns,
                    name=name,
                    secret_version=row.version,
                    actor=who,
                    context=req,
                    detail={"source": source},
                    row_version=row.row_version,
                    state=row.seal,
                )
            )
            written += 1
        if events:
            yield from rt.audit.append(t, events)
        return written, skipped, failures

    def import_rows(
        self,
        io: Ports,
        rows: Iterable[R],
        decrypt: Callable[[R], tuple[Any, ...]],
        *,
        namespace: str | None = None,
        on_conflict: str = "skip",
        on_error: str = "stop",
        category: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Op[JobReport]:
        """Move legacy rows into kmsbox: ``decrypt(row)`` returns ``(name, plaintext)`` (into
        ``namespace``) or ``(namespace, name, plaintext)`` (see ``SecretStore.import_rows``)."""
        failed_rows: list[ItemFailure] = []

        def decrypted() -> Iterator[tuple[Any, ...]]:
            for index, row in enumerate(rows, start=1):
                failed: str | None = None
                try:
                    item = decrypt(row)
                except Exception as exc:
                    failed = type(exc).__name__
                if failed is not None:
                    # Raised outside the handler: the legacy error may quote key or plaintext
                    # bytes and must not even ride along as __context__.
                    error = ValueError(f"legacy row {index} could not be decrypted ({failed})")
                    if on_error == "stop":
                        raise error
                    failed_rows.append(ItemFailure(index, namespace, None, error))
                    yield _SKIPPED  # type: ignore[misc]  # keeps the numbering; reported below
                    continue
                yield item

        report = yield from self.import_secrets(
            io,
            decrypted(),
            namespace=namespace,
            on_conflict=on_conflict,
            on_error=on_error,
            category=category,
            labels=labels,
            progress=progress,
            source="legacy-rows",
        )
        report.failures = sorted(report.failures + failed_rows, key=lambda f: f.item)
        return report
