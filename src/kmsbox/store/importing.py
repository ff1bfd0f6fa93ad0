"""Import for users coming from hand-rolled encryption.

Parsers for dotenv and JSON files, and :class:`ImportMixin`, which moves
``(name, value)`` pairs, or legacy rows through a user-supplied decrypt
function, into a namespace in committed batches. Values never pass through a
command line or a log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from kmsbox.errors import ConflictError, IntegrityError, KeyUnavailable, ProviderError
from kmsbox.limits import check_text
from kmsbox.storage.base import SecretRow, Transaction
from kmsbox.store.core import StoreCore, drop_passed_expiry
from kmsbox.store.jobs import JobReport, Progress
from kmsbox.store.names import validate_name, validate_namespace

__all__ = ["ON_CONFLICT", "ImportMixin", "parse_dotenv", "parse_json_secrets"]

ON_CONFLICT = ("skip", "overwrite", "fail")
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
            raise ValueError(f"dotenv line {line_no} is not KEY=VALUE")
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


class ImportMixin(StoreCore):
    """Bulk import for :class:`~kmsbox.store.service.SecretStore`."""

    def import_secrets(
        self,
        items: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes],
        *,
        namespace: str,
        on_conflict: str = "skip",
        category: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        source: str = "import",
    ) -> JobReport:
        """Import ``(name, value)`` pairs into ``namespace`` in committed batches.

        ``on_conflict``: ``skip`` an existing name (so a re-run resumes), make a
        new version (``overwrite``), or raise ValueError (``fail``). Every name is
        validated before its batch is written; a bad one stops the import with the
        earlier batches committed.
        """
        from kmsbox.store.service import _check_labels, _check_text, _encode_value

        ns = validate_namespace(namespace)
        if on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}")
        clean_labels = _check_labels(labels)
        clean_category = _check_text(category, "category", 128)
        check_text(source, "source", 64)
        pairs = items.items() if isinstance(items, Mapping) else items
        report = JobReport("import", ns)
        who, req = self._who(None, None)

        def batches() -> Iterator[list[tuple[str, bytes]]]:
            batch: list[tuple[str, bytes]] = []
            for index, (name, value) in enumerate(pairs):
                try:
                    validate_name(name)
                    payload = _encode_value(value, self.max_value_size)
                except (ValueError, TypeError) as exc:
                    # These messages name the item's type or size, never its value.
                    raise ValueError(f"import item {index + 1}: {exc}") from None
                batch.append((name, payload))
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        for batch in batches():
            now = time.time()

            def op(tx: Transaction, batch: list[tuple[str, bytes]] = batch, now: float = now) -> tuple[int, int]:
                nk_version, nk = self.keyring.active(tx, ns)
                written = skipped = 0
                for name, payload in batch:
                    row = tx.get_secret(ns, name, for_update=True)
                    if row is not None and on_conflict == "skip":
                        skipped += 1
                        continue
                    if row is not None and on_conflict == "fail":
                        raise ValueError(f"secret {name!r} already exists in {ns!r}")
                    if row is not None:
                        drop_passed_expiry(row, time.time())
                    fresh = SecretRow(ns, name, 1, "active", now, now, None, clean_category, None, dict(clean_labels))
                    written_row, _ = self._write_version(tx, row, fresh, payload, (nk_version, nk), now)
                    self.audit.append(
                        tx,
                        action="import",
                        result="success",
                        namespace=ns,
                        name=name,
                        secret_version=written_row.version,
                        actor=who,
                        context=req,
                        detail={"source": source},
                    )
                    written += 1
                return written, skipped

            try:
                self.keyring.ensure(ns)
                written, skipped = self._write(op)
            except (KeyUnavailable, ProviderError, IntegrityError, ConflictError) as exc:
                self._audit_write_failure(ns, None, "import", who, req, exc)
                raise
            report.processed += written
            report.skipped += skipped
            report.batches += 1
            if progress:
                progress(report.processed + report.skipped, None)
        return report.finish()

    def import_rows(
        self,
        rows: Iterable[R],
        decrypt: Callable[[R], tuple[str, str | bytes]],
        *,
        namespace: str,
        on_conflict: str = "skip",
        category: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> JobReport:
        """Move legacy rows into kmsbox: ``decrypt(row)`` returns ``(name, plaintext)``.

        For a table encrypted under one hand-rolled master key: stream its rows in,
        with a function that decrypts the legacy ciphertext. An exception from
        ``decrypt`` stops the import (earlier batches stay committed; re-run with
        ``on_conflict="skip"`` to resume) and names the row's position only.
        """

        def decrypted() -> Iterator[tuple[str, str | bytes]]:
            for index, row in enumerate(rows):
                failed: str | None = None
                try:
                    item = decrypt(row)
                except Exception as exc:
                    failed = type(exc).__name__
                if failed is not None:
                    # Raised outside the handler: the legacy error may quote key or plaintext
                    # bytes and must not even ride along as __context__.
                    raise ValueError(f"legacy row {index + 1} could not be decrypted ({failed})")
                yield item

        return self.import_secrets(
            decrypted(),
            namespace=namespace,
            on_conflict=on_conflict,
            category=category,
            labels=labels,
            progress=progress,
            source="legacy-rows",
        )
